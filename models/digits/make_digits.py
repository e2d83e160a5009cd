#!/usr/bin/env python
"""Deterministically regenerate a bundled ``digits`` example model and its data.

Usage::

    python models/digits/make_digits.py [--variant digits|digits32] [--out DIR]

Two variants share every step but the image size and the network:

- ``digits`` (default): the 8x8 images as they are, ``models/digits/model.py`` (a 24k-parameter CNN);
- ``digits32``: the images upsampled bilinearly to 32x32, ``models/digits32/model.py`` (a MobileNet-style
  CNN of about 152k parameters, the README's main example). Its train split is not written (5.9 MB that
  training here reads from scikit-learn anyway) and its .npz files are deflated.

``DIR`` defaults to the variant's folder.  Steps:

1. Load scikit-learn's bundled ``load_digits`` (1797 images, 8x8, integer
   pixels 0..16, 10 classes; no download needed).
2. Preprocess: ``x = (pixel / 16 - 0.5) / 0.5`` as float32, i.e. scale to
   [0, 1] then normalise with mean 0.5 / std 0.5, giving values in [-1, 1];
   reshape to ``[N, 1, 8, 8]`` (NCHW).  Every step is exact in float32.
3. Stratified split (``train_test_split``, ``random_state=SEED``) into 80 %
   train / 20 % eval; each split is kept in original dataset order.
4. Calibration set: 200 train samples, stratified by class
   (``train_test_split`` again, ``random_state=SEED``), in train order.
5. Train :class:`DigitsCNN` (``model.py``) on CPU with fixed seeds, one thread
   and ``torch.use_deterministic_algorithms(True)``: Adam, fixed epochs.
6. Export the trained model with the dynamo ONNX exporter (input ``image``,
   output ``logits``, dynamic batch axis ``batch``) to one self-contained file
   and score it with onnxruntime.

Files written (each atomically: temp file in ``DIR`` then ``os.replace``):
``digits_cnn.pt`` (state_dict), ``digits_cnn.onnx``, ``train.npz``,
``calib.npz``, ``eval.npz`` and ``metadata.json`` (preprocessing, split
sizes, seed, epochs, accuracies, sha256 of every other file written).

Same machine + same library versions -> bit-identical weights.  The ``.npz``
files are written with fixed zip timestamps, so they are byte-identical on
any machine.  Trained weights may differ in the last bits on another CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterator

HERE = Path(__file__).resolve().parent

SEED = 20240607
EVAL_FRACTION = 0.2
CALIB_SIZE = 200
EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4

PIXEL_MAX = 16.0
NORM_MEAN = 0.5
NORM_STD = 0.5

# variant -> (folder, image side, weights/ONNX file stem, class name, epochs, write the train split, deflate)
VARIANTS = {
    "digits": (HERE, 8, "digits_cnn", "DigitsCNN", 20, True, False),
    "digits32": (HERE.parent / "digits32", 32, "digits32_cnn", "Digits32Net", 12, False, True),
}

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"

TRAIN_FILE = "train.npz"
CALIB_FILE = "calib.npz"
EVAL_FILE = "eval.npz"
METADATA_FILE = "metadata.json"


# --------------------------------------------------------------------------- io


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; on success ``os.replace`` it onto ``dest``."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def npz_bytes(arrays: dict, deflate: bool = False) -> bytes:
    """Serialise arrays like ``np.savez`` (or ``np.savez_compressed``) but with fixed zip
    timestamps/attributes, so equal arrays always give identical bytes."""
    import numpy as np

    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_factory(path: Path) -> Callable:
    """Import ``model.py`` by path (it is a standalone factory file)."""
    spec = importlib.util.spec_from_file_location("_edgeopt_digits_model", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model


# ------------------------------------------------------------------------- data


def preprocess(pixels, side: int = 8):
    """Integer pixels 0..16, shape [N, 64] -> float32 [N, 1, side, side] in [-1, 1] (bilinear upsampling,
    half-pixel centres, where ``side`` > 8)."""
    import numpy as np

    x = np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX)
    x = (x - np.float32(NORM_MEAN)) / np.float32(NORM_STD)
    x = np.ascontiguousarray(x.reshape(-1, 1, 8, 8), dtype=np.float32)
    if side != 8:
        import torch

        with torch.no_grad():
            x = torch.nn.functional.interpolate(torch.from_numpy(x), size=(side, side), mode="bilinear",
                                                align_corners=False).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def make_splits(side: int = 8):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = preprocess(digits.data, side)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))

    train_idx, eval_idx = train_test_split(
        index, test_size=EVAL_FRACTION, stratify=labels, random_state=SEED, shuffle=True
    )
    train_idx, eval_idx = np.sort(train_idx), np.sort(eval_idx)

    calib_pos, _ = train_test_split(
        np.arange(len(train_idx)),
        train_size=CALIB_SIZE,
        stratify=labels[train_idx],
        random_state=SEED,
        shuffle=True,
    )
    calib_pos = np.sort(calib_pos)

    train = {"image": images[train_idx], "labels": labels[train_idx]}
    evals = {"image": images[eval_idx], "labels": labels[eval_idx]}
    calib = {"image": train["image"][calib_pos]}
    return train, calib, evals, len(labels)


# ------------------------------------------------------------------------ train


def train_model(build_model: Callable, train: dict, epochs: int = EPOCHS):
    import torch

    torch.manual_seed(SEED)
    model = build_model()
    x = torch.from_numpy(train["image"])
    y = torch.from_numpy(train["labels"])
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()

    model.train()
    for _epoch in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            if len(idx) < 2:  # BatchNorm needs > 1 sample per batch in train mode
                continue
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def torch_accuracy(model, data: dict) -> tuple[int, int]:
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(data["image"]))
    pred = logits.argmax(dim=1).numpy()
    return int((pred == data["labels"]).sum()), len(data["labels"])


# ----------------------------------------------------------------------- export


def export_onnx(model, sample, dest: Path) -> None:
    """Dynamo export with a dynamic batch axis; exporter chatter is captured and
    only shown if the export fails."""
    import torch

    batch = torch.export.Dim(BATCH_DIM, min=1)
    captured = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    old_levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch}},
                verbose=False,
            )
            with atomic_path(dest) as tmp:
                program.save(tmp, external_data=False)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    finally:
        for lg, lvl in zip(loggers, old_levels):
            lg.setLevel(lvl)


def onnx_accuracy(path: Path, data: dict) -> tuple[int, int, list, list]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    (logits,) = sess.run(None, {inputs[0]: data["image"]})
    pred = logits.argmax(axis=1)
    return int((pred == data["labels"]).sum()), len(data["labels"]), inputs, outputs


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="digits")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the variant's)")
    args = parser.parse_args(argv)
    folder, side, stem, class_name, epochs, write_train, deflate = VARIANTS[args.variant]
    weights_file, onnx_file = f"{stem}.pt", f"{stem}.onnx"
    out: Path = (args.out or folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    import numpy as np
    import onnx
    import onnxruntime
    import sklearn
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    train, calib, evals, n_total = make_splits(side)
    data_files = ((TRAIN_FILE, train),) if write_train else ()
    for name, arrays in (*data_files, (CALIB_FILE, calib), (EVAL_FILE, evals)):
        atomic_write_bytes(out / name, npz_bytes(arrays, deflate))

    build_model = load_factory(folder / "model.py")
    model = train_model(build_model, train, epochs)
    pt_correct, n_eval = torch_accuracy(model, evals)
    train_correct, n_train = torch_accuracy(model, train)

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()  # a buffer (not the temp path) keeps the archive's inner name fixed
    torch.save(state, buf)
    atomic_write_bytes(out / weights_file, buf.getvalue())

    export_onnx(model, torch.from_numpy(evals["image"][:2]), out / onnx_file)
    ort_correct, _, in_names, out_names = onnx_accuracy(out / onnx_file, evals)
    opset = {imp.domain or "ai.onnx": imp.version for imp in onnx.load(str(out / onnx_file)).opset_import}

    written = [weights_file, onnx_file, *(name for name, _ in data_files), CALIB_FILE, EVAL_FILE]
    metadata = {
        "dataset": "sklearn.datasets.load_digits (8x8 grayscale handwritten digits, 10 classes)",
        "preprocessing": {
            "description": "x = (pixel / 16 - 0.5) / 0.5 in float32: raw integer pixels 0..16 scaled to "
            "[0, 1], then normalised with mean 0.5 / std 0.5 -> values in [-1, 1]; layout NCHW [N, 1, 8, 8]"
            + (f"; then upsampled bilinearly (half-pixel centres) to [N, 1, {side}, {side}]" if side != 8 else ""),
            "pixel_max": PIXEL_MAX,
            "mean": NORM_MEAN,
            "std": NORM_STD,
            "layout": "NCHW",
            "dtype": "float32",
            "range": [-1.0, 1.0],
        },
        "split": {
            "method": "sklearn.model_selection.train_test_split, stratified by label, random_state=seed; "
            "each split kept in original dataset order",
            "total": n_total,
            "train": n_train,
            "eval": n_eval,
            "calib": len(calib["image"]),
            "calib_method": "200 train samples, stratified by label (train_test_split, random_state=seed), "
            "in train order",
        },
        "seed": SEED,
        "training": {
            "epochs": epochs,
            "batch_size": BATCH_SIZE,
            "optimizer": "Adam",
            "learning_rate": LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY,
            "lr_schedule": "cosine annealing to 0 over all epochs",
            "threads": 1,
            "deterministic_algorithms": True,
            "train_top1": train_correct / n_train,
        },
        "model": {
            "factory": f"models/{folder.name}/model.py:build_model",
            "class": class_name,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "onnx_inputs": in_names,
            "onnx_outputs": out_names,
            "onnx_input_shape": [BATCH_DIM, 1, side, side],
            "onnx_output_shape": [BATCH_DIM, 10],
            "onnx_opset": opset,
        },
        "accuracy": {
            "eval_top1_torch": pt_correct / n_eval,
            "eval_top1_onnxruntime": ort_correct / n_eval,
            "eval_correct_torch": pt_correct,
            "eval_correct_onnxruntime": ort_correct,
            "eval_samples": n_eval,
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in written},
    }
    atomic_write_bytes(out / METADATA_FILE, (json.dumps(metadata, indent=2) + "\n").encode())

    print(
        f"{args.variant}: train={n_train} eval={n_eval} calib={len(calib['image'])} | "
        f"eval top-1 torch={pt_correct / n_eval:.4f} onnxruntime={ort_correct / n_eval:.4f} | "
        f"wrote {len(written) + 1} files to {out} in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
