"""The core (inspect, ONNX convert, targets) imports and works without torch installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx

from conftest import conv_classifier

# Make `import torch` fail the way it does when torch is not installed.
_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnxscript", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTorch())
from edgeopt.cli.app import main
main(sys.argv[1:])
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK_TORCH, *map(str, args)], capture_output=True, text=True)


def test_inspect_and_convert_onnx_without_torch(tmp_path: Path):
    source = tmp_path / "m.onnx"
    onnx.save(conv_classifier(opset=12), str(source))
    inspected = _run("inspect", source, "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["graph"]["macs_total"] == 8 * 8 * 4 * 3 * 9 + 4 * 5
    converted = _run("convert", source, "-o", tmp_path / "out", "--json")
    assert converted.returncode == 0, converted.stderr
    assert json.loads(converted.stdout)["final"]["size_bytes"] > 0
    assert (tmp_path / "out" / "model.onnx").exists()
    assert _run("targets", "list", "--json").returncode == 0


def test_torch_source_without_torch_says_how_to_install(tmp_path: Path):
    factory = tmp_path / "f.py"
    factory.write_text("def build():\n    return None\n")
    result = _run("convert", f"{factory}:build", "-o", tmp_path / "out", "--input-shape", "1x3")
    assert result.returncode == 2
    assert "edgeopt[torch]" in result.stderr and "Traceback" not in result.stderr


def test_library_import_does_not_pull_torch():
    code = ("import sys, edgeopt.pipeline, edgeopt.commands.inspect, edgeopt.cli.app, edgeopt.analysis.summary; "
            "print(sorted(m for m in ('torch', 'onnxscript') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
