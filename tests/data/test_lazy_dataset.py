"""Datasets read lazily (issue 22): files are sources of rows, a batch costs a batch.

Real files in tmp_path, 512 samples like a calibration set. The content is checked against the arrays
written (and against images decoded the eager way), the memory bound is checked by counting the rows
that have been read and not yet released, and hostile archives keep their one-line refusals.
"""

from __future__ import annotations

import io
import tracemalloc
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeopt.data import (
    Dataset,
    ImagePreprocessing,
    InputPlan,
    InputSpec,
    content_sha256,
    load_dataset,
    resolve_inputs,
    sources,
)
from edgeopt.data.images import ImageSource
from edgeopt.data.sources import FileRows
from edgeopt.errors import InputError

SAMPLES, BATCH = 512, 16
X = InputSpec("x", ("batch", 3, 8, 8), "float32")
IDS = InputSpec("ids", ("batch", 5), "int64")
# content_sha256 of _x() and _ids() with _labels(), computed by the eager implementation this replaced
EAGER_SHA256 = "24b48f24cb96cfca7e26e9025463dd137ced5aca4b89e524fa18d6165a0b9ecf"


def _x() -> np.ndarray:
    return (np.arange(SAMPLES * 3 * 8 * 8, dtype=np.float32).reshape(SAMPLES, 3, 8, 8) / 7).astype(np.float32)


def _ids() -> np.ndarray:
    return (np.arange(SAMPLES * 5).reshape(SAMPLES, 5) % 97).astype(np.int64)


def _labels() -> np.ndarray:
    return np.arange(SAMPLES) % 10


def _concatenated(dataset: Dataset, name: str, batch: int = BATCH) -> np.ndarray:
    return np.concatenate([feed[name] for feed in dataset.batches(batch)])


class LiveRows:
    """Samples read from files (or decoded from images) and not yet released: every array of samples a
    leaf source hands out is counted until the last reference to it goes (weakref.finalize). Labels
    (one id per sample, kept in memory by design) are not samples."""

    def __init__(self) -> None:
        self.now = self.peak = self.total = 0

    def track(self, array: np.ndarray) -> np.ndarray:
        if array.ndim < 2:
            return array
        rows = int(array.shape[0])
        self.now += rows
        self.total += rows
        self.peak = max(self.peak, self.now)
        weakref.finalize(array, self._release, rows)
        return array

    def _release(self, rows: int) -> None:
        self.now -= rows

    def restart(self) -> None:
        self.peak = self.now


@pytest.fixture
def live(monkeypatch) -> LiveRows:
    counter = LiveRows()
    for cls, method in ((FileRows, "read"), (FileRows, "take"), (ImageSource, "take")):
        original = getattr(cls, method)
        monkeypatch.setattr(cls, method, lambda self, *args, _original=original: counter.track(_original(self, *args)))
    return counter


def _write_forms(folder: Path) -> dict[str, Path]:
    """The same 512 samples as .npy, npy folder, np.savez and np.savez_compressed."""
    folder.mkdir(exist_ok=True)
    x = _x()
    np.save(folder / "x.npy", x)
    np.savez(folder / "stored.npz", x=x, labels=_labels())
    np.savez_compressed(folder / "compressed.npz", x=x, labels=_labels())
    npy = folder / "npy"
    npy.mkdir()
    for start in range(0, SAMPLES, 100):  # uneven files: batches straddle them
        np.save(npy / f"{start:04d}.npy", x[start:start + 100])
    return {"npy": folder / "x.npy", "npy folder": npy, "savez": folder / "stored.npz",
            "savez_compressed": folder / "compressed.npz"}


