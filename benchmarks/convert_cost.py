#!/usr/bin/env python
"""convert's own cost (issue 22): wall time and peak RSS of `edgeopt convert --calib` by calibration size,
beside plain onnxruntime `quantize_static` on the same data.

Each measurement is its own fresh child process, so one run's memory cannot hide in another's:

- **edgeopt**: `edgeopt convert MODEL --calib CALIB_N.npz --target host -o OUT --json` (auto mode; as a
  new user runs it, without `--eval`, so edgeopt holds out 20% of the samples for fidelity);
- **ort static**: `quantize_static` (QDQ, u8 activations, s8 per-channel weights, MinMax, default
  options) on the same .npz, in a child running this script's `--child-ort-static` mode.

Peak RSS is the child's `ru_maxrss` as returned by `os.wait4` for that child alone (it includes the
largest of the child's own reaped descendants). While a child runs, the parent also samples the RSS
of its process tree and ends the child's process group when it passes `--max-rss` (default: 80% of
the memory available at start), so a run that would exhaust the machine becomes a row that says
so instead of an out-of-memory kill of the whole benchmark; `--timeout` does the same for time.

The model is a zoo model (`benchmarks/zoo.py`), default the ddddocr character detector
(common_det.onnx, YOLOX, 1x3x416x416, its natural size); its calibration data is generated from a
seed per size (click-captcha-like scenes), nothing downloaded.

    python benchmarks/convert_cost.py [--model det] [--sizes 8,32,128,512] [--timeout 1800] [--quick]

`--quick`: sizes 8 and 32 on the OCR recognizer (common.onnx, 1x1x64x192), about 2 minutes; the
detector takes 1-5 minutes per edgeopt run (8 to 512 samples), about 14 minutes for all five sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zoo  # benchmarks/zoo.py: the script's folder is on sys.path
from machine import machine_line  # benchmarks/machine.py

GOAL_GROWTH = 0.25      # peak RSS from 32 to 512 samples
GOAL_VS_PLAIN = 2.0     # edgeopt's peak RSS over plain quantize_static's, at every size
GOAL_SECONDS = 300.0    # 256 samples of a 384x512 detector
GIB = 1024 ** 3


@dataclass
class Child:
    seconds: float
    peak_bytes: int | None       # ru_maxrss from wait4 (None when the child was ended by us)
    sampled_bytes: int           # largest sampled RSS of the child's process tree
    status: str                  # "ok", "exit N: last stderr line", "killed: ..."


def tree_rss(pid: int) -> int:
    """RSS of pid and its descendants, from /proc (Linux); 0 where unreadable."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            p = int(entry.name)
            children.setdefault(int(fields[1]), []).append(p)  # fields[1] is the parent pid
            rss[p] = int(fields[21]) * page                    # fields[21] is rss in pages
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack += children.get(p, [])
    return total


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * GIB


