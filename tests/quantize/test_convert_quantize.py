"""edgeopt convert with int8 quantization, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, detector_model
from edgeopt.metrics.fidelity import compare_outputs
from edgeopt.stages.quantize.recipes import isa_family
from edgeopt.targets import load_target

DIGITS = REPO / "models" / "digits"


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _quantize_stage(report: dict) -> dict:
    return next(s for s in report["stages"] if s["name"] == "quantize")


def test_digits_int8_keeps_accuracy(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "--eval", DIGITS / "eval.npz",
                 "--force-int8", "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    stage = _quantize_stage(report)
    details = stage["details"]
    assert details["shipped"] == "int8" and stage["status"] == "ok"
    chosen = next(c for c in details["candidates"] if c["name"] == details["chosen"])
    # 3 Conv + 1 Gemm, less those the speed fallback kept in float because it measured them faster so.
    compute = {"Conv", "Gemm"}
    graph_ops = {n.name: n.op_type for n in onnx.load(str(DIGITS / "digits_cnn.onnx")).graph.node}
    accepted = [t for t in chosen["speed_fallback"] if t["accepted"]]
    assert all(t["latency_ratio"] < 0.97 for t in accepted)
    kept_for_speed = {n for t in accepted for n in t["nodes"] if graph_ops.get(n) in compute}
    assert kept_for_speed <= set(chosen["float_nodes"])
    assert chosen["quantizable_nodes"] == 4
    assert chosen["quantized_nodes"] == 4 - len(kept_for_speed)
    # int8 weights are a quarter of float ones; a layer kept float for speed keeps its float bytes
    source = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    initializers = {t.name: t for t in source.graph.initializer}
    kept_bytes = sum(len(initializers[i].raw_data) for n in source.graph.node if n.name in kept_for_speed
                     for i in n.input if i in initializers)
    assert chosen["size_ratio"] < 0.4 + kept_bytes / (DIGITS / "digits_cnn.onnx").stat().st_size
    fidelity = chosen["fidelity"]
    assert fidelity["samples"] == 360
    assert fidelity["outputs"][0]["cosine_mean"] >= 0.99 and fidelity["outputs"][0]["top1_agreement"] >= 0.99
    assert fidelity["accuracy_candidate"] >= fidelity["accuracy_reference"] - 0.01
    assert details["data"]["calibration"]["count"] == 200 and details["data"]["eval"]["labels"] is True
    assert len(details["data"]["calibration"]["sha256"]) == 64
    assert chosen["latency"]["runs"] >= 15 and chosen["latency_ratio"] > 0
    family = isa_family(load_target("host"))
    first = details["candidates"][0]
    assert first["recipe"]["activation_type"] == ("s8" if family.startswith("arm") else "u8")
    assert first["reason"]
    # The shipped file is the int8 model and it really classifies the digits.
    final = out / "model.onnx"
    assert _ops(final).get("QuantizeLinear", 0) > 0 and _ops(final).get("DequantizeLinear", 0) > 0
    with np.load(DIGITS / "eval.npz") as data:
        (logits,) = _run(final, {"image": data["image"]})
        accuracy = float(np.mean(logits.argmax(1) == data["labels"]))
    assert accuracy == pytest.approx(fidelity["accuracy_candidate"])
    assert report["summary"]["quantization"]["shipped"] == "int8"


def test_keep_float_keeps_the_most_sensitive_groups_float_even_where_int8_meets_the_floor(cli, tmp_path):
    """--keep-float N (a dimension tune searches): the N groups the SQNR ranking names stay float in every static
    candidate, though all-int8 digits already meets its floor; the shipped graph quantizes fewer nodes."""
    def convert(out: Path, *extra: str) -> dict:
        result = cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "--eval",
                     DIGITS / "eval.npz", "--quantize", "static", "--no-speed-fallback", "--force-int8", "-o", out,
                     "--json", *extra)
        assert result.code == 0, result.stderr
        return _quantize_stage(json.loads(result.stdout))["details"]

    plain, kept = convert(tmp_path / "plain"), convert(tmp_path / "kept", "--keep-float", "2")
    for details in (plain, kept):
        assert details["shipped"] == "int8"
    by_name = {c["name"]: c for c in plain["candidates"]}
    for candidate in kept["candidates"]:
        if candidate["status"] == "rejected":
            continue
        assert candidate["kept_float_by_setting"], candidate["name"]
        assert set(candidate["kept_float_by_setting"]) <= set(candidate["float_nodes"])
        assert candidate["quantized_nodes"] < by_name[candidate["name"]]["quantized_nodes"]
        assert not by_name[candidate["name"]]["kept_float_by_setting"]
    float_ops = {n.name for n in onnx.load(str(DIGITS / "digits_cnn.onnx")).graph.node if n.op_type in ("Conv", "Gemm")}
    chosen = next(c for c in kept["candidates"] if c["name"] == kept["chosen"])
    # two groups: the Conv → Relu chains that lose the most, with the consumers of what they produce
    assert len(float_ops & set(chosen["kept_float_by_setting"])) >= 2
    assert _ops(tmp_path / "kept" / "model.onnx").get("QuantizeLinear", 0) < \
        _ops(tmp_path / "plain" / "model.onnx").get("QuantizeLinear", 0)


def test_auto_ships_int8_only_when_measured_faster(cli, tmp_path):
    result = cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "-o", tmp_path / "out",
                 "--json")
    assert result.code == 0, result.stderr
    details = _quantize_stage(json.loads(result.stdout))["details"]
    ratios = {c["name"]: c["latency_ratio"] for c in details["candidates"] if c["status"] == "ok"}
    assert ratios, details
    assert details["data"]["eval"]["source"].startswith("held out")
    # the ratio the rule judged: the winner's, timed again beside float alone when several were timed
    judged = ratios[details["chosen"]] if details["shipped"] == "int8" else ratios[_refused(details["reason"])]
    if details["shipped"] == "int8":
        assert judged <= 0.95
    else:
        assert judged > 0.95 and "--force-int8" in details["reason"]


def _refused(reason: str) -> str:
    """The candidate a speed refusal names: "its fastest faithful int8 candidate (NAME; ...) measured ..."."""
    import re

    return re.search(r"int8 candidate \(([^;)]+)", reason).group(1)


def test_the_speed_rule_is_a_setting_and_its_refusal_states_rule_and_numbers(cli, tmp_path):
    """--min-speedup 0.99 refuses whatever this CPU measures (int8 is never 100x faster), and the reason states
    the measured ratio, the rule and how to ship it anyway; the report records the setting."""
    result = cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "--min-speedup", "0.99",
                 "--no-speed-fallback", "-o", tmp_path / "strict", "--json")
    assert result.code == 0, result.stderr
    stage = _quantize_stage(json.loads(result.stdout))
    details = stage["details"]
    assert details["shipped"] == "float" and stage["options"]["min_speedup"] == 0.99
    refused = next(c for c in details["candidates"] if c["name"] == _refused(details["reason"]))
    assert f"measured {refused['latency_ratio']:.3f}x of float, " in details["reason"]
    assert "edgeopt ships int8 when it is at least 99% faster on this machine (--min-speedup 0.99)" \
        in details["reason"]
    assert details["reason"].endswith("--force-int8 ships it")
    shown = cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "--min-speedup", "0.99",
                "--no-speed-fallback", "-o", tmp_path / "shown")
    assert "shipped the float model: its fastest faithful int8 candidate" in shown.stdout.replace("\n", " ")
    refused = cli("convert", DIGITS / "digits_cnn.onnx", "--min-speedup", "1.5", "-o", tmp_path / "bad")
    assert refused.code == 2 and "--min-speedup" in refused.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("ratio, expected", [
    (0.954, "measured 0.954x of float, 4.6% faster on this machine; edgeopt ships int8 when it is at least 5% "
            "faster on this machine (--min-speedup 0.05); --min-speedup 0 or --force-int8 ships it"),
    (1.08, "measured 1.080x of float, 8.0% slower on this machine; edgeopt ships int8 when it is at least 5% "
           "faster on this machine (--min-speedup 0.05); --force-int8 ships it"),
])
def test_speed_refusal_words_agree_with_the_numbers(ratio, expected):
    from edgeopt.stages.common.speed_rule import fast_enough, speed_refusal

    assert not fast_enough(ratio, 0.05) and speed_refusal(ratio, 0.05, "on this machine") == expected
    assert fast_enough(0.95, 0.05) and fast_enough(1.0, 0.0) and not fast_enough(1.001, 0.0)


def test_detector_scores_survive_by_keeping_the_concat_float(cli, tmp_path):
    model = detector_model(tmp_path / "detector.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    # --no-speed-fallback: the node counts below are about fidelity, not about what is faster here.
    result = cli("convert", model, "--calib", calib, "--quantize", "static", "--no-speed-fallback",
                 "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    details = _quantize_stage(json.loads(result.stdout))["details"]
    chosen = next(c for c in details["candidates"] if c["name"] == details["chosen"])
    assert "concat" in chosen["float_nodes"] and not chosen["speed_fallback"]
    steps = chosen["mixed_precision"]
    assert steps and steps[-1]["meets_floor"] and not any(s["meets_floor"] for s in steps[:-1])
    assert chosen["quantized_nodes"] == 3
    # On fresh data the scores columns of the int8 model still track the float model.
    x = np.random.default_rng(7).standard_normal((256, 16)).astype(np.float32)
    (reference,) = _run(model, {"x": x})
    (got,) = _run(tmp_path / "out" / "model.onnx", {"x": x})
    for column in range(4, 7):
        assert compare_outputs("score", reference[:, column:column + 1], got[:, column:column + 1]).cosine_min > 0.95
    assert compare_outputs("detections", reference, got).floor_cosine >= 0.99


def test_weights_in_if_branches_get_quantized(cli, tmp_path):
    rng = np.random.default_rng(3)

    def branch(name: str) -> onnx.GraphProto:
        w = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), f"{name}_w")
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_wc"], value=w),
             helper.make_node("MatMul", ["h", f"{name}_wc"], [f"{name}_y"], name=f"{name}_matmul")],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["n", 32])])

    w0 = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w0")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w0c"], value=w0),
         helper.make_node("MatMul", ["x", "w0c"], ["h"], name="stem"),
         helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))],
        "if_weights", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    source = tmp_path / "if.onnx"
    onnx.save(model, str(source))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((40, 32)).astype(np.float32))
    # --no-simplify: onnxslim would already fold the Constant nodes; here the quantizer's own lifting must.
    result = cli("convert", source, "--calib", calib, "--quantize", "static", "--no-simplify", "--no-speed-fallback",
                 "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    details = _quantize_stage(report)["details"]
    chosen = next(c for c in details["candidates"] if c["name"] == details["chosen"])
    assert chosen["quantized_nodes"] == chosen["quantizable_nodes"] == 3
    assert details["prepare"]["lifted_constants"]["total_constants"] == 3
    assert report["final"]["size_bytes"] < 0.5 * source.stat().st_size


def test_dynamic_needs_no_calibration(cli, tmp_path):
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        initializer=[numpy_helper.from_array(rng.standard_normal((128, 256)).astype(np.float32), "w1"),
                     numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    source = tmp_path / "mlp.onnx"
    onnx.save(model, str(source))
    result = cli("convert", source, "--quantize", "dynamic", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    details = _quantize_stage(json.loads(result.stdout))["details"]
    assert details["chosen"].startswith("dynamic") and details["shipped"] == "int8"
    ops = _ops(tmp_path / "out" / "model.onnx")
    assert ops.get("DynamicQuantizeLinear", 0) >= 1 and ops.get("MatMulInteger", 0) == 2


def test_weights_only_shrinks_the_file(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "--quantize", "weights-only", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    details = _quantize_stage(json.loads(result.stdout))["details"]
    assert details["shipped"] == "int8" and details["chosen"].startswith("weights-only")
    assert _ops(tmp_path / "out" / "model.onnx")["DequantizeLinear"] == 2


def test_random_calibration_warns_loudly(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "--allow-random-calibration", "--force-int8", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("RANDOM CALIBRATION" in w for w in report["warnings"])
    assert "RANDOM CALIBRATION" in result.stderr
    assert _quantize_stage(report)["details"]["data"]["calibration"]["random"] is True


def test_static_without_calibration_is_refused(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "--quantize", "static", "-o", tmp_path / "out")
    assert result.code == 2 and "needs calibration data" in result.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()


def _bad(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.npz"
    rng = np.random.default_rng(0)
    good = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    if kind == "wrong_key":
        np.savez(path, image=good)
    elif kind == "wrong_shape":
        np.savez(path, x=rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    elif kind == "wrong_dtype":
        np.savez(path, x=np.array(["a"] * 8))
    elif kind == "empty":
        np.savez(path, x=np.zeros((0, 3, 8, 8), np.float32))
    elif kind == "nan":
        good[2, 0, 0, 0] = np.nan
        np.savez(path, x=good)
    return path


@pytest.mark.parametrize("kind,fragment", [
    ("wrong_key", "x"), ("wrong_shape", "16"), ("wrong_dtype", "x"), ("empty", "no samples|empty|0 samples"),
    ("nan", "NaN"),
])
def test_bad_calibration_data_is_refused_before_anything_is_written(cli, conv_onnx, tmp_path, kind, fragment):
    import re

    out = tmp_path / "out"
    result = cli("convert", conv_onnx, "--calib", _bad(kind, tmp_path), "-o", out)
    assert result.code == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert re.search(fragment, lines[0]), lines[0]
    assert not (out / "model.onnx").exists() and not list(out.glob(".edgeopt-run-*"))


def test_bad_quantize_flag_values(cli, conv_onnx, tmp_path):
    result = cli("convert", conv_onnx, "--quantize", "int4", "-o", tmp_path / "out")
    assert result.code == 2 and "--quantize" in result.stderr
    result = cli("convert", conv_onnx, "--activation-type", "u16", "--calib", "x.npz", "-o", tmp_path / "out")
    assert result.code == 2 and "--activation-type" in result.stderr


def test_sequence_model_takes_data_of_any_length(cli, tmp_path):
    """Symbolic dims other than batch (sequence length) accept the data's size."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["emb"], name="embed"),
         helper.make_node("MatMul", ["emb", "w"], ["h"], name="proj"),
         helper.make_node("ReduceMean", ["h"], ["pooled"], axes=[1], keepdims=0, name="pool")],
        "text", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 64])],
        initializer=[numpy_helper.from_array(rng.standard_normal((100, 64)).astype(np.float32), "table"),
                     numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    source = tmp_path / "text.onnx"
    onnx.save(model, str(source))
    calib = tmp_path / "calib.npz"
    np.savez(calib, input_ids=rng.integers(0, 100, (30, 12)).astype(np.int64))
    result = cli("convert", source, "--calib", calib, "--quantize", "static", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    details = _quantize_stage(json.loads(result.stdout))["details"]
    assert details["shipped"] == "int8"
    assert details["data"]["calibration"]["count"] == 24 and details["data"]["eval"]["count"] == 6


def test_one_hot_labels_are_refused(cli, conv_onnx, tmp_path):
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((12, 3, 8, 8)).astype(np.float32),
             labels=np.eye(5)[np.arange(12) % 5])
    result = cli("convert", conv_onnx, "--calib", data, "-o", tmp_path / "out")
    assert result.code == 2 and "one-hot" in result.stderr


def test_nothing_to_quantize_is_bad_input_not_a_verification_failure(cli, tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])],
                              "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    source = tmp_path / "plain.onnx"
    onnx.save(model, str(source))
    result = cli("convert", source, "--quantize", "dynamic", "-o", tmp_path / "out")
    assert result.code == 2 and "nothing to quantize" in result.stderr


def test_an_already_quantized_model_is_kept_as_it_came(cli, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(tmp_path / "float.onnx"))
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "int8.onnx"))  # a published int8 model
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32))
    again = cli("convert", tmp_path / "int8.onnx", "--calib", calib, "-o", tmp_path / "again", "--json")
    assert again.code == 0, again.stderr
    details = _quantize_stage(json.loads(again.stdout))["details"]
    assert details["shipped"] == "float" and "already quantized" in details["reason"] and not details["candidates"]
    refused = cli("convert", tmp_path / "int8.onnx", "--calib", calib, "--quantize", "static", "-o", tmp_path / "no")
    assert refused.code == 2 and "already quantized" in refused.stderr and "--quantize none" in refused.stderr
    assert not (tmp_path / "no").exists()
