"""One real convert run of the bundled digits model (float and int8), shared by the gate tests."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, run_cli

DIGITS = REPO / "models" / "digits"


@dataclass
class Runs:
    int8: Path  # OUT folder of a run that shipped int8 (report.json, model.onnx)
    float: Path  # OUT folder of a float-only run of the same model
    noisy: Path  # int8 again, evaluated on labels of which a fifth are wrong (accuracy about 0.8)

    def report(self, which: str = "int8") -> dict:
        return json.loads((getattr(self, which) / "report.json").read_text())


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("gate-runs")
    int8 = run_cli("convert", DIGITS / "digits_cnn.onnx", "-o", root / "int8", "--calib", DIGITS / "calib.npz",
                   "--eval", DIGITS / "eval.npz", "-t", "rpi4b", "-t", "host", "--force-int8")
    assert int8.code == 0, int8.stderr
    plain = run_cli("convert", DIGITS / "digits_cnn.onnx", "-o", root / "float", "-t", "rpi4b", "-t", "host")
    assert plain.code == 0, plain.stderr
    import numpy as np

    with np.load(DIGITS / "eval.npz") as data:
        arrays = {k: data[k] for k in data.files}
    wrong = np.arange(len(arrays["labels"])) % 5 == 0
    arrays["labels"] = np.where(wrong, (arrays["labels"] + 1) % 10, arrays["labels"])
    np.savez(root / "noisy-eval.npz", **arrays)
    noisy = run_cli("convert", DIGITS / "digits_cnn.onnx", "-o", root / "noisy", "--calib", DIGITS / "calib.npz",
                    "--eval", root / "noisy-eval.npz", "-t", "rpi4b", "--force-int8")
    assert noisy.code == 0, noisy.stderr
    return Runs(root / "int8", root / "float", root / "noisy")


@pytest.fixture
def project(tmp_path, runs):
    """A project folder with a copy of the int8 run in out/; write(toml) puts edgeopt.toml beside it."""
    shutil.copytree(runs.int8, tmp_path / "out")

    class Project:
        folder = tmp_path
        out = tmp_path / "out"

        @staticmethod
        def write(text: str, name: str = "edgeopt.toml") -> Path:
            path = tmp_path / name
            path.write_text(text)
            return path

    return Project()
