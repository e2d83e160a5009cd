"""edgeopt profile --ssh through the CLI, against the real sshd of the fixture."""

from __future__ import annotations

import json
import sys

from conftest import REPO
from .conftest import free_port

DIGITS = REPO / "models" / "digits" / "digits_cnn.onnx"


def test_profile_over_ssh_and_one_failing_device(cli, sshd):
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    result = cli("profile", DIGITS, "-t", "rpi4b", "--ssh", sshd.alias, "--ssh", dead, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--runs", "5", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"][sshd.alias]
    assert measurement["runs"] == 5 and measurement["latency_ms"]["p50"] > 0
    assert measurement["ssh"]["host"] == sshd.alias
    assert any(dead in w for w in report["warnings"])  # the other device's failure is reported, not fatal
    assert "rpi4b" in report["estimates"]


def test_every_device_failing_exits_3(cli, sshd):
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    result = cli("profile", DIGITS, "--ssh", dead, "--ssh-config", sshd.config, "--runs", "2")
    assert result.code == 3 and "every device failed" in result.stderr


def test_hosts_file_fleet_in_parallel(cli, sshd, tmp_path):
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    hosts = tmp_path / "fleet.toml"
    hosts.write_text(f'[[device]]\nname = "board-a"\nssh = "{sshd.alias}"\ntarget = "host"\n\n'
                     f'[[device]]\nname = "board-b"\nssh = "{sshd.alias}"\n\n'
                     f'[[device]]\nname = "board-down"\nssh = "{dead}"\n')
    calibrated = tmp_path / "targets"
    assert cli("targets", "calibrate", "host", "--output-dir", calibrated, "--threads", "1", "--seconds", "0.05").code == 0
    result = cli("profile", DIGITS, "-t", "rpi5", "--hosts", hosts, "--ssh-config", sshd.config, "--targets-dir",
                 calibrated, "--remote-python", sys.executable, "--runs", "5", "--max-parallel", "2", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["measurements"]) == {"board-a", "board-b"}
    assert "host" in report["estimates"] and "rpi5" in report["estimates"]
    (comparison,) = report["comparisons"]
    assert comparison["device"] == "board-a" and comparison["target"] == "host"
    assert any("board-down" in w for w in report["warnings"])


def test_bad_hosts_file_names_entry_and_field(cli, tmp_path):
    hosts = tmp_path / "fleet.toml"
    hosts.write_text('[[device]]\nname = "a"\nssh = "pi@x"\nport = 22\n')
    result = cli("profile", DIGITS, "--hosts", hosts)
    assert result.code == 2 and "device #1" in result.stderr and "port" in result.stderr


