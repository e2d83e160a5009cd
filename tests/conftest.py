"""Shared fixtures: tiny real models built here, and a way to run the CLI."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]

# Tests never read or write the user's own calibrated targets (~/.config/edgeopt) nor the host figures
# measured on first use (~/.cache/edgeopt): a test run measures its own, once.
# The emulated board (tools/emulated_board.py) is the exception: minutes to build, so it stays in the user's
# cache between runs (its folder is named by its recipe, and rebuilt when that changes).
os.environ.setdefault("EDGEOPT_BOARD_CACHE", os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgeopt", "emulated-board"))
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="edgeopt-tests-config-")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="edgeopt-tests-cache-")
os.environ.pop("EDGEOPT_TARGETS_DIR", None)


# Under CI (.ci/run) every test must run: a skip there (a package that failed to import, a missing system tool)
# would hide a broken install, so it is reported as a failure with its reason.
SKIPS_FAIL = bool(os.environ.get("CI"))


def _skip_to_failure(report) -> None:
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_to_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_to_failure(outcome.get_result())


def pytest_report_header(config) -> str:
    """The CPU's int8-relevant flags, so a failure log says which kind of machine it came from
    (onnxruntime's int8 kernels differ between AVX2, AVX-512 VNNI and ARM dot-product CPUs)."""
    import platform

    from edgeopt.targets import int8_isa_summary

    return f"cpu: {platform.machine()}, int8-relevant flags: {int8_isa_summary()}"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run the `edgeopt` entry point in-process, capturing its output and exit code."""
    from edgeopt.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    return run_cli


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conv_classifier(opset: int = 17, batch: str | int = "batch", seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->4, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->5).

    Opset 11/12 graphs are valid too (every op here exists there).
    """
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv.b")
    fc_w = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc.w")
    fc_b = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc.b")
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        initializer=[w, b, fc_w, fc_b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edgeopt-tests")
    model.ir_version = 7 if opset <= 15 else 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def conv_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "conv.onnx"
    path.parent.mkdir()
    onnx.save(conv_classifier(), str(path))
    return path


TORCH_FACTORY_SOURCE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, image):
        x = torch.relu(self.bn(self.conv(image)))
        return self.fc(x.mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 6)
        self.proj = nn.Linear(6, 3)

    def forward(self, tokens, scale):
        return self.proj(self.embed(tokens)).mean(dim=1) * scale


class Detector(nn.Module):
    """A detector-style head: boxes and class scores from one feature map, as a dict."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, 5, 1)

    def forward(self, image):
        f = torch.relu(self.backbone(image))
        return {"boxes": self.box(f).flatten(2).transpose(1, 2),
                "scores": self.cls(f).sigmoid().flatten(2).transpose(1, 2)}


def build_detector():
    torch.manual_seed(0)
    return Detector().eval()


def build():
    torch.manual_seed(0)
    return TinyNet().eval()


def build_two_inputs():
    torch.manual_seed(0)
    return TwoInputs().eval()


def build_broken():
    raise RuntimeError("factory exploded")


def build_not_a_module():
    return 42
'''


@pytest.fixture
def torch_factory(tmp_path: Path) -> Path:
    """A user's model file, importable as path/tinynet.py:build."""
    pytest.importorskip("torch")
    path = tmp_path / "userproj" / "tinynet.py"
    path.parent.mkdir()
    path.write_text(TORCH_FACTORY_SOURCE)
    return path


@pytest.fixture
def tiny_module(torch_factory: Path):
    """An instance of TinyNet with seeded random (non-trivial BN) weights."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("_tinynet_fixture", torch_factory)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["_tinynet_fixture"] = module
    net = module.build()
    with torch.no_grad():  # make BatchNorm do something so folding errors would show
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net


def detector_model(path: Path) -> Path:
    """Boxes in pixels (0..320) concatenated with sigmoid class scores (0..1): one int8
    scale for the concatenation flattens the scores to zero."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="backbone"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "wb"], ["b0"], name="box_head"),
        helper.make_node("Sigmoid", ["b0"], ["b1"], name="box_sigmoid"),
        helper.make_node("Mul", ["b1", "image_size"], ["boxes"], name="box_scale"),
        helper.make_node("MatMul", ["hr", "ws"], ["s0"], name="cls_head"),
        helper.make_node("Sigmoid", ["s0"], ["scores"], name="cls_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["detections"], name="concat", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["n", 7])],
        initializer=[weight("w1", (16, 64)), weight("wb", (64, 4)), weight("ws", (64, 3)),
                     numpy_helper.from_array(np.array(320.0, np.float32), "image_size")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


# A factory with keyword arguments (width, dropout) for 8x8 digits: `--factory-arg` and tune's architecture
# trials write it to a file and load it as FILE.py:build.
WIDE_FACTORY = """
import torch
from torch import nn


class Wide(nn.Module):
    def __init__(self, channels, dropout):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, 10))

    def forward(self, image):
        return self.body(image)


def build(width=1.0, dropout=0.0):
    torch.manual_seed(0)
    return Wide(max(4, int(16 * width)), dropout)
"""
