"""Reading calibration / evaluation data from files, checked against the model's inputs.

Accepted sources:

1. an ``.npz`` whose keys are the model's input names (plus an optional ``labels`` key);
2. a folder of ``.npz`` files like (1), concatenated along axis 0 in sorted file-name order;
   or a folder of ``.npy`` files (single-input models only), each one sample or a stack of
   samples (a single ``.npy`` file is read the same way);
3. a folder of images (``.png .jpg .jpeg .bmp .ppm .pgm``) for a model with one image input,
   decoded with Pillow (optional dependency) and preprocessed per ``ImagePreprocessing``.

Nothing is ever unpickled: an object array is refused from its header (data.arrayfiles).

Nothing is loaded whole either: files are opened as sources of rows (data.sources, data.arrayfiles,
``images.ImageSource``) and checked from their headers (shapes, layouts, counts) and in one streaming
pass (values, dtypes, the content hash, value statistics), so reading a calibration set costs a chunk
of memory, not the set.

How data axes map to the model's input axes (the layouts of ``dataset.py``)
---------------------------------------------------------------------------
Axis 0 of the data always counts samples. An array with the model input's rank uses the **batch
axis** layout: the model's axis 0 must then be a batch axis (symbolic with a batch-like name, or
fixed; fixed to B > 1 means rows are fed B at a time). An array with the model's rank + 1 uses the
**sample axis** layout: each sample is one whole model input (a scalar input's data is ``(S,)``);
samples saved with their own batch axis of 1 (``N x 1 x 3 x 32 x 32``) are read as batch-axis rows.
A model whose axis 0 is symbolic but not a batch (``[time, features]``) cannot tell samples from
time steps in data of its own rank: such a file is refused as ambiguous, with the fix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from edgeopt.data.arrayfiles import open_npy, open_npz
from edgeopt.data.dataset import ContentHash, Dataset, whole_inputs
from edgeopt.data.images import (
    IMAGE_SUFFIXES,
    PREPROCESS_EXAMPLE,
    PREPROCESS_FLAG,
    ImagePreprocessing,
    ImageSource,
    check_image_input,
)
from edgeopt.data.sources import (
    ArraySource,
    CastSource,
    ConcatSource,
    RowsSource,
    Scratch,
    frozen,
    row_chunks,
)
from edgeopt.data.specs import InputSpec, format_shape, is_batch_axis
from edgeopt.data.values import StatsAccumulator, ValueCheck, convert, target_dtype
from edgeopt.errors import InputError

LABELS_KEY = "labels"
_ACCEPTED_FORMS = (
    "give an .npz keyed by input name, a folder of .npz/.npy files, or a folder of images "
    f"with {PREPROCESS_FLAG}"
)


def load_dataset(
    path: str | Path,
    input_specs: list[InputSpec],
    *,
    preprocessing: ImagePreprocessing | None = None,
    max_samples: int | None = None,
    require_labels: bool = False,
    optional: Collection[str] = (),
) -> Dataset:
    """Read calibration / evaluation data and check it against ``input_specs``.

    Pass the model's declared input specs (symbolic dims kept): a dim fixed here must match
    the data exactly. ``max_samples`` keeps the first N samples (in file order).
    ``preprocessing`` applies to image folders only; arrays are used as stored. A ``labels``
    key is an input, not labels, when the model has an input of that name. Inputs named in
    ``optional`` may be absent from .npz data (``Dataset.missing`` lists them; the caller fills
    them). Every problem raises ``InputError`` before anything is returned.
    """
    specs = _check_specs(input_specs)
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise InputError(f"the maximum number of samples must be a positive integer, got {max_samples!r}",
                         "e.g. --max-calib-samples 256")
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist", _ACCEPTED_FORMS)
    scratch = Scratch()  # unpacked compressed members live here; removed on any refusal below
    try:
        return _load(path, specs, preprocessing, max_samples, require_labels, optional, scratch)
    except BaseException:
        scratch.close()
        raise


def _load(path: Path, specs: tuple[InputSpec, ...], preprocessing: ImagePreprocessing | None,
          max_samples: int | None, require_labels: bool, optional: Collection[str], scratch: Scratch) -> Dataset:
    if path.is_dir():
        arrays, labels, source = _load_folder(path, specs, preprocessing, max_samples, optional, scratch)
    elif path.suffix.lower() == ".npz":
        arrays, labels = _split_npz(path, open_npz(path, scratch), specs, path.name, optional)
        source = f"{path} (.npz)"
    elif path.suffix.lower() == ".npy":
        arrays, labels = _load_npy_files([path], specs, max_samples, scratch)[0], None
        source = f"{path} (.npy)"
    else:
        raise InputError(f"data file {path.name} is not an .npz or .npy file", _ACCEPTED_FORMS)

    present = [spec for spec in specs if spec.name in arrays]
    count = _common_count(arrays, present, str(path))
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
    if labels is not None:
        labels = np.asarray(labels)  # labels are small: one id per sample, kept in memory
    if max_samples is not None and count > max_samples:
        arrays = {name: RowsSource(array, range(max_samples)) for name, array in arrays.items()}
        labels = labels[:max_samples].copy() if labels is not None else None
        source = f"{source}, first {max_samples} of {count} samples"
        count = max_samples
    arrays, content, stats = _conform_values(present, arrays, labels, path.name)
    _check_samples_per_run(arrays, present)
    _check_shared_dims(arrays, present)
    return Dataset(arrays, frozen(labels) if labels is not None else None, count, content.hexdigest(), source,
                   specs, {}, content, stats, (scratch,) if scratch.path is not None else ())


# -- specs and shapes -----------------------------------------------------------------------------


def _check_specs(input_specs: Sequence[InputSpec]) -> tuple[InputSpec, ...]:
    specs = tuple(input_specs)
    if not specs:
        raise InputError("the model has no inputs, so there is nothing to calibrate", "check the model file")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise InputError(f"the model lists an input name twice ({', '.join(names)})", "re-export the model")
    for spec in specs:
        target_dtype(spec)
    return specs


def _is_fixed(dim: object) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim > 0


def _expected_layout(spec: InputSpec) -> str:
    if not spec.shape:
        return "S (one value per sample)"
    whole = f"Sx{format_shape(spec.shape)} (one whole input per sample)"
    if _is_fixed(spec.shape[0]) or is_batch_axis(spec):
        return f"Nx{format_shape(spec.shape[1:])} (samples along the batch axis) or {whole}" if spec.shape[1:] \
            else f"N (samples along the batch axis) or {whole}"
    return whole


def _canonical(spec: InputSpec, array: ArraySource, where: str) -> ArraySource:
    """Check the layout, rank and fixed dims (from the shape alone); return the source with samples on
    axis 0 (module doc)."""
    rank, original = len(spec.shape), array.shape
    if array.ndim == 0:
        raise InputError(
            f"{where}: input {spec.name!r} is a single 0-d value, not an array of samples",
            f"store samples along axis 0: shape {_expected_layout(spec)}",
        )
    batch_like = rank > 0 and (_is_fixed(spec.shape[0]) or is_batch_axis(spec))
    if array.ndim == rank + 1 and rank and array.shape[1] == 1 and batch_like and \
            not (_is_fixed(spec.shape[0]) and spec.shape[0] > 1):
        array = array.reshape(array.shape[:1] + array.shape[2:])  # samples saved with a batch axis of 1
    if array.ndim == rank and rank and not batch_like:
        raise InputError(
            f"{where}: input {spec.name!r} has shape {format_shape(original)}, the model input's own rank, but the "
            f"model's axis 0 ({spec.shape[0]!r} in {format_shape(spec.shape)}) is not a batch axis, so edgeopt "
            "cannot tell whether the data's axis 0 counts samples or is the model's own axis",
            f"store samples on a new leading axis: shape {_expected_layout(spec)}, e.g. array[None] for one sample",
        )
    if array.ndim not in (rank, rank + 1) or (rank == 0 and array.ndim != 1):
        raise InputError(
            f"{where}: input {spec.name!r} has shape {format_shape(original)} (rank {len(original)}) but the model's "
            f"input is {format_shape(spec.shape)}, so the data should be {_expected_layout(spec)}",
            "reshape the array: axis 0 counts samples, the other axes match the model's input",
        )
    whole = array.ndim == rank + 1
    for data_axis in range(1, array.ndim):
        model_axis = data_axis - 1 if whole else data_axis
        want, got = spec.shape[model_axis], array.shape[data_axis]
        if _is_fixed(want) and got != want:
            axis = f"axis {model_axis}" + (f" (data axis {data_axis})" if whole else "")
            raise InputError(
                f"{where}: input {spec.name!r} {axis} has size {got} but the model fixes it to {want} "
                f"(model input {format_shape(spec.shape)}, data {format_shape(original)})",
                "make the data match the model; only symbolic axes (named or '?') may vary "
                "(a size set with --dim or --input-shape counts as fixed)",
            )
    if array.shape[0] == 0:
        raise InputError(f"{where}: input {spec.name!r} has 0 samples", "the data must hold at least one sample")
    return array


def _common_count(arrays: Mapping[str, ArraySource], specs: Sequence[InputSpec], where: str) -> int:
    counts = {spec.name: int(arrays[spec.name].shape[0]) for spec in specs}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise InputError(f"{where}: the inputs have different numbers of samples ({listed})",
                         "give every input the same number of samples along axis 0")
    return next(iter(counts.values()))


def _check_samples_per_run(arrays: Mapping[str, ArraySource], specs: Sequence[InputSpec]) -> None:
    needs: dict[str, int] = {}
    whole = whole_inputs(arrays, specs)
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


def _check_shared_dims(arrays: Mapping[str, ArraySource], specs: Sequence[InputSpec]) -> None:
    """A symbolic dim named in several inputs (e.g. 'seq') must have one size across them."""
    whole = whole_inputs(arrays, specs)
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


def _conform_values(specs: Sequence[InputSpec], arrays: Mapping[str, ArraySource], labels: np.ndarray | None,
                    where: str) -> tuple[dict[str, ArraySource], ContentHash, dict]:
    """One streaming pass per input: refuse NaN/Inf and unsafe casts (data.values), hash the values in
    the model's dtype and take the statistics of float inputs. Returns the inputs as sources in the
    model's dtype, the content hash (arrays and labels) and the statistics. Every input is checked before
    the first refusal (in input order) is raised: the same one a check input by input would raise."""
    checks = {spec.name: ValueCheck(spec, arrays[spec.name].dtype, where) for spec in specs}
    content, stats = ContentHash(), {}
    for name in sorted(checks):
        check, raw = checks[name], arrays[name]
        if check.kind_refusal is not None:
            continue
        content.begin("input", name, check.target, raw.shape)
        accumulator = StatsAccumulator() if check.target.kind == "f" else None
        for chunk in row_chunks(raw):
            converted = check.add(chunk)
            del chunk
            content.rows(converted)
            if accumulator is not None and not (check.nan or check.inf or check.largest is not None):
                accumulator.add(converted)  # (non-finite values are refused below: no statistics of them)
            del converted  # else it stays alive while the next chunk is read
        if accumulator is not None:
            stats[name] = accumulator.result()
    for spec in specs:
        refusal = checks[spec.name].refusal()
        if refusal is not None:
            raise refusal
    if labels is not None:
        content.add("labels", "", labels)
    conformed = {spec.name: arrays[spec.name] if arrays[spec.name].dtype == checks[spec.name].target
                 else CastSource(arrays[spec.name], checks[spec.name].target, convert) for spec in specs}
    return conformed, content, stats


# -- file readers ---------------------------------------------------------------------------------


def _split_npz(path: Path, raw: dict[str, ArraySource], specs: Sequence[InputSpec], where: str,
               optional: Collection[str] = ()) -> tuple[dict[str, ArraySource], ArraySource | None]:
    """Match an archive's keys to the inputs; canonicalise each input's source."""
    names = [spec.name for spec in specs]
    labels = raw.pop(LABELS_KEY) if LABELS_KEY in raw and LABELS_KEY not in names else None
    if labels is not None and labels.ndim == 0:
        raise InputError(f"{where}: 'labels' is a single value", "store one label per sample along axis 0")
    missing = [name for name in names if name not in raw]
    if missing and (set(missing) - set(optional) or len(missing) == len(names)):
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
    present = [spec for spec in specs if spec.name in raw]
    arrays = {spec.name: _canonical(spec, raw[spec.name], where) for spec in present}
    _common_count(arrays, present, where)
    return arrays, labels


def _concatenate(parts: list[tuple[str, dict[str, ArraySource]]],
                 specs: Sequence[InputSpec]) -> dict[str, ArraySource]:
    first_file, first = parts[0]
    specs = [spec for spec in specs if spec.name in first]
    for file, arrays in parts[1:]:
        if set(arrays) != set(first):
            raise InputError(f"{file} holds inputs {', '.join(sorted(arrays))} but {first_file} holds "
                             f"{', '.join(sorted(first))}", "every file in the folder must hold the same inputs")
        for spec in specs:
            if arrays[spec.name].shape[1:] != first[spec.name].shape[1:]:
                raise InputError(
                    f"input {spec.name!r} has per-sample shape {format_shape(arrays[spec.name].shape[1:])} in "
                    f"{file} but "
                    f"{format_shape(first[spec.name].shape[1:])} in {first_file}",
                    "every file in the folder must hold samples of the same shape",
                )
    if len(parts) == 1:
        return dict(first)
    joined = {}
    for spec in specs:
        sources = [arrays[spec.name] for _, arrays in parts]
        try:
            joined[spec.name] = ConcatSource(sources)
        except TypeError:  # no common dtype (text in one file, numbers in another)
            kinds = ", ".join(sorted({str(source.dtype) for source in sources}))
            raise InputError(f"input {spec.name!r} is stored as {kinds} in different files of the folder",
                             "store numbers (integers, floats or bools) in every file") from None
    return joined


def _load_folder(path: Path, specs: Sequence[InputSpec], preprocessing: ImagePreprocessing | None,
                 max_samples: int | None, optional: Collection[str], scratch: Scratch
                 ) -> tuple[dict[str, ArraySource], np.ndarray | None, str]:
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
        arrays, labels, used = _load_npz_files(npz, specs, max_samples, optional, scratch)
        return arrays, labels, f"{path}/ ({used} .npz file{'s' if used > 1 else ''})"
    if npy:
        arrays, used = _load_npy_files(npy, specs, max_samples, scratch)
        return arrays, None, f"{path}/ ({used} .npy file{'s' if used > 1 else ''})"
    arrays = _load_images(images, specs, preprocessing, max_samples, path)
    used = min(len(images), max_samples or len(images))
    return arrays, None, f"{path}/ ({used} image{'s' if used > 1 else ''}, {preprocessing.describe()})"


def _load_npz_files(files: list[Path], specs: Sequence[InputSpec], max_samples: int | None,
                    optional: Collection[str], scratch: Scratch
                    ) -> tuple[dict[str, ArraySource], np.ndarray | None, int]:
    parts: list[tuple[str, dict[str, ArraySource]]] = []
    labels: list[tuple[str, ArraySource | None]] = []
    total = 0
    for file in files:
        arrays, file_labels = _split_npz(file, open_npz(file, scratch), specs, file.name, optional)
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
        merged_labels = np.concatenate([np.asarray(value) for value in label_arrays])
    return _concatenate(parts, specs), merged_labels, len(parts)


def _single_input(specs: Sequence[InputSpec], what: str, hint: str) -> InputSpec:
    if len(specs) != 1:
        raise InputError(f"{what}, but the model has {len(specs)} inputs ({', '.join(s.name for s in specs)})", hint)
    return specs[0]


def _load_npy_files(files: list[Path], specs: Sequence[InputSpec], max_samples: int | None,
                    scratch: Scratch) -> tuple[dict[str, ArraySource], int]:
    spec = _single_input(specs, ".npy data feeds a single input",
                         "save an .npz keyed by input name: np.savez(path, **{input_name: array})")
    batch_like = bool(spec.shape) and (_is_fixed(spec.shape[0]) or is_batch_axis(spec))
    # one sample: the input without its batch axis, or the whole input where axis 0 is not a batch
    sample_rank = len(spec.shape) - 1 if batch_like else len(spec.shape)
    parts: list[tuple[str, dict[str, ArraySource]]] = []
    total = 0
    for file in files:
        array = open_npy(file, scratch)
        if array.ndim == sample_rank:
            array = array.reshape(1, *array.shape)  # one sample
        array = _canonical(spec, array, file.name)
        parts.append((file.name, {spec.name: array}))
        total += array.shape[0]
        if max_samples is not None and total >= max_samples:
            break
    return _concatenate(parts, specs), len(parts)


def _load_images(files: list[Path], specs: Sequence[InputSpec], preprocessing: ImagePreprocessing | None,
                 max_samples: int | None, folder: Path) -> dict[str, ArraySource]:
    if preprocessing is None:
        raise InputError(
            f"folder {folder} holds images, but no image preprocessing was given",
            f"describe it with {PREPROCESS_FLAG} 'size=HxW,mean=M/M/M,std=S/S/S[,layout=NCHW|NHWC]"
            f"[,order=RGB|BGR][,scale=1/255][,grayscale=true]', e.g. {PREPROCESS_FLAG} '{PREPROCESS_EXAMPLE}'",
        )
    spec = _single_input(specs, "image folders feed a single image input",
                         "preprocess the images yourself and save an .npz keyed by input name")
    check_image_input(spec, preprocessing)
    # decoded when rows are read: the load pass checks every image, feeds decode their own batch
    return {spec.name: _canonical(spec, ImageSource(files[:max_samples], preprocessing, folder), folder.name)}
