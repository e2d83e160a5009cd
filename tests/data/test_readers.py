"""Calibration / evaluation datasets: every accepted form, every refusal, on real files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeopt.data import InputSpec
from edgeopt.errors import InputError
from edgeopt.data import (
    RANDOM_SOURCE,
    Fill,
    InputPlan,
    resolve_inputs,
    Dataset,
    ImagePreprocessing,
    content_sha256,
    load_dataset,
)

IMAGE = InputSpec("image", ("batch", 3, 4, 4), "float32")
IDS = InputSpec("ids", ("batch", "seq"), "int64")
TEMP = InputSpec("temperature", (), "float32")


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 4, 4)).astype(np.float32)


def _refused(path, specs, *fragments, **kwargs) -> InputError:
    with pytest.raises(InputError) as info:
        load_dataset(path, specs, **kwargs)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert info.value.hint, "every refusal says how to fix it"
    return info.value


# -- accepted forms ---------------------------------------------------------------------------------


def test_npz_loads_with_labels_hash_and_float64_cast(tmp_path: Path):
    data = _images().astype(np.float64)
    labels = np.arange(6)
    np.savez(tmp_path / "calib.npz", image=data, labels=labels)
    ds = load_dataset(tmp_path / "calib.npz", [IMAGE], require_labels=True)
    assert ds.count == 6 and ds.arrays["image"].dtype == np.float32
    np.testing.assert_array_equal(ds.arrays["image"], data.astype(np.float32))
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.sha256 == content_sha256({"image": data.astype(np.float32)}, labels)
    assert "calib.npz" in ds.source
    assert not next(ds.batches(6))["image"].flags.writeable  # feeds are read-only: the hash stays true
    assert ds.summary().model_dump()["inputs"] == {"image": {"shape": [6, 3, 4, 4], "dtype": "float32"}}


def test_same_data_same_hash_whatever_the_layout(tmp_path: Path):
    data, labels = _images(), np.arange(6)
    np.savez(tmp_path / "all.npz", image=data, labels=labels)
    reference = load_dataset(tmp_path / "all.npz", [IMAGE])

    npz_folder = tmp_path / "npz"
    npz_folder.mkdir()
    np.savez(npz_folder / "b.npz", image=data[4:], labels=labels[4:])  # sorted order: a, b
    np.savez_compressed(npz_folder / "a.npz", image=data[:4], labels=labels[:4])
    (npz_folder / "README.txt").write_text("not data")  # other files are ignored
    from_npz_folder = load_dataset(npz_folder, [IMAGE])
    assert from_npz_folder.sha256 == reference.sha256
    np.testing.assert_array_equal(from_npz_folder.labels, labels)
    assert "2 .npz files" in from_npz_folder.source

    npy_folder = tmp_path / "npy"
    npy_folder.mkdir()
    np.save(npy_folder / "0.npy", data[0])  # one sample without batch axis
    np.save(npy_folder / "1.npy", data[1:2])  # one sample with a batch axis of 1
    np.save(npy_folder / "2.npy", data[2:5])  # a stack
    np.save(npy_folder / "3.npy", data[5:, None])  # a stack of samples each saved with a batch axis of 1
    from_npy = load_dataset(npy_folder, [IMAGE])
    assert from_npy.labels is None
    assert from_npy.sha256 == content_sha256({"image": data})  # same inputs, no labels
    np.testing.assert_array_equal(from_npy.arrays["image"], data)

    np.save(tmp_path / "single.npy", data)
    assert load_dataset(tmp_path / "single.npy", [IMAGE]).sha256 == from_npy.sha256


def test_multi_input_npz_with_int_cast_symbolic_dims_and_scalar(tmp_path: Path):
    images = _images(5)
    ids = np.arange(5 * 7, dtype=np.int32).reshape(5, 7)  # int32 data for an int64 input: cast
    temperature = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    np.savez(tmp_path / "m.npz", image=images, ids=ids.astype(np.float64), temperature=temperature)
    ds = load_dataset(tmp_path / "m.npz", [IMAGE, IDS, TEMP])
    assert ds.count == 5 and list(ds.arrays) == ["image", "ids", "temperature"]
    assert ds.arrays["ids"].dtype == np.int64 and ds.arrays["ids"].shape == (5, 7)  # integral floats are fine
    np.testing.assert_array_equal(ds.arrays["ids"], ids)
    assert ds.arrays["temperature"].dtype == np.float32 and ds.arrays["temperature"].shape == (5,)

    # int data for a float input is cast
    np.savez(tmp_path / "ints.npz", image=np.ones((2, 3, 4, 4), dtype=np.uint8))
    assert load_dataset(tmp_path / "ints.npz", [IMAGE]).arrays["image"].dtype == np.float32


def test_max_samples_takes_the_first_n(tmp_path: Path):
    data, labels = _images(6), np.arange(6)
    np.savez(tmp_path / "d.npz", image=data, labels=labels)
    ds = load_dataset(tmp_path / "d.npz", [IMAGE], max_samples=4)
    np.testing.assert_array_equal(ds.arrays["image"], data[:4])
    np.testing.assert_array_equal(ds.labels, labels[:4])
    assert ds.sha256 == content_sha256({"image": data[:4]}, labels[:4])
    assert "first 4 of 6" in ds.source
    folder = tmp_path / "npy"
    folder.mkdir()
    for i in range(6):
        np.save(folder / f"{i:02d}.npy", data[i])
    assert load_dataset(folder, [IMAGE], max_samples=3).sha256 == content_sha256({"image": data[:3]})
    assert load_dataset(tmp_path / "d.npz", [IMAGE], max_samples=100).count == 6


# -- batches, split, take -------------------------------------------------------------------------


def test_batches_follow_the_models_batch_axis(tmp_path: Path):
    data = _images(10)
    np.savez(tmp_path / "d.npz", image=data, labels=np.arange(10))
    free = load_dataset(tmp_path / "d.npz", [IMAGE])
    batches = list(free.batches(4))
    assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), data)
    assert [labels.tolist() for _, labels in free.labelled_batches(4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]

    fixed_one = load_dataset(tmp_path / "d.npz", [InputSpec("image", (1, 3, 4, 4), "float32")])
    assert fixed_one.effective_batch_size(4) == 1
    assert [b["image"].shape for b in fixed_one.batches(4)] == [(1, 3, 4, 4)] * 10

    fixed_four = load_dataset(tmp_path / "d.npz", [InputSpec("image", (4, 3, 4, 4), "float32")])
    assert [b["image"].shape for b in fixed_four.batches(16)] == [(4, 3, 4, 4)] * 2  # partial batch dropped

    whole = InputSpec("frames", (2, 3), "float32")  # axis 0 fixed to 2: N x 2 x 3 is one input per sample
    np.savez(tmp_path / "w.npz", frames=np.arange(12, dtype=np.float32).reshape(2, 2, 3))
    feeds = list(load_dataset(tmp_path / "w.npz", [whole]).batches(8))
    assert [f["frames"].shape for f in feeds] == [(2, 3), (2, 3)]

    with pytest.raises(InputError, match="batch size must be a positive integer"):
        next(free.batches(0))


def test_scalar_inputs_are_fed_one_sample_at_a_time_and_run_in_onnxruntime(tmp_path: Path):
    x_spec = InputSpec("x", ("batch", 3), "float32")
    s_spec = InputSpec("s", (), "float32")
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    s = np.array([10, 20, 30, 40], dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, s=s)
    ds = load_dataset(tmp_path / "d.npz", [x_spec, s_spec])
    feeds = list(ds.batches(16))
    assert len(feeds) == 4
    assert all(f["s"].shape == () and isinstance(f["s"], np.ndarray) for f in feeds)
    assert all(f["x"].shape == (1, 3) for f in feeds)

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, f)[0] for f in feeds])  # read-only feeds are fine
    np.testing.assert_array_equal(outputs, x + s[:, None])


def test_split_and_take(tmp_path: Path):
    data, labels = _images(10), np.arange(10)
    np.savez(tmp_path / "d.npz", image=data, labels=labels)
    ds = load_dataset(tmp_path / "d.npz", [IMAGE])
    kept, held = ds.split(0.3, seed=1)
    assert (kept.count, held.count) == (7, 3)
    assert sorted(kept.labels.tolist() + held.labels.tolist()) == list(range(10))
    assert kept.labels.tolist() == sorted(kept.labels.tolist())  # original order kept
    again_kept, again_held = ds.split(0.3, seed=1)
    assert (again_kept.sha256, again_held.sha256) == (kept.sha256, held.sha256)
    assert ds.split(0.3, seed=2)[1].sha256 != held.sha256
    np.testing.assert_array_equal(held.arrays["image"], data[held.labels])
    assert held.sha256 == content_sha256({"image": data[held.labels]}, held.labels)

    tiny_kept, tiny_held = ds.take([3, 7]).split(0.01)  # both halves non-empty
    assert (tiny_kept.count, tiny_held.count) == (1, 1)
    assert ds.split(0.99)[0].count == 1

    taken = ds.take([5, 0])
    assert taken.labels.tolist() == [5, 0] and taken.count == 2
    np.testing.assert_array_equal(taken.arrays["image"], data[[5, 0]])
    assert "2 of 10" in taken.source
    with pytest.raises(IndexError):
        ds.take([10])

    with pytest.raises(InputError, match="cannot split 1 sample"):
        ds.take([0]).split(0.5)
    for bad in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(InputError, match="holdout fraction must be between 0 and 1"):
            ds.split(bad)


def test_random_dataset_follows_the_plan_and_never_invents_integers():
    declared = [IMAGE, IDS, TEMP, InputSpec("fixed", (1, 2), "float16")]
    resolved = resolve_inputs(declared, dims={"seq": 3})
    with pytest.raises(InputError, match="'ids' is int64 and there is no data for it") as info:
        InputPlan(resolved).random_dataset(5, seed=3)
    assert "--fill ids=VALUE" in info.value.hint
    plan = InputPlan(resolved, {"ids": (Fill(7, "7"), "--fill")})
    ds = plan.random_dataset(5, seed=3)
    assert ds.source == RANDOM_SOURCE and ds.count == 5 and ds.labels is None
    assert {k: (v.shape, v.dtype.name) for k, v in ds.arrays.items()} == {
        "image": ((5, 3, 4, 4), "float32"), "ids": ((5, 3), "int64"),
        "temperature": ((5,), "float32"), "fixed": ((5, 2), "float16")}
    assert set(np.unique(ds.arrays["ids"])) == {7}
    assert plan.random_dataset(5, seed=3).sha256 == ds.sha256
    assert plan.random_dataset(5, seed=4).sha256 != ds.sha256
    assert all(f["temperature"].shape == () for f in ds.batches(4))
    with pytest.raises(InputError, match="positive integer"):
        plan.random_dataset(0, seed=0)


def test_hand_built_dataset_has_a_free_batch_axis():
    ds = Dataset.from_arrays({"x": np.arange(5.0)}, np.arange(5), source="mine")
    assert ds.count == 5 and ds.source == "mine"
    assert [b["x"].tolist() for b in ds.batches(2)] == [[0, 1], [2, 3], [4]]
    assert ds.sha256 == content_sha256({"x": np.arange(5.0)}, np.arange(5))
    assert ds.sha256 != Dataset.from_arrays({"x": np.arange(5.0)}, source="mine").sha256  # labels count
    with pytest.raises(ValueError):
        Dataset.from_arrays({"x": np.zeros(3), "y": np.zeros(2)}, source="mismatched")


# -- refusals ---------------------------------------------------------------------------------------


def test_key_mismatches(tmp_path: Path):
    np.savez(tmp_path / "missing.npz", image=_images(2))
    _refused(tmp_path / "missing.npz", [IMAGE, IDS], "no array for input 'ids'", "model inputs: image, ids",
             "arrays in the file: image")
    np.savez(tmp_path / "positional.npz", _images(2))  # np.savez(path, array) names it arr_0
    _refused(tmp_path / "positional.npz", [IMAGE], "no array for input 'image'", "arrays in the file: arr_0")
    np.savez(tmp_path / "extra.npz", image=_images(2), mask=np.ones(2))
    _refused(tmp_path / "extra.npz", [IMAGE], "array 'mask', which is not a model input")
    # a model input called "labels" is an input, not labels
    np.savez(tmp_path / "named.npz", labels=np.ones((2, 3), dtype=np.float32))
    ds = load_dataset(tmp_path / "named.npz", [InputSpec("labels", ("b", 3), "float32")])
    assert ds.labels is None and "labels" in ds.arrays


def test_shape_refusals(tmp_path: Path):
    np.savez(tmp_path / "rank.npz", image=np.zeros((2, 3, 4), dtype=np.float32))
    _refused(tmp_path / "rank.npz", [IMAGE], "input 'image' has shape 2x3x4 (rank 3)", "batchx3x4x4",
             "should be Nx3x4x4")
    np.savez(tmp_path / "rank6.npz", image=np.zeros((2, 1, 2, 3, 4, 4), dtype=np.float32))
    _refused(tmp_path / "rank6.npz", [IMAGE], "rank 6", "Sxbatchx3x4x4 (one whole input per sample)")
    np.savez(tmp_path / "dim.npz", image=np.zeros((2, 3, 4, 5), dtype=np.float32))
    _refused(tmp_path / "dim.npz", [IMAGE], "input 'image' axis 3 has size 5 but the model fixes it to 4")
    np.savez(tmp_path / "scalar.npz", temperature=np.zeros((2, 1), dtype=np.float32))
    _refused(tmp_path / "scalar.npz", [TEMP], "rank 2", "S (one value per sample)")
    np.savez(tmp_path / "zero_d.npz", temperature=np.float32(1))
    _refused(tmp_path / "zero_d.npz", [TEMP], "single 0-d value")
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 3, 4, 4), dtype=np.float32))
    _refused(tmp_path / "empty.npz", [IMAGE], "input 'image' has 0 samples")
    np.savez(tmp_path / "counts.npz", image=_images(3), ids=np.zeros((2, 5), dtype=np.int64))
    _refused(tmp_path / "counts.npz", [IMAGE, IDS], "different numbers of samples", "image: 3", "ids: 2")
    mask = InputSpec("mask", ("batch", "seq"), "int64")
    np.savez(tmp_path / "seq.npz", ids=np.zeros((2, 5), dtype=np.int64), mask=np.zeros((2, 6), dtype=np.int64))
    _refused(tmp_path / "seq.npz", [IDS, mask], "dimension 'seq' is 6 in input 'mask'", "5 in input 'ids'")
    np.savez(tmp_path / "few.npz", image=_images(3))
    _refused(tmp_path / "few.npz", [InputSpec("image", (8, 3, 4, 4), "float32")], "runs 8 samples at a time")


def test_value_and_dtype_refusals(tmp_path: Path):
    data = _images(4)
    data[0, 0, 0, 0] = np.nan
    data[1, 0, 0, :2] = np.inf
    np.savez(tmp_path / "nan.npz", image=data)
    _refused(tmp_path / "nan.npz", [IMAGE], "input 'image' has 1 NaN and 2 infinite values")
    np.savez(tmp_path / "frac.npz", ids=np.array([[1.0, 2.5], [3.0, 4.0]]))
    _refused(tmp_path / "frac.npz", [IDS], "input 'ids' is int64", "1 non-integral values (e.g. 2.5)")
    np.savez(tmp_path / "range.npz", small=np.array([[1, 300]]))
    _refused(tmp_path / "range.npz", [InputSpec("small", ("b", 2), "int8")], "outside the range of int8")
    np.savez(tmp_path / "half.npz", h=np.array([[1e6]]))
    _refused(tmp_path / "half.npz", [InputSpec("h", ("b", 1), "float16")], "too large for float16")
    np.savez(tmp_path / "text.npz", image=np.full((1, 3, 4, 4), "a"))
    _refused(tmp_path / "text.npz", [IMAGE], "holds <U1 data")
    np.savez(tmp_path / "bool.npz", flag=np.array([[0, 2]]))
    _refused(tmp_path / "bool.npz", [InputSpec("flag", ("b", 2), "bool")], "values other than 0 and 1")


def test_label_refusals(tmp_path: Path):
    np.savez(tmp_path / "n.npz", image=_images(3), labels=np.arange(4))
    _refused(tmp_path / "n.npz", [IMAGE], "'labels' has 4 entries but the data has 3 samples")
    np.savez(tmp_path / "none.npz", image=_images(3))
    _refused(tmp_path / "none.npz", [IMAGE], "has no labels, but labels are required", require_labels=True)
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.savez(folder / "a.npz", image=_images(2), labels=np.arange(2))
    np.savez(folder / "b.npz", image=_images(2))
    _refused(folder, [IMAGE], "a.npz has labels but b.npz does not")


def test_path_and_folder_refusals(tmp_path: Path):
    _refused(tmp_path / "nope.npz", [IMAGE], "does not exist")
    (tmp_path / "data.csv").write_text("1,2,3\n")
    _refused(tmp_path / "data.csv", [IMAGE], "not an .npz or .npy file")
    (tmp_path / "fake.npz").write_text("1,2,3\n")
    _refused(tmp_path / "fake.npz", [IMAGE], "fake.npz is not a numpy .npz file")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04garbage")
    _refused(tmp_path / "broken.npz", [IMAGE], "broken.npz is not a readable .npz file")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    _refused(empty, [IMAGE], "holds no .npz, .npy or image files", "subfolders are not searched")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", _images(1))
    np.savez(mixed / "b.npz", image=_images(1))
    _refused(mixed, [IMAGE], "mixes npz and npy files")
    multi = tmp_path / "multi"
    multi.mkdir()
    np.save(multi / "a.npy", _images(1))
    _refused(multi, [IMAGE, IDS], ".npy data feeds a single input, but the model has 2 inputs")
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    np.save(shapes / "a.npy", np.zeros((1, 5), dtype=np.int64))
    np.save(shapes / "b.npy", np.zeros((1, 6), dtype=np.int64))
    _refused(shapes, [IDS], "per-sample shape 6 in b.npy but 5 in a.npy")
    with pytest.raises(InputError, match="maximum number of samples must be a positive integer"):
        load_dataset(tmp_path / "x.npz", [IMAGE], max_samples=0)


class _Payload:
    """Unpickling this creates the marker (a folder): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_arrays_are_refused_and_never_run(tmp_path: Path):
    marker = tmp_path / "PWNED"
    evil = np.array([_Payload(marker)], dtype=object)
    np.savez(tmp_path / "evil.npz", image=evil)
    _refused(tmp_path / "evil.npz", [IMAGE], "pickled", "refused")
    np.savez(tmp_path / "evil_labels.npz", image=_images(1), labels=evil)
    _refused(tmp_path / "evil_labels.npz", [IMAGE], "pickled", "refused")
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "a.npy", evil, allow_pickle=True)
    _refused(folder, [IMAGE], "a.npy holds pickled (object) arrays, which are refused")
    (tmp_path / "raw.npy").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    _refused(tmp_path / "raw.npy", [IMAGE], "pickled", "refused")
    assert not marker.exists()
    # the payload is live: loading it the unsafe way does run it
    np.load(folder / "a.npy", allow_pickle=True)
    assert marker.exists()


