"""Measure a model on a real device over SSH with the self-contained device runner.

Layout on the device (``cache_dir``, default ``~/.cache/edgeopt``)::

    models/<sha256>.onnx      content-addressed models, uploaded only when absent
    models/<sha256>.data      their external-data files, content-addressed the same way
    tmp/run.XXXXXXXX/         one fresh directory per run (mktemp -d), always removed:
        device_runner.py        the runner, uploaded every run (a few kB)
        inputs.npz              the inputs, when given
        model/<name>            a symlink to models/<sha256>.onnx under the model's own name, and one
                                per external-data file at its location relative to the model
        runner.pid              the runner's pid, so a cleanup call can kill it

Cache bound: after every run the model files are trimmed, least recently used first
(every use ``touch``es the file), until they total at most ``cache_limit_mb`` (default
1024 MB); the model just used is never deleted. Run directories older than a day (left by
a run whose connection and cleanup both failed) are removed at the same time.

Cleanup: the run command removes its directory in an EXIT trap; the runner runs under the
device's ``timeout`` (a shell watchdog when there is none) as a backstop; and after a local
timeout, a dropped connection or any failure, a separate cleanup call kills the runner by
its pid file and removes the directory.

Round trips: prepare (mkdir, mktemp, runner upload, cache check), model upload (only on a
cache miss), inputs upload (only with inputs), run, finish (cleanup + cache trim).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from edgeopt.errors import InputError, RemoteError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.registry import sniff_format
from edgeopt.events import Events
from edgeopt.fsutil import sha256_file, temporary_folder
from edgeopt.remote.ssh import (
    DEFAULT_CONNECT_TIMEOUT_S,
    SshClient,
    SshTimeout,
    remote_command,
    sh_command,
)
from edgeopt.runtime.measure import (
    RUNNER_PATH,
    Measurement,
    MeasurementError,
    check_runs,
    parse_runner_output,
    write_op_models,
)

DEFAULT_CACHE_DIR = "~/.cache/edgeopt"
DEFAULT_CACHE_LIMIT_MB = 1024
DEFAULT_RUN_TIMEOUT_S = 600.0
DEFAULT_UPLOAD_TIMEOUT_S = 600.0
DEVICE_TIMEOUT_GRACE_S = 30.0
STALE_RUN_DIR_S = 24 * 3600

# $1 cache dir, $2 runner size, then the cache files wanted: prints the run dir, then present/absent per file.
_PREPARE = r"""
c=$1; size=$2; shift 2
mkdir -p "$c/models" "$c/tmp" || exit 1
d=$(mktemp -d "$c/tmp/run.XXXXXXXX") || exit 1
if ! cat > "$d/device_runner.py"; then rm -rf "$d"; exit 1; fi
n=$(wc -c < "$d/device_runner.py")
if [ $n -ne "$size" ]; then rm -rf "$d"; echo "runner upload truncated" >&2; exit 1; fi
printf '%s\n' "$d"
for m in "$@"; do
    if [ -f "$c/models/$m" ]; then touch "$c/models/$m" 2>/dev/null; echo present; else echo absent; fi
done
"""

# $1 run dir, $2 device-side timeout (s), $3 threads, $4 number of links L, then L (target, name) pairs
# laying out the model folder (the model and its external-data files under their own names), then the runner argv.
_RUN = r"""
d=$1; t=$2; th=$3; l=$4; shift 4
trap 'rm -rf "$d"' EXIT
trap 'exit 143' HUP INT TERM
mkdir "$d/model" || exit 1
while [ "$l" -gt 0 ]; do
    mkdir -p "$(dirname "$d/model/$2")" && ln -s "$1" "$d/model/$2" || exit 1
    shift 2; l=$((l-1))
done
OMP_NUM_THREADS=$th; export OMP_NUM_THREADS
if command -v timeout >/dev/null 2>&1; then
    timeout "$t" sh -c 'echo $$ > "$0/runner.pid"; exec "$@"' "$d" "$@"
    rc=$?
