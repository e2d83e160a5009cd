"""edgeopt profile: estimates per target, measurement here, and bad input."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

from conftest import REPO, conv_classifier

DIGITS = REPO / "models" / "digits" / "digits_cnn.onnx"


def test_estimates_for_cpu_and_accelerator_targets(cli):
    result = cli("profile", DIGITS, "-t", "rpi4b", "-t", "coral-edgetpu", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "profile" and report["schema_version"] == 1
    rpi = report["estimates"]["rpi4b"]
    assert rpi["macs_total"] == 599680 and rpi["latency_ms"] > 0 and rpi["fits_all"] is True
    assert rpi["input_shapes"] == {"image": [1, 1, 8, 8]}
    coral = report["estimates"]["coral-edgetpu"]
    assert coral["full_int8_required"] is True and coral["full_int8"] is False  # a float model cannot run there
    assert report["model"]["sha256"]


def test_measure_on_host_with_calibrated_target(cli, tmp_path):
    calibrated = tmp_path / "targets"
    assert cli("targets", "calibrate", "host", "--output-dir", calibrated, "--threads", "1", "--seconds", "0.05").code == 0
    result = cli("profile", DIGITS, "--measure", "--runs", "10", "--threads", "1", "--targets-dir", calibrated,
                 "-o", tmp_path / "profile.json", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"]["host"]
    assert measurement["threads"] == 1 and measurement["runs"] == 10
    assert 0 < measurement["latency_ms"]["p50"] <= measurement["latency_ms"]["p99"]
    (comparison,) = report["comparisons"]
    assert comparison["total"]["ratio"] > 0 and "Conv" in comparison["by_op_type"]
    assert json.loads((tmp_path / "profile.json").read_text())["comparisons"] == report["comparisons"]


def test_unknown_target_lists_known_ones(cli):
    result = cli("profile", DIGITS, "-t", "rpi9")
    assert result.code == 2 and "unknown target 'rpi9'" in result.stderr and "rpi5" in result.stderr


def test_malformed_user_target_names_file_and_field(cli, tmp_path):
    (tmp_path / "board.toml").write_text('schema_version = 1\nname = "board"\ndisplay_name = "b"\nkind = "cpu"\n'
                                         'arch = "aarch64"\ncores = "four"\n')
    result = cli("profile", DIGITS, "-t", "board", "--targets-dir", tmp_path)
    assert result.code == 2 and "board.toml" in result.stderr and "cores" in result.stderr


def test_dynamic_dims_need_values(cli, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    result = cli("profile", path, "-t", "rpi5")
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "input 'x' dim 'seq' (axis 1 of batchxseqx16)" in result.stderr and "--dim seq=SIZE" in result.stderr
    ok = cli("profile", path, "-t", "rpi5", "--input-shape", "x=1x128x16", "--json")
    assert ok.code == 0 and json.loads(ok.stdout)["estimates"]["rpi5"]["input_shapes"] == {"x": [1, 128, 16]}
    by_dim = json.loads(cli("profile", path, "-t", "rpi5", "--dim", "seq=128", "--json").stdout)
    assert by_dim["estimates"]["rpi5"]["input_shapes"] == {"x": [1, 128, 16]}
    assert by_dim["resolved_inputs"]["inputs"][0]["sources"] == ["deployment batch", "--dim seq", "model"]


def test_unknown_ops_are_counted_not_fatal(cli, tmp_path):
    model = conv_classifier()
    model.graph.node.append(helper.make_node("MysteryOp", ["logits"], ["extra"], domain="com.example"))
    model.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, None))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "mystery.onnx"
    path.write_bytes(model.SerializeToString())
    result = cli("profile", path, "-t", "rpi5", "--json")
    assert result.code == 0, result.stderr
    estimate = json.loads(result.stdout)["estimates"]["rpi5"]
    assert estimate["unknown_node_count"] == 1 and estimate["latency_ms"] > 0


def test_human_output(cli):
    result = cli("profile", DIGITS, "-t", "rpi5")
    assert result.code == 0 and "rpi5: latency" in result.stdout and "Heaviest nodes" in result.stdout


def test_accelerator_runs_only_its_declared_dtypes():
    from edgeopt.analysis.profile import static_profile
    from edgeopt.targets import Accelerator, PeakThroughput, TargetProfile

    npu = TargetProfile(
        name="npu", display_name="npu", kind="npu", arch="aarch64",
        peak_ops_per_s=PeakThroughput(fp32=1e10), memory_bandwidth_bytes_per_s=1e9,
        accelerator=Accelerator(name="toy", runtime="other", delegate="toy", dtypes=("int8",),
                                supported_ops={"fp32": ("Conv", "Relu", "Gemm")}))
    profile = static_profile(conv_classifier(), npu)
    assert profile.accelerator_node_count == 0  # fp32 ops listed, but the NPU declares int8 only


def test_an_if_on_a_filled_input_is_priced_by_the_branch_it_takes(cli, tmp_path):
    """silero-vad's shape: the network sits in the branches of an If on its int64 sample-rate input; the
    estimate prices the branch the --fill value selects (before: the If alone, a few microseconds)."""
    from analysis.test_branches import NARROW, WIDE, switch_model

    path = tmp_path / "switch.onnx"
    onnx.save(switch_model("sr"), path)
    for rate, width in ((16000, WIDE), (8000, NARROW)):
        result = cli("profile", path, "-t", "rpi4b", "--dim", "rows=8", "--fill", f"sr={rate}", "--json")
        assert result.code == 0, result.stderr
        estimate = json.loads(result.stdout)["estimates"]["rpi4b"]
        assert estimate["macs_total"] == 8 * 64 * width
        assert any("If 'If_" in note for note in estimate["assumptions"])


def test_convert_prices_an_if_by_the_branch_its_fill_selects(cli, tmp_path):
    from analysis.test_branches import NARROW, switch_model

    path = tmp_path / "switch.onnx"
    onnx.save(switch_model("sr"), path)
    result = cli("convert", path, "--dim", "rows=8", "--fill", "sr=8000", "-t", "rpi4b", "-o", tmp_path / "out",
                 "--json")
    assert result.code == 0, result.stderr
    profile = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "profile")
    assert profile["details"]["rpi4b"]["macs_total"] == 8 * 64 * NARROW
