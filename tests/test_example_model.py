"""Checks for the bundled example model in models/digits/ (real files, no mocks)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits"
SCRIPT = DIGITS / "make_digits.py"
GENERATED = {"digits_cnn.pt", "digits_cnn.onnx", "train.npz", "calib.npz", "eval.npz", "metadata.json"}
MAX_TOTAL_BYTES = 5 * 1024 * 1024


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _metadata() -> dict:
    return json.loads((DIGITS / "metadata.json").read_text())


def _row_set(images: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in images.reshape(len(images), -1)}


def _build_model():
    spec = importlib.util.spec_from_file_location("_test_digits_model", DIGITS / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model()


def _ort_logits(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"image": images})
    return logits


# ------------------------------------------------------------------ committed data


def test_committed_npz_keys_dtypes_shapes():
    meta = _metadata()
    train = _load_npz(DIGITS / "train.npz")
    calib = _load_npz(DIGITS / "calib.npz")
    evals = _load_npz(DIGITS / "eval.npz")

    assert set(train) == {"image", "labels"}
    assert set(evals) == {"image", "labels"}
    assert set(calib) == {"image"}

    for name, split, n in (
        ("train", train, meta["split"]["train"]),
        ("eval", evals, meta["split"]["eval"]),
    ):
        assert split["image"].dtype == np.float32, name
        assert split["image"].shape == (n, 1, 8, 8), name
        assert split["labels"].dtype == np.int64, name
        assert split["labels"].shape == (n,), name
        assert set(np.unique(split["labels"]).tolist()) == set(range(10)), name
    assert calib["image"].dtype == np.float32
    assert calib["image"].shape == (200, 1, 8, 8)
    assert meta["split"]["calib"] == 200

    total = meta["split"]["total"]
    assert meta["split"]["train"] + meta["split"]["eval"] == total == 1797
    assert 0.75 <= meta["split"]["train"] / total <= 0.85

    # Documented preprocessing: (pixel/16 - 0.5)/0.5 with integer pixels 0..16.
    for images in (train["image"], calib["image"], evals["image"]):
        assert images.min() >= -1.0 and images.max() <= 1.0
        pixels = (images * 0.5 + 0.5) * 16.0
        np.testing.assert_array_equal(pixels, np.round(pixels))


def test_preprocessing_matches_sklearn_source():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    expected = ((digits.data.astype(np.float32) / 16.0 - 0.5) / 0.5).reshape(-1, 1, 8, 8)
    by_row = {row.tobytes(): int(label) for row, label in zip(expected.reshape(len(expected), -1), digits.target)}
    for name in ("train.npz", "eval.npz"):
        split = _load_npz(DIGITS / name)
        for row, label in zip(split["image"].reshape(len(split["image"]), -1), split["labels"]):
            assert by_row.get(row.tobytes()) == int(label), f"{name}: sample not in load_digits with that label"


def test_calib_comes_from_train_and_is_disjoint_from_eval():
    train = _row_set(_load_npz(DIGITS / "train.npz")["image"])
    evals = _row_set(_load_npz(DIGITS / "eval.npz")["image"])
    calib_images = _load_npz(DIGITS / "calib.npz")["image"]
    calib = _row_set(calib_images)

    assert len(calib) == len(calib_images), "calib samples are not distinct"
    assert calib <= train, "calib samples must come from the train split"
    assert not calib & evals, "calib samples must not appear in eval"
    assert not train & evals, "train and eval splits overlap"


def test_metadata_hashes_match_committed_files():
    meta = _metadata()
    assert set(meta["files"]) == GENERATED - {"metadata.json"}
    for name, info in meta["files"].items():
        data = (DIGITS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"], name
        assert len(data) == info["bytes"], name


def test_example_folder_is_small():
    files = [p for p in DIGITS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert GENERATED <= {p.name for p in files}
    total = sum(p.stat().st_size for p in files)
    assert total < MAX_TOTAL_BYTES, f"models/digits holds {total} bytes"


# ---------------------------------------------------------------- committed model


def test_onnx_model_reaches_recorded_accuracy():
    ort = pytest.importorskip("onnxruntime")
    meta = _metadata()
    onnx_path = DIGITS / "digits_cnn.onnx"

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == "image" and out.name == "logits"
    assert inp.shape[1:] == [1, 8, 8] and isinstance(inp.shape[0], str)  # dynamic batch
    assert inp.type == "tensor(float)"

    evals = _load_npz(DIGITS / "eval.npz")
    (logits,) = sess.run(None, {"image": evals["image"]})
    assert logits.shape == (len(evals["labels"]), 10)
    correct = int((logits.argmax(axis=1) == evals["labels"]).sum())
    accuracy = correct / len(evals["labels"])

    recorded = meta["accuracy"]
    assert recorded["eval_samples"] == len(evals["labels"])
    assert recorded["eval_top1_onnxruntime"] >= 0.95
    # One sample of slack: another CPU's kernels may flip a near-tie argmax.
    assert correct >= recorded["eval_correct_onnxruntime"] - 1
    assert accuracy >= 0.95

    # Dynamic batch really works: batch 1 and an odd batch give the same logits.
    (one,) = sess.run(None, {"image": evals["image"][:1]})
    (odd,) = sess.run(None, {"image": evals["image"][:7]})
    np.testing.assert_allclose(one, logits[:1], atol=1e-5)
    np.testing.assert_allclose(odd, logits[:7], atol=1e-5)


def test_build_model_factory():
    torch = pytest.importorskip("torch")
    model = _build_model()
    assert isinstance(model, torch.nn.Module)
    assert not model.training, "build_model() must return the module in eval mode"
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 10) and out.dtype == torch.float32
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(torch.zeros(2, 1, 8, 8)), out)


def test_pt_weights_load_and_agree_with_onnx():
    torch = pytest.importorskip("torch")
    meta = _metadata()
    state = torch.load(DIGITS / "digits_cnn.pt", weights_only=True, map_location="cpu")
    model = _build_model()
    model.load_state_dict(state, strict=True)
    model.eval()

    evals = _load_npz(DIGITS / "eval.npz")
    with torch.no_grad():
        pt_logits = model(torch.from_numpy(evals["image"])).numpy()
    ort_logits = _ort_logits(DIGITS / "digits_cnn.onnx", evals["image"])

    max_diff = float(np.abs(pt_logits - ort_logits).max())
    assert max_diff < 1e-4, f"PyTorch vs ONNX max abs logit diff {max_diff}"
    correct = int((pt_logits.argmax(axis=1) == evals["labels"]).sum())
    assert correct >= meta["accuracy"]["eval_correct_torch"] - 1
    assert meta["accuracy"]["eval_top1_torch"] >= 0.95


# ------------------------------------------------------------------- regeneration


@pytest.fixture(scope="module")
def two_regenerations(tmp_path_factory):
    """Run make_digits.py twice (in parallel, one thread each) into fresh dirs."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    outs = [tmp_path_factory.mktemp(f"digits_run{i}") for i in (1, 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for out in outs
    ]
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            results.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for code, stdout, stderr in results:
        assert code == 0, f"make_digits.py failed:\n{stdout}\n{stderr}"
        assert "[torch.onnx]" not in stdout + stderr, "exporter console noise was not silenced"
    return outs


