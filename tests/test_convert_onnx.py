"""edgeopt convert on ONNX sources: opset upgrade, simplification, parity, report, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import conv_classifier, sha256


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_opset11_model_is_upgraded_and_matches_source(cli, tmp_path):
    source = tmp_path / "old.onnx"
    onnx.save(conv_classifier(opset=11), str(source))
    before = sha256(source)
    out = tmp_path / "out"

    result = cli("convert", source, "-o", out, "--json")

    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == 2
    assert [s["name"] for s in report["stages"]] == ["load", "opset", "simplify", "profile", "finalize"]
    final = out / "model.onnx"
    model = onnx.load(str(final))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    # Numbers, not just structure: the final model reproduces the source on fresh inputs, at two batch sizes.
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        (expected,) = _run(source, {"x": x})
        (got,) = _run(final, {"x": x})
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    opset_stage = next(s for s in report["stages"] if s["name"] == "opset")
    assert opset_stage["options"] == {"from": 11, "to": 13}
    assert opset_stage["parity"][0]["passed"] is True
    assert opset_stage["parity"][0]["batch_sizes"] == [1, 2]
    assert report["source"]["sha256"] == before
    assert sha256(source) == before  # the input is never modified
    assert report["final"]["sha256"] == sha256(final)
    assert report["final"]["path"] == str(out / "model.onnx")
    assert (out / "opset.onnx").exists() and (out / "simplify.onnx").exists()
    assert report["final"]["lineage"][0] == before
    assert report["summary"]["parameter_count"] == 4 * 3 * 9 + 4 + 5 * 4 + 5
    assert report["summary"]["macs_total"] == 8 * 8 * 4 * 3 * 9 + 4 * 5
    assert report["tool_versions"]["onnxruntime"] == ort.__version__
    assert not list(out.glob(".edgeopt-run-*"))  # no work folder left behind
    # report.json on disk is the same document
    assert json.loads((out / "report.json").read_text())["final"] == report["final"]


def test_human_summary_mentions_model_and_report(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
    assert "model.onnx" in result.stdout and "report.json" in result.stdout
    assert "simplify" in result.stdout


def test_requested_opset_and_no_simplify(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "-o", tmp_path / "out", "--opset", "18", "--no-simplify", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["stages"]] == ["load", "opset", "profile", "finalize"]
    assert report["final"]["opset"] == 18


def test_opset_below_13_is_refused(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "-o", tmp_path / "out", "--opset", "12")
    assert result.code == 2
    assert "below 13" in result.stderr
    assert not (tmp_path / "out").exists()


def test_simplify_folds_constant_subgraph(cli, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    # y = x * (a + b) where a + b is constant: the simplifier must fold the Add away.
    a = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "a")
    b = numpy_helper.from_array(np.full((4,), 3.0, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Mul", ["x", "ab"], ["y"])],
        "foldable", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], initializer=[a, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = tmp_path / "fold.onnx"
    onnx.save(model, str(source))
    result = cli("convert", source, "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    stage = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "simplify")
    assert stage["status"] == "ok"
    assert stage["details"] == {"nodes_before": 2, "nodes_after": 1}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = _run(tmp_path / "out" / "model.onnx", {"x": x})
    np.testing.assert_array_equal(y, x * 5)


def test_multi_input_model_with_int_and_scalar_inputs(cli, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"]),
         helper.make_node("Mul", ["emb", "scale"], ["y"])],
        "multi", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
                  helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 3])], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    source = tmp_path / "multi.onnx"
    onnx.save(model, str(source))
    # token ids are never random: without data they need a value
    refused = cli("convert", source, "-o", tmp_path / "out", "--input-shape", "ids=2x7")
    assert refused.code == 2 and refused.stderr.count("\n") == 1
    assert "'ids' is int64" in refused.stderr and "--fill ids=VALUE" in refused.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()
    result = cli("convert", source, "-o", tmp_path / "out", "--input-shape", "ids=2x7", "--fill", "ids=9", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stages"][0]["details"]["inputs"] == ["ids=2x7:int64", "scale=scalar:float32"]
    assert report["stages"][0]["details"]["resolved_inputs"]["fills"] == {"ids": {"value": "9", "why": "--fill"}}
    assert all(c["passed"] for s in report["stages"] for c in s["parity"])


def test_output_folder_equal_to_input_folder_never_overwrites_input(cli, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    source = folder / "model.onnx"
    onnx.save(conv_classifier(), str(source))
    before = sha256(source)
    result = cli("convert", source, "-o", folder)
    assert result.code == 2
    assert "overwrite the input" in result.stderr
    assert sha256(source) == before


def test_external_data_source_becomes_single_file(cli, tmp_path):
    src = tmp_path / "ext"
    src.mkdir()
    onnx.save(conv_classifier(), str(src / "conv.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="conv.weights", size_threshold=0)
    result = cli("convert", src / "conv.onnx", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stages"][0]["details"]["external_files"] == ["conv.weights"]
    assert report["final"]["external_files"] == []
    final = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in final.graph.initializer)


@pytest.mark.parametrize("weights_in_if", [True])
def test_weights_in_if_subgraph_constants(cli, tmp_path, weights_in_if):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def branch(name: str, scale: float) -> onnx.GraphProto:
        w = numpy_helper.from_array((rng.standard_normal((4, 3)) * scale).astype(np.float32), f"{name}_w")
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_wc"], value=w),
             helper.make_node("MatMul", ["x", f"{name}_wc"], [f"{name}_y"])],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["n", 3])])

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", 2.0))],
        "if_weights", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    source = tmp_path / "if.onnx"
    onnx.save(model, str(source))
    result = cli("convert", source, "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["parameter_count"] >= 24  # the Constant weights inside both branches count
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "out" / "model.onnx", {"x": x})[0], _run(source, {"x": x})[0],
                               rtol=1e-6)


def test_targets_get_static_profiles_and_verdicts(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "-o", tmp_path / "out", "-t", "rpi4b", "-t", "coral-edgetpu", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    verdicts = report["summary"]["targets"]
    assert set(verdicts) == {"rpi4b", "coral-edgetpu"}
    assert verdicts["rpi4b"]["latency_ms"] > 0 and verdicts["rpi4b"]["fits"] is True
    assert verdicts["coral-edgetpu"]["full_int8_required"] and not verdicts["coral-edgetpu"]["full_int8"]
    profile = next(s for s in report["stages"] if s["name"] == "profile")
    assert profile["details"]["rpi4b"]["macs_total"] == 8 * 8 * 4 * 3 * 9 + 4 * 5
    human = cli("convert", conv_onnx, "-o", tmp_path / "out2", "-t", "rpi4b", "-t", "coral-edgetpu")
    assert "rpi4b: ~" in human.stdout and "NOT fully int8 (required)" in human.stdout


def test_unknown_target_fails_before_any_work(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "-o", tmp_path / "out", "-t", "rpi9")
    assert result.code == 2 and "unknown target 'rpi9'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_rerun_removes_stale_intermediates_and_outputs_are_readable(cli, conv_onnx, tmp_path):
    import stat

    out = tmp_path / "out"
    assert cli("convert", conv_onnx, "-o", out, "--quantize", "weights-only").code == 0
    assert (out / "quantize.onnx").exists()
    (out / "model.tflite").write_bytes(b"an earlier run's --format tflite")
    assert cli("convert", conv_onnx, "-o", out).code == 0
    assert not (out / "quantize.onnx").exists()  # the new report does not mention it
    assert not (out / "model.tflite").exists()  # nor this one, which `edgeopt gate` would check
    mode = stat.S_IMODE((out / "model.onnx").stat().st_mode)
    assert mode & 0o044  # group/other can read it (not mkstemp's 0600)


def test_the_shipped_model_carries_no_inferred_intermediate_shapes(cli, tmp_path):
    # onnxslim records a shape for every intermediate tensor (value_info); runtimes infer them again, and
    # with a TensorFlow export's long names they made basic-pitch's model 1.24x its published size.
    source = tmp_path / "m.onnx"
    onnx.save(conv_classifier(), str(source))
    assert not onnx.load(str(source)).graph.value_info
    result = cli("convert", source, "-o", tmp_path / "out", "--quantize", "none")
    assert result.code == 0, result.stderr
    simplified = onnx.load(str(tmp_path / "out" / "simplify.onnx"))
    shipped = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert len(simplified.graph.value_info) > 0  # what the test is about happened
    assert len(shipped.graph.value_info) == 0
    assert len(shipped.graph.node) == len(simplified.graph.node)


def _declares_a_wrong_output_shape() -> onnx.ModelProto:
    """ddddocr's recognizer in small: [T, B, 4] → flattened → MatMul → Reshape back to [T, B, -1] with a shape
    computed from Shape(x); the graph declares its output [1, seqlen], which it is not. onnxslim folds that
    Reshape's shape from the declaration and returns [1, T*B*3]."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.random.default_rng(0).random((4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1], np.int64), "rest"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["t"]), helper.make_node("Gather", ["s", "i1"], ["b"]),
             helper.make_node("Unsqueeze", ["t", "axis0"], ["tu"]), helper.make_node("Unsqueeze", ["b", "axis0"], ["bu"]),
             helper.make_node("Concat", ["tu", "bu", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "flat"], ["xf"]), helper.make_node("MatMul", ["xf", "W"], ["y2"]),
             helper.make_node("Reshape", ["y2", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_a_wrong_declared_output_shape_does_not_cost_the_simplification(cli, tmp_path):
    source = tmp_path / "declared.onnx"
    onnx.save(_declares_a_wrong_output_shape(), str(source))
    result = cli("convert", source, "-o", tmp_path / "out", "--dim", "T=5", "--dim", "B=2", "--json")
    assert result.code == 0, result.stderr
    stage = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "simplify")
    # kept (not the unsimplified graph), simplified again without the declaration, and said so
    assert stage["status"] == "ok" and stage["details"]["nodes_after"] <= stage["details"]["nodes_before"]
    assert (tmp_path / "out" / "simplify.onnx").exists()
    assert any("declared output/intermediate shapes contradict" in w for w in stage["warnings"])
    assert all(check["passed"] for check in stage["parity"])
    x = np.random.default_rng(1).random((7, 3, 4)).astype(np.float32)  # other sizes than the parity check's
    (y,) = _run(tmp_path / "out" / "model.onnx", {"x": x})
    (expected,) = _run(source, {"x": x})
    assert y.shape == (7, 3, 3) and np.allclose(y, expected, atol=1e-6)


def _killed_child_folder(code: str, env: dict | None = None) -> Path:
    """Run ``code`` (which prints a folder and then waits) in a child Python, SIGKILL it once it has printed,
    and return the folder it left: what a killed run leaves behind."""
    import os
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", code + "\nimport sys, time\nsys.stdout.flush()\ntime.sleep(60)"],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    folder = Path(child.stdout.readline().strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return folder


def test_a_killed_runs_work_folders_are_swept_by_the_next_run(cli, conv_onnx, tmp_path, monkeypatch):
    """A SIGKILL runs none of our clean-up: the next run that makes a work folder removes the ones whose process
    is gone, on this machine; a live process's, another machine's and one kept by --keep-failed stay."""
    import tempfile

    from edgeopt.data.sources import Scratch
    from edgeopt.fsutil import KEPT_MARKER, owned_temp_dir

    out = tmp_path / "out"
    out.mkdir()
    make = f"from edgeopt.fsutil import owned_temp_dir\nf = owned_temp_dir('.edgeopt-run-', {str(out)!r})\n"
    # (each new folder sweeps the dead ones made before it: the killed run's comes last)
    live = owned_temp_dir(".edgeopt-run-", out)  # this process's: still running
    kept = _killed_child_folder(make + f"(f / {KEPT_MARKER!r}).touch()\nprint(f)")
    killed = _killed_child_folder(make + "(f / 'export.onnx').write_bytes(b'x' * 4096)\nprint(f)")
    pid, _, rest = killed.name[len(".edgeopt-run-"):].partition(".")
    elsewhere = out / f".edgeopt-run-{pid}.00000000-{rest.split('-', 1)[1]}"  # same pid, another machine
    elsewhere.mkdir()
    assert killed.is_dir() and (killed / "export.onnx").exists()
    assert cli("convert", conv_onnx, "-o", out).code == 0
    assert not killed.exists()
    assert kept.is_dir() and live.is_dir() and elsewhere.is_dir()
    assert len(list(out.glob(".edgeopt-run-*"))) == 3

    # unpacked calibration data in the system temp folder: the next dataset that unpacks sweeps it
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data = _killed_child_folder("import tempfile\nfrom edgeopt.data.sources import Scratch\ns = Scratch()\n"
                                "s.new_file().write_bytes(b'x')\nprint(s.path)", env={"TMPDIR": str(temp)})
    assert data.is_dir() and data.parent == temp
    scratch = Scratch()
    scratch.new_file()
    assert not data.exists() and scratch.path.parent == temp
    scratch.close()
