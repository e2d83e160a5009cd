"""Sessions on a model with its activations exposed, opened from a weight-by-weight file: the same
outputs as the model itself, and the caller's model untouched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from edgeopt.formats.onnx import save_with_weights_beside, weightless_copy
from edgeopt.stages.quantize.calibration import open_exposed_runner
from tests.quantize.models import depthwise_cnn_model, image_feeds


def test_exposed_runner_gives_the_models_outputs_and_its_activations():
    model = depthwise_cnn_model()
    before = model.SerializeToString()
    feeds = image_feeds(2)
    runner = open_exposed_runner(model, {"r1": TensorProto.FLOAT, "c3": TensorProto.FLOAT}, label="test")
    reference = ort.InferenceSession(before, providers=["CPUExecutionProvider"])
    for feed in feeds:
        got = runner.run(feed)
        assert set(got) == {"logits", "r1", "c3"}
        np.testing.assert_allclose(got["logits"], reference.run(None, feed)[0], rtol=1e-5, atol=1e-6)
        assert got["r1"].shape == (1, 16, 24, 24) and got["r1"].min() >= 0
    assert model.SerializeToString() == before  # the outputs were added for the write only


def test_weights_are_written_beside_a_small_graph(tmp_path):
    model = depthwise_cnn_model()
    before = model.SerializeToString()
    save_with_weights_beside(model, tmp_path / "m.onnx")
    graph_bytes = (tmp_path / "m.onnx").stat().st_size
    assert graph_bytes < len(before) / 2 and (tmp_path / "m.onnx.data").stat().st_size > len(before) / 2
    loaded = onnx.load(str(tmp_path / "m.onnx"))  # external data read back from beside it
    assert {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in loaded.graph.initializer} == \
           {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}
    assert model.SerializeToString() == before
    light = weightless_copy(model)
    assert [n.SerializeToString() for n in light.graph.node] == [n.SerializeToString() for n in model.graph.node]
    stem = next(t for t in light.graph.initializer if t.name == "w_stem")
    assert list(stem.dims) == [16, 3, 3, 3] and not stem.raw_data  # shape without data
    inferred = onnx.shape_inference.infer_shapes(light)
    assert any(v.name == "c3" for v in inferred.graph.value_info)
