"""edgeopt convert on PyTorch sources: factory + weights, TorchScript, .pt2, pickles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import REPO, sha256

torch = pytest.importorskip("torch")


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _assert_matches_module(onnx_path: Path, module, batches=(1, 4)) -> None:
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        (got,) = _ort(onnx_path, {"image": x})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_factory_with_weights(cli, torch_factory, tiny_module, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(tiny_module.state_dict(), weights)
    out = tmp_path / "out"
    result = cli("convert", f"{torch_factory}:build", "--weights", weights, "--input-shape", "image=1x3x8x8",
                 "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["stages"]] == ["load", "export", "simplify", "profile", "finalize"]
    export = report["stages"][1]
    assert export["details"]["exporter"] == "dynamo" and export["details"]["dynamic_batch"] is True
    assert export["parity"][0]["passed"] and export["parity"][0]["batch_sizes"] == [1, 2]
    assert report["stages"][0]["details"]["weights"]["sha256"] == sha256(weights)
    model = onnx.load(str(out / "model.onnx"))
    assert model.graph.input[0].name == "image"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert len(model.graph.initializer) > 0 and not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)  # one self-contained file
    _assert_matches_module(out / "model.onnx", tiny_module)
    assert (out / "export.onnx").exists()


def test_dotted_factory_from_working_folder(cli, torch_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(torch_factory.parent)
    result = cli("convert", "tinynet:build", "--input-shape", "1x3x8x8", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr


def test_static_batch(cli, torch_factory, tmp_path):
    result = cli("convert", f"{torch_factory}:build", "--input-shape", "image=2x3x8x8", "--static-batch",
                 "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_multi_input_with_int64_tokens(cli, torch_factory, tmp_path):
    result = cli("convert", f"{torch_factory}:build_two_inputs", "--input-shape", "tokens=2x5",
                 "--input-shape", "scale=scalar", "--input-dtype", "tokens=int64", "--fill", "tokens=3",
                 "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["tokens", "scale"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_dict_outputs_keep_their_names(cli, torch_factory, tmp_path):
    result = cli("convert", f"{torch_factory}:build_detector", "--input-shape", "image=1x3x8x8",
                 "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    boxes, scores = _ort(tmp_path / "out" / "model.onnx", {"image": x})
    assert boxes.shape == (3, 64, 4) and scores.shape == (3, 64, 5)
    assert 0.0 < scores.min() and scores.max() < 1.0


def test_torchscript_archive(cli, tiny_module, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(tiny_module).save(str(path))
    before = sha256(path)
    result = cli("convert", path, "--input-shape", "image=1x3x8x8", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"]["format"] == "torchscript"
    assert report["stages"][1]["details"]["exporter"] == "torchscript"
    _assert_matches_module(tmp_path / "out" / "model.onnx", tiny_module)
    assert sha256(path) == before


def test_torch_export_program_needs_no_shapes(cli, tiny_module, tmp_path):
    path = tmp_path / "program.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(tiny_module, (torch.randn(2, 3, 8, 8),), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, str(path))
    result = cli("convert", path, "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"]["format"] == "torch-export"
    assert report["stages"][1]["details"]["dynamic_batch"] is True
    _assert_matches_module(tmp_path / "out" / "model.onnx", tiny_module)


def test_full_pickle_refused_without_flag_and_loaded_with_it(cli, tiny_module, tmp_path):
    path = tmp_path / "full.pt"
    torch.save(tiny_module, path)
    refused = cli("convert", path, "--input-shape", "image=1x3x8x8", "-o", tmp_path / "out")
    assert refused.code == 2
    assert "--trust-pickle" in refused.stderr and "arbitrary code" in refused.stderr
    assert not (tmp_path / "out" / "model.onnx").exists()
    trusted = cli("convert", path, "--trust-pickle", "--input-shape", "image=1x3x8x8", "-o", tmp_path / "out")
    assert trusted.code == 0, trusted.stderr
    _assert_matches_module(tmp_path / "out" / "model.onnx", tiny_module)


class _Payload:
    """Unpickling this creates a file: proof that code from the pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("as_weights", [False, True])
