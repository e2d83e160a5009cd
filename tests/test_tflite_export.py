"""edgeopt convert --format tflite: the PyTorch source (as pruning and fine-tuning left it) converted by
litert-torch, parity-checked with the LiteRT interpreter; refused up front where it cannot run. The conversion
tests run where the tflite-export extra is installed (litert-torch stays out of the test extras: see
pyproject.toml); the refusals run everywhere."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO

DIGITS = REPO / "models" / "digits"
HAS_LITERT_TORCH = importlib.util.find_spec("litert_torch") is not None


def needs_litert_torch(test):
    """Collected only where litert-torch is installed: it is deliberately absent from the test extras and CI
    (see pyproject.toml), where a skip counts as a failure; the refusal tests below cover that side."""
    return test if HAS_LITERT_TORCH else None


def _convert(cli, out, *extra):
    return cli("convert", f"{DIGITS / 'model.py'}:build_model", "--weights", DIGITS / "digits_cnn.pt",
               "--input-shape", "1x1x8x8", "--format", "tflite", "-o", out, "--json", *extra)


@needs_litert_torch
def test_a_factory_converts_to_tflite_that_matches_the_source(cli, tmp_path):
    out = tmp_path / "out"
    result = _convert(cli, out)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    stage = next(s for s in report["stages"] if s["name"] == "tflite")
    assert stage["status"] == "ok" and stage["details"]["converter"].startswith("litert-torch")
    (check,) = stage["parity"]
    assert check["passed"] and all(o["cosine"] > 0.9999 for o in check["outputs"])
    tflite = out / "model.tflite"
    assert tflite.is_file() and (out / "model.onnx").is_file()
    # the file is what the source computes, on inputs the parity check never saw
    from ai_edge_litert.interpreter import Interpreter

    import onnxruntime as ort

    with np.load(DIGITS / "eval.npz") as data:
        images = data["image"][:8].astype(np.float32)
    runner = Interpreter(model_path=str(tflite)).get_signature_runner()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for image in images:
        got = next(iter(runner(image=image[None]).values()))
        np.testing.assert_allclose(got, session.run(None, {"image": image[None]})[0], rtol=1e-4, atol=1e-4)
    # inspect and the gate read it as any .tflite
    graph = json.loads(cli("inspect", tflite, "--json").stdout)["graph"]
    assert graph["signatures"][0]["inputs"] == ["image"] and graph["macs_total"] == 599_680


@needs_litert_torch
def test_pruned_and_fine_tuned_module_is_what_gets_converted(cli, tmp_path):
    out = tmp_path / "out"
    result = _convert(cli, out, "--prune", "0.5", "--finetune", DIGITS / "train.npz", "--epochs", "1")
    assert result.code == 0, result.stderr
    graph = json.loads(cli("inspect", out / "model.tflite", "--json").stdout)["graph"]
    onnx_params = json.loads(result.stdout)["summary"]["parameter_count"]
    assert graph["parameter_count"] == onnx_params < 24_420  # the pruned widths, not the source's


@pytest.mark.skipif(HAS_LITERT_TORCH, reason="the refusal is for machines without litert-torch")
def test_without_litert_torch_the_run_is_refused_before_anything_runs(cli, tmp_path):
    out = tmp_path / "out"
    result = _convert(cli, out)
    assert result.code == 2 and "--format tflite needs litert-torch" in result.stderr
    assert "edgeopt[tflite-export]" in result.stderr and not out.exists()


def test_an_onnx_source_is_refused_for_tflite(cli, tmp_path):
    result = cli("convert", DIGITS / "digits_cnn.onnx", "--format", "tflite", "-o", tmp_path / "out")
    assert result.code == 2 and "--format tflite converts PyTorch sources" in result.stderr
    assert not (tmp_path / "out").exists()


@needs_litert_torch
def test_int8_tflite_from_the_same_calibration_data_is_judged_and_timed(cli, tmp_path):
    """With --calib: a PT2E int8 .tflite (fully int8, inputs and outputs too) judged against the float one on
    the labelled evaluation data with the same metrics and floor, and timed beside it here; --force-int8 ships
    it whatever the timing, and without it the decision follows the stated rule."""
    forced = _convert(cli, tmp_path / "forced", "--calib", DIGITS / "calib.npz", "--eval", DIGITS / "eval.npz",
                      "--force-int8")
    assert forced.code == 0, forced.stderr
    details = next(s for s in json.loads(forced.stdout)["stages"] if s["name"] == "tflite")["details"]
    int8 = details["int8"]
    assert int8["shipped"] == "int8" and int8["calibration_samples"] > 0
    fidelity = int8["fidelity"]
    assert fidelity["samples"] == 360 and fidelity["accuracy_candidate"] >= fidelity["accuracy_reference"] - 0.02
    assert int8["metrics"] and int8["size_bytes"] < 0.5 * int8["float_size_bytes"]
    assert int8["latency_ratio"] > 0 and int8["float_ms"] > 0
    graph = json.loads(cli("inspect", tmp_path / "forced" / "model.tflite", "--json").stdout)["graph"]
    assert graph["fully_int8"] and (tmp_path / "forced" / "model.tflite").stat().st_size == int8["size_bytes"]

    plain = _convert(cli, tmp_path / "plain", "--calib", DIGITS / "calib.npz", "--eval", DIGITS / "eval.npz")
    assert plain.code == 0, plain.stderr
    decided = next(s for s in json.loads(plain.stdout)["stages"] if s["name"] == "tflite")["details"]["int8"]
    if decided["shipped"] == "int8":
        assert decided["latency_ratio"] <= 0.95
    else:
        assert decided["latency_ratio"] > 0.95 and "--force-int8" in decided["reason"]


@needs_litert_torch
def test_a_failed_conversion_names_the_op_and_where_it_is(cli, tmp_path):
    """torch.linalg.det exports to ONNX (Det) but litert-torch has no lowering for it: exit 2, the op and the
    module's line named, nothing written."""
    factory = tmp_path / "det_model.py"
    factory.write_text("import torch\n\n\nclass Determinant(torch.nn.Module):\n    def forward(self, matrix):\n"
                       "        return torch.linalg.det(matrix).unsqueeze(-1)\n\n\n"
                       "def build_model():\n    return Determinant().eval()\n")
    out = tmp_path / "out"
    result = cli("convert", f"{factory}:build_model", "--input-shape", "matrix=1x4x4", "--format", "tflite", "-o", out)
    assert result.code == 2, result.stderr
    assert "litert-torch could not convert the model (op aten._linalg_det.default at det_model.py:6)" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
