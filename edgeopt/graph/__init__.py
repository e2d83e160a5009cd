"""The format-neutral graph static analysis prices (model.py), op kinds (kinds.py), and each format's
adapter to it (ONNX: onnx_adapter.py, with the ONNX-specific shapes, MACs and execution modules beside it).
A format's handler (formats.registry) names its adapter; graph.build.build_graph calls it."""