else
    sh -c 'echo $$ > "$0/runner.pid"; exec "$@"' "$d" "$@" &
    p=$!
    ( sleep "$t"; : > "$d/timed-out"; kill -TERM $p; sleep 5; kill -KILL $p ) </dev/null >/dev/null 2>&1 &
    w=$!
    wait $p
    rc=$?
    kill $w 2>/dev/null
    if [ -f "$d/timed-out" ]; then rc=124; fi
fi
exit $rc
"""

# $1 run dir (may be gone), $2 python, $3 models dir, $4 limit bytes, $5 tmp dir, then the cache files to keep.
_FINISH = r"""
d=$1
if [ -f "$d/runner.pid" ]; then
    p=$(cat "$d/runner.pid" 2>/dev/null)
    case $p in
        ''|*[!0-9]*) ;;
        *)
            if [ -r "/proc/$p/cmdline" ] && ! tr '\000' '\n' < "/proc/$p/cmdline" | grep -qF -- "$d"; then
                :  # pid reused by another process: leave it alone
            elif kill -0 "$p" 2>/dev/null; then
                kill -TERM "$p" 2>/dev/null
                i=0
                while kill -0 "$p" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
                kill -KILL "$p" 2>/dev/null
            fi;;
    esac
fi
rm -rf "$d"
py=$2; shift 2
"$py" -c "$TRIM" "$@" 2>/dev/null
exit 0
"""

_TRIM = r"""
import os, shutil, sys, time
models, limit, tmp, keep = sys.argv[1], int(sys.argv[2]), sys.argv[3], set(sys.argv[4:])
files = []
for name in os.listdir(models):
    path = os.path.join(models, name)
    try:
        st = os.stat(path)
    except OSError:
        continue
    files.append((st.st_mtime, st.st_size, name, path))
total = sum(f[1] for f in files)
for mtime, size, name, path in sorted(files):
    if total <= limit:
        break
    if name in keep:
        continue
    try:
        os.unlink(path)
        total -= size
    except OSError:
        pass
now = time.time()
for name in os.listdir(tmp):
    path = os.path.join(tmp, name)
    try:
        if name.startswith("run.") and now - os.stat(path).st_mtime > %d:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass
