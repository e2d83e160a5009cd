"""Image folders as model input: how decoded pixels become a sample (``ImagePreprocessing``),
whether a model input can take them, and the folder as a source of samples decoded per read
(``ImageSource``: a batch costs its own images, never the folder's)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edgeopt.data.sources import ArraySource, FileIdentity
from edgeopt.data.specs import InputSpec, format_shape
from edgeopt.errors import InputError

PREPROCESS_FLAG = "--calib-preprocess"
PREPROCESS_EXAMPLE = "size=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,order=RGB"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How image files become model input: resize, channel order, scale, normalise, layout.

    ``pixel * scale`` is normalised per channel as ``(value - mean) / std``; ``mean`` and
    ``std`` have one entry per channel (3, or 1 for grayscale) or a single shared entry.
    Images are resized to ``size`` = (height, width) exactly (bilinear), without cropping.
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1 / 255
    grayscale: bool = False

    def __post_init__(self) -> None:
        try:
            size = tuple(int(v) for v in self.size)
            mean = tuple(float(v) for v in self.mean)
            std = tuple(float(v) for v in self.std)
            scale = float(self.scale)
        except (TypeError, ValueError):
            raise InputError("image preprocessing: size, mean, std and scale must be numbers",
                             f"e.g. {PREPROCESS_EXAMPLE}") from None
        if len(size) != 2 or min(size) < 1:
            raise InputError(f"image preprocessing: size must be two positive integers (height, width), "
                             f"got {self.size}",
                             "e.g. size=224x224")
        for label, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.channels):
                raise InputError(
                    f"image preprocessing: {label} has {len(values)} values but the images have {self.channels} "
                    f"channel{'s' if self.channels > 1 else ''}",
                    f"give one value per channel or one shared value, e.g. {label}="
                    + "/".join(["0.5"] * self.channels),
                )
            if not all(math.isfinite(v) for v in values):
                raise InputError(f"image preprocessing: {label} values must be finite numbers", f"e.g. {label}=0.5")
        if any(v == 0 for v in std):
            raise InputError("image preprocessing: std values must be non-zero (they divide the pixels)",
                             "e.g. std=0.229/0.224/0.225, or std=1 for no scaling")
        if not math.isfinite(scale) or scale <= 0:
            raise InputError(f"image preprocessing: scale must be a positive number, got {self.scale!r}",
                             "e.g. scale=1/255 for pixels in [0, 1], scale=1 for [0, 255]")
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"image preprocessing: layout must be NCHW or NHWC, got {self.layout!r}",
                             "e.g. layout=NCHW")
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"image preprocessing: order must be RGB or BGR, got {self.channel_order!r}",
                             "e.g. order=RGB")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "grayscale", bool(self.grayscale))

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @classmethod
    def parse(cls, text: str) -> ImagePreprocessing:
        """Parse the compact CLI form, e.g.
        ``size=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,order=RGB``.

        Fields: ``size`` (HxW, or one number for a square), ``mean`` and ``std`` (values
        joined by '/'), all three required; ``layout`` (NCHW | NHWC, default NCHW), ``order``
        (RGB | BGR, default RGB), ``scale`` (number or fraction like 1/255, default 1/255),
        ``grayscale`` (true | false, default false).
        """
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{PREPROCESS_FLAG} is empty", f"e.g. {PREPROCESS_FLAG} '{PREPROCESS_EXAMPLE}'")
        aliases = {"channel_order": "order", "gray": "grayscale"}
        known = ("size", "mean", "std", "layout", "order", "scale", "grayscale")
        fields: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = aliases.get(key.strip().lower(), key.strip().lower()), value.strip()
            if not sep or not key:
                raise InputError(f"{PREPROCESS_FLAG} field {part!r} is not KEY=VALUE",
                                 f"fields are comma-separated, e.g. {PREPROCESS_EXAMPLE}")
            if key not in known:
                raise InputError(f"{PREPROCESS_FLAG} has unknown field {key!r}", f"known fields: {', '.join(known)}")
            if key in fields:
                raise InputError(f"{PREPROCESS_FLAG} gives {key} twice", "give each field once")
            if not value:
                raise InputError(f"{PREPROCESS_FLAG} field {key} has no value", f"e.g. {PREPROCESS_EXAMPLE}")
            fields[key] = value
        missing = [key for key in ("size", "mean", "std") if key not in fields]
        if missing:
            raise InputError(f"{PREPROCESS_FLAG} is missing {', '.join(missing)}",
                             f"size, mean and std are required, e.g. {PREPROCESS_EXAMPLE}")
        grayscale = _parse_bool("grayscale", fields.get("grayscale", "false"))
        layout = fields.get("layout", "NCHW").upper()
        if layout not in ("NCHW", "NHWC"):
            raise InputError(f"{PREPROCESS_FLAG} field layout={fields['layout']!r} is not NCHW or NHWC",
                             "NCHW for PyTorch-style models, NHWC for TensorFlow-style ones")
        order = fields.get("order", "RGB").upper()
        if order not in ("RGB", "BGR"):
            raise InputError(f"{PREPROCESS_FLAG} field order={fields['order']!r} is not RGB or BGR",
                             "order=BGR for models trained on OpenCV-loaded images, else RGB")
        return cls(
            size=_parse_size(fields["size"]),
            mean=_parse_floats("mean", fields["mean"]),
            std=_parse_floats("std", fields["std"]),
            layout=layout,  # type: ignore[arg-type]
            channel_order=order,  # type: ignore[arg-type]
            scale=_parse_number("scale", fields["scale"]) if "scale" in fields else 1 / 255,
            grayscale=grayscale,
        )

    def describe(self) -> str:
        """The compact form; ``ImagePreprocessing.parse(p.describe()) == p``."""
        inverse = 1 / self.scale
        whole = round(inverse)
        scale = f"1/{whole}" if abs(inverse - whole) < 1e-9 and whole > 1 else repr(self.scale)
        return (f"size={self.size[0]}x{self.size[1]},mean={'/'.join(map(repr, self.mean))},"
                f"std={'/'.join(map(repr, self.std))},layout={self.layout},order={self.channel_order},"
                f"scale={scale},grayscale={'true' if self.grayscale else 'false'}")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """One decoded image (H x W x 3 in RGB order, or H x W grayscale, already resized) to a
        float32 sample in the configured layout: C x H x W for NCHW, H x W x C for NHWC."""
        values = np.asarray(pixels, dtype=np.float64)
        if values.ndim == 2:
            values = values[..., None]
        if not self.grayscale and self.channel_order == "BGR":
            values = values[..., ::-1]
        values = (values * self.scale - np.asarray(self.mean)) / np.asarray(self.std)
        if self.layout == "NCHW":
            values = values.transpose(2, 0, 1)
        return np.ascontiguousarray(values, dtype=np.float32)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"{PREPROCESS_FLAG} field size={text!r} is not HEIGHTxWIDTH", "e.g. size=224x224")
    dims = [int(p) for p in parts]
    return (dims[0], dims[-1])


def _parse_number(key: str, text: str) -> float:
    numerator, sep, denominator = text.partition("/") if key == "scale" else (text, "", "")
    try:
        value = float(numerator) / float(denominator) if sep else float(numerator)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{PREPROCESS_FLAG} field {key}={text!r} is not a number",
                         f"e.g. {key}={'1/255' if key == 'scale' else '0.5'}") from None
    if not math.isfinite(value):
        raise InputError(f"{PREPROCESS_FLAG} field {key}={text!r} is not a finite number", f"e.g. {key}=0.5")
    return value


def _parse_floats(key: str, text: str) -> tuple[float, ...]:
    items = text.split("/")
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise InputError(f"{PREPROCESS_FLAG} field {key}={text!r}: {item.strip()!r} is not a number",
                             f"join per-channel values with '/', e.g. {key}=0.485/0.456/0.406") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{PREPROCESS_FLAG} field {key}={text!r} has a non-finite value", f"e.g. {key}=0.5")
    return tuple(values)


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InputError(f"{PREPROCESS_FLAG} field {key}={text!r} is not true or false", f"e.g. {key}=true")


def check_image_input(spec: InputSpec, prep: ImagePreprocessing) -> None:
    """Say plainly when the model's input cannot take the preprocessed images."""
    shape = spec.shape
    if len(shape) == 4:
        dims = shape[1:]
    elif len(shape) == 3 and _fixed(shape[0]) and shape[0] > 1:
        dims = shape
    else:
        raise InputError(
            f"input {spec.name!r} has shape {format_shape(shape)}, which does not take images",
            "image folders need a 4-d NCHW/NHWC input (or 3-d CHW/HWC); save other data as .npz",
        )
    height, width = prep.size
    produced = (prep.channels, height, width) if prep.layout == "NCHW" else (height, width, prep.channels)
    channel_axis = 0 if prep.layout == "NCHW" else 2
    for axis, (want, got) in enumerate(zip(dims, produced)):
        if not _fixed(want) or want == got:
            continue
        if axis == channel_axis:
            other_layout = "NHWC" if prep.layout == "NCHW" else "NCHW"
            swapped = (height, width, prep.channels) if other_layout == "NHWC" else (prep.channels, height, width)
            if all(not _fixed(d) or d == p for d, p in zip(dims, swapped)):
                hint = f"the model looks {other_layout}: set layout={other_layout}"
            elif want == 1:
                hint = "set grayscale=true"
            elif want == 3:
                hint = "set grayscale=false"
            else:
                hint = "image folders give 1 (grayscale) or 3 (RGB/BGR) channels; save other data as .npz"
            raise InputError(
                f"input {spec.name!r} ({format_shape(shape)}) takes {want} channels on the {prep.layout} channel axis, "
                f"but the preprocessing gives {got}", hint,
            )
        which = "height" if (axis == 1 if prep.layout == "NCHW" else axis == 0) else "width"
        model_h, model_w = (dims[1], dims[2]) if prep.layout == "NCHW" else (dims[0], dims[1])
        raise InputError(
            f"input {spec.name!r} ({format_shape(shape)}) takes images of {which} {want}, but the preprocessing "
            f"resizes "
            f"to {height}x{width}",
            f"set size={model_h if _fixed(model_h) else height}x{model_w if _fixed(model_w) else width}",
        )