def test_inputs_are_measured_on_the_device_and_its_outputs_compared(cli, sshd):
    result = cli("profile", DIGITS, "--ssh", sshd.alias, "--ssh-config", sshd.config, "--remote-python",
                 sys.executable, "--runs", "3", "--inputs", REPO / "models" / "digits" / "eval.npz",
                 "--input-samples", "5", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"]["samples_used"] == 5 and report["inputs"]["samples_available"] > 5
    (measurement,) = report["measurements"][sshd.alias]
    assert measurement["input_samples"] == 5 and measurement["inputs"]["image"]["shape"] == [1, 1, 8, 8]
    fidelity = report["device_fidelity"][sshd.alias]
    (output,) = fidelity["outputs"]
    # same model, same runtime on the same CPU: identical up to float rounding
    assert fidelity["samples"] == 5 and output["cosine_mean"] > 0.99999 and output["top1_agreement"] == 1.0
    assert not any("differ" in w for w in report["warnings"])
    # the human table names the comparison
    text = cli("profile", DIGITS, "--ssh", sshd.alias, "--ssh-config", sshd.config, "--remote-python",
               sys.executable, "--runs", "2", "--inputs", REPO / "models" / "digits" / "eval.npz")
    assert text.code == 0 and f"Outputs on {sshd.alias} vs this machine" in text.stdout


def perturbed_python(folder) -> str:
    """A device Python whose onnxruntime really returns other numbers: every float output of a session is
    scaled per element by 1 + N(0, 0.3) (seeded), as a runtime with other kernels or a bug would."""
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import numpy as np, onnxruntime as ort\n"
        "_run = ort.InferenceSession.run\n"
        "_rng = np.random.default_rng(0)\n"
        "def run(self, *args, **kwargs):\n"
        "    outputs = _run(self, *args, **kwargs)\n"
        "    return [o * (1 + 0.3 * _rng.standard_normal(o.shape)).astype(o.dtype)\n"
        "            if isinstance(o, np.ndarray) and o.dtype.kind == 'f' else o for o in outputs]\n"
        "ort.InferenceSession.run = run\n")
    wrapper = folder / "python-perturbed"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_outputs_that_differ_on_the_device_are_warned_with_the_figures(cli, sshd, tmp_path):
    result = cli("profile", DIGITS, "--ssh", sshd.alias, "--ssh-config", sshd.config, "--remote-python",
                 perturbed_python(tmp_path), "--runs", "2", "--inputs", REPO / "models" / "digits" / "eval.npz",
                 "--input-samples", "8", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    fidelity = report["device_fidelity"][sshd.alias]
    (output,) = fidelity["outputs"]
    assert fidelity["samples"] == 8 and fidelity["worst_cosine"] < 0.999
    assert output["cosine_mean"] < 0.999 and output["max_abs_error"] > 0
    (warning,) = [w for w in report["warnings"] if "differ" in w]
    assert f"outputs on {sshd.alias} differ from this machine's" in warning
    assert f"worst agreement {fidelity['worst_cosine']:.4f} (output '{output['name']}')" in warning


def test_progress_names_each_device_and_its_stages(sshd):
    from edgeopt.commands.profile import profile_model
    from edgeopt.events import Events

    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    heard: list[tuple[str | None, str]] = []
    profile_model(DIGITS, ["host"], runs=2, ssh_hosts=[sshd.alias, dead], max_parallel=2,
                  ssh_options={"config_file": sshd.config, "python": sys.executable},
                  events=Events(lambda event: heard.append((event.device, event.message))))
    stages = [m for d, m in heard if d == sshd.alias]
    assert stages[0] == "connecting" and any(m.startswith("running") for m in stages)
    assert stages[-1].startswith("done: p50")
    assert [m for d, m in heard if d == dead][-1].startswith("FAILED")


def test_inputs_that_do_not_fit_the_model_are_refused_before_connecting(cli, sshd, tmp_path):
    import numpy as np

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((4, 3, 8, 8), np.float32))
    result = cli("profile", DIGITS, "--ssh", sshd.alias, "--ssh-config", sshd.config, "--inputs", wrong)
    assert result.code == 2 and result.stderr.count("\n") == 1


def test_calibrate_a_target_on_the_device_then_compare_estimates_with_it(cli, sshd, tmp_path):
    import tomllib

    folder = tmp_path / "targets"
    result = cli("targets", "calibrate", "rpi4b", "--ssh", sshd.alias, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--save-as", "bench-board", "--output-dir", folder,
                 "--threads", "1", "--seconds", "0.05", "--json")
    assert result.code == 0, result.stderr
    calibrated = json.loads(result.stdout)
    written = tomllib.loads((folder / "bench-board.toml").read_text())
    assert written["name"] == "bench-board" and calibrated["name"] == "bench-board"
    bench = calibrated["microbenchmarks"]
    # measured on the device: positive peaks, and they replaced the published Pi 4 figures
    assert bench["threads"] == 1 and bench["matmul_fp32_ops_per_s"] > 1e8 and bench["memory_bandwidth_bytes_per_s"] > 1e8
    assert written["peak_ops_per_s"]["fp32"] == max(bench["matmul_fp32_ops_per_s"], bench["conv_fp32_ops_per_s"])
    assert any(f"--ssh {sshd.alias}" in source for source in written["sources"])
    # the op classes were timed on the device and replace edgeopt's x86 defaults; the held-out models priced
    # with them give the board's error band (issue 16: device targets fit their own efficiencies)
    fitted = written["efficiency"]
    assert {"conv.depthwise", "conv.1x1", "conv.narrow", "lstm", "conv.depthwise@int8"} <= set(fitted)
    assert 0 < fitted["conv.narrow"] < fitted["conv.1x1"] <= 1.5
    band = written["estimate_error"]
    assert band["latency"] >= 0.05 and f"--ssh {sshd.alias}" in band["source"] and "held-out" in band["source"]
    assert "Held-out check (3 models" in written["notes"]
    # the device's fixed cost of a call, measured there: a published board profile has none
    assert 0 < written["call_overhead_us"] < 5000
    # later estimates for that board use the measured peaks, and --ssh compares them per op type
    profiled = cli("profile", DIGITS, "-t", "bench-board", "--targets-dir", folder, "--ssh", sshd.alias,
                   "--ssh-config", sshd.config, "--remote-python", sys.executable, "--runs", "5", "--json")
    assert profiled.code == 0, profiled.stderr
    report = json.loads(profiled.stdout)
    (comparison,) = report["comparisons"]
    assert comparison["device"] == sshd.alias and comparison["target"] == "bench-board"
    assert report["estimates"]["bench-board"]["latency_error"] == band["latency"]
    assert "Conv" in comparison["by_op_type"] and comparison["total"]["measured_ms"] > 0