""" % STALE_RUN_DIR_S


@dataclass
class RemoteRun:
    """What one profile over SSH did, besides measuring."""

    measurement: Measurement
    host: str
    model_sha256: str
    uploaded_bytes: int  # model + inputs bytes sent (the runner itself is not counted)
    model_cached: bool  # the model was already on the device


def _storage_error(exc: RemoteError, host: str, cache: str) -> RemoteError:
    """Disk full / unwritable cache folder on the device, said plainly; other errors unchanged
    (connection failures and timeouts keep their own messages: "permission denied" there is a login)."""
    from edgeopt.remote.ssh import SshConnectionError

    if isinstance(exc, (SshConnectionError, SshTimeout)):
        return exc
    text = f"{exc.message} {exc.hint or ''}".lower()
    if "no space left" in text or "disk quota" in text:
        return RemoteError(f"the device {host} has no disk space left for the model cache ({cache})",
                           "free space on the device, or point --remote-cache-dir at a larger disk")
    if any(word in text for word in ("permission denied", "read-only file system", "not a directory",
                                     "cannot create directory")):
        return RemoteError(f"the model cache folder {cache!r} on {host} cannot be written ({exc.message})",
                           "fix its permissions, or pass another folder with --remote-cache-dir")
    return exc


def _cache_dir(path: str) -> str:
    """Remote paths: ``~/x`` becomes ``x`` (ssh starts in the home directory, and a quoted ``~`` would not expand)."""
    path = path.strip()
    if path in ("~", "~/"):
        return "."
    if path.startswith("~/"):
        return path[2:].rstrip("/") or "."
    if path.startswith("~"):
        raise InputError(f"remote cache dir {path!r}: ~user paths are not supported", "use ~/dir or an absolute path")
    return path.rstrip("/") or "/"


def _link_name(model_path: Path) -> str:
    name = model_path.name.replace("\0", "")
    return name if name not in ("", ".", "..") else "model.onnx"


def _model_files(model_path: Path) -> list[tuple[Path, str]]:
    """(local file, name in the device's model folder): the model and, for ONNX, its external-data files
    (their locations were checked to stay inside the model's folder by ``check_external_data``)."""
    name = _link_name(model_path)
    if sniff_format(model_path) is ModelFormat.TFLITE:  # the runner picks its runtime by the suffix
        return [(model_path, name if name.lower().endswith(".tflite") else f"{name}.tflite")]
    files = [(model_path, name)]
    import onnx

    from edgeopt.formats.onnx import check_external_data

    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_path.read_bytes())
    except Exception:  # not ONNX: the runner on the device says what its runtime makes of it
        return files
    for external in check_external_data(model, model_path):
        # kept as written: the runtime resolves "sub/../w.data" through sub/, which mkdir -p
        # then creates on the device (the link's depth comes from the normalised form)
        files.append((external.path, Path(external.location).as_posix()))
    return files


def profile_over_ssh(host: str, model_path: Path | str, *, runs: int = 50, warmup: int = 5, threads: int = 1,
                     inputs: Path | str | None = None, emit_outputs: bool = False, profile_ops: bool = True,
                     state_pairs: dict[str, str] | None = None, python: str = "python3",
                     cache_dir: str = DEFAULT_CACHE_DIR, cache_limit_mb: float = DEFAULT_CACHE_LIMIT_MB,
                     config_file: Path | str | None = None, known_hosts_file: Path | str | None = None,
                     identity_file: Path | str | None = None, accept_new_host_key: bool = False,
                     extra_ssh_options: list[str] | None = None,
                     connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                     upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
                     run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
                     device_timeout_s: float | None = None, xnnpack: bool = True,
                     events: Events | None = None) -> RemoteRun:
    """Measure ``model_path`` on ``host`` and say what was uploaded. See the module docstring for the layout.

    ``inputs``: an .npz in the runner's format (one sample keyed by input name, or several keyed
    ``s<i>/<name>``); with ``emit_outputs`` the measurement carries every sample's outputs.
    ``run_timeout_s`` bounds the run as seen from here (the local ssh is killed, then the runner
    on the device by a cleanup call); ``device_timeout_s`` (default ``run_timeout_s`` + 30 s) is
    the device-side ``timeout`` that ends the runner even if this machine vanished. ``events``
    hears what is happening ("connecting", "uploading ...", "running ...", "cleaning up").
    """
    stage = (events or Events()).note
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path}", "check the path")
    check_runs(runs)
    inputs_path = Path(inputs) if inputs is not None else None
    if inputs_path is not None and not inputs_path.is_file():
        raise InputError(f"inputs file not found: {inputs_path}", "pass an .npz file")
    files = _model_files(model_path)
    client = SshClient(host, config_file=config_file, known_hosts_file=known_hosts_file,
                       identity_file=identity_file, accept_new_host_key=accept_new_host_key,
                       connect_timeout_s=connect_timeout_s, extra_options=list(extra_ssh_options or []))
    short_timeout = connect_timeout_s + 30
    cache = _cache_dir(cache_dir)
    sha = sha256_file(model_path)
    suffix = ".tflite" if files[0][1].endswith(".tflite") else ".onnx"
    # content-addressed names: the model by its hash, external-data files by theirs
    cache_names = [f"{sha}{suffix}"] + [f"{sha256_file(local)}.data" for local, _ in files[1:]]
    runner = RUNNER_PATH.read_bytes()

    stage("connecting")
    try:
        prepared = client.check(sh_command(_PREPARE, cache, str(len(runner)), *cache_names),
                                timeout_s=short_timeout + upload_timeout_s, input_bytes=runner,
                                what="preparing the device (cache folder, runner upload)")
    except RemoteError as exc:
        raise _storage_error(exc, host, cache) from None
    lines = prepared.text.strip().splitlines()
    replies = lines[-len(cache_names):] if len(lines) > len(cache_names) else []
    if not replies or any(r not in ("present", "absent") for r in replies) or \
            "/tmp/run." not in lines[-len(cache_names) - 1]:
        raise RemoteError(f"unexpected reply from {host} while preparing: {prepared.text.strip()[:200]!r}",
                          "the device's shell printed something unexpected; check its login scripts")
    run_dir = lines[-len(cache_names) - 1]
    cached = replies[0] == "present"
    uploaded = 0
    try:
        for (local, _name), cache_name, reply in zip(files, cache_names, replies):
            if reply == "absent":
                size = local.stat().st_size
                stage(f"uploading {local.name} ({size / 1e6:.1f} MB)")
                try:
                    client.upload(local, f"{cache}/models/{cache_name}", timeout_s=upload_timeout_s)
                except RemoteError as exc:
                    raise _storage_error(exc, host, cache) from None
                uploaded += size
        argv = [python, f"{run_dir}/device_runner.py", f"{run_dir}/model/{files[0][1]}",
                "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads)]
        if inputs_path is not None:
            stage("uploading inputs")
            client.upload(inputs_path, f"{run_dir}/inputs.npz", timeout_s=upload_timeout_s)
            uploaded += inputs_path.stat().st_size
            argv += ["--inputs", f"{run_dir}/inputs.npz"]
        if emit_outputs:
            argv.append("--emit-outputs")
            if state_pairs:
                argv += ["--state-pairs", json.dumps(state_pairs)]
        if profile_ops:
            argv.append("--profile")
            with temporary_folder("edgeopt-op-models-") as folder:
                op_models = write_op_models(model_path, Path(folder))
                if op_models is not None:
                    stage("uploading the single-op models")
                    client.upload(op_models, f"{run_dir}/op_models.npz", timeout_s=upload_timeout_s)
                    uploaded += op_models.stat().st_size
                    argv += ["--op-models", f"{run_dir}/op_models.npz"]
        if not xnnpack:
            argv.append("--no-xnnpack")
        device_timeout = device_timeout_s if device_timeout_s is not None else run_timeout_s + DEVICE_TIMEOUT_GRACE_S
        links: list[str] = []
        for (_local, name), cache_name in zip(files, cache_names):
            # relative to the link's own folder: run.X/model/<name's folders>/ back up to the cache's models/
            depth = 3 + posixpath.normpath(name).count("/")
            links += ["../" * depth + f"models/{cache_name}", name]
        command = sh_command(_RUN, run_dir, str(max(1, int(round(device_timeout)))), str(threads),
                             str(len(files)), *links, *argv)
        stage(f"running {runs} runs, {threads} thread(s)")
        try:
            result = client.run(command, timeout_s=run_timeout_s, what="the runner")
        except SshTimeout:
            raise RemoteError(f"measuring {model_path.name} on {host} did not finish within {run_timeout_s:.0f} s",
                              "lower --runs, or raise the run timeout; the runner on the device was stopped") from None
        measurement = _interpret(result.returncode, result.text, result.error_text, host, python, device_timeout)
    finally:
        stage("cleaning up")
        _finish(client, run_dir, python, cache, cache_names, cache_limit_mb, short_timeout)
    return RemoteRun(measurement, host, sha, uploaded, cached)


# $1 device-side timeout (s), $2 python, $3 the runner's source, $4 its mode; a bundle arrives on stdin.
_MICROBENCH = r"""
t=$1; py=$2; src=$3; mode=$4
if command -v timeout >/dev/null 2>&1; then exec timeout "$t" "$py" -c "$src" "$mode"; fi
exec "$py" -c "$src" "$mode"
"""


def _runner_mode_over_ssh(host: str, mode: str, kind: str, *, python: str, input_bytes: bytes | None,
                          timeout_s: float, what: str, timeout_hint: str, ssh: dict) -> dict:
    """Run the device runner in ``mode`` (``--facts``, ``--microbench``) on ``host`` as ``python -c`` source
    (nothing is written to its disk) and return its JSON of ``kind``; its errors as one line each."""
    client = SshClient(host, **ssh)
    command = sh_command(_MICROBENCH, str(int(timeout_s) + 30), python, RUNNER_PATH.read_text(encoding="utf-8"),
                         mode)
    try:
        result = client.run(command, timeout_s=timeout_s, input_bytes=input_bytes, what=what)
    except SshTimeout:
        raise RemoteError(f"{what} on {host} did not finish within {timeout_s:.0f} s", timeout_hint) from None
    payload = _runner_payload(result.text) if result.returncode in (0, 3) else None
    if payload is not None and "error" in payload:
        raise RemoteError(f"{what} on {host} failed: {payload['error']}",
                          "install numpy and onnxruntime on the device" if payload.get("kind") ==
                          "runtime-missing" else "rerun with --debug")
    if payload is not None and payload.get("kind") == kind:
        return payload
    _interpret(result.returncode, "", result.error_text, host, python, timeout_s)
    raise RemoteError(f"{what} on {host} printed no result", "rerun with --debug")  # pragma: no cover


def _runner_payload(text: str) -> dict | None:
    try:
        payload = json.loads(text.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None
    return payload if isinstance(payload, dict) else None


def facts_over_ssh(host: str, *, python: str = "python3", config_file: Path | str | None = None,
                   known_hosts_file: Path | str | None = None, identity_file: Path | str | None = None,
                   accept_new_host_key: bool = False, extra_ssh_options: list[str] | None = None,
                   connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, timeout_s: float = 120.0) -> dict:
    """The device's facts (CPU, its features, board) and runtime, as the runner reports them: what the int8
    recipe depends on. Nothing is written to the device's disk."""
    ssh = dict(config_file=config_file, known_hosts_file=known_hosts_file, identity_file=identity_file,
               accept_new_host_key=accept_new_host_key, connect_timeout_s=connect_timeout_s,
               extra_options=list(extra_ssh_options or []))
    return _runner_mode_over_ssh(host, "--facts", "facts", python=python, input_bytes=None, timeout_s=timeout_s,
                                 what="reading the device's facts", timeout_hint="check the device's load", ssh=ssh)


def microbench_over_ssh(host: str, bundle: dict, *, python: str = "python3",
                        config_file: Path | str | None = None, known_hosts_file: Path | str | None = None,
                        identity_file: Path | str | None = None, accept_new_host_key: bool = False,
                        extra_ssh_options: list[str] | None = None,
                        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                        timeout_s: float | None = None) -> dict:
    """Run the device runner's microbenchmarks on ``host`` (nothing is written to its disk: the
    runner travels as ``python -c`` source, the models on stdin). Returns the runner's JSON."""
    ssh = dict(config_file=config_file, known_hosts_file=known_hosts_file, identity_file=identity_file,
               accept_new_host_key=accept_new_host_key, connect_timeout_s=connect_timeout_s,
               extra_options=list(extra_ssh_options or []))
    kernels = len(bundle.get("models", [])) + 1
    # each kernel runs for its budget after a first call; slow boards need the margin
    # each memory probe starts an interpreter and imports the runtime (seconds on a Pi)
    probes = len(bundle.get("memory_probes") or [])
    timeout_s = timeout_s or connect_timeout_s + 120 + 4 * kernels * float(bundle.get("budget_s", 1.5)) + 15 * probes
    return _runner_mode_over_ssh(host, "--microbench", "microbench", python=python,
                                 input_bytes=json.dumps(bundle).encode(), timeout_s=timeout_s,
                                 what="the microbenchmarks",
                                 timeout_hint="lower --seconds; the device side stops itself shortly after", ssh=ssh)


def compare_latency_over_ssh(host: str, models: dict[str, bytes | Path], feeds: dict, *, reference: str = "float",
                             rounds: int = 3, runs: int = 30, threads: int = 1,
                             events: Events | None = None, **options) -> dict:
    """Side-by-side latency of several models on ``host``: ``rounds`` rounds, each measuring every
    model once (order rotated per round), ratios to ``reference`` as the median of per-round
    ratios of p50s, so drift (heat, other load) that hits a whole round cancels. Models are
    uploaded once into the device's cache. Returns ``LatencyStats`` by label."""
    import statistics

    import numpy as np

    from edgeopt.runtime.latency import LatencyStats

    labels = list(models)
    p50s: dict[str, list[float]] = {label: [] for label in labels}
    p90s: dict[str, list[float]] = {label: [] for label in labels}
    means: dict[str, list[float]] = {label: [] for label in labels}
    with temporary_folder("edgeopt-device-latency-") as tmp:
        paths = {}
        for index, label in enumerate(labels):
            model = models[label]
            paths[label] = model if isinstance(model, Path) else Path(tmp) / f"model{index}.onnx"
            if not isinstance(model, Path):
                paths[label].write_bytes(model)
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, **feeds)
        for round_index in range(rounds):
            shift = round_index % len(labels)
            for label in labels[shift:] + labels[:shift]:
                (events or Events()).note(f"round {round_index + 1}/{rounds}: {label}")
                run = profile_over_ssh(host, paths[label], runs=runs, warmup=3, threads=threads, inputs=inputs,
                                       profile_ops=False, **options)
                latency = run.measurement.latency_ms
                p50s[label].append(latency.p50)
                p90s[label].append(latency.p90)
                means[label].append(latency.mean)
    stats = {}
    for label, values in p50s.items():
        ratio = None
        if label != reference:
            ratio = statistics.median(v / r for v, r in zip(values, p50s[reference]) if r > 0)
        stats[label] = LatencyStats(median_ms=statistics.median(values), p90_ms=statistics.median(p90s[label]),
                                    mean_ms=statistics.fmean(means[label]), runs=rounds * runs, threads=threads,
                                    ratio_to_reference=ratio)
    return stats


def measure_over_ssh(host: str, model_path: Path | str, *, runs: int = 50, warmup: int = 5, threads: int = 1,
                     inputs: Path | str | None = None, **options) -> Measurement:
    """Measure ``model_path`` on ``host`` over SSH; the options are those of :func:`profile_over_ssh`."""
    return profile_over_ssh(host, model_path, runs=runs, warmup=warmup, threads=threads, inputs=inputs,
                            **options).measurement


def _finish(client: SshClient, run_dir: str, python: str, cache: str, keep: list[str], limit_mb: float,
            timeout_s: float) -> None:
    """Best effort: kill a leftover runner, remove the run dir, trim the model cache. Never raises."""
    script = _FINISH.replace('"$TRIM"', remote_command([_TRIM]))
    try:
        client.run(sh_command(script, run_dir, python, f"{cache}/models", str(int(limit_mb * 1024 * 1024)),
                              f"{cache}/tmp", *keep), timeout_s=timeout_s, what="cleaning up")
    except RemoteError:
        pass


def _interpret(code: int, stdout: str, stderr: str, host: str, python: str, device_timeout: float) -> Measurement:
    last = next((line.strip() for line in reversed(stderr.replace("\r", "").splitlines()) if line.strip()), "")
    if code in (0, 3):
        try:
            return parse_runner_output(stdout, host)
        except MeasurementError as exc:
            if code == 0 or "printed no result" not in exc.message:
                raise RemoteError(exc.message, exc.hint) from None
    if code == 124:
        raise RemoteError(f"the runner on {host} ran past the device-side limit of {device_timeout:.0f} s and was "
                          "stopped", "lower --runs, or raise the timeout")
    if code in (137, -9, 128 + 9):
        raise RemoteError(f"the runner on {host} was killed (SIGKILL), likely out of memory",
                          "the model does not fit in the device's memory; try a smaller or quantized model, "
                          "and see 'dmesg' on the device for the OOM killer")
    if code in (143, -15):
        raise RemoteError(f"the runner on {host} was terminated (SIGTERM)", "something on the device stopped it; retry")
    if code == 127 and (re.search(r"not found|no such file", last, re.I) or not stdout.strip()):
        raise RemoteError(f"'{python}' was not found on {host}",
                          "install Python 3 with numpy and onnxruntime on the device, or pass the interpreter path")
    raise RemoteError(f"the runner on {host} failed (exit {code}): {last or 'no output'}",
                      "rerun with --debug; check python3, numpy and onnxruntime on the device")
