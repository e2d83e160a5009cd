"""A model format is one handler (sniff, and where edgeopt reads it: load, inputs, save, the runner that
runs it) registered with formats.registry; runners open through runtime.runner by the handler."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.data.specs import InputSpec
from edgeopt.errors import UnsupportedFormatError
from edgeopt.formats import registry
from edgeopt.formats.artifact import ModelFormat
from edgeopt.runtime.runner import open_runner


class DoublingRunner:
    """A toy runtime: one input "x", one output "y" = 2x."""

    def __init__(self, model, *, label, threads=None, optimization="all"):
        self.label = label

    def input_specs(self):
        return [InputSpec("x", (2,), "float32")]

    def output_names(self):
        return ["y"]

    def run(self, feeds):
        return {"y": feeds["x"] * 2}


@pytest.fixture
def restore_handlers():
    saved = registry.handlers()
    yield
    registry._HANDLERS[:] = saved


def test_formats_are_told_by_their_handlers(tmp_path, conv_onnx):
    tflite = tmp_path / "m.bin"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    assert registry.sniff_format(tflite) is ModelFormat.TFLITE  # the magic, whatever the suffix
    assert registry.sniff_format(conv_onnx) is ModelFormat.ONNX
    assert registry.handler_for(ModelFormat.ONNX).load is not None
    with pytest.raises(UnsupportedFormatError, match="no runtime runs torch.export models"):
        open_runner(tflite, label="m.bin", format=ModelFormat.TORCH_EXPORT)


def test_a_format_is_one_handler_and_its_registration(tmp_path, restore_handlers):
    registry.register_format(registry.FormatHandler(
        ModelFormat.TFLITE, sniff=lambda head, path: head[4:8] == b"TFL3",
        runner=f"{__name__}:DoublingRunner"))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3")
    assert registry.sniff_format(model) is ModelFormat.TFLITE
    runner = open_runner(model, label="m.tflite", format=ModelFormat.TFLITE)
    np.testing.assert_array_equal(runner.run({"x": np.array([1.0, 2.0], np.float32)})["y"], [2.0, 4.0])
