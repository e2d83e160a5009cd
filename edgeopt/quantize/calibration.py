"""Calibration and evaluation datasets for int8 quantization.

``load_dataset`` reads user data, checks it against the model's inputs and returns a
``Dataset``: one array per input with samples along axis 0, optional labels, a content
hash and a description of the source. Accepted sources:

1. an ``.npz`` whose keys are the model's input names (plus an optional ``labels`` key);
2. a folder of ``.npz`` files like (1), concatenated along axis 0 in sorted file-name order;
   or a folder of ``.npy`` files (single-input models only), each one sample or a stack of
   samples (a single ``.npy`` file is read the same way);
3. a folder of images (``.png .jpg .jpeg .bmp .ppm .pgm``) for a model with one image input,
   decoded with Pillow (optional dependency) and preprocessed per ``ImagePreprocessing``.

Nothing is ever unpickled (``allow_pickle=False`` everywhere): an object array is refused.

How data axes map to the model's input axes
-------------------------------------------
Axis 0 of the data always counts samples. For a model input whose axis 0 is symbolic
(``"batch"``, ``"?"``) or fixed to 1, that axis *is* the batch axis: data for a
``batch x 3 x 32 x 32`` input has shape ``N x 3 x 32 x 32``; data with an extra axis of size 1
(``N x 1 x 3 x 32 x 32``, samples saved with their own batch axis) is accepted and stored
without it. For a 0-d (scalar) input the data has shape ``N`` and every sample is one value.
For an input whose axis 0 is fixed to B > 1 the data is either ``N x ...`` (samples along the
batch axis, fed B at a time) or ``N x B x ...`` (one whole input per sample).

Batches (``Dataset.batches``) follow the model: inputs with a symbolic batch axis get the
requested batch size, a batch axis fixed to 1 gets batches of 1, one fixed to B gets exactly B
(a final partial batch is dropped), and scalar / whole-input samples are fed one at a time as
arrays of the model's exact shape (0-d arrays for scalar inputs).
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgeopt.data import InputSpec, random_inputs
from edgeopt.errors import InputError

LABELS_KEY = "labels"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
PREPROCESS_FLAG = "--calib-preprocess"
PREPROCESS_EXAMPLE = "size=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,order=RGB"
RANDOM_SOURCE = "random (no calibration data)"

_ACCEPTED_FORMS = (
    "give an .npz keyed by input name, a folder of .npz/.npy files, or a folder of images "
    f"with {PREPROCESS_FLAG}"
)


# ---------------------------------------------------------------------------------------------
# Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """Model inputs with samples along axis 0, optional labels, and a content hash.

    Build one with ``load_dataset``, ``random_dataset`` or ``Dataset.from_arrays`` (which
    computes ``count`` and ``sha256`` and makes the arrays read-only so the hash stays true).
    ``input_specs`` (the model's inputs) tells ``batches`` how to feed each array; without it
    every array is treated as having a free batch axis. Equality is identity: compare
    ``sha256`` to compare contents.
    """

    arrays: dict[str, np.ndarray] = field(repr=False)
    labels: np.ndarray | None = field(repr=False)
    count: int
    sha256: str
    source: str
    input_specs: tuple[InputSpec, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.arrays or self.count < 1:
            raise ValueError("a Dataset needs at least one input array and one sample")
        for name, array in self.arrays.items():
            if array.ndim == 0 or array.shape[0] != self.count:
                raise ValueError(f"array {name!r} has shape {array.shape}, expected {self.count} samples on axis 0")
        if self.labels is not None and (self.labels.ndim == 0 or len(self.labels) != self.count):
            raise ValueError(f"labels have shape {self.labels.shape}, expected {self.count} entries")
        unknown = [spec.name for spec in self.input_specs if spec.name not in self.arrays]
        if unknown:
            raise ValueError(f"input_specs name inputs without arrays: {unknown}")

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        labels: np.ndarray | None = None,
        *,
        source: str,
        input_specs: Sequence[InputSpec] = (),
    ) -> Dataset:
        """Wrap already-checked arrays (samples on axis 0). Takes ownership: they become read-only."""
        if not arrays:
            raise ValueError("a Dataset needs at least one input array")
        owned = {name: _frozen(array) for name, array in arrays.items()}
        owned_labels = _frozen(labels) if labels is not None else None
        first = next(iter(owned.values()))
        count = int(first.shape[0]) if first.ndim else 0
        return cls(owned, owned_labels, count, content_sha256(owned, owned_labels), source, tuple(input_specs))

    # -- feeding ---------------------------------------------------------------------------

    def effective_batch_size(self, batch_size: int) -> int:
        """Samples per model run: ``batch_size`` unless the model fixes it (see module doc)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch size must be a positive integer, got {batch_size!r}", "use 1 or more")
        fixed = _samples_per_run(self.arrays, self.input_specs)
        return fixed if fixed is not None else batch_size

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for the model, in sample order, keeping axis 0 as the batch axis.

        Inputs with a symbolic batch axis get ``batch_size`` samples per feed (the last feed
        may be smaller); a batch axis fixed to 1 makes every feed 1 sample; one fixed to B makes
        every feed exactly B samples (a final partial batch is dropped). Scalar (0-d) inputs,
        and inputs stored as one whole model input per sample, are fed one sample at a time:
        a scalar input's feed is a 0-d array. Feeds are read-only views.
        """
        step = self.effective_batch_size(batch_size)
        whole = _whole_inputs(self.arrays, self.input_specs)
        fixed = _samples_per_run(self.arrays, self.input_specs)
        if fixed is not None and fixed > 1 and self.count < fixed:
            raise InputError(
                f"the model runs {fixed} samples at a time (fixed batch axis) but the dataset has only {self.count}",
                f"give at least {fixed} samples",
            )
        stop_at = self.count - self.count % step if fixed is not None and fixed > 1 else self.count
        for start in range(0, stop_at, step):
            stop = min(start + step, self.count)
            yield {
                name: array[start, ...] if name in whole else array[start:stop]
                for name, array in self.arrays.items()
            }

    def labelled_batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """``batches`` paired with the labels of the same samples (None without labels)."""
        step = self.effective_batch_size(batch_size)
        for index, feeds in enumerate(self.batches(batch_size)):
            labels = None if self.labels is None else self.labels[index * step:index * step + step]
            yield feeds, labels

    # -- subsets ---------------------------------------------------------------------------

    def take(self, indices: Iterable[int] | np.ndarray) -> Dataset:
        """The samples at ``indices`` (in the given order), as a new Dataset with its own hash."""
        index = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise TypeError("take() needs a flat sequence of integer indices")
        if index.size == 0:
            raise ValueError("take() needs at least one index")
        if index.min() < -self.count or index.max() >= self.count:
            raise IndexError(f"take(): index out of range for a dataset of {self.count} samples")
        return self._subset(index.astype(np.intp), f"{self.source} [{index.size} of {self.count} samples]")

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Deterministic random split into (kept, held out); both parts have >= 1 sample.

        The held-out part has ``round(count * holdout_fraction)`` samples, clamped to
        [1, count - 1]; each part keeps the original sample order.
        """
        if self.count < 2:
            raise InputError(
                f"cannot split {self.count} sample into a calibration part and a holdout part",
                "give at least 2 samples, or pass separate evaluation data with --eval",
            )
        if (isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float))
                or not math.isfinite(holdout_fraction) or not 0 < holdout_fraction < 1):
            raise InputError(
                f"holdout fraction must be between 0 and 1 (exclusive), got {holdout_fraction!r}",
                "e.g. 0.2 holds out a fifth of the samples",
            )
        held = min(max(round(self.count * holdout_fraction), 1), self.count - 1)
        order = np.random.default_rng(seed).permutation(self.count)
        kept_index, held_index = np.sort(order[held:]), np.sort(order[:held])
        note = f"split {holdout_fraction:g} seed {seed}"
        return (self._subset(kept_index, f"{self.source} [{note}: {kept_index.size} kept]"),
                self._subset(held_index, f"{self.source} [{note}: {held_index.size} held out]"))

    def _subset(self, index: np.ndarray, source: str) -> Dataset:
        labels = self.labels[index] if self.labels is not None else None
        return Dataset.from_arrays({name: array[index] for name, array in self.arrays.items()}, labels,
                                   source=source, input_specs=self.input_specs)

    def summary(self) -> dict:
        """JSON-ready description for reports."""
        return {
            "source": self.source,
            "count": self.count,
            "sha256": self.sha256,
            "labels": self.labels is not None,
            "inputs": {name: {"shape": list(array.shape), "dtype": array.dtype.name}
                       for name, array in self.arrays.items()},
        }