def _fixed(dim: object) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


class ImageSource(ArraySource):
    """The images of a folder as samples (N x C x H x W, or N x H x W x C for NHWC), decoded with Pillow
    and preprocessed when rows are read. A file that changes after its first decode is refused."""

    def __init__(self, files: list[Path], preprocessing: ImagePreprocessing, folder: Path) -> None:
        try:
            from PIL import Image
        except ImportError:
            raise InputError("reading image folders needs Pillow, which is not installed",
                             "pip install pillow (or convert the images to an .npz)") from None
        self.image, self.files, self.preprocessing, self.folder = Image, list(files), preprocessing, folder
        self.identities: list[FileIdentity | None] = [None] * len(self.files)  # taken at the first decode
        height, width = preprocessing.size
        channels = preprocessing.channels
        sample = (channels, height, width) if preprocessing.layout == "NCHW" else (height, width, channels)
        self.shape, self.dtype = (len(self.files), *sample), np.dtype(np.float32)

    def _decode(self, number: int) -> np.ndarray:
        image_module, file, prep = self.image, self.files[number], self.preprocessing
        height, width = prep.size
        try:
            identity = FileIdentity.of(os.stat(file))
            if self.identities[number] is None:
                self.identities[number] = identity
            elif identity != self.identities[number]:
                raise InputError(f"image {file.name} in {self.folder} changed on disk after it was read",
                                 "keep the data files unchanged until the run ends, then run again")
            with image_module.open(file) as image:
                converted = image.convert("L" if prep.grayscale else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), getattr(image_module, "Resampling", image_module).BILINEAR)
            pixels = np.asarray(converted)
        except (OSError, ValueError, SyntaxError, EOFError, image_module.DecompressionBombError) as exc:
            raise InputError(f"cannot read image {file.name} in {self.folder} ({exc})",
                             "remove or re-save the file") from None
        return prep.apply(pixels)

    def take(self, index) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for row, number in enumerate(index):
            out[row] = self._decode(int(number))
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.take(range(start, stop))
