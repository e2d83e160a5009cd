"""The host target's figures on first use: this machine's peaks measured briefly (the microbenchmarks of
`edgeopt targets calibrate host`, shorter) and cached per CPU, so a fresh machine gets latency estimates
for `host` without a manual step."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from edgeopt.errors import InputError
from edgeopt.events import Events
from edgeopt.targets import TargetProfile

AUTO_CALIBRATE_ENV = "EDGEOPT_AUTO_CALIBRATE"  # "0": leave an uncalibrated host without figures
AUTO_SECONDS = 0.1  # per microbenchmark: about 15 s in all on 2 cores (an AMD EPYC VM, 2026-12-06) with op classes,
#   element rates, bandwidths, memory probes (1.5 s each: `targets calibrate`); 17-18 s with the all-core timings taken
#   in its slow spells taken again (2026-12-07). Shorter than the 0.3 s it was (30 s)
#   at no cost found: the validation's 33 held-out models re-priced with two calibrations at each, on the same
#   measurements, were within 10% on 30-31 (one thread) and 22 (two) with either; at 0.03 s, 28-31 and 18-24
RECIPE = 65  # what is measured (2: memory probes; 3: one-thread peaks; 4: op classes; 5: kernel bandwidths;
#   9: memory probes with an LSTM and a thousand nodes, pre-packing one weight at a time, their load peaks
#   without glibc keeping freed buffers; 10: op classes timed at one thread too; 11: the fixed cost of a call;
#   12-14: element rates of ops without MACs, fused activations priced by them; 15: one-row int8 MatMuls;
#   16: weight bandwidths at 4 and 16 MiB working sets; 17: int8 class efficiencies solved through the estimate;
#   18: int8 weight probes, weight probes' load peaks with glibc's default allocator; 19: dynamic quantization's
#   ConvInteger/MatMulInteger classes by weight type, DynamicQuantizeLinear's element rate; 20-21: the broadcasting
#   loop's cost per run, Exp and Log element rates, shallow int8 Convs; 22: float Convs off the NCHWc path; 23: one node's dispatch; 24: a one-step LSTM;
#   25: the arena factor against the simulated arena, not the planned peak; 26: one node's dispatch at all threads;
#   27: the one-thread int8 table refitted first, the all-core prices reading it; 28: classes solved through an
#   estimate that prices activations by their working set; 29: an RGB stem's class, conv.nchw;
#   30: the broadcasting loop's run solved through a Mul priced by the bytes it moves; 31: the stem class solved
#   through the estimate, which prices its output blocks and its input's read; 32: the all-core half measured
#   again when the op classes scaled far below the GEMM peak, fused activations split with their Conv; 33: the
#   int8 MatMul's half-work for more threads measured; 34: a 1x1 Conv reading a plain input, conv.nchw.1x1; 35: each model timed in two passes;
#   36: Div's element rate; 37: NCHWc reorders timed at five map sizes;
#   38: a dense int8 Conv's own class, conv@int8;
#   39: an LSTM's recurrent part solved apart from its input projection, lstm.recurrent;
#   40: the off-path classes' models off onnxruntime 1.32's NCHWc path, which pads channels of a multiple of 4;
#   41: the subgraph memory probe, weights an If branch defines; 42: int8 3x3 Convs at 32 and 16 input channels,
#   anchors of the depth curve; 43: int8 classes solved with the channels-last Transposes around them priced;
#   44: the int8 kernels' memory probe, the arena factor against an arena whose outputs stay out of the pattern;
#   45: float MatMuls' efficiency from a model's layers (64 rows, a weight each), not the 512-cube GEMM;
#   46: Clip's and LeakyRelu's element rates (fused into a Conv they still cost a pass over its output);
#   47: element-wise ops' bandwidth over maps of 1 to 32 MiB (kernel_bandwidth.streams);
#   48: Resize's element rates by the loop it runs (resize, resize.nearest, resize.linear);
#   49: a ConvTranspose's class, its GEMM solved apart from its packing and col2im traffic;
#   50: Where's element rates (a condition in runs, as masks hold; a broadcast one: where.broadcast);
#   51: the 8-bit Transposes around channels-last int8 Convs (transpose.nhwc, transpose.nchw), the int8 classes
#   solved with them priced so; 52: pools' element rates per window tap (max_pool, average_pool, max_pool.int8);
#   53: the channels-last int8 Resize's (resize.int8, resize.linear.int8); 54: int8 Concat's requantization (concat.int8)
#   55: Slices stepping along the last axis (slice.strided, slice.strided.int8); 56: int8 lookup-table
#   activations (sigmoid.int8, leaky_relu.int8); 57: float Concats' small chunks (concat.elements, concat.chunked);
#   58: reductions per output element (reduce); 59: weights read at a 32 MiB working set (kernel_bandwidth), float
#   depthwise Convs on 12 and 25 MiB maps (conv.depthwise.ws12, conv.depthwise.ws25); 60: HardSigmoid's and
#   HardSwish's element models and the broadcasting loop's span model over maps onnxruntime splits
#   (element_bench.SPLIT_ELEMENT_SHAPE, SPAN_SHAPE); 61: int8 classes' all-core kernels solved within a 1x to
#   thread-count gain (class_refit._within_thread_gain); 62: int8 classes solved through an estimate that prices
#   QuantizeLinear, DequantizeLinear and the int8 element ops by onnxruntime's split step; 63: element kinds solved
#   through the estimate, net of the dispatch and hand-off it adds per node (class_refit.solve_element_kinds); 64:
#   all-core timings paced, those taken in a slow spell of the other cores taken again (device_runner.PACE_SLOWED);
#   65: NCHWc reorders timed over 64 and 256 KiB maps too (small models' reorders gain nothing from a second thread)


# Other work's share of all cores during the measurement above which it is used for this run but not
# cached: peaks measured beside a CI job came out 2.4x low at two threads, and a cache entry lives as long as
# the CPU does.
BUSY_LIMIT = 0.25


class OtherWork:
    """How much of the machine's CPU time went to other processes while a block ran: all cores' busy time
    (/proc/stat) less this process's and its waited-for children's (the runner). Linux only: elsewhere
    ``share`` stays None."""

    def __init__(self) -> None:
        self.share: float | None = None

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> OtherWork:
        self._start = (self._busy_seconds(), self._own_seconds(), time.monotonic())
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, own, started = self._start
        now = self._busy_seconds()
        elapsed = time.monotonic() - started
        if busy is None or now is None or elapsed <= 0:
            return
        others = (now - busy) - (self._own_seconds() - own)
        self.share = max(0.0, min(1.0, others / (elapsed * (os.cpu_count() or 1))))


# A cached entry is re-checked on each use by a short timing (``speed_probe``) against the same timing taken
# when it was cached: a cloud VM's cores ran 30% slower an hour after its first calibration (fp32 peaks
# 219 -> 156 GFLOP/s at one thread, the machine idle both times), and estimates from the stale entry came out
# 24-70% low on the real-model zoo. Beyond this drift the figures are measured again.
DRIFT_LIMIT = 0.2
PROBE_FILE = "probe.json"


def speed_probe() -> float:
    """Multiply-adds per second of a 256x256x256 fp32 MatMul at one thread in this process (best of about
    0.1 s of runs): cheap enough for every use, stable enough to see a machine's speed change."""
    import numpy as np
    import onnxruntime

    from edgeopt.runtime.microbench import matmul_model

    n = 256
    model, _weights, _ops = matmul_model(n)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((n, n), np.float32)}
    for _ in range(3):
        session.run(None, feeds)
    best, end = float("inf"), time.monotonic() + 0.1
    while time.monotonic() < end:
        started = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - started)
    return n ** 3 / best


