#!/usr/bin/env python
"""How close is edgeopt's memory estimate to the measured peak RSS increase? Part by part, per model.

The estimate (analysis.runtime_memory) takes its factors from this machine's memory probes (a one-op
session and one of a thousand nodes, Conv, MatMul and LSTM weights, an activation chain:
`runtime.memory_probes.memory_probe_models`), measured by the automatic host calibration. None of the models below is a probe, so every row is out of sample.

Models: the public real-model zoo (benchmarks/zoo.py: published ONNX models inside PyPI wheels, with
generated data), plus the bundled digits CNN and its int8 twin when `out/digits` exists.

For each: `edgeopt profile MODEL -t host --measure --threads 1 --runs 5 --inputs DATA --input-samples 1
--json`; the table shows the estimated parts (session, weights as loaded, first run, arena, loading), the estimated
peak increase, the measured one (the runner's load and run phases), and the error.

    python benchmarks/memory_accuracy.py [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import zoo  # benchmarks/zoo.py
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.15  # issue 16: within 15% of the measured peak RSS increase on 90% of real models
MiB = 1 << 20


def profile(model: Path, data: Path | None) -> dict:
    command = [sys.executable, "-m", "edgeopt", "profile", str(model), "-t", "host", "--measure", "--threads", "1",
               "--runs", "5", "--json"]
    if data is not None:
        command += ["--inputs", str(data), "--input-samples", "1"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout)


def row(name: str, report: dict) -> dict:
    estimate = report["estimates"]["host"]["runtime_memory"]
    measured = report["measurements"]["host"][0]["memory"]
    parts = {part["key"]: part["bytes"] for part in estimate["parts"]}
    est, got = estimate["peak_increase_bytes"], measured["peak_rss_increase_bytes"]
    return {"model": name, "parts": parts, "estimate": est, "measured": got, "error": est / got - 1,
            "measured_load": measured.get("after_load_increase_bytes"),
            "measured_load_peak": measured.get("load_peak_increase_bytes"),
            "measured_run_peak": measured.get("run_peak_increase_bytes"),
            "weights_file": report["estimates"]["host"]["weight_bytes"],
            "planned_activations": report["estimates"]["host"]["peak_activation_bytes"]}


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    zoo.add_output_arguments(parser)
    args = parser.parse_args()
    models: list[tuple[str, Path, Path | None]] = []
    for key in zoo.MODELS:
        models.append((key, zoo.model_path(key, args.workdir, log=lambda m: print(m, file=sys.stderr)),
                       zoo.data_file(key, "calib", 8, args.workdir)))
    for name in ("digits", "digits-int8"):
        path = REPO / "out" / name / "model.onnx"
        if path.exists():
            models.append((name, path, None))
    rows = []
    for name, path, data in models:
        print(f"profiling {name}", file=sys.stderr)
        try:
            rows.append(row(name, profile(path, data)))
        except RuntimeError as exc:
            print(f"  {name}: {exc}", file=sys.stderr)
    print(machine_line())
    print()
    print("| model | weights (file) | planned activations | est. session | est. weights as loaded | est. first run "
          "| est. arena | est. loading | **estimated peak** | measured: after load / load peak / run peak "
          "| **measured peak** | error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["parts"]
        print(f"| {r['model']} | {mib(r['weights_file'])} | {mib(r['planned_activations'])} | {mib(p['session'])} "
              f"| {mib(p['weights'])} | {mib(p.get('first_run'))} | {mib(p['arena'])} | {mib(p['loading'])} | **{mib(r['estimate'])}** "
              f"| {mib(r['measured_load'])} / {mib(r['measured_load_peak'])} / {mib(r['measured_run_peak'])} "
              f"| **{mib(r['measured'])}** | {r['error']:+.0%} |")
    within = sum(1 for r in rows if abs(r["error"]) <= GOAL)
    print()
    print(f"within ±{GOAL:.0%}: {within} of {len(rows)} (goal: 90%); MiB throughout")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
