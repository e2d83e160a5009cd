#!/usr/bin/env python3
"""Measure one model's latency and memory with the runtime found on this machine.

Self-contained on purpose: it uses only the standard library, numpy and the runtime
(onnxruntime, or LiteRT / tflite-runtime for .tflite files), so the same file runs
locally in a subprocess and, copied over SSH, on a device with nothing else installed.
Over 600 lines because of that: measuring, device facts, microbenchmarks and memory probes
travel as this one file, and none of it may import edgeopt.
It prints one JSON document on stdout; errors are JSON too ({"error": ..., "kind": ...})
with a non-zero exit code.

    python3 device_runner.py --microbench < bundle.json     (peaks for `targets calibrate`)
    python3 device_runner.py --facts                         (the device and its runtime)
    python3 device_runner.py MODEL [--runs 50] [--warmup 5] [--threads 1]
                             [--inputs inputs.npz] [--save-outputs out.npz] [--emit-outputs] [--profile]

``--inputs``: an .npz of one sample (keys = input names) or of several (keys ``s<i>/<input name>``);
timed runs cycle through the samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

RUNNER_VERSION = 14  # 3: --state-pairs (outputs emitted as a stream); 4: memory by phase (load, run);
# 5: random inputs left out of the run peak, memory probes with freed buffers returned at once;
# 6: .tflite per-op times, op by op (--op-models); 7: the microbenchmarks' fixed cost of a call, set apart;
# 8: weight probes' load peak with glibc's default allocator too; 9: microbenchmarks timed in two passes;
# 10: optional microbenchmark items (skipped where the runtime lacks their ops); 11: 8-bit inputs of microbenchmark
# models fed 8-bit values; 12: memory probes two at a time, microbenchmark inputs drawn once per pass and model;
# 13: a microbenchmark bundle's copy left out at "bandwidth_mb": 0, its call cost given as "call_best_s" (the
# all-core timings measured again); 14: all-core timings paced (a MatMul's speed at all cores just before each),
# those taken in a slow spell measured again ("all_core_retimed")
# The microbenchmark's passes over its models (device_runner.microbench)
MICROBENCH_PASSES = 2
# An all-core timing is taken again where the pace model, run just before it, was this much slower than its fastest
# (an AMD EPYC VM's slow spells: 1.22x), while the pace is back, for at most PACE_RETIME_SHARE of the time the
# all-core timings took, PACE_WAIT_S between looks at a slow pace. The pace is the best of PACE_BUDGET_S of runs (at
# least PACE_RUNS): the best of five alone read the one-thread time in 3 of 40 (the pool's other threads still asleep)
PACE_SLOWED = 1.1
PACE_RUNS = 5
PACE_BUDGET_S = 0.002
PACE_RETIME_SHARE = 0.5
PACE_WAIT_S = 0.05


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM), in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak_rss() -> bool:
    """Start a new peak window (Linux: VmHWM reset through clear_refs); False where the peak cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _peak_rss_bytes()


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def device_facts() -> dict:
    facts: dict = {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
                   "python": platform.python_version(), "cpu_count": os.cpu_count()}
    cpuinfo = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    # x86 names the CPU in "model name"; ARM boards name the board in "Model"/"Hardware".
    for key in ("model name", "hardware", "cpu part"):
        if key in fields:
            facts["cpu_model"] = fields[key]
            break
    if "model" in fields and not fields["model"].isdigit():
        facts["board"] = fields["model"]
    cores = _arm_cores(cpuinfo)
    if cores:
        facts["cpu_cores"] = cores
    features = fields.get("flags") or fields.get("features")
    if features:
        facts["cpu_features"] = features.split()
    meminfo = _read("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith(("MemTotal:", "MemAvailable:")):
            facts[line.split(":")[0].lower() + "_bytes"] = int(line.split()[1]) * 1024
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        facts["cpu_governor"] = governor
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        facts["cpu_freq_mhz"] = int(freq) / 1000
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        facts["soc_temp_c"] = int(temp) / 1000
    throttled = throttling_state()
    if throttled is not None:
        facts["throttled"] = throttled
    try:
        facts["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return facts


# Arm Ltd (implementer 0x41) core part numbers, as Linux lists them (arch/arm64/include/asm/cputype.h)
_ARM_PARTS = {0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57", 0xd08: "Cortex-A72",
              0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76", 0xd0c: "Neoverse-N1", 0xd0d: "Cortex-A77",
              0xd40: "Neoverse-V1", 0xd41: "Cortex-A78", 0xd44: "Cortex-X1", 0xd46: "Cortex-A510", 0xd47: "Cortex-A710",
              0xd48: "Cortex-X2", 0xd49: "Neoverse-N2", 0xd4b: "Cortex-A78C", 0xd4d: "Cortex-A715", 0xd4e: "Cortex-X3",
              0xd4f: "Neoverse-V2", 0xd80: "Cortex-A520", 0xd81: "Cortex-A720", 0xd82: "Cortex-X4"}


def _arm_cores(cpuinfo: str) -> list[str]:
    """The distinct Arm cores /proc/cpuinfo lists (big.LITTLE boards have two kinds), in order; an unknown part
    keeps its number."""
    cores: list[str] = []
    implementer = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "cpu implementer":
            implementer = value
        elif key == "cpu part" and implementer is not None:
            try:
                part = int(value, 16)
            except ValueError:
                continue
            name = _ARM_PARTS.get(part) if implementer.lower() == "0x41" else None
            name = name or f"{implementer}/{value}"
            if name not in cores:
                cores.append(name)
    return cores


# Bits of the Raspberry Pi firmware's get_throttled word (documented with vcgencmd).
_THROTTLE_BITS = {0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
                  16: "under_voltage_occurred", 17: "arm_frequency_capped_occurred", 18: "throttled_occurred",
                  19: "soft_temperature_limit_occurred"}


def throttling_state() -> dict | None:
    """Raspberry Pi firmware throttling flags via ``vcgencmd get_throttled``; None elsewhere."""
    import shutil
    import subprocess

    binary = shutil.which("vcgencmd") or next((p for p in ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd")
                                               if os.access(p, os.X_OK)), None)
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()  # "throttled=0x50005"
    if done.returncode != 0 or "=" not in text:
        return None
    try:
        word = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    state = {"raw": hex(word)}
    state.update({name: bool(word >> bit & 1) for bit, name in _THROTTLE_BITS.items()})
    return state


def _facts_after() -> dict:
    """What may have changed while the model ran: temperature and throttling."""
    after: dict = {}
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        after["soc_temp_c"] = int(temp) / 1000
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        after["cpu_freq_mhz"] = int(freq) / 1000
    throttled = throttling_state()
    if throttled is not None:
        after["throttled"] = throttled
    return after


def _random_inputs(np, specs, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in specs:
        dims = tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)
        if dtype == "bool":
            feeds[name] = rng.integers(0, 2, size=dims).astype(bool)
        elif np.issubdtype(np.dtype(dtype), np.integer):
            feeds[name] = np.asarray(rng.integers(0, 2, size=dims), dtype=dtype)
        else:
            feeds[name] = np.asarray(rng.standard_normal(size=dims), dtype=dtype)
    return feeds


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
              "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64"}


class _OnnxRuntime:
    def __init__(self, path: str, threads: int, profile: bool):
        import onnxruntime as ort

        self.ort = ort
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(path)), ".edgeopt-ort-profile")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.profile = profile

    def runtime(self) -> dict:
        return {"name": "onnxruntime", "version": self.ort.__version__,
                "providers": self.ort.get_available_providers()}

    def specs(self):
        return [(i.name, list(i.shape or []), _ORT_TYPES.get(i.type, "float32")) for i in self.session.get_inputs()]

    def output_names(self):
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        return self.session.run(None, feeds)

    def per_op(self) -> list[dict] | None:
        if not self.profile:
            return None
        path = self.session.end_profiling()
        try:
            with open(path, encoding="utf-8") as fh:
                events = json.load(fh)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        totals: dict[str, dict] = {}
        for event in events:
            if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
                continue
            args = event.get("args", {})
            node = args.get("node_name") or event["name"][: -len("_kernel_time")]
            entry = totals.setdefault(node, {"node": node, "op_type": args.get("op_name"), "calls": 0,
                                             "total_us": 0.0, "durations": []})
            entry["calls"] += 1
            entry["total_us"] += float(event.get("dur", 0))
            entry["durations"].append(float(event.get("dur", 0)))
        for entry in totals.values():
            # The first calls carry one-time costs (allocation, packing): the median is per-run cost.
            entry["median_us"] = statistics.median(entry.pop("durations"))
        return sorted(totals.values(), key=lambda e: -e["total_us"])