# -- (1) content -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["npy", "npy folder", "savez", "savez_compressed"])
def test_every_file_form_feeds_exactly_the_arrays_written(tmp_path: Path, form: str):
    path = _write_forms(tmp_path)[form]
    dataset = load_dataset(path, [X])
    x = _x()
    assert dataset.count == SAMPLES and dataset.arrays["x"].shape == x.shape
    batches = list(dataset.batches(BATCH))
    assert len(batches) == SAMPLES // BATCH and all(b["x"].shape == (BATCH, 3, 8, 8) for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), x)
    assert all(not b["x"].flags.writeable for b in batches)
    if form.startswith("savez"):
        feeds_labels = list(dataset.labelled_batches(BATCH))
        np.testing.assert_array_equal(np.concatenate([labels for _, labels in feeds_labels]), _labels())
    # subsets are read, not copied, and hold the rows an eager split holds
    eager = Dataset.from_arrays({"x": x}, dataset.labels, source="eager", input_specs=[X])
    for (lazy_part, eager_part) in zip(dataset.split(0.25, seed=3), eager.split(0.25, seed=3)):
        assert lazy_part.sha256 == eager_part.sha256 and lazy_part.count == eager_part.count
        np.testing.assert_array_equal(_concatenated(lazy_part, "x", 7), np.asarray(eager_part.arrays["x"]))
    taken = dataset.take([500, 3, 4, 5, -1])
    np.testing.assert_array_equal(np.asarray(taken.arrays["x"]), x[[500, 3, 4, 5, -1]])
    np.testing.assert_array_equal(dataset.arrays["x"][[7, 2]], x[[7, 2]])
    np.testing.assert_array_equal(dataset.arrays["x"][9, 1], x[9, 1])


def test_casts_max_samples_and_integer_inputs_stream_like_the_eager_reader(tmp_path: Path):
    x64, ids = _x().astype(">f8"), _ids().astype(np.float64)  # big-endian doubles, integral floats
    np.savez(tmp_path / "d.npz", x=x64, ids=ids, labels=_labels())
    dataset = load_dataset(tmp_path / "d.npz", [X, IDS], max_samples=300)
    assert dataset.count == 300 and dataset.arrays["x"].dtype == np.float32 and dataset.arrays["ids"].dtype == np.int64
    np.testing.assert_array_equal(_concatenated(dataset, "x"), _x()[:300])
    np.testing.assert_array_equal(_concatenated(dataset, "ids"), _ids()[:300])
    assert dataset.sha256 == content_sha256({"x": _x()[:300], "ids": _ids()[:300]}, _labels()[:300])

    plan = InputPlan(resolve_inputs([X, IDS], data=[dataset]))
    plan.learn_values(dataset)
    values = _x()[:300].astype(np.float64)
    learnt = plan.ranges["x"]
    assert (learnt.low, learnt.high) == (values.min(), values.max())
    assert learnt.mean == pytest.approx(values.mean(), rel=1e-12) and learnt.std == pytest.approx(values.std(),
                                                                                                   rel=1e-12)
    np.testing.assert_array_equal(plan.sample(seed=3, batch=2)["ids"], _ids()[[3, 4]])  # rows read on demand


def test_a_fortran_order_array_is_read_as_its_samples(tmp_path: Path):
    x = np.asfortranarray(_x())
    np.save(tmp_path / "f.npy", x)
    np.savez_compressed(tmp_path / "f.npz", x=x)
    for path in (tmp_path / "f.npy", tmp_path / "f.npz"):
        dataset = load_dataset(path, [X])
        np.testing.assert_array_equal(_concatenated(dataset, "x"), _x())
        assert dataset.sha256 == content_sha256({"x": _x()})
        dataset.close()


def _images(folder: Path, count: int = SAMPLES) -> list[Path]:
    image_module = pytest.importorskip("PIL.Image")
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for number in range(count):
        pixels = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
        files.append(folder / f"{number:04d}.png")
        image_module.fromarray(pixels).save(files[-1])
    return files