def test_malicious_pickle_never_runs(cli, torch_factory, tmp_path, as_weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": _Payload(str(marker))}, path)
    if as_weights:
        result = cli("convert", f"{torch_factory}:build", "--weights", path, "--input-shape", "1x3x8x8",
                     "-o", tmp_path / "out")
    else:
        result = cli("convert", path, "--input-shape", "1x3x8x8", "-o", tmp_path / "out")
    assert result.code == 2
    assert not marker.exists()
    assert "--trust-pickle" in result.stderr


def test_state_dict_without_factory_explains(cli, tiny_module, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tiny_module.state_dict(), path)
    result = cli("convert", path, "-o", tmp_path / "out")
    assert result.code == 2
    assert "state_dict" in result.stderr and "--weights" in result.stderr


def test_weights_that_do_not_fit(cli, torch_factory, tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    result = cli("convert", f"{torch_factory}:build", "--weights", path, "--input-shape", "1x3x8x8",
                 "-o", tmp_path / "out")
    assert result.code == 2
    assert "do not fit the model" in result.stderr


RANDOM_MODEL = '''
import torch

class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)

def build():
    return Noisy()
'''


def test_parity_failure_is_an_error_and_leaves_outputs_untouched(cli, tmp_path):
    factory = tmp_path / "noisy.py"
    factory.write_text(RANDOM_MODEL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous good model")
    (out / "report.json").write_text("{}")

    result = cli("convert", f"{factory}:build", "--input-shape", "x=1x16", "-o", out)

    assert result.code == 4, result.stderr
    assert "parity check failed after export" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "model.onnx").read_bytes() == b"previous good model"
    assert (out / "report.json").read_text() == "{}"
    assert not list(out.glob(".edgeopt-run-*")) and not (out / "export.onnx").exists()


def test_keep_failed_keeps_work_folder(cli, tmp_path):
    factory = tmp_path / "noisy.py"
    factory.write_text(RANDOM_MODEL)
    result = cli("convert", f"{factory}:build", "--input-shape", "x=1x16", "-o", tmp_path / "out", "--keep-failed")
    assert result.code == 4
    kept = list((tmp_path / "out").glob(".edgeopt-run-*"))
    assert len(kept) == 1 and (kept[0] / "export.onnx").exists()
    assert str(kept[0]) in result.stderr


def test_bundled_example_converts_with_full_accuracy(cli, tmp_path):
    digits = REPO / "models" / "digits"
    out = tmp_path / "digits"
    result = cli("convert", f"{digits / 'model.py'}:build_model", "--weights", digits / "digits_cnn.pt",
                 "--input-shape", "image=1x1x8x8", "-o", out, "--json")
    assert result.code == 0, result.stderr
    with np.load(digits / "eval.npz") as data:
        images, labels = data["image"], data["labels"]
    (logits,) = _ort(out / "model.onnx", {"image": images})
    metadata = json.loads((digits / "metadata.json").read_text())
    correct = int((logits.argmax(1) == labels).sum())
    assert correct / len(labels) >= 0.95
    # The converted model scores what the source scored (one near-tie may flip on another CPU).
    assert correct >= metadata["accuracy"]["eval_correct_torch"] - 1


def test_pt2_with_code_in_a_shape_expression_is_refused(cli, tiny_module, tmp_path):
    """torch.export.load evaluates symbolic-shape strings with sympify (Python eval)."""
    import re
    import zipfile

    good = tmp_path / "good.pt2"
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(tiny_module, (torch.randn(2, 3, 8, 8),),
                                          dynamic_shapes={"image": {0: batch}}), str(good))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("models/model.json"):
                text = data.decode()
                original = re.findall(r'"expr_str": "((?:[^"\\]|\\.)*)"', text)[0]
                payload = f"(__import__('pathlib').Path({str(marker)!r}).touch(), {original})[1]"
                data = text.replace(f'"expr_str": "{original}"', '"expr_str": ' + json.dumps(payload)).encode()
            dst.writestr(info, data)
    result = cli("convert", evil, "-o", tmp_path / "out")
    assert result.code == 2 and "not plain arithmetic" in result.stderr
    assert not marker.exists()
    assert cli("convert", good, "-o", tmp_path / "out").code == 0


SQUEEZE_MODEL = '''
import torch

class SqueezeFirst(torch.nn.Module):
    def forward(self, x):
        return x.squeeze(0) * 2

def build():
    return SqueezeFirst()
'''


def test_dynamic_batch_that_only_works_at_one_size_points_to_static_batch(cli, tmp_path):
    factory = tmp_path / "squeeze.py"
    factory.write_text(SQUEEZE_MODEL)
    result = cli("convert", f"{factory}:build", "--input-shape", "x=1x4", "-o", tmp_path / "out")
    if result.code == 0:  # the exporter may specialise the batch itself; then the graph is static and right
        model = onnx.load(str(tmp_path / "out" / "model.onnx"))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
        return
    assert result.code == 4 and "--static-batch" in result.stderr
    fixed = cli("convert", f"{factory}:build", "--input-shape", "x=1x4", "--static-batch", "-o", tmp_path / "out")
    assert fixed.code == 0, fixed.stderr


def test_factory_file_defining_a_dataclass(cli, tmp_path):
    """A model file with a @dataclass config: the dataclass machinery looks its module up in sys.modules."""
    factory = tmp_path / "configured.py"
    factory.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "import torch\n\n"
        "@dataclass\n"
        "class Config:\n"
        "    width: int = 4\n\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(3, Config().width), torch.nn.ReLU())\n")
    result = cli("convert", f"{factory}:build", "--input-shape", "1x3", "-o", tmp_path / "out")
    assert result.code == 0, result.stderr