def content_sha256(arrays: dict[str, np.ndarray], labels: np.ndarray | None = None) -> str:
    """Hash over sorted keys, dtypes, shapes and bytes (little-endian), then the labels.

    It depends only on the content, not on the file layout it came from.
    """
    digest = hashlib.sha256(b"edgeopt-dataset-v1\0")

    def add(kind: str, key: str, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        header = json.dumps([kind, key, data.dtype.str, list(data.shape)]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(data.reshape(-1).view(np.uint8))

    for key in sorted(arrays):
        add("input", key, arrays[key])
    if labels is not None:
        add("labels", "", labels)
    return digest.hexdigest()


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _whole_inputs(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec]) -> set[str]:
    """Inputs stored as one whole model input per sample (scalars, fixed B>1 stacks)."""
    return {spec.name for spec in specs if arrays[spec.name].ndim == len(spec.shape) + 1}


def _samples_per_run(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec]) -> int | None:
    """The number of samples each model run must take, or None when the batch axis is free."""
    fixed: set[int] = set()
    whole = _whole_inputs(arrays, specs)
    for spec in specs:
        if spec.name in whole:
            fixed.add(1)
        elif _is_fixed(spec.shape[0]):
            fixed.add(int(spec.shape[0]))
    if len(fixed) > 1:  # load_dataset refuses this; only reachable with hand-built datasets
        raise InputError(f"the model's inputs need different numbers of samples per run ({sorted(fixed)})",
                         "re-export the model with one batch size for all inputs")
    return fixed.pop() if fixed else None