def test_an_image_folder_decodes_each_batch_as_the_eager_reader_did(tmp_path: Path, live: LiveRows):
    image_module = pytest.importorskip("PIL.Image")
    files = _images(tmp_path / "images")
    prep = ImagePreprocessing.parse("size=4x8,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,order=BGR")
    eager = []
    for file in files:  # what the reader did before: every image decoded at load, stacked
        with image_module.open(file) as image:
            converted = image.convert("RGB").resize((8, 4), image_module.Resampling.BILINEAR)
        eager.append(prep.apply(np.asarray(converted)))
    expected = np.stack(eager)

    spec = InputSpec("x", ("n", 3, 4, 8), "float32")
    dataset = load_dataset(tmp_path / "images", [spec], preprocessing=prep)
    assert live.total == SAMPLES  # the load pass decoded every image once (checks, hash) ...
    live.restart()
    feeds = []
    for feed in dataset.batches(BATCH):
        feeds.append(feed["x"].copy())
        del feed
    assert live.peak == BATCH  # ... and each feed decodes its own batch, nothing more
    np.testing.assert_array_equal(np.concatenate(feeds), expected)
    assert dataset.sha256 == Dataset.from_arrays({"x": expected}, source="eager").sha256


def test_value_refusals_count_over_every_chunk(tmp_path: Path, monkeypatch):
    """The streamed checks name the numbers a whole-array check named, wherever the bad values sit."""
    monkeypatch.setattr(sources, "SCAN_BYTES", 8 * 5 * 8)  # 8 rows of 5 float64 per chunk: 64 chunks
    values = (np.arange(SAMPLES * 5, dtype=np.float64).reshape(SAMPLES, 5) % 50)
    broken = values.copy()
    broken[3, 1], broken[300, 0], broken[511, 4] = np.nan, np.inf, -np.inf
    np.save(tmp_path / "nan.npy", broken)
    assert "input 'ids' has 1 NaN and 2 infinite values" in _refusal(tmp_path / "nan.npy", [IDS])
    fractional = values.copy()
    fractional[200, 2], fractional[400, 3] = 2.5, 7.25
    np.save(tmp_path / "frac.npy", fractional)
    assert "has 2 non-integral values (e.g. 2.5)" in _refusal(tmp_path / "frac.npy", [IDS])
    wide = values.copy()
    wide[10, 0], wide[500, 1] = -200, 300
    np.save(tmp_path / "wide.npy", wide)
    assert "has values from -200.0 to 300.0, outside the range of int8 (-128 to 127)" in _refusal(
        tmp_path / "wide.npy", [InputSpec("ids", ("batch", 5), "int8")])
    np.save(tmp_path / "ok.npy", values)
    assert load_dataset(tmp_path / "ok.npy", [IDS]).sha256 == content_sha256({"ids": values.astype(np.int64)})


# -- (2) memory: bounded by design ---------------------------------------------------------------------


def _consume(batches) -> int:
    seen = 0
    for feed in batches:
        feed = feed[0] if isinstance(feed, tuple) else feed
        seen += feed["x"].shape[0]
        del feed  # the caller's own reference: what is left alive is the dataset's doing
    return seen


@pytest.mark.parametrize("form", ["npy", "npy folder", "savez", "savez_compressed"])
def test_at_most_one_batch_of_rows_is_alive_while_feeding(tmp_path: Path, form: str, live: LiveRows, monkeypatch):
    path = _write_forms(tmp_path)[form]
    monkeypatch.setattr(sources, "SCAN_BYTES", BATCH * 3 * 8 * 8 * 4)  # the load pass in chunks of 16 rows
    dataset = load_dataset(path, [X])
    assert live.total >= SAMPLES and live.peak <= BATCH and live.now == 0  # the pass read all, 16 at a time
    plan = InputPlan(resolve_inputs([X], data=[dataset]))
    plan.learn_values(dataset)  # statistics kept from the load pass: nothing read
    live.restart()
    assert _consume(dataset.batches(BATCH)) == SAMPLES
    assert _consume(dataset.labelled_batches(BATCH)) == SAMPLES
    kept, held = dataset.split(0.2)  # each part hashed in one streaming pass of 16-row chunks
    assert _consume(kept.batches(BATCH)) + _consume(held.batches(BATCH)) == SAMPLES
    assert live.peak <= BATCH and live.now == 0


