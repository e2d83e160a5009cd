"""Invalid ONNX graphs are named: inspect lists every structural fault and marks the model invalid (exit 2),
profile and convert refuse it with the same line before anything runs; a graph the checker complains about
but onnxruntime runs (nodes out of order) stays valid, with the checker's line as a warning."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]


def _info(name, shape=(1, 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape) if shape is not None else None)


def _save(path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def dangling(path):
    """add1 reads 'ghost', which nothing produces."""
    return _save(path, [helper.make_node("Add", ["x", "ghost"], ["y"], name="add1"),
                        helper.make_node("Relu", ["y"], ["z"], name="relu1")], [_info("x")], [_info("z")])


GHOST_LINE = "node 'add1' (Add) reads tensor 'ghost', which no node produces and which is no graph input or initializer"


def test_inspect_names_the_dangling_tensor_and_its_reader_and_marks_the_model_invalid(cli, tmp_path):
    model = dangling(tmp_path / "dangling.onnx")
    shown = cli("inspect", model)
    assert shown.code == 2
    assert "INVALID" in shown.stdout and "'ghost'" in shown.stdout and "'add1'" in shown.stdout
    assert GHOST_LINE in shown.stderr and "Traceback" not in shown.stderr
    as_json = cli("inspect", model, "--json")
    assert as_json.code == 2
    facts = json.loads(as_json.stdout)["file"]
    assert facts["valid"] is False and facts["faults"] == [GHOST_LINE]


@pytest.mark.parametrize("command", [["profile", "-t", "rpi4b"], ["profile", "--measure", "--runs", "2"],
                                     ["convert", "-o", "OUT"]])
def test_profile_and_convert_refuse_it_with_the_same_line(cli, tmp_path, command):
    model = dangling(tmp_path / "dangling.onnx")
    out = tmp_path / "out"
    result = cli(command[0], model, *[str(out) if part == "OUT" else part for part in command[1:]])
    assert result.code == 2 and GHOST_LINE in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_every_fault_is_reported_not_just_the_first(cli, tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    model = _save(tmp_path / "broken.onnx", [
        helper.make_node("Mul", ["x", "w"], ["y"], name="mul"),
        helper.make_node("Add", ["y", "lost_bias"], ["z"], name="add"),
        helper.make_node("Relu", ["z"], ["y"], name="relu_writes_y"),  # y written twice
        helper.make_node("Sub", ["z", "lost_offset"], ["out"], name="sub"),
    ], [_info("x")], [_info("out"), _info("never_made")], [weight])
    result = cli("inspect", model, "--json")
    assert result.code == 2
    faults = json.loads(result.stdout)["file"]["faults"]
    assert len(faults) == 4, faults
    assert any("'lost_bias'" in f and "'add'" in f for f in faults)
    assert any("'lost_offset'" in f and "'sub'" in f for f in faults)
    assert any("tensor 'y' is written by node 'relu_writes_y' (Relu) and by node 'mul' (Mul)" == f for f in faults)
    assert "graph output 'never_made' is produced by no node" in faults
    refused = cli("profile", model)
    assert refused.code == 2 and "(4 faults)" in refused.stderr and "never_made" in refused.stderr


def test_a_subgraph_may_read_its_outer_scope_but_not_a_ghost(cli, tmp_path):
    def branch(name, reads):
        return helper.make_graph([helper.make_node("Identity", [reads], [f"{name}_out"], name=f"{name}_id")],
                                 name, [], [_info(f"{name}_out")])

    def model(path, else_reads):
        cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
        node = helper.make_node("If", ["cond"], ["result"], name="choose", then_branch=branch("then", "x"),
                                else_branch=branch("else", else_reads))
        return _save(path, [node], [cond, _info("x")], [_info("result")])

    fine = model(tmp_path / "fine.onnx", "x")
    assert cli("inspect", fine, "--json").code == 0
    broken = model(tmp_path / "broken.onnx", "outer_ghost")
    result = cli("inspect", broken, "--json")
    assert result.code == 2
    (fault,) = json.loads(result.stdout)["file"]["faults"]
    assert fault.startswith("'choose' (If).else_branch: node 'else_id' (Identity) reads tensor 'outer_ghost'")


def test_a_shape_conflict_onnxruntime_refuses_is_a_fault(cli, tmp_path):
    # 8 kB of weights: inference sees their dims only (their values are left out), and still finds it
    weight = helper.make_tensor("W", TensorProto.FLOAT, [1000, 2], [0.5] * 2000)
    model = _save(tmp_path / "conflict.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                  [_info("x")], [_info("y", None)], [weight])
    with pytest.raises(Exception):  # the judge agrees: onnxruntime cannot load it either
        ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    result = cli("profile", model, "-t", "rpi4b")
    assert result.code == 2 and "Incompatible dimensions" in result.stderr and "node name: mm" in result.stderr


def test_a_checker_complaint_onnxruntime_runs_stays_a_warning(cli, tmp_path):
    """Nodes out of topological order: onnx.checker refuses, onnxruntime sorts them and runs the model."""
    model = _save(tmp_path / "unsorted.onnx", [helper.make_node("Relu", ["y"], ["z"], name="second"),
                                               helper.make_node("Neg", ["x"], ["y"], name="first")],
                  [_info("x")], [_info("z")])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(-x, 0))
    result = cli("inspect", model, "--json")
    assert result.code == 0, result.stderr
    facts = json.loads(result.stdout)["file"]
    assert facts["valid"] and not facts["faults"] and "topologically sorted" in facts["checker_error"]
    assert cli("profile", model, "-t", "rpi4b").code == 0


def test_every_node_its_schema_refuses_is_named(cli, tmp_path):
    """An op no opset defines and an attribute the op does not have, both named (the checker stops at one)."""
    model = _save(tmp_path / "schema.onnx", [helper.make_node("Conv2", ["x"], ["y"], name="typo"),
                                             helper.make_node("Relu", ["x"], ["z"], name="relu", bogus=3)],
                  [_info("x")], [_info("y"), _info("z")])
    result = cli("inspect", model, "--json")
    assert result.code == 2
    faults = json.loads(result.stdout)["file"]["faults"]
    assert faults == ["node 'typo' (Conv2): No Op registered for Conv2 with domain_version of 17",
                      "node 'relu' (Relu): Unrecognized attribute: bogus for operator Relu"]
    refused = cli("convert", model, "-o", tmp_path / "out")
    assert refused.code == 2 and "(2 faults)" in refused.stderr and not (tmp_path / "out").exists()