# ---------------------------------------------------------------------------------------------
# Image preprocessing


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


# ---------------------------------------------------------------------------------------------
# Loading


def load_dataset(
    path: str | Path,
    input_specs: list[InputSpec],
    *,
    preprocessing: ImagePreprocessing | None = None,
    max_samples: int | None = None,
    require_labels: bool = False,
) -> Dataset:
    """Read calibration / evaluation data and check it against ``input_specs``.

    Pass the model's declared input specs (symbolic dims kept): a dim fixed here must match
    the data exactly. ``max_samples`` keeps the first N samples (in file order).
    ``preprocessing`` applies to image folders only; arrays are used as stored. A ``labels``
    key is an input, not labels, when the model has an input of that name. Every problem
    raises ``InputError`` before anything is returned.
    """
    specs = _check_specs(input_specs)
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise InputError(f"the maximum number of samples must be a positive integer, got {max_samples!r}",
                         "e.g. --max-calib-samples 256")
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist", _ACCEPTED_FORMS)
    if path.is_dir():
        arrays, labels, source = _load_folder(path, specs, preprocessing, max_samples)
    elif path.suffix.lower() == ".npz":
        arrays, labels = _load_npz(path, specs)
        source = f"{path} (.npz)"
    elif path.suffix.lower() == ".npy":
        arrays, labels = _load_npy_files([path], specs, max_samples)[0], None
        source = f"{path} (.npy)"
    else:
        raise InputError(f"data file {path.name} is not an .npz or .npy file", _ACCEPTED_FORMS)

    count = _common_count(arrays, specs, str(path))
    if labels is not None and len(labels) != count:
        raise InputError(
            f"{path.name}: 'labels' has {len(labels)} entries but the data has {count} samples",
            "give exactly one label per sample, in sample order",
        )
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        if labels.ndim == 2 and labels.dtype.kind in "iufb" and labels.shape[0] == count:
            raise InputError(
                f"{path.name}: 'labels' is 2-D {labels.shape} (one-hot?); edgeopt expects one class id per sample",
                "store labels as a 1-D integer array, e.g. labels = onehot.argmax(axis=1)",
            )
        raise InputError(
            f"{path.name}: 'labels' must be a 1-D array of integer class ids (got {labels.dtype} {labels.shape})",
            "store labels as int64 class indices, one per sample",
        )
    if require_labels and labels is None:
        raise InputError(
            f"{path} has no labels, but labels are required here",
            f"add a '{LABELS_KEY}' array (one entry per sample) to the .npz",
        )
    if max_samples is not None and count > max_samples:
        arrays = {name: array[:max_samples].copy() for name, array in arrays.items()}
        labels = labels[:max_samples].copy() if labels is not None else None
        source = f"{source}, first {max_samples} of {count} samples"
    arrays = {spec.name: _conform_values(spec, arrays[spec.name], path.name) for spec in specs}
    _check_samples_per_run(arrays, specs)
    _check_shared_dims(arrays, specs)
    return Dataset.from_arrays(arrays, labels, source=source, input_specs=specs)