def test_the_row_counter_sees_an_eager_reader(tmp_path: Path, live: LiveRows):
    """Break the laziness on purpose: keeping every feed (what the eager reader did) or reading an input
    whole shows up in the counter at once, so the bound above is not vacuous."""
    dataset = load_dataset(_write_forms(tmp_path)["savez"], [X])
    live.restart()
    kept_feeds = list(dataset.batches(BATCH))
    assert live.now == SAMPLES and live.peak == SAMPLES
    del kept_feeds
    whole = np.asarray(dataset.arrays["x"])
    assert live.now == SAMPLES
    del whole
    assert live.now == 0


def test_traced_allocations_stay_near_one_batch_not_the_data(tmp_path: Path, monkeypatch):
    """The same bound seen by the allocator: every numpy buffer is traced, whoever holds it."""
    x = np.random.default_rng(1).standard_normal((SAMPLES, 3, 32, 32)).astype(np.float32)  # 6 MiB
    np.savez(tmp_path / "big.npz", x=x)
    del x
    batch_bytes = BATCH * 3 * 32 * 32 * 4  # 192 KiB
    monkeypatch.setattr(sources, "SCAN_BYTES", batch_bytes)
    spec = InputSpec("x", ("batch", 3, 32, 32), "float32")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dataset = load_dataset(tmp_path / "big.npz", [spec])
        InputPlan(resolve_inputs([spec], data=[dataset])).learn_values(dataset)
        assert _consume(dataset.batches(BATCH)) == SAMPLES
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # a chunk and its float64 copy for the statistics (the load pass), or a batch: never the 32 batches
    assert peak < 5 * batch_bytes, peak


# -- (3) the content hash ------------------------------------------------------------------------------


def test_the_hash_is_the_eager_one_whatever_the_file(tmp_path: Path):
    assert content_sha256({"x": _x(), "ids": _ids()}, _labels()) == EAGER_SHA256
    assert Dataset.from_arrays({"x": _x(), "ids": _ids()}, _labels(), source="mine").sha256 == EAGER_SHA256
    np.savez(tmp_path / "stored.npz", x=_x(), ids=_ids(), labels=_labels())
    np.savez_compressed(tmp_path / "compressed.npz", ids=_ids().astype(np.int32), x=_x().astype(np.float64),
                        labels=_labels())
    for name in ("stored.npz", "compressed.npz"):
        dataset = load_dataset(tmp_path / name, [X, IDS])
        assert dataset.sha256 == EAGER_SHA256, name
        # content_sha256 streams sources the same way
        assert content_sha256(dataset.arrays, dataset.labels) == EAGER_SHA256
        filled = dataset.with_fills({})
        assert filled.sha256 == EAGER_SHA256 and filled.content is dataset.content  # not hashed again