def run_child(command: list[str], log_path: Path, timeout: float, max_rss: int) -> Child:
    """Run `command` in its own session; reap it with os.wait4 for its own ru_maxrss."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as err, open(log_path.with_suffix(".stdout"), "w") as out:
        started = time.perf_counter()
        # start_new_session: the child leads its own process group, so ending it ends its helpers too
        process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
        sampled, reason = 0, ""
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            sampled = max(sampled, tree_rss(process.pid))
            elapsed = time.perf_counter() - started
            if not reason and (elapsed > timeout or sampled > max_rss):
                reason = (f"killed: timeout after {elapsed:.0f} s" if elapsed > timeout
                          else f"killed: RSS {sampled / GIB:.1f} GiB passed --max-rss {max_rss / GIB:.1f} GiB")
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    if reason:
        return Child(seconds, None, sampled, reason)
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    if process.returncode != 0:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        return Child(seconds, peak, sampled, f"exit {process.returncode}: {lines[-1] if lines else '?'}"[:200])
    return Child(seconds, peak, sampled, "ok")


def child_ort_static(source: str, calib: str, out: str) -> None:
    """The plain recipe, alone in this process: onnxruntime's quantize_static with its default options."""
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    logging.getLogger().setLevel(logging.ERROR)
    data = np.load(calib)
    names = [n for n in data.files if n != "labels"]
    count = len(data[names[0]])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.index = 0
            self.arrays = {n: data[n] for n in names}  # all samples in memory, as a simple reader holds them

        def get_next(self):
            if self.index >= count:
                return None
            self.index += 1
            return {n: a[self.index - 1: self.index] for n, a in self.arrays.items()}

    quantize_static(source, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def goals(rows: dict[int, dict[str, Child]], model_title: str, input_shape: str) -> list[str]:
    out = []

    def line(goal: str, verdict: str, detail: str) -> None:
        out.append(f"- {goal}: **{verdict}** ({detail})")

    def peak(child: Child | None) -> int | None:
        return None if child is None else child.peak_bytes if child.status == "ok" else None

    a, b = rows.get(32, {}).get("edgeopt"), rows.get(512, {}).get("edgeopt")
    if peak(a) and peak(b):
        growth = peak(b) / peak(a) - 1
        line("peak RSS grows at most 25% from 32 to 512 samples", "met" if growth <= GOAL_GROWTH else "missed",
             f"{gib(peak(a))} -> {gib(peak(b))}, {growth:+.0%}")
    elif peak(a) and b is not None:
        line("peak RSS grows at most 25% from 32 to 512 samples", "missed",
             f"{gib(peak(a))} at 32; 512 did not finish: {b.status} (sampled peak {gib(b.sampled_bytes)}, "
             f"{b.sampled_bytes / peak(a) - 1:+.0%} at least)")
    else:
        line("peak RSS grows at most 25% from 32 to 512 samples", "not measured", "needs sizes 32 and 512")

    ratios, unknown = [], []
    for size, pair in sorted(rows.items()):
        e, p = peak(pair.get("edgeopt")), peak(pair.get("ort static"))
        if e and p:
            ratios.append((size, e / p))
        else:
            unknown.append(size)
    over = [f"{s}: {r:.1f}x" for s, r in ratios if r > GOAL_VS_PLAIN]
    detail = ", ".join(f"{s}: {r:.1f}x" for s, r in ratios) or "no size where both finished"
    if unknown:
        detail += f"; not comparable at {', '.join(map(str, unknown))} (a run did not finish)"
    verdict = "missed" if over else "met" if ratios and not unknown else "not measured" if not ratios else \
        "met where measured"
    line("edgeopt's peak RSS at most 2x plain quantize_static at every size", verdict, detail)

    finished = {s: pair["edgeopt"] for s, pair in rows.items() if "edgeopt" in pair}
    goal = f"256 samples convert within 5 minutes ({model_title}, {input_shape}; the issue's 384x512 DBNet is not in the zoo)"
    if 256 in finished and finished[256].status == "ok":
        t = finished[256].seconds
        line(goal, "met" if t <= GOAL_SECONDS else "missed", f"{t:.0f} s measured")
    elif any(s <= 256 and c.seconds > GOAL_SECONDS for s, c in finished.items()):
        s, c = min((s, c) for s, c in finished.items() if s <= 256 and c.seconds > GOAL_SECONDS)
        line(goal, "missed", f"already {c.seconds:.0f} s at {s} samples ({c.status})")
    elif all(s in finished and finished[s].status == "ok" for s in (128, 512)):
        t = finished[128].seconds + (finished[512].seconds - finished[128].seconds) * (256 - 128) / (512 - 128)
        line(goal, "met" if t <= GOAL_SECONDS else "missed", f"{t:.0f} s interpolated between 128 and 512")
    else:
        line(goal, "not measured", "needs size 256, or 128 and 512")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help=f"zoo model: {', '.join(zoo.MODELS)} (default det; --quick ocr)")
    parser.add_argument("--sizes", help="calibration sample counts (default 8,32,128,512; --quick 8,32)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per child (default 1800)")
    parser.add_argument("--max-rss", type=float, help="GiB a child may use before it is ended "
                                                      "(default 80%% of the memory available at start)")
    zoo.add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="sizes 8,32 on the OCR recognizer: about 2 minutes "
                                                             "(the detector: 1-5 minutes per run)")
    parser.add_argument("--child-ort-static", nargs=3, metavar=("MODEL", "CALIB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ort_static:
        child_ort_static(*args.child_ort_static)
        return
    args.model = args.model or ("ocr" if args.quick else "det")
    if args.model not in zoo.MODELS:
        parser.error(f"unknown model {args.model}; choose from {', '.join(zoo.MODELS)}")
    sizes = [int(s) for s in (args.sizes or ("8,32" if args.quick else "8,32,128,512")).split(",") if s.strip()]
    max_rss = int(args.max_rss * GIB) if args.max_rss else int(available_memory() * 0.8)

    import onnxruntime as ort

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    source = zoo.model_path(args.model, args.workdir, log)
    info = zoo.describe(source)
    shape = ", ".join(f"{i['name']}={zoo.shape_text(i)}" for i in info["inputs"])
    work = args.workdir / "runs" / "convert_cost" / args.model
    rows: dict[int, dict[str, Child]] = {}
    sample_shape = ""
    for size in sizes:
        log(f"{args.model}: generating {size} calibration samples")
        calib = zoo.data_file(args.model, "calib", size, args.workdir)
        if not sample_shape:  # the shape the data gives the symbolic dims (the OCR width)
            with np.load(calib) as data:
                sample_shape = ", ".join(f"{k} {'x'.join(map(str, data[k].shape[1:]))}" for k in data.files)
        # the data array is Nx(this): axis 0 counts samples
        rows[size] = {}
        commands = {
            "edgeopt": [sys.executable, "-m", "edgeopt", "convert", str(source), "--calib", str(calib), "--target",
                        "host", "-o", str(work / f"edgeopt-{size}"), "--json"],
            "ort static": [sys.executable, str(Path(__file__).resolve()), "--child-ort-static", str(source), str(calib),
                           str(work / f"ort-static-{size}.onnx")],
        }
        for label, command in commands.items():
            log(f"{args.model} @ {size}: {label}")
            child = run_child(command, work / f"{label.replace(' ', '-')}-{size}.stderr", args.timeout, max_rss)
            rows[size][label] = child
            log(f"  {child.seconds:.0f} s, peak {gib(child.peak_bytes)}, {child.status}")

    print(f"{machine_line()}; onnxruntime {ort.__version__}, edgeopt {zoo.edgeopt_revision()}; model {zoo.MODELS[args.model].title}, {shape} "
          f"(data: {sample_shape} per sample); "
          f"each run a fresh child process; peak RSS = the child's ru_maxrss from wait4 "
          f"(children ended above {max_rss / GIB:.1f} GiB or {args.timeout:.0f} s)\n")
    print("| calibration samples | edgeopt convert: wall time | edgeopt convert: peak RSS | plain quantize_static "
          "(u8s8 QDQ, MinMax): wall time | plain quantize_static: peak RSS | RSS ratio | notes |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for size, pair in rows.items():
        e, p = pair["edgeopt"], pair["ort static"]
        ratio = f"{e.peak_bytes / p.peak_bytes:.1f}x" if e.peak_bytes and p.peak_bytes and \
            e.status == p.status == "ok" else "-"
        notes = "; ".join(f"{k}: {c.status}" for k, c in pair.items() if c.status != "ok")
        print(f"| {size} | {e.seconds:.0f} s | {gib(e.peak_bytes if e.status == 'ok' else None)} | {p.seconds:.0f} s "
              f"| {gib(p.peak_bytes if p.status == 'ok' else None)} | {ratio} | {notes} |")
    print("\nIssue 22 goals, on this run:\n")
    goal_lines = goals(rows, zoo.MODELS[args.model].title, shape)
    print("\n".join(goal_lines))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine_line(), "onnxruntime": ort.__version__, "edgeopt": zoo.edgeopt_revision(), "model": info, "max_rss_bytes": max_rss,
            "rows": {size: {k: vars(c) for k, c in pair.items()} for size, pair in rows.items()},
            "goals": goal_lines}, indent=1))


if __name__ == "__main__":
    main()