def random_dataset(input_specs: list[InputSpec], count: int, seed: int) -> Dataset:
    """Reproducible random samples (for ``--allow-random-calibration``): standard-normal floats,
    integers in {0, 1}. Symbolic dims other than the batch axis become 1."""
    specs = _check_specs(input_specs)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"the number of random samples must be a positive integer, got {count!r}", "e.g. 64")
    shaped = []
    for spec in specs:
        dims = tuple(int(d) if _is_fixed(d) else 1 for d in spec.shape)
        if spec.shape and not (_is_fixed(spec.shape[0]) and int(spec.shape[0]) > 1):
            shape = (count, *dims[1:])  # samples along the batch axis
        else:
            shape = (count, *dims)  # scalar or fixed batch > 1: one whole input per sample
        shaped.append(InputSpec(spec.name, shape, _target_dtype(spec).name))
    arrays = random_inputs(shaped, seed)
    return Dataset.from_arrays(arrays, None, source=RANDOM_SOURCE, input_specs=specs)


# -- specs and shapes -----------------------------------------------------------------------------


def _check_specs(input_specs: Sequence[InputSpec]) -> tuple[InputSpec, ...]:
    specs = tuple(input_specs)
    if not specs:
        raise InputError("the model has no inputs, so there is nothing to calibrate", "check the model file")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise InputError(f"the model lists an input name twice ({', '.join(names)})", "re-export the model")
    for spec in specs:
        _target_dtype(spec)
    return specs


def _target_dtype(spec: InputSpec) -> np.dtype:
    name = "float32" if spec.dtype == "bfloat16" else spec.dtype  # numpy has no bfloat16
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise InputError(f"model input {spec.name!r} has type {spec.dtype}, which calibration data cannot feed",
                         "only numeric and bool inputs can be calibrated")
    return dtype


def _is_fixed(dim: object) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0


def _fmt(shape: Sequence[object]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _expected_layout(spec: InputSpec) -> str:
    if not spec.shape:
        return "N (one value per sample)"
    rest = _fmt(spec.shape[1:])
    if _is_fixed(spec.shape[0]) and spec.shape[0] > 1:
        return f"Nx{rest} (samples along the batch axis) or Nx{_fmt(spec.shape)} (one whole input per sample)"
    return "N" + (f"x{rest}" if spec.shape[1:] else "")


def _canonical(spec: InputSpec, array: np.ndarray, where: str) -> np.ndarray:
    """Check rank and fixed dims; return the array with samples on axis 0 (see module doc)."""
    rank, original = len(spec.shape), array.shape
    if array.ndim == 0:
        raise InputError(
            f"{where}: input {spec.name!r} is a single 0-d value, not an array of samples",
            f"store samples along axis 0: shape {_expected_layout(spec)}",
        )
    whole = False
    if rank == 0:
        whole = array.ndim == 1
        ok = whole
    elif _is_fixed(spec.shape[0]) and spec.shape[0] > 1:
        whole = array.ndim == rank + 1
        ok = array.ndim in (rank, rank + 1)
    else:
        if array.ndim == rank + 1 and array.shape[1] == 1:
            array = array.reshape(array.shape[:1] + array.shape[2:])  # samples saved with a batch axis of 1
        ok = array.ndim == rank
    if not ok:
        raise InputError(
            f"{where}: input {spec.name!r} has shape {_fmt(original)} (rank {len(original)}) but the model's input "
            f"is {_fmt(spec.shape)}, so the data should be {_expected_layout(spec)}",
            "reshape the array: axis 0 counts samples, the other axes match the model's input",
        )
    for data_axis in range(1, array.ndim):
        model_axis = data_axis - 1 if whole else data_axis
        want, got = spec.shape[model_axis], array.shape[data_axis]
        if _is_fixed(want) and got != want:
            axis = f"axis {model_axis}" + (f" (data axis {data_axis})" if whole else "")
            raise InputError(
                f"{where}: input {spec.name!r} {axis} has size {got} but the model fixes it to {want} "
                f"(model input {_fmt(spec.shape)}, data {_fmt(original)})",
                "make the data match the model; only symbolic axes (named or '?') may vary",
            )
    if array.shape[0] == 0:
        raise InputError(f"{where}: input {spec.name!r} has 0 samples", "the data must hold at least one sample")
    return array


def _common_count(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec], where: str) -> int:
    counts = {spec.name: int(arrays[spec.name].shape[0]) for spec in specs}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise InputError(f"{where}: the inputs have different numbers of samples ({listed})",
                         "give every input the same number of samples along axis 0")
    return next(iter(counts.values()))