# -- (4) hostile and broken archives -------------------------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _refusal(path: Path, specs=(X,)) -> str:
    with pytest.raises(InputError) as info:
        load_dataset(path, list(specs))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_hostile_archives_keep_their_one_line_refusals(tmp_path: Path):
    x = _x()[:6]
    with zipfile.ZipFile(tmp_path / "dotdot.npz", "w") as archive:
        archive.writestr("../x.npy", _npy_bytes(x))
    assert _refusal(tmp_path / "dotdot.npz") == (
        "dotdot.npz has no array for input 'x' (model inputs: x; arrays in the file: ../x) (name each array after "
        "the model input it feeds: np.savez(path, **{input_name: array}))")
    with zipfile.ZipFile(tmp_path / "extra.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy_bytes(x))
        archive.writestr("../../evil.npy", _npy_bytes(x))
    assert _refusal(tmp_path / "extra.npz").startswith(
        "extra.npz has array '../../evil', which is not a model input (model inputs: x)")
    np.savez(tmp_path / "object.npz", x=np.array([1, "a"], dtype=object))
    assert _refusal(tmp_path / "object.npz").startswith(
        "object.npz holds pickled (object) arrays, which are refused: loading them could run arbitrary code")

    np.savez(tmp_path / "good.npz", x=x, labels=np.arange(6))
    np.savez_compressed(tmp_path / "goodz.npz", x=x)
    whole, wholez = (tmp_path / "good.npz").read_bytes(), (tmp_path / "goodz.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "cutz.npz").write_bytes(wholez[:len(wholez) // 2])
    for name in ("cut.npz", "cutz.npz"):
        assert _refusal(tmp_path / name) == (f"{name} is not a readable .npz file (File is not a zip file) "
                                             "(re-save it with numpy (np.savez))")
    flipped = bytearray(whole)
    flipped[whole.index(b"\x93NUMPY") + 300] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(flipped))
    assert _refusal(tmp_path / "crc.npz") == ("crc.npz is not a readable .npz file (Bad CRC-32 for file 'x.npy') "
                                              "(re-save it with numpy (np.savez))")
    with zipfile.ZipFile(tmp_path / "lying.npz", "w") as archive:  # a header promising 100 samples, holding 6
        archive.writestr("x.npy", _npy_bytes(np.zeros((100, 3, 8, 8), np.float32))[:128] + x.tobytes())
    assert _refusal(tmp_path / "lying.npz") == (
        "lying.npz is not a readable .npz file (EOF: reading array data, expected 76800 bytes got 4608) "
        "(re-save it with numpy (np.savez))")
    np.save(tmp_path / "cut.npy", x)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-10])
    assert _refusal(tmp_path / "cut.npy") == (
        "cut.npy is not a readable .npy file (Failed to read all data for array. Expected (6, 3, 8, 8) = 1152 "
        "elements, could only read 1149 elements. (file seems not fully written?)) (re-save it with numpy (np.save))")


def test_a_compressed_member_too_big_for_the_temporary_folder_is_refused_before_writing(tmp_path: Path,
                                                                                         monkeypatch):
    import shutil
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    np.savez_compressed(tmp_path / "z.npz", x=_x())
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda where: real(where)._replace(free=1000))
    refusal = _refusal(tmp_path / "z.npz")
    assert refusal.startswith(f"reading z.npz needs {_x().nbytes} bytes of temporary space but ") and \
        "has 1000 free (point TMPDIR at a folder with room" in refusal
    assert not list(tmp_path.glob("edgeopt-data-*"))  # the refusal took its folder with it


def test_member_names_never_become_paths(tmp_path: Path, monkeypatch):
    """A compressed member is unpacked under a number in a private folder, whatever it is called."""
    import tempfile

    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    name = "../../escaped"
    with zipfile.ZipFile(tmp_path / "a.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.npy", _npy_bytes(_x()[:4]))
    dataset = load_dataset(tmp_path / "a.npz", [InputSpec(name, ("batch", 3, 8, 8), "float32")])
    np.testing.assert_array_equal(_concatenated(dataset, name), _x()[:4])
    made = sorted(p.relative_to(scratch_root) for p in scratch_root.rglob("*"))
    assert len(made) == 2 and made[0].name.startswith("edgeopt-data-") and made[1].name == "1.raw", made
    assert not any("escaped" in p.name for p in tmp_path.parent.rglob("*")), "a member name became a path"
    dataset.close()
    assert not any(scratch_root.iterdir())  # closed: the unpacked member is gone
    with pytest.raises(ValueError, match="closed"):
        next(dataset.batches(2))


def test_a_file_changed_after_loading_is_refused_not_fed(tmp_path: Path):
    np.save(tmp_path / "x.npy", _x())
    dataset = load_dataset(tmp_path / "x.npy", [X])
    np.save(tmp_path / "x.npy", _x() + 1)  # same size, new content: the hash would lie
    with pytest.raises(InputError, match="x.npy changed on disk after it was read"):
        next(dataset.batches(BATCH))
