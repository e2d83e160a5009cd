"""edgeopt tune --ssh: every trial's model is measured on the device (a real sshd), and that measurement is
the latency objective and what a `source = "measured"` budget is checked against."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

DIGITS = REPO / "models" / "digits"


def test_each_trial_is_measured_on_the_device_and_judged_by_it(cli, sshd, tmp_path):
    pytest.importorskip("optuna")
    (tmp_path / "edgeopt.toml").write_text(f"""[pipeline]
source = "{DIGITS / 'digits_cnn.onnx'}"
output = "out"
targets = ["rpi4b"]

[pipeline.quantize]
calib = "{DIGITS / 'calib.npz'}"
eval = "{DIGITS / 'eval.npz'}"
mode = "static"
speed_fallback = false

[tune]
sampler = "grid"
trials = 2

[tune.space]
"quantize.per_channel" = [true, false]
"quantize.activation_type" = "s8"
"quantize.calibration_method" = "minmax"

[[budgets]]
artifact = "out/model.onnx"
target = "rpi4b"
source = "measured"
max_latency_ms = 1000
""")
    result = cli("tune", "--config", tmp_path / "edgeopt.toml", "--ssh", sshd.alias, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--device-runs", "5", "--json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    rows = [row for row in document["trials"] if row["state"] == "complete"]
    assert len(rows) == 2 and all(row["feasible"] for row in rows)
    for row in rows:
        report = json.loads((Path(row["model"]).parent / "report.json").read_text())
        device = report["summary"]["device"]
        assert device["host"] == sshd.alias and device["target"] == "rpi4b"
        assert row["values"]["latency"] == pytest.approx(device["p50_ms"])
        assert row["constraints"] == [pytest.approx((device["p50_ms"] - 1000) / 1000)]  # the device's figure
    assert document["winner"]["number"] in {row["number"] for row in rows}