def _check_samples_per_run(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec]) -> None:
    needs: dict[str, int] = {}
    whole = _whole_inputs(arrays, specs)
    for spec in specs:
        if spec.name in whole:
            needs[spec.name] = 1
        elif _is_fixed(spec.shape[0]):
            needs[spec.name] = int(spec.shape[0])
    if len(set(needs.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in needs.items())
        raise InputError(
            f"the inputs would need different numbers of samples per model run ({listed})",
            "store every input the same way: samples along the batch axis, or one whole input per sample",
        )
    count = next(iter(arrays.values())).shape[0]
    fixed = max(needs.values(), default=1)
    if count < fixed:
        raise InputError(
            f"the model runs {fixed} samples at a time (its batch axis is fixed to {fixed}) but the data has "
            f"only {count}", f"give at least {fixed} samples",
        )


def _check_shared_dims(arrays: dict[str, np.ndarray], specs: Sequence[InputSpec]) -> None:
    """A symbolic dim named in several inputs (e.g. 'seq') must have one size across them."""
    whole = _whole_inputs(arrays, specs)
    seen: dict[str, tuple[str, int, int]] = {}
    for spec in specs:
        offset = 1 if spec.name in whole else 0
        for model_axis, dim in enumerate(spec.shape):
            if not isinstance(dim, str) or dim in ("", "?") or (model_axis == 0 and not offset):
                continue
            size = int(arrays[spec.name].shape[model_axis + offset])
            if dim in seen and seen[dim][2] != size:
                other, other_axis, other_size = seen[dim]
                raise InputError(
                    f"dimension {dim!r} is {size} in input {spec.name!r} (axis {model_axis}) but {other_size} in "
                    f"input {other!r} (axis {other_axis})",
                    "axes that share a name in the model must have the same size in the data",
                )
            seen.setdefault(dim, (spec.name, model_axis, size))


# -- values and dtypes ----------------------------------------------------------------------------


def _conform_values(spec: InputSpec, array: np.ndarray, where: str) -> np.ndarray:
    """Refuse NaN/Inf and unsafe casts; return the array in the model's dtype."""
    target, kind, name = _target_dtype(spec), array.dtype.kind, spec.name
    if kind not in "biuf":
        raise InputError(f"{where}: input {name!r} holds {array.dtype} data, which cannot feed a {target} input",
                         "store numbers (integers, floats or bools)")
    if array.size == 0:
        return np.ascontiguousarray(array, dtype=target)
    if kind == "f":
        nan = int(np.count_nonzero(np.isnan(array)))
        inf = int(np.count_nonzero(np.isinf(array)))
        if nan or inf:
            raise InputError(f"{where}: input {name!r} has {nan} NaN and {inf} infinite values",
                             "remove or repair those samples; calibration needs finite numbers")
    if target.kind == "f":
        with np.errstate(over="ignore"):  # overflow is reported below, in words
            result = array.astype(target)
        if not np.isfinite(result).all():
            raise InputError(f"{where}: input {name!r} has values too large for {target} "
                             f"(largest magnitude {float(np.max(np.abs(array))):g})",
                             f"scale the data into the range of {target}")
        return np.ascontiguousarray(result)
    if target.kind == "b":
        if kind != "b":
            bad = int(np.count_nonzero((array != 0) & (array != 1)))
            if bad:
                raise InputError(f"{where}: input {name!r} is bool in the model but the data has {bad} values "
                                 "other than 0 and 1", "store 0/1 or True/False")
        return np.ascontiguousarray(array, dtype=bool)
    # integer target
    if kind == "f":
        fractional = array != np.floor(array)
        bad = int(np.count_nonzero(fractional))
        if bad:
            example = float(array[fractional].flat[0])
            raise InputError(
                f"{where}: input {name!r} is {target} in the model but the data has {bad} non-integral values "
                f"(e.g. {example:g})",
                f"store integer values (token ids, indices) as {target}",
            )
    info = np.iinfo(target)
    low, high = array.min(), array.max()
    too_low = float(low) < float(info.min) if kind == "f" else int(low) < info.min
    too_high = float(high) >= float(info.max + 1) if kind == "f" else int(high) > info.max
    if too_low or too_high:
        raise InputError(
            f"{where}: input {name!r} has values from {low} to {high}, outside the range of {target} "
            f"({info.min} to {info.max})",
            f"store values that fit in {target}",
        )
    return np.ascontiguousarray(array, dtype=target)


# -- file readers ---------------------------------------------------------------------------------


def _pickle_refused(path: Path) -> InputError:
    return InputError(
        f"{path.name} holds pickled (object) arrays, which are refused: loading them could run arbitrary code",
        "save plain numeric arrays (np.savez(path, **{input_name: array}) with a numeric dtype)",
    )


def _corrupt(path: Path, kind: str, exc: BaseException) -> InputError:
    return InputError(f"{path.name} is not a readable {kind} file ({exc})",
                      f"re-save it with numpy ({'np.savez' if kind == '.npz' else 'np.save'})")


def _sniff(path: Path, kind: str) -> None:
    """Refuse files that are neither .npy nor zip before numpy looks at them."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})", "check the path and its permissions") from None
    if head.startswith(b"\x93NUMPY") or head.startswith(b"PK"):
        return
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):  # pickle protocol 2+ / protocol 0-1 openers
        raise _pickle_refused(path)
    raise InputError(f"{path.name} is not a numpy {kind} file",
                     f"save it with numpy ({'np.savez' if kind == '.npz' else 'np.save'})")


def _np_load(path: Path, kind: str, read):
    """Run ``read(np.load(fh))`` on an open file we close ourselves (numpy leaks it on a bad zip),
    turning numpy's refusals into InputErrors."""
    _sniff(path, kind)
    try:
        with open(path, "rb") as fh:
            return read(np.load(fh, allow_pickle=False))
    except ValueError as exc:
        if "pickle" in str(exc):
            raise _pickle_refused(path) from None
        raise _corrupt(path, kind, exc) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _corrupt(path, kind, exc) from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    def read(archive) -> dict[str, object]:
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path.name} is a single .npy array, not an .npz archive",
                             "rename it to .npy, or save an .npz keyed by input name with np.savez")
        with archive:
            return {key: archive[key] for key in archive.files}

    arrays = _np_load(path, ".npz", read)
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # numpy hands back raw bytes for non-.npy members
            raise InputError(f"{path.name}: member {key!r} is not a numpy array",
                             "save the archive with np.savez / np.savez_compressed")
    if not arrays:
        raise InputError(f"{path.name} holds no arrays", "save one array per model input with np.savez")
    return arrays