def _distribution_version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # not installed as a distribution (a system package): the version is unknown
        return None


class UnsupportedOp(Exception):
    """The runtime has no kernel for an op of the model (a TFLite custom op): the model's fault, not the device's."""

    def __init__(self, op: str, message: str):
        super().__init__(message)
        self.op = op


def _litert_module():
    """The installed TFLite interpreter module and its distribution's name (imported once, cached by Python)."""
    import importlib

    for module, name in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                         ("tflite_runtime.interpreter", "tflite-runtime"), ("tensorflow.lite", "tensorflow")):
        try:
            return importlib.import_module(module), name
        except ImportError:
            continue
    raise ImportError("no TFLite interpreter (ai-edge-litert, tflite-runtime or tensorflow)")


class _LiteRT:
    """A .tflite file in whichever TFLite interpreter is installed: ai-edge-litert, tflite-runtime (what 32-bit
    Raspberry Pi OS has) or TensorFlow's own; XNNPACK (the default CPU delegate) on unless turned off."""

    def __init__(self, path: str, threads: int, profile: bool, xnnpack: bool = True):
        interpreter, name = _litert_module()
        self.name, self.xnnpack = name, xnnpack
        self.version = _distribution_version(name)
        Interpreter = interpreter.Interpreter
        options = {}
        if not xnnpack:
            options["experimental_op_resolver_type"] = interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=threads, **options)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            text = str(exc)
            marker = "unresolved custom op: "
            if marker in text:
                op = text.split(marker, 1)[1].split()[0].rstrip(".")
                raise UnsupportedOp(op, f"the interpreter ({name}) has no kernel for custom op {op}") from None
            raise
        # inputs may be named as the serving signature names them (what the host's stages hold) or as the
        # interpreter's tensors are
        self.signature_names = {}
        try:
            for key in self.interpreter.get_signature_list():
                runner = self.interpreter.get_signature_runner(key)
                self.signature_names = {d["index"]: name for name, d in runner.get_input_details().items()}
                break
        except (AttributeError, ValueError, RuntimeError):  # an interpreter without signature runners
            pass

    def runtime(self) -> dict:
        return {"name": self.name, "version": self.version, "providers": ["xnnpack" if self.xnnpack else "cpu"]}

    def specs(self):
        # numpy's int32 dims as Python ints: _random_inputs sizes only int dims (others become 1)
        return [(d["name"], [int(x) for x in d["shape"]], str(d["dtype"].__name__))
                for d in self.interpreter.get_input_details()]

    def output_names(self):
        return [d["name"] for d in self.interpreter.get_output_details()]

    def run(self, feeds):
        self._feed(self.interpreter, feeds)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self.interpreter.get_output_details()]

    def _feed(self, interpreter, feeds):
        """Set ``interpreter``'s inputs (this model's) from ``feeds``."""
        import numpy as np

        for detail in interpreter.get_input_details():
            name = detail["name"]
            value = feeds[name] if name in feeds else feeds[self.signature_names.get(detail["index"], name)]
            scale, zero = detail["quantization"]
            if scale and np.issubdtype(detail["dtype"], np.integer) and np.issubdtype(value.dtype, np.floating):
                # real values for an integer input: quantized with its scale, as the app in front of it would
                info = np.iinfo(detail["dtype"])
                value = np.clip(np.round(value / scale) + zero, info.min, info.max).astype(detail["dtype"])
            interpreter.set_tensor(detail["index"], value)

    def per_op(self):
        return None

    def per_op_alone(self, path: str, op_models: str, feeds: dict, runs: int, warmup: int, threads: int):
        """Per-op times of a .tflite file, each operator timed alone (the host cuts the single-op models out:
        formats/tflite_ops.py): (timings, skipped). Each is fed the values it saw in one run of the whole model."""
        import numpy as np

        with np.load(op_models, allow_pickle=False) as bundle:
            manifest = json.loads(bundle["manifest"].tobytes().decode("utf-8"))
            models = {entry["key"]: bundle[entry["key"]].tobytes() for entry in manifest if "key" in entry}
        module = sys.modules[type(self.interpreter).__module__]
        plain = {"experimental_op_resolver_type": module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        options = {} if self.xnnpack else plain
        # every intermediate kept: the values each operator reads in the whole model (no delegate, which
        # would hide them inside its own node)
        whole = type(self.interpreter)(model_path=path, num_threads=threads, experimental_preserve_all_tensors=True,
                                       **plain)
        whole.allocate_tensors()
        self._feed(whole, feeds)
        whole.invoke()
        timings, skipped = [], []
        for entry in manifest:
            if "key" not in entry:
                skipped.append({"node": entry["node"], "op_type": entry["op_type"], "reason": entry["skipped"]})
                continue
            try:
                values = [whole.get_tensor(index) for index in entry["inputs"]]
                alone = type(self.interpreter)(model_content=models[entry["key"]], num_threads=threads, **options)
                details = alone.get_input_details()
                for detail, value in zip(details, values):
                    if tuple(detail["shape"]) != tuple(value.shape):
                        alone.resize_tensor_input(detail["index"], list(value.shape))
                alone.allocate_tensors()
                for detail, value in zip(details, values):
                    alone.set_tensor(detail["index"], value)
                for _ in range(max(1, warmup)):
                    alone.invoke()
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    alone.invoke()
                    times.append((time.perf_counter() - start) * 1e6)
            except (RuntimeError, ValueError) as exc:
                skipped.append({"node": entry["node"], "op_type": entry["op_type"],
                                "reason": " ".join(str(exc).split())[:200]})
                continue
            timings.append({"node": entry["node"], "op_type": entry["op_type"], "calls": len(times),
                            "total_us": sum(times), "median_us": statistics.median(times)})
        return sorted(timings, key=lambda e: -e["total_us"]), skipped


def load_samples(np, path) -> list:
    """One dict per sample from an .npz (a path or a file object): keys ``s<i>/<name>`` hold several
    samples, plain names one. Inputs go to the runner this way and outputs come back the same way."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    numbered: dict = {}
    plain = {}
    for key, value in arrays.items():
        head, sep, name = key.partition("/")
        if sep and head[:1] == "s" and head[1:].isdigit():
            numbered.setdefault(int(head[1:]), {})[name] = value
        else:
            plain[key] = value
    if numbered and plain:
        raise ValueError("inputs file mixes numbered samples (s<i>/NAME) and plain input names")
    if not numbered and not plain:
        raise ValueError("inputs file is empty")
    return [numbered[i] for i in sorted(numbered)] if numbered else [plain]


MAX_EMITTED_OUTPUT_BYTES = 64 * 1024 * 1024


def _emit_outputs(np, engine, samples, state_pairs=None) -> dict:
    """Every sample's outputs, as an .npz (keys ``s<i>/<output name>``) in base64, for comparison on the host.
    ``state_pairs`` ({output: input}) runs the samples as a stream: each call's state is the last call's output."""
    import base64
    import io

    names = engine.output_names()
    arrays = {}
    total = 0
    state = {}
    for index, sample in enumerate(samples):
        sample = {**sample, **{k: v for k, v in state.items() if k in sample}}
        results = engine.run(sample)
        state = {target: np.asarray(value).astype(sample[target].dtype)
                 for name, value in zip(names, results) for output, target in (state_pairs or {}).items()
                 if name == output and target in sample}
        for name, value in zip(names, results):
            value = np.asarray(value)
            total += value.nbytes
            if total > MAX_EMITTED_OUTPUT_BYTES:
                return {"skipped": f"outputs exceed {MAX_EMITTED_OUTPUT_BYTES // (1024 * 1024)} MiB"}
            arrays[f"s{index}/{name}"] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return {"encoding": "npz+base64", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return None
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def measure(args) -> dict:
    import numpy as np

    facts_before = device_facts()
    engine_cls = _LiteRT if args.model.endswith(".tflite") else _OnnxRuntime
    profile = args.profile
    args.profile = False  # the profiler slows kernels: time without it, profile in a second pass
    # The runtime is imported and the samples read before the baseline, so the increase is the model's alone.
    if engine_cls is _OnnxRuntime:
        import onnxruntime  # noqa: F401
    else:
        _litert_module()  # its shared library is tens of MiB: not the model's
    samples = load_samples(np, args.inputs) if args.inputs else None
    rss_before = _current_rss_bytes()
    windowed = _reset_peak_rss()
    start = time.perf_counter()
    engine = engine_cls(args.model, args.threads, args.profile, **(
        {"xnnpack": not args.no_xnnpack} if engine_cls is _LiteRT else {}))
    load_ms = (time.perf_counter() - start) * 1000
    after_load = _current_rss_bytes()
    load_peak = _peak_rss_bytes()
    # random inputs are made here, after loading: they are the caller's, so their bytes leave the run's figures
    made_inputs = 0
    if not samples:
        samples = [_random_inputs(np, engine.specs())]
        made_inputs = max(0, _current_rss_bytes() - after_load)
    if windowed:
        _reset_peak_rss()
    feeds = samples[0]
    start = time.perf_counter()
    outputs = engine.run(feeds)
    first_ms = (time.perf_counter() - start) * 1000
    for index in range(args.warmup):
        engine.run(samples[index % len(samples)])
    times = []
    for index in range(args.runs):
        sample = samples[index % len(samples)]
        start = time.perf_counter()
        engine.run(sample)
        times.append((time.perf_counter() - start) * 1000)
    # Memory is read here: the profiled pass below opens a second session and must not count.
    run_peak = _peak_rss_bytes() - made_inputs
    memory = {"rss_before_load_bytes": rss_before, "after_load_increase_bytes": max(0, after_load - rss_before),
              "load_peak_increase_bytes": max(0, load_peak - rss_before),
              "run_peak_increase_bytes": max(0, run_peak - rss_before),
              "peak_rss_bytes": max(load_peak, run_peak),
              "peak_rss_increase_bytes": max(0, load_peak - rss_before, run_peak - rss_before),
              # without a resettable peak (not Linux), every figure is the process's peak since it started
              "phases_measured": windowed}
    if args.save_outputs:
        np.savez(args.save_outputs, **dict(zip(engine.output_names(), outputs)))
    per_op = per_op_skipped = per_op_method = None
    if profile and engine_cls is _OnnxRuntime:
        profiled = engine_cls(args.model, args.threads, True)
        for _ in range(max(args.warmup, 1) + min(args.runs, 20)):
            profiled.run(feeds)
        per_op, per_op_method = profiled.per_op(), "profiler"
    elif profile and args.op_models:
        per_op_method = "op-by-op"
        try:
            per_op, per_op_skipped = engine.per_op_alone(args.model, args.op_models, feeds, min(args.runs, 20),
                                                         min(args.warmup, 2), args.threads)
        except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
            # an interpreter that cannot keep every tensor (an old tflite-runtime): the timings above still stand
            per_op_skipped = [{"node": "*", "op_type": "*", "reason": f"per-op timing failed: {exc}"[:300]}]
    return {
        "runner_version": RUNNER_VERSION,
        "model": os.path.basename(args.model),
        "runtime": engine.runtime(),
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        "latency_ms": {
            "p50": _percentile(times, 50), "p90": _percentile(times, 90), "p99": _percentile(times, 99),
            "mean": statistics.fmean(times), "stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
            "min": min(times), "max": max(times),
        },
        "memory": memory,
        "per_op": per_op,
        "per_op_method": per_op_method,
        "per_op_skipped": per_op_skipped,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
        "input_samples": len(samples),
        "outputs": _emit_outputs(np, engine, samples, json.loads(args.state_pairs) if args.state_pairs else None)
        if args.emit_outputs else None,
        "device": facts_before,
        "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device_after": _facts_after(),
    }


def run_times(fn, budget_s: float, min_runs: int = 5) -> list:
    """Seconds of each call of ``fn`` (after one warm-up call), for ``budget_s`` and at least ``min_runs`` calls."""
    fn()
    times = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def best_time(fn, budget_s: float, min_runs: int = 5) -> float:
    """Best-of timing: peaks are what the hardware can do when nothing interferes."""
    return min(run_times(fn, budget_s, min_runs))


# Runs in a fresh interpreter per probe (RSS windows need a process of their own): the model's bytes on stdin,
# read with the runtime imported before the baseline; prints the RSS increases of loading and running.
_MEMORY_PROBE = r"""
import json, sys
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))
def reset():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
import numpy as np, onnxruntime as ort
data = sys.stdin.buffer.read()
base = status("VmRSS:")
reset()
options = ort.SessionOptions()
options.log_severity_level = 4
options.intra_op_num_threads = int(sys.argv[1])
options.inter_op_num_threads = 1
session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
after_load, load_peak = status("VmRSS:"), status("VmHWM:")
feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) and d > 0 else 1 for d in i.shape])
         .astype(np.float32) for i in session.get_inputs()}
