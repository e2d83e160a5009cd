"""onnxruntime's quantizer can read the float model from its file (what the search's sessions open) instead
of a private copy of the proto: the result is the same model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import conv_classifier
from edgeopt.stages.quantize.calibration import collect_activation_statistics
from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import Recipe


@pytest.mark.parametrize("recipe", [Recipe(mode="static"), Recipe(mode="static", activation_type="s8"),
                                    Recipe(mode="dynamic")], ids=["static-u8s8", "static-s8s8", "dynamic"])
def test_quantizing_from_the_file_gives_the_proto_result(tmp_path, recipe):
    model = conv_classifier()
    path = tmp_path / "float.onnx"
    onnx.save(model, str(path))
    before = model.SerializeToString()
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    statistics = collect_activation_statistics(model, batches) if recipe.mode == "static" else None
    from_proto = quantize(model, recipe, batches, statistics=statistics)
    from_file = quantize(model, recipe, batches, statistics=statistics, model_file=path)
    assert from_file.SerializeToString() == from_proto.SerializeToString()
    assert model.SerializeToString() == before and path.read_bytes() == before
    assert any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
               for n in from_file.graph.node)


def test_candidates_are_kept_as_files_in_the_work_folder(tmp_path):
    from edgeopt.stages.quantize.store import ModelStore

    store = ModelStore(tmp_path)
    store["a"] = b"first"
    first = store["a"]
    assert first.parent == tmp_path and first.read_bytes() == b"first" and store.bytes_of("a") == b"first"
    store["a"] = b"second"  # a candidate replaced (the speed fallback's result): the old file goes
    assert not first.exists() and store.bytes_of("a") == b"second"
    del store["a"]
    assert list(tmp_path.iterdir()) == [] and "a" not in store
    in_memory = ModelStore()
    in_memory["b"] = b"bytes"
    assert in_memory["b"] == b"bytes" and in_memory.bytes_of("b") == b"bytes"