def _read_npy(path: Path) -> np.ndarray:
    def read(loaded) -> np.ndarray:
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            raise InputError(f"{path.name} is an .npz archive, not an .npy array", "rename it to .npz")
        return loaded

    return _np_load(path, ".npy", read)


def _split_npz(path: Path, raw: dict[str, np.ndarray], specs: Sequence[InputSpec],
               where: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Match an archive's keys to the inputs; canonicalise each input array."""
    names = [spec.name for spec in specs]
    labels = raw.pop(LABELS_KEY) if LABELS_KEY in raw and LABELS_KEY not in names else None
    if labels is not None and labels.ndim == 0:
        raise InputError(f"{where}: 'labels' is a single value", "store one label per sample along axis 0")
    missing = [name for name in names if name not in raw]
    if missing:
        hint = "name each array after the model input it feeds: np.savez(path, **{input_name: array})"
        raise InputError(
            f"{where} has no array for input {', '.join(repr(m) for m in missing)} (model inputs: "
            f"{', '.join(names)}; arrays in the file: {', '.join(sorted(raw)) or 'none'})", hint,
        )
    unexpected = [key for key in raw if key not in names]
    if unexpected:
        raise InputError(
            f"{where} has array {', '.join(repr(k) for k in unexpected)}, which is not a model input "
            f"(model inputs: {', '.join(names)})",
            f"remove it or rename it to an input name; only '{LABELS_KEY}' may hold extra data (labels)",
        )
    arrays = {spec.name: _canonical(spec, raw[spec.name], where) for spec in specs}
    _common_count(arrays, specs, where)
    return arrays, labels


def _load_npz(path: Path, specs: Sequence[InputSpec]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    return _split_npz(path, _read_npz(path), specs, path.name)


def _concatenate(parts: list[tuple[str, dict[str, np.ndarray]]], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    first_file, first = parts[0]
    for file, arrays in parts[1:]:
        for spec in specs:
            if arrays[spec.name].shape[1:] != first[spec.name].shape[1:]:
                raise InputError(
                    f"input {spec.name!r} has per-sample shape {_fmt(arrays[spec.name].shape[1:])} in {file} but "
                    f"{_fmt(first[spec.name].shape[1:])} in {first_file}",
                    "every file in the folder must hold samples of the same shape",
                )
    if len(parts) == 1:
        return dict(first)
    return {spec.name: np.concatenate([arrays[spec.name] for _, arrays in parts]) for spec in specs}


def _load_folder(path: Path, specs: Sequence[InputSpec], preprocessing: ImagePreprocessing | None,
                 max_samples: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name)
    npz = [p for p in files if p.suffix.lower() == ".npz"]
    npy = [p for p in files if p.suffix.lower() == ".npy"]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    kinds = [label for label, group in (("npz", npz), ("npy", npy), ("image", images)) if group]
    if not kinds:
        subfolders = " (subfolders are not searched)" if any(p.is_dir() for p in path.iterdir()) else ""
        raise InputError(f"folder {path} holds no .npz, .npy or image files{subfolders}", _ACCEPTED_FORMS)
    if len(kinds) > 1:
        raise InputError(f"folder {path} mixes {' and '.join(kinds)} files",
                         "put one kind of data file in the folder")
    if npz:
        arrays, labels, used = _load_npz_files(npz, specs, max_samples)
        return arrays, labels, f"{path}/ ({used} .npz file{'s' if used > 1 else ''})"
    if npy:
        arrays, used = _load_npy_files(npy, specs, max_samples)
        return arrays, None, f"{path}/ ({used} .npy file{'s' if used > 1 else ''})"
    arrays = _load_images(images, specs, preprocessing, max_samples, path)
    used = min(len(images), max_samples or len(images))
    return arrays, None, f"{path}/ ({used} image{'s' if used > 1 else ''}, {preprocessing.describe()})"


def _load_npz_files(files: list[Path], specs: Sequence[InputSpec],
                    max_samples: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None, int]:
    parts: list[tuple[str, dict[str, np.ndarray]]] = []
    labels: list[tuple[str, np.ndarray | None]] = []
    total = 0
    for file in files:
        arrays, file_labels = _split_npz(file, _read_npz(file), specs, file.name)
        if file_labels is not None and len(file_labels) != next(iter(arrays.values())).shape[0]:
            raise InputError(f"{file.name}: 'labels' has {len(file_labels)} entries but the file has "
                             f"{next(iter(arrays.values())).shape[0]} samples",
                             "give exactly one label per sample, in sample order")
        parts.append((file.name, arrays))
        labels.append((file.name, file_labels))
        total += next(iter(arrays.values())).shape[0]
        if max_samples is not None and total >= max_samples:
            break
    with_labels = [name for name, value in labels if value is not None]
    if with_labels and len(with_labels) != len(labels):
        without = next(name for name, value in labels if value is None)
        raise InputError(f"{with_labels[0]} has labels but {without} does not",
                         f"give every .npz in the folder a '{LABELS_KEY}' array, or none")
    merged_labels = None
    if with_labels:
        label_arrays = [value for _, value in labels]
        if len({value.shape[1:] for value in label_arrays}) > 1:
            raise InputError("the label arrays in the folder have different per-sample shapes",
                             "store labels the same way in every file")
        merged_labels = np.concatenate(label_arrays)
    return _concatenate(parts, specs), merged_labels, len(parts)


def _load_npy_files(files: list[Path], specs: Sequence[InputSpec],
                    max_samples: int | None) -> tuple[dict[str, np.ndarray], int]:
    if len(specs) != 1:
        raise InputError(
            f".npy data feeds a single input, but the model has {len(specs)} inputs "
            f"({', '.join(s.name for s in specs)})",
            "save an .npz keyed by input name: np.savez(path, **{input_name: array})",
        )
    spec = specs[0]
    sample_rank = max(len(spec.shape) - 1, 0)  # one sample: the input without its batch axis
    parts: list[tuple[str, dict[str, np.ndarray]]] = []
    total = 0
    for file in files:
        array = _read_npy(file)
        if array.ndim == sample_rank:
            array = array[None]  # one sample
        array = _canonical(spec, array, file.name)
        parts.append((file.name, {spec.name: array}))
        total += array.shape[0]
        if max_samples is not None and total >= max_samples:
            break
    return _concatenate(parts, specs), len(parts)


def _load_images(files: list[Path], specs: Sequence[InputSpec], preprocessing: ImagePreprocessing | None,
                 max_samples: int | None, folder: Path) -> dict[str, np.ndarray]:
    if preprocessing is None:
        raise InputError(
            f"folder {folder} holds images, but no image preprocessing was given",
            f"describe it with {PREPROCESS_FLAG} 'size=HxW,mean=M/M/M,std=S/S/S[,layout=NCHW|NHWC]"
            f"[,order=RGB|BGR][,scale=1/255][,grayscale=true]', e.g. {PREPROCESS_FLAG} '{PREPROCESS_EXAMPLE}'",
        )
    if len(specs) != 1:
        raise InputError(
            f"image folders feed a single image input, but the model has {len(specs)} inputs "
            f"({', '.join(s.name for s in specs)})",
            "preprocess the images yourself and save an .npz keyed by input name",
        )
    spec = specs[0]
    _check_image_input(spec, preprocessing)
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image folders needs Pillow, which is not installed",
                         "pip install pillow (or convert the images to an .npz)") from None
    height, width = preprocessing.size
    samples = []
    for file in files[:max_samples]:
        try:
            with Image.open(file) as image:
                converted = image.convert("L" if preprocessing.grayscale else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), getattr(Image, "Resampling", Image).BILINEAR)
            pixels = np.asarray(converted)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read image {file.name} in {folder} ({exc})",
                             "remove or re-save the file") from None
        samples.append(preprocessing.apply(pixels))
    return {spec.name: _canonical(spec, np.stack(samples), folder.name)}


