"""edgeopt convert --ssh: the device decides int8 vs float and profiles the final model (real sshd)."""

from __future__ import annotations

import json
import sys

from conftest import REPO

from .conftest import free_port

DIGITS = REPO / "models" / "digits"


def _convert(cli, sshd, out, *extra):
    return cli("convert", DIGITS / "digits_cnn.onnx", "-o", out, "--calib", DIGITS / "calib.npz",
               "--eval", DIGITS / "eval.npz", "-t", "rpi4b", "-t", "rpi5", "--ssh", sshd.alias, "--ssh-config", sshd.config,
               "--remote-python", sys.executable, "--device-runs", "5", "--json", *extra)


def test_device_numbers_decide_and_the_final_model_is_profiled_on_it(cli, sshd, tmp_path):
    result = _convert(cli, sshd, tmp_path / "out")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    quantize = next(s for s in report["stages"] if s["name"] == "quantize")
    # rpi4b is not this machine: without --ssh no latency would be measured; with it the device's count
    assert quantize["details"]["latency_measured_on"] == sshd.alias
    timed = [c for c in quantize["details"]["candidates"] if c["status"] == "ok"]
    assert timed and all(c["latency_ratio"] > 0 and c["latency"]["runs"] >= 15 for c in timed)
    assert sshd.alias in quantize["details"]["reason"]
    # the speed fallback ranks layers by the device's own per-node profile, and times trials there
    assert quantize["details"]["speed_fallback_profiled_on"] == sshd.alias
    names = [s["name"] for s in report["stages"]]
    assert names[-2:] == ["device", "finalize"]  # the device stage comes last, before publication
    device = next(s for s in report["stages"] if s["name"] == "device")
    final = device["details"]["measurements"]["final"]
    assert final["runs"] == 5 and final["latency_ms"]["p50"] > 0
    assert report["summary"]["device"]["p50_ms"] == final["latency_ms"]["p50"]
    # the rpi4b estimate (the device's target, the first) is compared with what it measured, per op type;
    # rpi5's is not: the device is one board
    (comparison,) = device["details"]["comparisons"]
    assert comparison["target"] == "rpi4b" and comparison["device"] == sshd.alias and comparison["by_op_type"]


def test_shipped_int8_is_measured_beside_its_float_baseline(cli, sshd, tmp_path):
    result = _convert(cli, sshd, tmp_path / "out", "--force-int8")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["quantization"]["shipped"] == "int8"
    measurements = next(s for s in report["stages"] if s["name"] == "device")["details"]["measurements"]
    assert set(measurements) == {"final", "float_baseline"}
    summary = report["summary"]["device"]
    assert summary["ratio_to_float"] == summary["p50_ms"] / summary["float_p50_ms"]


def test_unreachable_device_fails_the_run_with_exit_3_and_publishes_nothing(cli, sshd, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", DIGITS / "digits_cnn.onnx", "-o", out, "--ssh", f"{sshd.user}@127.0.0.1:{free_port()}",
                 "--ssh-config", sshd.config)
    assert result.code == 3 and "refused" in result.stderr
    assert not (out / "model.onnx").exists() and not (out / "report.json").exists()


def _with_litert_torch(test):
    """Collected only where litert-torch is installed (not in the test extras or CI; see tests/test_tflite_export)."""
    import importlib.util

    return test if importlib.util.find_spec("litert_torch") is not None else None


@_with_litert_torch
def test_the_device_times_the_int8_tflite_beside_the_float_one(cli, sshd, tmp_path):
    """convert --format tflite --ssh: the fully int8 .tflite (integer inputs, fed the run's real values) and the
    float one are timed side by side on the device, and the decision names it."""
    out = tmp_path / "out"
    result = cli("convert", f"{DIGITS / 'model.py'}:build_model", "--weights", DIGITS / "digits_cnn.pt",
                 "--input-shape", "1x1x8x8", "--format", "tflite", "-o", out, "--calib", DIGITS / "calib.npz",
                 "--eval", DIGITS / "eval.npz", "-t", "rpi4b", "--ssh", sshd.alias, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--device-runs", "5", "--json")
    assert result.code == 0, result.stderr
    int8 = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "tflite")["details"]["int8"]
    assert int8["timed_on"] == sshd.alias and sshd.alias in int8["reason"]
    assert int8["float_ms"] > 0 and int8["int8_ms"] > 0 and int8["latency_ratio"] > 0
    assert (int8["shipped"] == "int8") == (int8["latency_ratio"] <= 0.95)


def test_thin_convolutions_are_timed_on_the_device_for_its_target(cli, sshd, tmp_path):
    """rpi4b is not this machine: the widen stage times each thin Conv on the --ssh device instead."""
    import onnx

    from tests.test_conv_widening import _thin_model_file

    source = _thin_model_file(tmp_path / "thin.onnx")
    result = cli("convert", source, "-o", tmp_path / "out", "-t", "rpi4b", "--ssh", sshd.alias, "--ssh-config",
                 sshd.config, "--remote-python", sys.executable, "--device-runs", "3", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    widen = next(s for s in report["stages"] if s["name"] == "widen")
    assert widen["details"]["measured_on"] == sshd.alias
    [timed] = widen["details"]["convs"]
    assert timed["original_ms"] > 0 and timed["ratio"] > 0
    conv = next(n for n in onnx.load(tmp_path / "out" / "model.onnx").graph.node if n.op_type == "Conv")
    assert ("_wide" in conv.name) == (timed["factor"] is not None)