def _write_probe(folder: Path) -> None:
    from edgeopt.fsutil import write_text_atomic

    try:
        write_text_atomic(folder / PROBE_FILE, json.dumps({"matmul_fp32_macs_per_s": speed_probe()}) + "\n")
    except OSError:
        pass


def cached_speed_drift(folder: Path) -> float | None:
    """This machine's speed now against when the entry in ``folder`` was cached (now / then - 1), or None when
    it cannot be judged: no probe stored (one is stored now, for next time), or other work busy meanwhile."""
    try:
        then = float(json.loads((folder / PROBE_FILE).read_text())["matmul_fp32_macs_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        _write_probe(folder)
        return None
    with OtherWork() as other_work:
        now = speed_probe()
        if then > 0 and abs(now / then - 1) > DRIFT_LIMIT:
            # one probe steps between clock levels 3% apart (92 to 116 G MACs/s within one process on a cloud
            # VM): a drift is confirmed by the median of three before the figures are measured again (15 s)
            now = sorted([now, speed_probe(), speed_probe()])[1]
    if then <= 0 or (other_work.share is not None and other_work.share > BUSY_LIMIT):
        return None
    return now / then - 1


def host_calibration_dir() -> Path:
    """Where automatic host calibrations are cached (XDG cache folder), one folder per CPU."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt" / "host-calibration"


def machine_key() -> str:
    """What the host's figures depend on: CPU model, its flags, core count, architecture and the
    onnxruntime version (its kernels). A change of any gives another cache entry."""
    import onnxruntime

    from edgeopt.targets import host_cpu_features

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.lower().startswith(("model name", "cpu part", "hardware"))), "")
    except OSError:
        pass
    facts = "|".join([platform.machine(), model or platform.processor(), str(os.cpu_count()),
                      ",".join(host_cpu_features()), onnxruntime.__version__, f"recipe {RECIPE}"])
    return hashlib.sha256(facts.encode()).hexdigest()[:16]


def host_for_estimates(target: TargetProfile, events: Events | None = None) -> TargetProfile:
    """``target``, unless it is a host profile without measured peaks: then this machine's, measured once
    per CPU (about fifteen seconds on 2 cores) and cached, so a fresh machine gets latency estimates without a manual
    step. Says so once when it measures; a failed measurement leaves the profile as it was."""
    from edgeopt.fsutil import write_text_atomic
    from edgeopt.runtime.microbench import calibrated_profile, run_microbenchmarks
    from edgeopt.targets import read_target_file, target_to_toml

    if (target.name != "host" or target.peak_ops_per_s.fp32 is not None
            or os.environ.get(AUTO_CALIBRATE_ENV, "1") == "0"):
        return target
    events = events or Events()
    path = host_calibration_dir() / machine_key() / "host.toml"
    if path.is_file():
        try:
            cached = read_target_file(path)
        except InputError:
            cached = None  # a damaged cache entry is measured again
        if cached is not None:
            drift = cached_speed_drift(path.parent)
            if drift is None or abs(drift) <= DRIFT_LIMIT:
                return cached
            events.note(f"host: this machine runs {abs(drift):.0%} {'faster' if drift > 0 else 'slower'} than when "
                        "its figures were cached: measuring them again")
    started = time.monotonic()
    try:
        with OtherWork() as other_work:
            # the held-out checks are left out: the host's band is edgeopt's validation on real models
            result = run_microbenchmarks(None, budget_s=AUTO_SECONDS, checks=False)
    except Exception as exc:  # never fatal: the estimate is then unavailable, with its reason, as before
        events.note(f"host: could not measure this machine's peaks ({type(exc).__name__}); no latency estimate")
        return target
    seconds = time.monotonic() - started
    if other_work.share is not None and other_work.share > BUSY_LIMIT:
        events.note(f"host: measured this machine's peaks in {seconds:.1f} s while other work used "
                    f"{other_work.share:.0%} of its cores: the estimates use them, but they are not cached "
                    "(measured again next time; `edgeopt targets calibrate host` on an idle machine keeps them)")
        return calibrated_profile(target, result, datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    profile = calibrated_profile(target, result, when)
    profile = profile.model_copy(update={"origin": str(path), "sources": tuple(
        source.replace("measured by `edgeopt targets calibrate host`", "measured automatically by edgeopt "
                       f"({AUTO_SECONDS:g} s per microbenchmark, the first estimate on this CPU)")
        for source in profile.sources)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, target_to_toml(profile, f"Measured automatically by edgeopt on {when} (first use on "
                                                        "this CPU); `edgeopt targets calibrate host` measures longer."))
        read_target_file(path)  # an entry that does not read back would be measured again on every use
        _write_probe(path.parent)
    except InputError as exc:
        path.unlink(missing_ok=True)
        events.note(f"host: measured this machine's peaks in {seconds:.1f} s for the estimates; not cached "
                    f"(the written entry does not read back: {exc.message})")
        return profile.model_copy(update={"origin": None})
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    events.note(f"host: measured this machine's peaks in {seconds:.1f} s for the estimates "
                f"(cached in {path.parent}; `edgeopt targets calibrate host` measures longer)")
    return profile