def _check_image_input(spec: InputSpec, prep: ImagePreprocessing) -> None:
    """Say plainly when the model's input cannot take the preprocessed images."""
    shape = spec.shape
    if len(shape) == 4:
        dims = shape[1:]
    elif len(shape) == 3 and _is_fixed(shape[0]) and shape[0] > 1:
        dims = shape
    else:
        raise InputError(
            f"input {spec.name!r} has shape {_fmt(shape)}, which does not take images",
            "image folders need a 4-d NCHW/NHWC input (or 3-d CHW/HWC); save other data as .npz",
        )
    height, width = prep.size
    produced = (prep.channels, height, width) if prep.layout == "NCHW" else (height, width, prep.channels)
    channel_axis = 0 if prep.layout == "NCHW" else 2
    for axis, (want, got) in enumerate(zip(dims, produced)):
        if not _is_fixed(want) or want == got:
            continue
        if axis == channel_axis:
            other_layout = "NHWC" if prep.layout == "NCHW" else "NCHW"
            swapped = (height, width, prep.channels) if other_layout == "NHWC" else (prep.channels, height, width)
            if all(not _is_fixed(d) or d == p for d, p in zip(dims, swapped)):
                hint = f"the model looks {other_layout}: set layout={other_layout}"
            elif want == 1:
                hint = "set grayscale=true"
            elif want == 3:
                hint = "set grayscale=false"
            else:
                hint = "image folders give 1 (grayscale) or 3 (RGB/BGR) channels; save other data as .npz"
            raise InputError(
                f"input {spec.name!r} ({_fmt(shape)}) takes {want} channels on the {prep.layout} channel axis, "
                f"but the preprocessing gives {got}", hint,
            )
        which = "height" if (axis == 1 if prep.layout == "NCHW" else axis == 0) else "width"
        model_h, model_w = (dims[1], dims[2]) if prep.layout == "NCHW" else (dims[0], dims[1])
        raise InputError(
            f"input {spec.name!r} ({_fmt(shape)}) takes images of {which} {want}, but the preprocessing resizes "
            f"to {height}x{width}",
            f"set size={model_h if _is_fixed(model_h) else height}x{model_w if _is_fixed(model_w) else width}",
        )