# -- images -----------------------------------------------------------------------------------------


def _solid(folder: Path, name: str, colour, size=(6, 4), mode="RGB") -> None:
    image_module = pytest.importorskip("PIL.Image")
    folder.mkdir(exist_ok=True)
    image_module.new(mode, size, colour).save(folder / name)


PREP = "size=2x3,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"


def _normalised(rgb, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> list[np.float32]:
    return [np.float32((v * (1 / 255) - m) / s) for v, m, s in zip(rgb, mean, std)]


def test_image_folder_nchw_and_nhwc_exact_values(tmp_path: Path):
    folder = tmp_path / "imgs"
    _solid(folder, "a.png", (200, 100, 50))
    _solid(folder, "b.bmp", (0, 255, 10))
    _solid(folder, "c.ppm", (30, 60, 90))
    nchw = load_dataset(folder, [InputSpec("x", ("n", 3, 2, 3), "float32")],
                        preprocessing=ImagePreprocessing.parse(PREP + ",layout=NCHW,order=RGB"))
    assert nchw.count == 3 and nchw.arrays["x"].shape == (3, 3, 2, 3) and nchw.arrays["x"].dtype == np.float32
    for index, colour in enumerate([(200, 100, 50), (0, 255, 10), (30, 60, 90)]):  # sorted file order
        for channel, value in enumerate(_normalised(colour)):
            assert (nchw.arrays["x"][index, channel] == value).all()
    assert "3 images" in nchw.source and "size=2x3" in nchw.source

    nhwc = load_dataset(folder, [InputSpec("x", (1, 2, 3, 3), "float32")],
                        preprocessing=ImagePreprocessing.parse(PREP + ",layout=NHWC"), max_samples=1)
    assert nhwc.arrays["x"].shape == (1, 2, 3, 3)
    assert (nhwc.arrays["x"][0] == np.array(_normalised((200, 100, 50)))).all()

    bgr = load_dataset(folder, [InputSpec("x", ("n", 3, 2, 3), "float32")],
                       preprocessing=ImagePreprocessing.parse(PREP + ",order=BGR"))
    assert (bgr.arrays["x"][0, 0] == _normalised((50, 100, 200))[0]).all()  # channel 0 is blue


def test_grayscale_and_raw_uint8_images(tmp_path: Path):
    folder = tmp_path / "grey"
    _solid(folder, "a.png", (77, 77, 77))
    _solid(folder, "b.pgm", 77, mode="L")
    grey = load_dataset(folder, [InputSpec("x", ("n", 1, 5, 5), "float32")],
                        preprocessing=ImagePreprocessing.parse("size=5,mean=0.5,std=0.25,grayscale=true"))
    assert grey.arrays["x"].shape == (2, 1, 5, 5)
    assert (np.asarray(grey.arrays["x"]) == np.float32((77 / 255 - 0.5) / 0.25)).all()
    raw = load_dataset(folder, [InputSpec("x", ("n", 5, 5, 3), "uint8")],
                       preprocessing=ImagePreprocessing.parse("size=5x5,mean=0,std=1,scale=1,layout=NHWC"))
    assert raw.arrays["x"].dtype == np.uint8 and (np.asarray(raw.arrays["x"]) == 77).all()


def test_image_refusals(tmp_path: Path):
    folder = tmp_path / "imgs"
    _solid(folder, "a.jpg", (10, 20, 30))
    spec = InputSpec("x", ("n", 3, 2, 3), "float32")
    _refused(folder, [spec], "holds images, but no image preprocessing", "--calib-preprocess",
             "size=224x224,mean=0.485/0.456/0.406")
    prep = ImagePreprocessing.parse(PREP)
    _refused(folder, [spec, IDS], "image folders feed a single image input", preprocessing=prep)
    error = _refused(folder, [InputSpec("x", ("n", 2, 3, 3), "float32")], "takes 2 channels", preprocessing=prep)
    assert "layout=NHWC" in str(error.hint)
    error = _refused(folder, [InputSpec("x", ("n", 3, 8, 3), "float32")], "height 8", preprocessing=prep)
    assert "size=8x3" in str(error.hint)
    error = _refused(folder, [InputSpec("x", ("n", 1, 2, 3), "float32")], "takes 1 channels", preprocessing=prep)
    assert "grayscale=true" in str(error.hint)
    _refused(folder, [InputSpec("x", ("n", 6), "float32")], "does not take images", preprocessing=prep)
    (folder / "b.png").write_bytes(b"not a png")
    _refused(folder, [spec], "cannot read image b.png", preprocessing=prep)


def test_missing_pillow_says_how_to_install(tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG")  # never decoded: the Pillow import fails first
    code = (
        "import sys\n"
        "class NoPil:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'PIL':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, NoPil())\n"
        "from edgeopt.data import InputSpec\n"
        "from edgeopt.errors import InputError\n"
        "from edgeopt.data import ImagePreprocessing, load_dataset\n"
        "try:\n"
        f"    load_dataset({str(folder)!r}, [InputSpec('x', ('n', 3, 2, 3), 'float32')],\n"
        f"                 preprocessing=ImagePreprocessing.parse({PREP!r}))\n"
        "except InputError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs Pillow" in result.stdout and "pip install pillow" in result.stdout


def test_preprocessing_parse():
    prep = ImagePreprocessing.parse(" Size=224x192 , mean=0.485/0.456/0.406,std=0.229/0.224/0.225,"
                                    "layout=nhwc,order=bgr,scale=1/127.5")
    assert prep == ImagePreprocessing((224, 192), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "NHWC", "BGR",
                                      1 / 127.5, False)
    assert ImagePreprocessing.parse(prep.describe()) == prep
    defaults = ImagePreprocessing.parse("size=32,mean=0,std=1")
    assert (defaults.size, defaults.layout, defaults.channel_order, defaults.scale) == ((32, 32), "NCHW", "RGB",
                                                                                        1 / 255)
    assert ImagePreprocessing.parse(defaults.describe()) == defaults
    bad = {
        "": "is empty",
        "size=224x224,mean=0": "missing std",
        "size=224xabc,mean=0,std=1": "field size='224xabc' is not HEIGHTxWIDTH",
        "size=0x4,mean=0,std=1": "field size='0x4'",
        "size=4,mean=0.1/x/0.3,std=1": "field mean='0.1/x/0.3': 'x' is not a number",
        "size=4,mean=0,std=1/2": "std has 2 values but the images have 3 channels",
        "size=4,mean=0,std=0": "std values must be non-zero",
        "size=4,mean=0,std=1,layout=CHW": "field layout='CHW' is not NCHW or NHWC",
        "size=4,mean=0,std=1,order=RBG": "field order='RBG' is not RGB or BGR",
        "size=4,mean=0,std=1,scale=1/0": "field scale='1/0' is not a number",
        "size=4,mean=0,std=1,grayscale=maybe": "field grayscale='maybe' is not true or false",
        "size=4,mean=0,std=1,colour=red": "unknown field 'colour'",
        "size=4,mean=0,std=1,size=5": "gives size twice",
        "size=4,mean=0,std": "field 'std' is not KEY=VALUE",
        "size=4,mean=0,std=": "field std has no value",
        "size=4,mean=0/0/0,std=1,grayscale=true": "mean has 3 values but the images have 1 channel",
    }
    for text, fragment in bad.items():
        with pytest.raises(InputError) as info:
            ImagePreprocessing.parse(text)
        assert fragment in str(info.value), (text, str(info.value))
