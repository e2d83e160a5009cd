"""Profiling over SSH against a real sshd on 127.0.0.1 (see conftest.py); the device is this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import conv_classifier
from edgeopt.errors import EXIT_BAD_INPUT, EXIT_REMOTE, InputError, RemoteError
from edgeopt.remote import SshClient, measure_over_ssh, parse_host, profile_over_ssh, remote_command
from edgeopt.remote.ssh import SshTarget, sh_command

from .conftest import free_port


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "device cache"


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "models" / "conv.onnx"
    path.parent.mkdir()
    onnx.save(conv_classifier(batch=1), str(path))
    return path


def options(sshd, cache, **extra):
    return {"config_file": sshd.config, "python": sys.executable, "cache_dir": str(cache), **extra}


def leftover_runners(marker: str) -> str:
    done = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if "pgrep" not in line)


def run_dirs(cache: Path) -> list[Path]:
    return sorted((cache / "tmp").iterdir()) if (cache / "tmp").exists() else []


# -- pure helpers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("pi", SshTarget("pi", None)),
    ("pi@raspberrypi.local", SshTarget("pi@raspberrypi.local", None)),
    ("pi@10.0.0.7:2222", SshTarget("pi@10.0.0.7", 2222)),
    ("board:22", SshTarget("board", 22)),
    ("ssh://me@host:2200", SshTarget("me@host", 2200)),
    ("root@[fe80::1]:2022", SshTarget("root@fe80::1", 2022)),
    ("fe80::1", SshTarget("fe80::1", None)),
])
def test_parse_host(text, expected):
    assert parse_host(text) == expected


@pytest.mark.parametrize("bad", ["", "-oProxyCommand=touch /tmp/x", "host:99999", "host:abc", "a b", "user@"])
def test_parse_host_rejects(bad):
    with pytest.raises(InputError) as info:
        parse_host(bad)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_ssh_argv_is_a_list_with_options_and_port():
    client = SshClient("me@host:2222", config_file="/tmp/cfg", known_hosts_file="/tmp/kh", identity_file="/tmp/id")
    argv = client.ssh_argv(remote_command(["echo", "a b"]))
    assert argv[0] == "ssh" and argv[-3:] == ["--", "me@host", "echo 'a b'"]
    joined = " ".join(argv)
    for piece in ("-F /tmp/cfg", "-i /tmp/id", "-p 2222", "BatchMode=yes", "StrictHostKeyChecking=yes",
                  "UserKnownHostsFile=/tmp/kh", "ConnectTimeout=", "ServerAliveInterval=", "ServerAliveCountMax="):
        assert piece in joined
    assert "StrictHostKeyChecking=accept-new" in SshClient("h", accept_new_host_key=True).ssh_argv("true")


def _control_path(client: SshClient) -> str | None:
    argv = client.ssh_argv("true")
    return next((a.split("=", 1)[1] for a in argv if a.startswith("ControlPath=")), None)


def test_connection_sharing_is_keyed_by_every_option_and_can_be_off(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    strict = SshClient("me@host:2222", known_hosts_file="/tmp/kh")
    path = _control_path(strict)
    assert path is not None and path.startswith(f"{tmp_path}/edgeopt-ssh-{os.getuid()}/") and path.endswith("-%C")
    assert "ControlMaster=auto" in strict.ssh_argv("true") and "ControlPersist=30" in strict.ssh_argv("true")
    assert (tmp_path / f"edgeopt-ssh-{os.getuid()}").stat().st_mode & 0o777 == 0o700
    # another host-key policy or known_hosts never shares a connection checked under this one
    assert _control_path(SshClient("me@host:2222", known_hosts_file="/tmp/other")) != path
    assert _control_path(SshClient("me@host:2222", known_hosts_file="/tmp/kh", accept_new_host_key=True)) != path
    assert _control_path(SshClient("me@host:2222", known_hosts_file="/tmp/kh")) == path
    assert _control_path(SshClient("me@host:2222", multiplex=False)) is None
    # a socket folder others can enter is not used at all
    (tmp_path / f"edgeopt-ssh-{os.getuid()}").chmod(0o777)
    assert _control_path(SshClient("me@host:2222")) is None


def test_remote_command_quotes_everything():
    assert remote_command(["cat", "my model's \"v2\".onnx", "$(reboot)"]) == \
        "cat 'my model'\"'\"'s \"v2\".onnx' '$(reboot)'"


# -- against the real sshd -------------------------------------------------------------------------

def test_run_and_upload_with_awkward_names(sshd, tmp_path):
    client = SshClient(sshd.alias, config_file=sshd.config)
    weird = tmp_path / "dir with space" / "it's \"odd\" $(touch pwned);.bin"
    out = client.check(remote_command(["printf", "%s|", "a b", "it's", '"q"', "$HOME", "; echo no"]), timeout_s=30)
    assert out.text == "a b|it's|\"q\"|$HOME|; echo no|"
    client.check(remote_command(["mkdir", "-p", str(weird.parent)]), timeout_s=30)
    payload = os.urandom(300_000)
    client.upload(payload, str(weird), timeout_s=60)
    assert weird.read_bytes() == payload
    assert not list(weird.parent.glob("*.part.*")) and not (tmp_path / "dir with space" / "pwned").exists()
    assert client.run(sh_command('exit "$1"', "7"), timeout_s=30).returncode == 7


def test_calls_share_one_connection(sshd):
    client = SshClient(sshd.alias, config_file=sshd.config)
    client.connect_check()
    argv = client.ssh_argv("true")
    check = subprocess.run([argv[0], *argv[1:-3], "-O", "check", "--", sshd.alias], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0 and "Master running" in check.stderr
    for _ in range(3):  # later calls ride on it
        assert client.check(remote_command(["echo", "ok"]), timeout_s=30).text.strip() == "ok"


def test_alias_and_user_at_host_port_both_work(sshd):
    client = SshClient(f"{sshd.user}@127.0.0.1:{sshd.port}", identity_file=sshd.identity,
                       known_hosts_file=sshd.known_hosts, extra_options=["IdentitiesOnly=yes",
                                                                         "GlobalKnownHostsFile=/dev/null"],
                       config_file=os.devnull)
    client.connect_check()
    SshClient(sshd.alias, config_file=sshd.config).connect_check()


def test_measure_over_ssh_then_cache_hit(sshd, model, cache):
    first = profile_over_ssh(sshd.alias, model, runs=5, warmup=1, **options(sshd, cache))
    m = first.measurement
    assert 0 < m.latency_ms.min <= m.latency_ms.p50 <= m.latency_ms.max
    assert m.runs == 5 and m.runtime["name"] == "onnxruntime" and m.load_ms > 0
    assert m.memory.peak_rss_bytes > 0 and m.device["cpu_count"] >= 1
    assert m.per_op and m.model == "conv.onnx"
    assert first.uploaded_bytes == model.stat().st_size and not first.model_cached
    assert (cache / "models" / f"{first.model_sha256}.onnx").read_bytes() == model.read_bytes()

    second = profile_over_ssh(sshd.alias, model, runs=3, warmup=0, profile_ops=False, **options(sshd, cache))
    assert second.uploaded_bytes == 0 and second.model_cached
    assert second.measurement.runs == 3 and second.measurement.per_op is None
    assert run_dirs(cache) == []  # no temp dirs left behind
    assert not list((cache / "models").glob(".edgeopt-ort-profile*"))


def test_paths_with_spaces_and_quotes_and_inputs(sshd, tmp_path):
    folder = tmp_path / "my models $HOME"
    folder.mkdir()
    model = folder / "my model's \"v2\".onnx"
    onnx.save(conv_classifier(batch=1), str(model))
    inputs = folder / "in puts 'x'.npz"
    np.savez(inputs, x=np.ones((1, 3, 8, 8), np.float32))
    cache = tmp_path / "cache 'dir' \"q\""
    run = profile_over_ssh(sshd.alias, model, runs=2, warmup=0, inputs=inputs, **options(sshd, cache))
    assert run.measurement.model == model.name
    assert run.measurement.inputs == {"x": {"shape": [1, 3, 8, 8], "dtype": "float32"}}
    assert run.uploaded_bytes == model.stat().st_size + inputs.stat().st_size
    assert run_dirs(cache) == []


def test_measure_over_ssh_returns_a_measurement(sshd, model, cache):
    m = measure_over_ssh(sshd.alias, model, runs=2, warmup=0, threads=1, **options(sshd, cache))
    assert m.threads == 1 and m.latency_ms.p50 > 0


def test_unknown_host_key_is_refused_with_hint(sshd, tmp_path, model, cache):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=1, **options(sshd, cache, known_hosts_file=empty))
    text = str(info.value)
    assert info.value.exit_code == EXIT_REMOTE
    assert "not in known_hosts" in text and f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> ~/.ssh/known_hosts" in text
    assert empty.read_text() == ""  # strict: nothing was added


def test_another_alias_of_the_same_host_never_rides_on_a_trusted_connection(sshd, tmp_path, model, cache):
    """Issue 17: two aliases of one HostName, Port and User; only bench-pi's known_hosts holds the key. Profiling
    bench-pi leaves a shared connection open; profiling stranger-pi right after must still check its own trust
    settings and be refused."""
    empty = tmp_path / "stranger_known_hosts"
    empty.write_text("")
    base = sshd.config.read_text().split("\n", 1)[1]  # the Host entry's settings, without its Host line
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bench-pi\n{base}\n"
                      f"Host stranger-pi\n{base.replace(str(sshd.known_hosts), str(empty))}"
                      "    StrictHostKeyChecking yes\n")
    trusted = SshClient("bench-pi", config_file=config)
    trusted.connect_check()
    stranger = SshClient("stranger-pi", config_file=config)
    assert "userknownhostsfile " + str(empty) in stranger.effective_config().lower()
    assert _control_path(stranger) != _control_path(trusted)
    with pytest.raises(RemoteError, match="not in known_hosts"):
        stranger.connect_check()
    with pytest.raises(RemoteError, match="not in known_hosts"):
        measure_over_ssh("stranger-pi", model, runs=1, **{**options(sshd, cache), "config_file": config})
    assert empty.read_text() == ""
    trusted.connect_check()  # the trusted alias still works, on its own connection


def test_changed_host_key_is_refused(sshd, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    with pytest.raises(RemoteError) as info:
        SshClient(sshd.alias, config_file=sshd.config, known_hosts_file=wrong).connect_check()
    assert "CHANGED" in str(info.value) and "ssh-keygen -R" in str(info.value)


def test_accept_new_host_key(sshd, tmp_path, model, cache):
    fresh = tmp_path / "fresh_known_hosts"
    m = measure_over_ssh(sshd.alias, model, runs=1, warmup=0,
                         **options(sshd, cache, known_hosts_file=fresh, accept_new_host_key=True))
    assert m.runs == 1
    assert sshd.host_public_key.split()[1] in fresh.read_text()


def test_wrong_key_is_permission_denied(sshd, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    # not the alias: its config would offer the authorized key too
    client = SshClient(f"{sshd.user}@127.0.0.1:{sshd.port}", config_file=os.devnull, identity_file=stranger,
                       known_hosts_file=sshd.known_hosts, extra_options=["IdentitiesOnly=yes"])
    with pytest.raises(RemoteError) as info:
        client.connect_check()
    assert "permission denied" in str(info.value) and "authorized_keys" in str(info.value)


def test_connection_refused_fails_fast(sshd, model, cache):
    start = time.monotonic()
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(f"{sshd.user}@127.0.0.1:{free_port()}", model, runs=1, **options(sshd, cache))
    assert "refused" in str(info.value) and time.monotonic() - start < 10


def test_unresolvable_host(sshd, model, cache):
    with pytest.raises(RemoteError) as info:
        measure_over_ssh("nobody@no-such-host.invalid", model, runs=1, **options(sshd, cache))
    assert "could not be resolved" in str(info.value)


def test_local_timeout_kills_the_runner_and_removes_the_run_dir(sshd, model, cache):
    start = time.monotonic()
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=10**7, warmup=0, profile_ops=False,
                         **options(sshd, cache, run_timeout_s=4, device_timeout_s=300))
    assert "did not finish within 4 s" in str(info.value)
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert leftover_runners(str(cache)) == ""
    assert run_dirs(cache) == []


def _ancestor_sshd(pid: int) -> int:
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == "sshd":
            return pid
        pid = int(rest[1])
    raise AssertionError("no sshd ancestor")


def test_dropped_connection_is_a_remote_error_and_leaves_nothing(sshd, model, cache):
    """Kill the server side of the session mid-run (as a dropped link would): RemoteError, runner gone."""
    errors: list[BaseException] = []

    def profile():
        try:
            measure_over_ssh(sshd.alias, model, runs=10**7, warmup=0, profile_ops=False,
                             **options(sshd, cache, run_timeout_s=120, device_timeout_s=300))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=profile)
    thread.start()
    deadline = time.monotonic() + 30
    while not list(cache.glob("tmp/run.*/runner.pid")) or not list(cache.glob("tmp/run.*/runner.pid"))[0].read_text():
        assert time.monotonic() < deadline, "the runner never started"
        time.sleep(0.1)
    runner = int(list(cache.glob("tmp/run.*/runner.pid"))[0].read_text())
    time.sleep(0.5)
    os.kill(_ancestor_sshd(runner), signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RemoteError), errors
    assert "dropped" in str(errors[0])
    assert leftover_runners(str(cache)) == ""
    assert run_dirs(cache) == []


def test_device_side_timeout_stops_the_runner(sshd, model, cache):
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=10**7, warmup=0, profile_ops=False,
                         **options(sshd, cache, run_timeout_s=60, device_timeout_s=3))
    assert "device-side limit" in str(info.value)
    assert leftover_runners(str(cache)) == ""
    assert run_dirs(cache) == []


def test_killed_runner_is_reported_as_out_of_memory(sshd, model, cache, tmp_path):
    fake = tmp_path / "fake python"
    fake.write_text("#!/bin/sh\nkill -9 $$\n")
    fake.chmod(0o755)
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=1, **options(sshd, cache, python=str(fake)))
    assert "killed" in str(info.value) and "out of memory" in str(info.value)
    assert run_dirs(cache) == []


def test_runner_oom_report_is_passed_on(sshd, model, cache, tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/sh\necho \'{"error": "out of memory while loading", "kind": "oom"}\'\nexit 3\n')
    fake.chmod(0o755)
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=1, **options(sshd, cache, python=str(fake)))
    assert "out of memory" in str(info.value) and "does not fit" in str(info.value)


def test_missing_python_on_device(sshd, model, cache):
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=1, **options(sshd, cache, python="/nonexistent/python3"))
    assert "was not found" in str(info.value)
    assert run_dirs(cache) == []


def test_corrupt_model_error_from_runner(sshd, tmp_path, cache):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, bad, runs=1, **options(sshd, cache))
    assert f"measuring on {sshd.alias} failed" in str(info.value)


def test_cache_is_trimmed_least_recently_used_first(sshd, tmp_path, cache):
    paths = []
    for seed in range(3):
        path = tmp_path / f"m{seed}.onnx"
        onnx.save(conv_classifier(batch=1, seed=seed), str(path))
        paths.append(path)
    limit_mb = 2.5 * paths[0].stat().st_size / (1024 * 1024)  # room for two models
    shas = []
    for path in paths:
        run = profile_over_ssh(sshd.alias, path, runs=1, warmup=0, profile_ops=False,
                               **options(sshd, cache, cache_limit_mb=limit_mb))
        shas.append(run.model_sha256)
        time.sleep(1.1)  # distinct mtimes
    left = {p.stem for p in (cache / "models").iterdir()}
    assert left == {shas[1], shas[2]}
    # the newest model is always kept, even when it alone exceeds the limit
    run = profile_over_ssh(sshd.alias, paths[0], runs=1, warmup=0, profile_ops=False,
                           **options(sshd, cache, cache_limit_mb=0.0001))
    assert {p.stem for p in (cache / "models").iterdir()} == {run.model_sha256}


def test_device_side_timeout_without_a_timeout_binary(sshd, model, cache, monkeypatch):
    """Devices without `timeout` (minimal images) fall back to a shell watchdog."""
    import edgeopt.remote.device as device

    monkeypatch.setattr(device, "_RUN", device._RUN.replace("command -v timeout", "command -v no-such-timeout"))
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=10**7, warmup=0, profile_ops=False,
                         **options(sshd, cache, run_timeout_s=60, device_timeout_s=2))
    assert "device-side limit" in str(info.value)
    assert leftover_runners(str(cache)) == ""
    assert run_dirs(cache) == []


# -- external data, inputs and outputs, storage failures ----------------------------------------------

def test_model_with_external_data_in_a_subfolder_is_uploaded_and_cached(sshd, tmp_path, cache):
    folder = tmp_path / "big model"
    (folder / "weights").mkdir(parents=True)
    model = conv_classifier(batch=1, seed=4)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights/params.bin", size_threshold=0)
    first = profile_over_ssh(sshd.alias, folder / "model.onnx", runs=2, **options(sshd, cache))
    data_size = (folder / "weights" / "params.bin").stat().st_size
    assert first.uploaded_bytes == (folder / "model.onnx").stat().st_size + data_size
    assert first.measurement.latency_ms.p50 > 0
    cached = sorted(p.name for p in (cache / "models").iterdir())
    assert any(n.endswith(".data") for n in cached) and any(n.endswith(".onnx") for n in cached)
    second = profile_over_ssh(sshd.alias, folder / "model.onnx", runs=2, **options(sshd, cache))
    assert second.uploaded_bytes == 0 and second.model_cached
    assert run_dirs(cache) == []


def test_several_input_samples_and_emitted_outputs_match_onnxruntime_here(sshd, model, cache, tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    samples = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{f"s{i}/x": x for i, x in enumerate(samples)})
    run = profile_over_ssh(sshd.alias, model, runs=3, inputs=inputs, emit_outputs=True, **options(sshd, cache))
    assert run.measurement.input_samples == 3
    outputs = run.measurement.outputs_arrays()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert len(outputs) == 3
    for sample, device_outputs in zip(samples, outputs):
        expected = session.run(None, {"x": sample})[0]
        np.testing.assert_allclose(device_outputs[session.get_outputs()[0].name], expected, rtol=1e-5, atol=1e-6)
    # the outputs travel in the result but never into a report
    assert "outputs" not in run.measurement.model_dump()


def test_unwritable_cache_folder_is_named(sshd, model, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(sshd.alias, model, runs=1, **options(sshd, blocker / "cache"))
    assert "cannot be written" in info.value.message and "--remote-cache-dir" in info.value.hint


def test_full_disk_on_the_device_is_reported_and_leaves_no_partial_model(sshd, model, tmp_path):
    mount_point = tmp_path / "tiny disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); needs root")
    try:
        big = tmp_path / "big.onnx"
        weight = onnx.numpy_helper.from_array(np.ones((128, 128), np.float32), "w")
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 128])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 128])], initializer=[weight])
        onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(big))
        assert big.stat().st_size > 48 * 1024
        with pytest.raises(RemoteError) as info:
            measure_over_ssh(sshd.alias, big, runs=1, **options(sshd, mount_point / "cache"))
        assert "no disk space left" in info.value.message
        leftovers = [p.name for p in (mount_point / "cache" / "models").iterdir()]
        assert leftovers == []  # the truncated upload was removed, not left under a cache name
        assert run_dirs(mount_point / "cache") == []
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_throttling_state_is_read_from_vcgencmd(tmp_path, monkeypatch, model):
    from edgeopt.runtime.measure import measure_locally

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vcgencmd"
    # a Raspberry Pi's firmware answer: under-voltage now (bit 0), throttled now (bit 2), both earlier (16, 18)
    fake.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo "throttled=0x50005"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    measurement = measure_locally(model, runs=2, profile_ops=False)
    throttled = measurement.device["throttled"]
    assert throttled["raw"] == "0x50005"
    assert throttled["under_voltage"] and throttled["throttled"] and not throttled["arm_frequency_capped"]
    assert throttled["under_voltage_occurred"] and throttled["throttled_occurred"]
    assert measurement.device_after["throttled"]["raw"] == "0x50005"


def test_a_refused_login_during_profiling_is_not_called_a_storage_problem(sshd, tmp_path, model, cache):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(RemoteError) as info:
        measure_over_ssh(f"{sshd.user}@127.0.0.1:{sshd.port}", model, runs=1, python=sys.executable,
                         cache_dir=str(cache), config_file=os.devnull, identity_file=stranger,
                         known_hosts_file=sshd.known_hosts, extra_ssh_options=["IdentitiesOnly=yes"])
    assert "permission denied" in info.value.message and "cache" not in info.value.message


def test_external_data_location_with_dot_dot_is_linked_where_onnxruntime_looks(sshd, tmp_path, cache):
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    model = conv_classifier(batch=1, seed=5)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.data", size_threshold=0)
    saved = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in saved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "sub/../w.data"  # inside the folder, written the long way
    onnx.save(saved, str(folder / "model.onnx"))
    run = profile_over_ssh(sshd.alias, folder / "model.onnx", runs=2, **options(sshd, cache))
    assert run.measurement.latency_ms.p50 > 0