def test_regenerated_data_is_identical_to_committed(two_regenerations):
    for out in two_regenerations:
        assert {p.name for p in out.iterdir()} == GENERATED, "missing files or leftover temp files"
        for name in ("train.npz", "calib.npz", "eval.npz"):
            fresh, committed = _load_npz(out / name), _load_npz(DIGITS / name)
            assert set(fresh) == set(committed), name
            for key in committed:
                assert fresh[key].dtype == committed[key].dtype, f"{name}:{key}"
                np.testing.assert_array_equal(fresh[key], committed[key], err_msg=f"{name}:{key}")


def test_two_runs_give_bit_identical_weights(two_regenerations):
    torch = pytest.importorskip("torch")
    first, second = (torch.load(out / "digits_cnn.pt", weights_only=True) for out in two_regenerations)
    assert list(first) == list(second)
    for key in first:
        assert first[key].dtype == second[key].dtype, key
        assert torch.equal(first[key], second[key]), f"{key} differs between two runs"

    meta1, meta2 = (json.loads((out / "metadata.json").read_text()) for out in two_regenerations)
    assert meta1["accuracy"] == meta2["accuracy"]
    assert meta1["accuracy"]["eval_top1_torch"] >= 0.95
    assert meta1["accuracy"]["eval_top1_onnxruntime"] >= 0.95
