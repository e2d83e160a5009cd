"""The SSH feature set against an emulated Raspberry Pi 4 (issue 17): an aarch64 userland under qemu user-mode
emulation with its own onnxruntime build and int8 kernels, and a Pi 4's /proc/cpuinfo (tools/emulated_board.py,
the `arm_board` fixture). Timings under emulation mean nothing: nothing here asserts on them, only on the path
and on numbers that do not depend on speed."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

DIGITS = REPO / "models" / "digits"
pytestmark = pytest.mark.timeout(1500)  # the first use builds the board (minutes); runs are slow under emulation


def ssh_args(board) -> list:
    return ["--ssh-config", board.config, "--remote-python", board.python]


def test_profile_sees_an_arm_board_and_compares_its_outputs_with_this_machine(cli, arm_board):
    result = cli("profile", DIGITS / "digits_cnn.onnx", "-t", "rpi4b", "--ssh", arm_board.alias, *ssh_args(arm_board),
                 "--runs", "3", "--inputs", DIGITS / "eval.npz", "--input-samples", "4", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"][arm_board.alias]
    device = measurement["device"]
    assert device["machine"] == "aarch64" and device["cpu_cores"] == ["Cortex-A72"]
    assert device["board"].startswith("Raspberry Pi 4") and "asimddp" not in device["cpu_features"]
    assert measurement["runtime"]["name"] == "onnxruntime" and measurement["runtime"]["version"] == "1.32.0"
    # the board's own kernels ran the model on the same inputs: float outputs agree with x86's to rounding
    fidelity = report["device_fidelity"][arm_board.alias]
    (output,) = fidelity["outputs"]
    assert fidelity["samples"] == 4 and output["cosine_mean"] > 0.9999 and output["top1_agreement"] == 1.0
    assert not any("differ" in w for w in report["warnings"])
    # the rpi4b estimate is compared with the board's measurement per op type
    (comparison,) = report["comparisons"]
    assert comparison["device"] == arm_board.alias and comparison["target"] == "rpi4b"
    text = cli("profile", DIGITS / "digits_cnn.onnx", "--ssh", arm_board.alias, *ssh_args(arm_board), "--runs", "2")
    assert text.code == 0 and "Cortex-A72" in text.stdout and "aarch64" not in text.stderr


def test_convert_takes_the_boards_arm_recipe_and_measures_the_candidates_there(cli, arm_board, tmp_path):
    # rpi5's profile says Cortex-A76 with dot-product instructions; the board that measures has none
    result = cli("convert", DIGITS / "digits_cnn.onnx", "-o", tmp_path / "out", "--calib", DIGITS / "calib.npz",
                 "--eval", DIGITS / "eval.npz", "-t", "rpi5", "--ssh", arm_board.alias, *ssh_args(arm_board),
                 "--quantize", "static", "--metric", "logits=accuracy@0.9", "--device-runs", "3",
                 "--no-speed-fallback", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    quantize = next(s for s in report["stages"] if s["name"] == "quantize")
    assert any(f"int8 recipe for {arm_board.alias}'s CPU (aarch64, arm)" in w and "rpi5's (aarch64, arm-dot)" in w
               for w in quantize["warnings"])
    first = quantize["details"]["candidates"][0]  # the ISA's own recipe comes first
    assert first["recipe"]["activation_type"] == "s8" and "no dot-product extension" in first["reason"]
    assert quantize["details"]["latency_measured_on"] == arm_board.alias
    timed = [c for c in quantize["details"]["candidates"] if c["status"] == "ok"]
    assert timed and all(c["latency_ratio"] > 0 for c in timed)
    device = next(s for s in report["stages"] if s["name"] == "device")
    assert device["details"]["measurements"]["final"]["runs"] == 3
    assert report["summary"]["device"]["p50_ms"] > 0


def test_calibrating_rpi4b_on_the_board_measures_an_arm_runtime(cli, arm_board, tmp_path):
    folder = tmp_path / "targets"
    result = cli("targets", "calibrate", "rpi4b", "--ssh", arm_board.alias, *ssh_args(arm_board),
                 "--save-as", "emulated-pi", "--output-dir", folder, "--threads", "1", "--seconds", "0.02", "--json")
    assert result.code == 0, result.stderr
    written = tomllib.loads((folder / "emulated-pi.toml").read_text())
    assert written["arch"] == "aarch64" and any(f"--ssh {arm_board.alias}" in s for s in written["sources"])
    assert written["peak_ops_per_s"]["fp32"] > 0 and written["memory_bandwidth_bytes_per_s"] > 0
    memory = written["runtime_memory"]
    # aarch64 onnxruntime has no NCHWc layout: loading holds no re-laid-out copy of a convolution weight
    # (x86: 2.7x the file's)
    assert 0.9 <= memory["load_weight_copies"]["conv"] < 2
    assert memory["weight_copies"]["conv"] >= 1 and memory["arena_factor"] >= 1
    assert {"conv.depthwise", "conv.1x1"} <= set(written["efficiency"])
    assert written["call_overhead_us"] > 0  # the board's own fixed cost of a call (emulated: slow, but measured)


def test_a_fleet_mixes_the_arm_board_with_the_loopback_x86_device(cli, arm_board, sshd, tmp_path):
    hosts = tmp_path / "fleet.toml"
    hosts.write_text(f'[[device]]\nname = "pi"\nssh = "{arm_board.alias}"\ntarget = "rpi4b"\n\n'
                     f'[[device]]\nname = "x86"\nssh = "{sshd.alias}"\npython = "{sys.executable}"\n')
    result = cli("profile", DIGITS / "digits_cnn.onnx", "-t", "rpi4b", "--hosts", hosts, "--ssh-config",
                 arm_board.config, "--remote-python", arm_board.python, "--runs", "2", "--max-parallel", "2",
                 "--inputs", DIGITS / "eval.npz", "--input-samples", "2", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    machines = {name: runs[0]["device"]["machine"] for name, runs in report["measurements"].items()}
    assert machines == {"pi": "aarch64", "x86": "x86_64"}
    (comparison,) = report["comparisons"]
    assert comparison["device"] == "pi" and comparison["target"] == "rpi4b"
    # each device's outputs were compared with this machine's
    assert set(report["device_fidelity"]) == {"pi", "x86"}


def test_the_board_tool_for_users_says_what_is_wrong_in_one_line(arm_board, tmp_path):
    import subprocess

    tool = REPO / "tools" / "emulated_board.py"
    done = subprocess.run([sys.executable, str(tool), "start", "--authorized-key", str(tmp_path / "none.pub")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no such public key" in done.stderr
    path = subprocess.run([sys.executable, str(tool), "path"], capture_output=True, text=True, timeout=60)
    assert path.returncode == 0 and (Path(path.stdout.strip()) / "edgeopt-board.json").is_file()


def test_an_int8_lstm_runs_on_the_arm_board_as_on_this_machine(cli, arm_board, tmp_path):
    """DynamicQuantizeLSTM (a static recipe's LSTM, quantize/recurrent.py) loads in the board's onnxruntime and
    its outputs agree with this machine's on the same inputs (the ARM recipe: s8 activations, 8-bit weights)."""
    import numpy as np
    import onnx

    from edgeopt.stages.quantize.quantizer import quantize
    from edgeopt.stages.quantize.recipes import Recipe
    from tests.quantize.models import crnn_model, strip_feeds

    feeds = strip_feeds(12)
    model = quantize(crnn_model(), Recipe(mode="static", activation_type="s8"), feeds[:8])
    assert "DynamicQuantizeLSTM" in {n.op_type for n in model.graph.node}
    onnx.save(model, str(tmp_path / "crnn_int8.onnx"))
    np.savez(tmp_path / "strips.npz", x=np.concatenate([f["x"] for f in feeds[8:]]))
    result = cli("profile", tmp_path / "crnn_int8.onnx", "--ssh", arm_board.alias, *ssh_args(arm_board),
                 "--runs", "2", "--inputs", tmp_path / "strips.npz", "--input-samples", "4", "--json")
    assert result.code == 0, result.stderr
    fidelity = json.loads(result.stdout)["device_fidelity"][arm_board.alias]
    (output,) = fidelity["outputs"]
    assert fidelity["samples"] == 4 and output["cosine_mean"] > 0.99


def test_int8_hardswish_runs_on_the_boards_int8_kernels_as_on_this_machine(cli, arm_board, tmp_path):
    """The ARM recipe (s8 activations) with HardSwish/HardSigmoid rewritten for int8 kernels
    (quantize/hard_activations.py): the board's onnxruntime fuses them into QLinearAdd/QLinearMul (x86's
    does so for u8 activations only) and its outputs agree with this machine's."""
    import numpy as np
    import onnx

    from edgeopt.stages.quantize.quantizer import quantize
    from edgeopt.stages.quantize.recipes import Recipe
    from tests.quantize.models import hardswish_cnn_model, image_feeds

    feeds = image_feeds(12)
    model = quantize(hardswish_cnn_model(), Recipe(mode="static", activation_type="s8"), feeds[:8])
    assert not {"HardSwish", "HardSigmoid"} & {n.op_type for n in model.graph.node}
    onnx.save(model, str(tmp_path / "hardswish_int8.onnx"))
    np.savez(tmp_path / "images.npz", x=np.concatenate([f["x"] for f in feeds[8:]]))
    result = cli("profile", tmp_path / "hardswish_int8.onnx", "--ssh", arm_board.alias, *ssh_args(arm_board),
                 "--runs", "2", "--inputs", tmp_path / "images.npz", "--input-samples", "4", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"][arm_board.alias]
    kernels = {row["op_type"] for row in measurement["per_op"]}
    assert {"QLinearAdd", "QLinearMul"} <= kernels and not {"HardSigmoid", "HardSwish"} & kernels, kernels
    (output,) = report["device_fidelity"][arm_board.alias]["outputs"]
    assert output["cosine_mean"] > 0.999