def test_calibrate_refusals(cli):
    no_ssh = cli("targets", "calibrate", "rpi4b")
    assert no_ssh.code == 2 and "--ssh HOST" in no_ssh.stderr
    npu = cli("targets", "calibrate", "hexagon-htp", "--ssh", "nowhere")
    assert npu.code == 2 and "npu target" in npu.stderr


def test_a_stream_runs_in_order_on_the_device_as_here(cli, sshd, tmp_path):
    """--state-pair: the device feeds each sample the state its own last call returned, like this machine; a
    device that did not carry it would disagree from the second sample on (an accumulator)."""
    import numpy as np

    from data.models import streaming_model

    model = streaming_model(tmp_path / "vad.onnx")
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "chunks.npz", input=rng.standard_normal((6, 1, 64)).astype(np.float32),
             sr=np.full(6, 16000, np.int64))
    args = ["profile", model, "--ssh", sshd.alias, "--ssh-config", sshd.config, "--remote-python", sys.executable,
            "--runs", "2", "--inputs", tmp_path / "chunks.npz", "--input-samples", "6", "--json"]
    report = json.loads(cli(*args, "--state-pair", "stateN=state").stdout)
    fidelity = report["device_fidelity"][sshd.alias]
    assert fidelity["samples"] == 6 and fidelity["worst_cosine"] > 0.99999
    assert report["resolved_inputs"]["state_pairs"] == {"stateN": "state"}

    # the same samples compared against a host run that carries the state, while the device does not:
    # the comparison sees it (this is what a runner that ignores --state-pairs would look like)
    from edgeopt.commands.profile import compare_device_outputs, host_reference_outputs

    samples = tmp_path / "samples.npz"
    with np.load(tmp_path / "chunks.npz") as data:
        np.savez(samples, **{f"s{i}/{k}": data[k][i] for i in range(6) for k in data},
                 **{f"s{i}/state": np.zeros((2, 1, 64), np.float32) for i in range(6)})
    carried = host_reference_outputs(model, samples, {"stateN": "state"})
    independent = host_reference_outputs(model, samples)
    compared = compare_device_outputs(carried, independent)
    assert compared.worst_cosine < 0.99


def test_a_tflite_model_over_ssh_with_its_outputs_compared(cli, sshd, tmp_path):
    """The same device runner and fleet path measure .tflite files (named by content, not suffix): the
    interpreter that ran is recorded, the device's outputs match this machine's, and a custom op the device's
    interpreter lacks is refused with the op named (exit 2)."""
    import numpy as np
    import pytest

    pytest.importorskip("ai_edge_litert.interpreter")
    sys.path.insert(0, str(REPO / "tests"))
    import tflite_builder as build

    model = build.float_cnn(tmp_path / "cnn.bin")  # a TFLite file whatever its name
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, image=np.random.default_rng(0).standard_normal((3, 1, 8, 8, 1)).astype(np.float32))
    result = cli("profile", model, "-t", "rpi4b", "--ssh", sshd.alias, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--runs", "5", "--no-xnnpack", "--inputs", inputs, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"][sshd.alias]
    assert measurement["runtime"]["name"] == "ai-edge-litert" and measurement["runtime"]["providers"] == ["cpu"]
    assert measurement["runs"] == 5 and measurement["latency_ms"]["p50"] > 0
    # per-op times on the device too, op by op, tied to the estimate's nodes
    assert measurement["per_op_method"] == "op-by-op"
    assert sorted(op["node"] for op in measurement["per_op"]) == ["conv_2d_0", "fully_connected_2", "reshape_1"]
    assert all(op["median_us"] > 0 and op["source_nodes"] == [op["node"]] for op in measurement["per_op"])
    assert report["device_fidelity"][sshd.alias]["worst_cosine"] > 0.9999
    assert report["estimates"]["rpi4b"]["macs_total"] == 8 * 8 * 4 * 9 + 2560

    custom = build.custom_op_model(tmp_path / "custom.tflite")
    refused = cli("profile", custom, "--ssh", sshd.alias, "--ssh-config", sshd.config,
                  "--remote-python", sys.executable, "--runs", "2")
    assert refused.code == 2 and "EdgeoptSecretOp" in refused.stderr, refused.stderr
