"""Shared helpers for the analysis tests: every model is built in memory with onnx.helper."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.targets import TargetProfile

OPSET = 17


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = OPSET,
    extra_opsets: dict[str, int] | None = None,
    check: bool = True,
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    # IR 8 keeps the models loadable by every onnxruntime the project supports.
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def tensor(name: str, dtype: int = TensorProto.FLOAT, shape: Sequence[int | str] | None = None):
    return helper.make_tensor_value_info(name, dtype, shape)


def weight(name: str, shape: Sequence[int], dtype=np.float32, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the model in onnxruntime (proves the test model is real, not just well-formed)."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


@contextmanager
def unchanged(model: onnx.ModelProto) -> Iterator[None]:
    """Assert that the code run inside the block does not mutate ``model``."""
    before = model.SerializeToString()
    yield
    assert model.SerializeToString() == before, "the caller's model was mutated"


def _matmul_chain(name: str, widths: list[int]) -> onnx.GraphProto:
    """x (n, 4) multiplied by one Constant weight per width."""
    nodes, prev, rows = [], "x", 4
    for i, width in enumerate(widths):
        w = numpy_helper.from_array(np.ones((rows, width), np.float32), f"{name}_w{i}")
        nodes.append(helper.make_node("Constant", [], [f"{name}_w{i}"], value=w))
        nodes.append(helper.make_node("MatMul", [prev, f"{name}_w{i}"], [f"{name}_y{i}"]))
        prev, rows = f"{name}_y{i}", width
    return helper.make_graph(nodes, name, [], [tensor(prev, TensorProto.FLOAT, None)])


def if_model() -> onnx.ModelProto:
    """An If whose branches hold their weights as Constant nodes.

    then: x @ (4,4) -> 16 weights, 48 MACs at x (3, 4);
    else: x @ (4,4) @ (4,4) -> 32 weights, 96 MACs at x (3, 4).
    """
    node = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        name="branch",
        then_branch=_matmul_chain("then", [4]),
        else_branch=_matmul_chain("else", [4, 4]),
    )
    return make_model(
        [node],
        [tensor("x", TensorProto.FLOAT, ["n", 4]), tensor("cond", TensorProto.BOOL, [])],
        [tensor("y", TensorProto.FLOAT, ["n", 4])],
    )


def cpu_target(**overrides) -> TargetProfile:
    """A CPU with round figures: 1 Gop/s fp32, 2 GB/s, no efficiency factors."""
    fields = {
        "name": "testcpu",
        "display_name": "Test CPU",
        "kind": "cpu",
        "arch": "aarch64",
        "ram_bytes": 1 << 30,
        "peak_ops_per_s": {"fp32": 1e9},
        "memory_bandwidth_bytes_per_s": 2e9,
    }
    fields.update(overrides)
    return TargetProfile.model_validate(fields)
