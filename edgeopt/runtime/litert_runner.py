"""Run .tflite files with the LiteRT interpreter (ai-edge-litert, ``edgeopt[tflite]``) on the CPU, XNNPACK on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.data.specs import InputSpec, declared_dim
from edgeopt.errors import InputError, ModelLoadError


class LiteRtRunner:
    """One interpreter over a model file or its bytes; inputs and outputs by their tensor names."""

    def __init__(self, model: bytes | str | Path, *, label: str, threads: int | None = None,
                 optimization: str = "all") -> None:
        from edgeopt.formats.tflite import INSTALL_HINT

        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise InputError("running .tflite files needs the LiteRT interpreter, which is not installed",
                             INSTALL_HINT) from None
        self.label = label
        source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else \
            {"model_path": str(model)}
        try:
            self.interpreter = Interpreter(**source, num_threads=threads or 1)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            text = " ".join(str(exc).split())
            raise ModelLoadError(f"the LiteRT interpreter cannot load {label}: {text[:300]}",
                                 "a custom op needs the library that registers it; otherwise the file is "
                                 "malformed") from None
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()

    def input_specs(self) -> list[InputSpec]:
        return [InputSpec(d["name"], tuple(declared_dim(int(x)) for x in d.get("shape_signature", d["shape"])),
                          np.dtype(d["dtype"]).name, quantized=bool(d["quantization"][0]))
                for d in self._inputs]

    def output_names(self) -> list[str]:
        return [d["name"] for d in self._outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            for detail in self._inputs:
                value = np.asarray(feeds[detail["name"]], dtype=detail["dtype"])
                if tuple(value.shape) != tuple(detail["shape"]):
                    self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                    self.interpreter.allocate_tensors()
                self.interpreter.set_tensor(detail["index"], value)
            self.interpreter.invoke()
        except (KeyError, ValueError, RuntimeError) as exc:
            shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}:{v.dtype}" for k, v in feeds.items())
            raise InputError(f"{self.label} rejected inputs {shapes}: {' '.join(str(exc).split())[:200]}",
                             "check the inputs against the model's (edgeopt inspect MODEL)") from None
        return {d["name"]: self.interpreter.get_tensor(d["index"]).copy() for d in self._outputs}