inputs = status("VmRSS:") - after_load  # the caller's, not the run's
reset()
for _ in range(3):
    session.run(None, feeds)
print(json.dumps({"baseline": base, "after_load": after_load - base, "load_peak": load_peak - base,
                  "run_peak": status("VmHWM:") - base - inputs}))
"""


def memory_probes(models: list, threads: int, progress=None) -> dict:
    """RSS increases of loading and running each probe model (Linux only: the windows reset VmHWM)."""
    import base64
    import subprocess

    if not os.path.exists("/proc/self/clear_refs"):
        return {}
    def probe(data: bytes, env: dict) -> dict | None:
        done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(threads)], env=env, input=data,
                              capture_output=True, timeout=120)
        return json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1]) if done.returncode == 0 else None

    def probed(item: dict) -> tuple:
        data = base64.b64decode(item["model_b64"])
        # glibc told to return freed large buffers at once: the phases count what the session holds, not what
        # the allocator kept around
        held = probe(data, {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
        if held is None:
            return item["name"], None
        if item.get("default_allocator"):
            # and as a user's process loads it (glibc's dynamic mmap threshold keeps part of what loading freed,
            # so a real model's load peaks above the copies held at once: 3.2-3.7x a convolution's weights on
            # x86 against 2.7x held)
            kept = probe(data, dict(os.environ))
            if kept is not None:
                held["default_allocator_load_peak"] = kept["load_peak"]
        return item["name"], held

    # two probes at a time: each counts its own process's RSS, so a neighbour does not change it, and most of a
    # probe is starting Python (a quarter of a short calibration one by one); two, not all cores, for a board's RAM
    from concurrent.futures import ThreadPoolExecutor

    if progress and models:
        progress(f"memory ({len(models)} probes)")
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        done = list(pool.map(probed, models))
    return {name: held for name, held in done if held is not None}


def microbench(bundle: dict, progress=None) -> dict:
    """Peak throughput of the bundle's one-op models and copy bandwidth (``targets calibrate``).

    ``bundle``: {"threads": N or 0 for all cores, "budget_s": seconds per kernel, "bandwidth_mb": copy size,
    "models": [{"name", "model_b64", "ops"}], "call_model_b64": a one-node model}. Inputs are standard-normal
    float32 of each model's shape.
    """
    import base64

    import numpy as np
    import onnxruntime as ort

    threads = int(bundle.get("threads") or 0) or os.cpu_count() or 1
    budget_s = float(bundle.get("budget_s", 1.5))

    def session_of(data: bytes, count: int):
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def random_feeds(session) -> dict:
        rng = np.random.default_rng(0)

        def feed(spec) -> np.ndarray:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            if spec.type == "tensor(uint8)":  # an 8-bit map (the element kinds' Transposes)
                return rng.integers(0, 256, shape, dtype=np.uint8)
            return rng.standard_normal(shape, dtype=np.float32)  # (drawn as float64 and cast: twice the time)
        return {i.name: feed(i) for i in session.get_inputs()}

    # The fixed cost of one call (binding, output allocation, the API call) on a one-node model: set apart
    # from every model's time below, so rates are the kernels' own work; estimates add it once per run.
    call_overhead_s, call_best_s = 0.0, float(bundle.get("call_best_s") or 0.0)  # (given: measured before)
    if bundle.get("call_model_b64"):
        if progress:
            progress("call overhead")
        session = session_of(base64.b64decode(bundle["call_model_b64"]), 1)
        feeds = random_feeds(session)
        # best-of times below lose the best call; estimates add the median call (latency is compared at its p50)
        calls = run_times(lambda: session.run(None, feeds), 2 * min(0.25, budget_s), min_runs=200)
        call_best_s, call_overhead_s = min(calls), statistics.median(calls)
    # The pace of all cores: the best of a few runs of a float MatMul at the asked thread count, just before each
    # all-core timing. On a cloud VM the other vCPUs slow down in spells of seconds (another tenant: an AMD EPYC VM's
    # two-thread MatMul took 642 µs or 785 µs, 40% of a minute in the slower state, one thread unchanged), so a
    # timing taken in one is measured again once the pace is back (below).
    pace_data = bundle.get("pace_model_b64")
    pace_session = session_of(base64.b64decode(pace_data), threads) if pace_data and threads > 1 else None
    pace_feeds = random_feeds(pace_session) if pace_session is not None else None

    def pace() -> float | None:
        return best_time(lambda: pace_session.run(None, pace_feeds), PACE_BUDGET_S, PACE_RUNS) if pace_session \
            else None

    # each peak model at the asked thread count, and at one thread too (estimates price both), in passes over
    # the whole bundle with a share of the budget each, the fastest pass kept: a slowdown lasting seconds (another
    # tenant of a cloud VM) slows one pass of a model, not the model (one class came out 24% slow in one pass)
    ops_per_s, single_thread, paces = {}, {}, {}
    unavailable: set[str] = set()
    all_core_s = 0.0  # the all-core timings' wall time: what bounds their retiming

    def time_item(item: dict, counts: list[int]) -> None:
        """``item`` timed at each of ``counts``, each table keeping its best rate (and the all-core one its pace)."""
        nonlocal all_core_s
        # decoded and fed once per pass (both thread counts): drawing a large map's inputs took a quarter of a
        # short calibration; not kept across passes, which would hold every model's inputs at once on a board
        data, feeds = base64.b64decode(item["model_b64"]), None
        for count in counts:
            # paced before the model's session exists: a session's pool threads spin a while after their work, and
            # the pace model, run beside them, took its one-thread time (an AMD EPYC VM: 300 µs against 150)
            started = time.perf_counter()
            at_pace = pace() if count == threads else None
            try:
                session = session_of(data, count)
            except Exception:  # e.g. an int8 op (or NCHWc reorder) this runtime build lacks: that figure
                if item["name"].endswith("_int8") or item.get("optional"):  # stays unknown
                    unavailable.add(item["name"])
                    return
                raise
            feeds = feeds if feeds is not None else random_feeds(session)
            seconds = best_time(lambda: session.run(None, feeds),
                                float(item.get("budget_s", budget_s)) / MICROBENCH_PASSES)
            rate = item["ops"] / max(seconds - call_best_s, seconds / 2)
            if count == threads:
                all_core_s += time.perf_counter() - started
                if rate > ops_per_s.get(item["name"], 0.0):
                    ops_per_s[item["name"]], paces[item["name"]] = rate, at_pace
            if count == 1:
                single_thread[item["name"]] = max(rate, single_thread.get(item["name"], 0.0))

    for pass_index in range(MICROBENCH_PASSES):
        for item in bundle["models"]:
            if item["name"] in unavailable:
                continue
            if progress:
                progress(item["name"] + (f" (pass {pass_index + 1})" if pass_index else ""))
            time_item(item, [threads] + ([1] if threads > 1 and item.get("one_thread", True) else []))
    retimed = retime_slowed([item for item in bundle["models"] if item["name"] in ops_per_s], paces, pace,
                             lambda item: time_item(item, [threads]), PACE_RETIME_SHARE * all_core_s, progress)
    megabytes, bandwidth = int(bundle.get("bandwidth_mb", 256)), 0.0  # 0 MB: not measured (0.0)
    available = device_facts().get("memavailable_bytes")
    if available and megabytes:  # two buffers must fit comfortably (a Pi Zero 2 W has 512 MB in all)
        megabytes = max(8, min(megabytes, available // (6 * 1024 * 1024)))
    if megabytes:
        if progress:
            progress("memory bandwidth")
        src = np.ones(megabytes * 1024 * 1024 // 8, dtype=np.float64)
        dst = np.empty_like(src)
        bandwidth = 2 * src.nbytes / best_time(lambda: np.copyto(dst, src), min(1.0, budget_s), min_runs=3)
    probes = memory_probes(bundle.get("memory_probes") or [], 1, progress)
    return {"runner_version": RUNNER_VERSION, "kind": "microbench", "threads": threads, "ops_per_s": ops_per_s,
            "all_core_retimed": retimed, "call_overhead_s": call_overhead_s, "call_best_s": call_best_s,
            "single_thread_ops_per_s": single_thread,
            "memory_bandwidth_bytes_per_s": bandwidth, "copy_megabytes": megabytes, "memory_probes": probes,
            "runtime": _runtime_facts(), "device": device_facts()}


def retime_slowed(items: list, paces: dict, pace, retime, budget_s: float, progress=None) -> list:
    """Names of ``items`` measured again at all cores (``retime(item)``) because their kept all-core timing ran at a
    pace (``paces``: seconds of the pace model just before it) slower than the fastest seen by PACE_SLOWED: each
    once the pace (``pace()``) is back within it, for at most ``budget_s``; a timing that is slowed again goes
    back in the queue."""
    known = [value for value in paces.values() if value]
    if not known:
        return []
    fastest, started = min(known), time.perf_counter()
    queue = [item for item in items if (paces.get(item["name"]) or 0.0) > fastest * PACE_SLOWED]
    retimed: list = []
    while queue and time.perf_counter() - started < budget_s:
        if pace() > fastest * PACE_SLOWED:
            time.sleep(PACE_WAIT_S)  # still in the slow spell: let it pass rather than time it again
            continue
        item = queue.pop(0)
        if progress:
            progress(item["name"] + " (all cores again: slowed)")
        retime(item)
        if item["name"] not in retimed:
            retimed.append(item["name"])
        if (paces.get(item["name"]) or 0.0) > fastest * PACE_SLOWED:
            queue.append(item)
    return retimed


def _runtime_facts() -> dict:
    import onnxruntime as ort

    return {"name": "onnxruntime", "version": ort.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Measure a model's latency and memory on this machine.")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs")
    parser.add_argument("--save-outputs")
    parser.add_argument("--state-pairs", help='JSON {"output": "input"}: emitted outputs run as a stream')
    parser.add_argument("--emit-outputs", action="store_true",
                        help="include every sample's outputs in the JSON result (npz, base64)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-xnnpack", action="store_true", help=".tflite: run without the XNNPACK delegate")
    parser.add_argument("--op-models", help=".tflite with --profile: the bundle of single-op models to time op by op")
    parser.add_argument("--microbench", action="store_true",
                        help="run the microbenchmark bundle (JSON) read from stdin instead of measuring a model")
    parser.add_argument("--facts", action="store_true", help="print the device's facts and runtime only")
    args = parser.parse_args(argv)
    if not args.microbench and not args.facts and not args.model:
        parser.error("a model path is required (or --microbench, --facts)")
    try:
        if args.facts:
            result = {"runner_version": RUNNER_VERSION, "kind": "facts", "device": device_facts(),
                      "runtime": _runtime_facts()}
        else:
            result = microbench(json.load(sys.stdin)) if args.microbench else measure(args)
    except MemoryError:
        print(json.dumps({"error": "out of memory while loading or running the model", "kind": "oom"}))
        return 3
    except UnsupportedOp as exc:
        print(json.dumps({"error": str(exc), "kind": "unsupported-op", "op": exc.op}))
        return 3
    except ImportError as exc:
        print(json.dumps({"error": f"runtime not installed: {exc}", "kind": "runtime-missing"}))
        return 3
    except Exception as exc:  # report everything as JSON; the host side turns it into one line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "kind": "failed"}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
