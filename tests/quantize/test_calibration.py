"""Activation statistics from one streaming pass (calibration.py), held to onnxruntime's own calibrators,
and shared by every recipe of a search (issue 22)."""

from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator

from edgeopt.events import Events
from edgeopt.stages.quantize import quantizer
from edgeopt.stages.quantize.calibration import (
    HISTOGRAM_BINS,
    BatchStream,
    RunningHistogram,
    TensorStatistics,
    collect_activation_statistics,
    entropy_threshold,
    reiterable,
    tensors_to_calibrate,
)
from edgeopt.stages.quantize.quantizer import quantize
from edgeopt.stages.quantize.recipes import COMPUTE_OPS, Recipe
from edgeopt.stages.quantize.search import QuantizeOptions, search
from edgeopt.targets import load_target


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _model(nodes, name, inputs, outputs, inits) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def small_cnn() -> onnx.ModelProto:
    """Conv, ReLU, pooling, a residual Add, a Sigmoid gate and a classifier: 4 compute ops, 7 others."""
    rng = np.random.default_rng(0)
    # wide enough that int8 weights outweigh the Q/DQ nodes (a search rejects int8 models larger than float)
    inits = [_weight(rng, "w1", 32, 3, 3, 3), _weight(rng, "w2", 32, 32, 3, 3), _weight(rng, "w3", 64, 32, 1, 1),
             _weight(rng, "w_fc", 10, 64), numpy_helper.from_array(np.zeros(10, np.float32), "b_fc")]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["skip"], name="skip"),
        helper.make_node("Relu", ["skip"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
        helper.make_node("Sigmoid", ["c3"], ["gate"], name="gate"),
        helper.make_node("GlobalAveragePool", ["gate"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="fc", transB=1),
    ]
    return _model(nodes, "small_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)


def attention_block(tokens: int = 8, width: int = 16) -> onnx.ModelProto:
    """A pre-norm transformer block: LayerNorm, single-head attention (MatMul, Softmax), residuals, MLP."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(np.ones(width, np.float32), "ln_g"),
             numpy_helper.from_array(np.zeros(width, np.float32), "ln_b"),
             numpy_helper.from_array(np.array(1 / np.sqrt(width), np.float32), "scale"),
             *[_weight(rng, name, width, width) for name in ("wq", "wk", "wv", "wo")],
             _weight(rng, "w1", width, 4 * width), numpy_helper.from_array(np.zeros(4 * width, np.float32), "b1"),
             _weight(rng, "w2", 4 * width, width)]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_g", "ln_b"], ["n1"], name="ln1", axis=-1),
        helper.make_node("MatMul", ["n1", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["n1", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["n1", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="scaled"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["mixed"], name="mix"),
        helper.make_node("MatMul", ["mixed", "wo"], ["proj"], name="o"),
        helper.make_node("Add", ["x", "proj"], ["h"], name="residual1"),
        helper.make_node("LayerNormalization", ["h", "ln_g", "ln_b"], ["n2"], name="ln2", axis=-1),
        helper.make_node("MatMul", ["n2", "w1"], ["up"], name="up"),
        helper.make_node("Add", ["up", "b1"], ["up_b"], name="up_bias"),
        helper.make_node("Tanh", ["up_b"], ["act"], name="act"),
        helper.make_node("MatMul", ["act", "w2"], ["down"], name="down"),
        helper.make_node("Add", ["h", "down"], ["y"], name="residual2"),
    ]
    return _model(nodes, "attention_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           ["N", tokens, width])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", tokens, width])], inits)


MODELS = {"cnn": (small_cnn, "image", (3, 16, 16)), "attention": (attention_block, "x", (8, 16))}


def _batches(kind: str, count: int, seed: int, sizes: tuple[int, ...] = (4,)) -> list[dict[str, np.ndarray]]:
    _build, name, shape = MODELS[kind]
    rng = np.random.default_rng(seed)
    # a heavy-tailed input, so percentile and entropy have tails to cut
    return [{name: (rng.standard_normal((sizes[i % len(sizes)], *shape)) *
                    rng.choice([0.5, 1.0, 3.0], size=(sizes[i % len(sizes)], *shape))).astype(np.float32)}
            for i in range(count)]


class _Reader(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)


def _onnxruntime_ranges(model: onnx.ModelProto, batches, method: CalibrationMethod) -> dict:
    """onnxruntime's own calibrator, as quantize_static creates it (every op type)."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        calibrator = create_calibrator(path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=method)
        calibrator.collect_data(_Reader(batches))
        data = calibrator.compute_data()
    return {name: tuple(np.asarray(v) for v in data[name].range_value) for name in data}


# -- (a) the statistics against onnxruntime's calibrators --------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_minmax_ranges_equal_onnxruntime_calibrator_exactly(kind):
    model = MODELS[kind][0]()
    batches = _batches(kind, 6, seed=0, sizes=(3, 4, 5))  # ragged batches: ranges are still exact
    ours = collect_activation_statistics(model, batches, histograms=False).tensors_data("minmax")
    theirs = _onnxruntime_ranges(model, batches, CalibrationMethod.MinMax)
    assert set(ours.keys()) == set(theirs) == set(tensors_to_calibrate(model))
    for name, (low, high) in theirs.items():
        mine_low, mine_high = ours[name].range_value
        assert mine_low.dtype == low.dtype == np.float32 and mine_low.shape == low.shape == (1,)
        assert np.array_equal(mine_low, low) and np.array_equal(mine_high, high), name


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_percentile_ranges_within_a_bin_of_onnxruntime(kind):
    model = MODELS[kind][0]()
    batches = _batches(kind, 6, seed=1)  # onnxruntime's histogram calibrators need equal batch shapes
    stats = collect_activation_statistics(model, batches)
    ours = stats.tensors_data("percentile")
    theirs = _onnxruntime_ranges(model, batches, CalibrationMethod.Percentile)
    assert set(ours.keys()) == set(theirs)
    for name, (low, high) in theirs.items():
        peak = max(abs(float(stats.tensors[name].lowest)), abs(float(stats.tensors[name].highest)))
        # Both take the 99.999th percentile of |x| from a histogram: onnxruntime's 2048 bins over the
        # data (the bin's lower edge), ours >= 1024 bins per side (the upper edge). They differ by less
        # than a bin of each, and onnxruntime's float cumulative sum may move a tie by one more.
        tolerance = 3 * peak / 1024
        mine_low, mine_high = (float(v) for v in ours[name].range_value)
        assert abs(mine_low - float(low)) <= tolerance and abs(mine_high - float(high)) <= tolerance, name
        # and both stay inside the data's range
        assert float(stats.tensors[name].lowest) <= mine_low <= mine_high <= float(stats.tensors[name].highest)


def test_onnxruntime_entropy_is_min_max_and_ours_without_clipping_matches_it():
    """onnxruntime 1.32's quantize_static entropy histogram has as many bins as levels (128): no
    threshold can clip, so its ranges are min/max. Ours, given as many levels as bins, agrees exactly;
    with the real 256 levels it searches (next test)."""
    model, kind = small_cnn(), "cnn"
    batches = _batches(kind, 4, seed=2)
    stats = collect_activation_statistics(model, batches)
    theirs = _onnxruntime_ranges(model, batches, CalibrationMethod.Entropy)
    unclipped = stats.tensors_data("entropy", levels=HISTOGRAM_BINS)
    for name, (low, high) in theirs.items():
        assert [float(v) for v in unclipped[name].range_value] == [float(low), float(high)], name
        assert [float(v) for v in unclipped[name].range_value] == [float(v) for v in stats.tensors[name].bounds()]
    clipped = stats.tensors_data("entropy")
    assert any(float(clipped[n].range_value[1]) < float(unclipped[n].range_value[1]) for n in theirs)


def _histogram(values: np.ndarray, batch: int = 1000) -> RunningHistogram:
    histogram = RunningHistogram()
    for start in range(0, values.size, batch):
        chunk = values[start:start + batch]
        histogram.add(chunk, float(np.max(np.abs(chunk))))
    return histogram


def test_entropy_clips_far_outliers_and_spares_relu_outputs():
    rng = np.random.default_rng(3)
    # A normal core and five values near ±40: a range that keeps them gives the core ~25 of 256
    # levels; KL cuts them and keeps (nearly) all of the core.
    core = rng.standard_normal(100_000).astype(np.float32)
    spiky = np.concatenate([core, np.float32([40, -40, 39, -38, 40])])
    rng.shuffle(spiky)
    threshold = entropy_threshold(_histogram(spiky), float(spiky.min()), float(spiky.max()))
    assert threshold <= 8.0 and np.mean(np.abs(core) > threshold) < 1e-4
    # Half exact zeros and a half-normal tail (a ReLU output): the zero bin must not make every wider
    # range look costly; the threshold stays far out in the tail.
    relu = np.maximum(rng.standard_normal(200_000), 0).astype(np.float32)
    threshold = entropy_threshold(_histogram(relu), 0.0, float(relu.max()))
    assert threshold >= np.quantile(relu, 0.999)


def test_streamed_histogram_is_the_one_shot_histogram():
    """Bounds are powers of two and bins merge exactly as the range grows: batching changes nothing."""
    rng = np.random.default_rng(4)
    # magnitudes growing batch after batch, by factors that do and do not cross many powers of two
    values = np.concatenate([rng.standard_normal(3000) * scale for scale in (1e-3, 0.7, 1.0, 5.0, 900.0)])
    values = np.concatenate([values, np.zeros(500)]).astype(np.float32)
    one_shot = RunningHistogram()
    one_shot.add(values, float(np.max(np.abs(values))))
    for batch in (1, 7, 1000, 3500):
        streamed = _histogram(values, batch)
        assert streamed.bound == one_shot.bound and np.array_equal(streamed.counts, one_shot.counts), batch
    assert _histogram(values[::-1].copy(), 333).counts.tolist() == one_shot.counts.tolist()  # any order
    assert one_shot.total == values.size
    # trimming to the data keeps a value that sits exactly on a bin edge (1.0 = 1024 bins of 1/1024)
    edge = RunningHistogram()
    edge.add(np.float32([1.0, -1.0, 0.5]), 1.0)
    assert edge.bound == 2.0 and edge.around_zero(1.0)[0].sum() == 3
    # zeros seen before any non-zero value land in the zero bin once the bound is known
    zeros_first = _histogram(np.concatenate([np.zeros(10, np.float32), values]), 10)
    assert zeros_first.counts[HISTOGRAM_BINS // 2] == one_shot.counts[HISTOGRAM_BINS // 2] + 10


def test_nan_and_inf_stay_out_of_the_histogram():
    stats = TensorStatistics(dtype=np.dtype(np.float32), histogram=RunningHistogram())
    stats.update(np.array([np.nan, np.nan], np.float32))  # nothing but NaN: no range yet
    assert stats.lowest is None
    stats.update(np.array([1.0, -2.0, np.nan, np.inf, 0.5], np.float32))
    assert float(stats.lowest) == -2.0 and float(stats.highest) == np.inf
    assert stats.nonfinite == 4 and stats.histogram.total == 3 and stats.histogram.bound == 4.0


# -- (b) quantized models from the shared pass -------------------------------------------------------


RECIPES = [Recipe(mode="static"), Recipe(mode="static", activation_type="s8"),
           Recipe(mode="static", reduce_range=True), Recipe(mode="static", op_types=COMPUTE_OPS),
           Recipe(mode="static", per_channel=False), Recipe(mode="static", format="qoperator"),
           Recipe(mode="static", nodes_to_exclude=("conv2", "skip", "q", "k"))]


def _quantize_static_itself(model: onnx.ModelProto, recipe: Recipe, batches) -> bytes:
    """quantize_static calibrating on its own, with the options quantizer.quantize passes."""
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    private = onnx.ModelProto()
    private.CopyFrom(model)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp) / "q.onnx"
        quantize_static(private, out, _Reader(batches),
                        quant_format=QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator,
                        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                        activation_type=types[recipe.activation_type], weight_type=types[recipe.weight_type],
                        nodes_to_exclude=list(recipe.nodes_to_exclude), calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": False,
                                       "WeightSymmetric": True})
        return onnx.load(str(out)).SerializeToString()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_one_pass_gives_every_recipe_the_model_onnxruntime_calibration_gives(kind):
    model = MODELS[kind][0]()
    batches = _batches(kind, 5, seed=5)
    shared = collect_activation_statistics(model, batches, histograms=False)
    for recipe in RECIPES:
        recipe = recipe.model_copy(update={"nodes_to_exclude": tuple(
            n for n in recipe.nodes_to_exclude if n in {node.name for node in model.graph.node})})
        from_shared = quantize(model, recipe, None, statistics=shared).SerializeToString()
        assert from_shared == _quantize_static_itself(model, recipe, batches), recipe.name
        assert from_shared == quantize(model, recipe, batches).SerializeToString(), recipe.name  # a fresh pass


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_onnxruntime_without_a_cache_argument_gets_the_same_ranges(method, tmp_path):
    """Older onnxruntime has no calibration_cache_path; its calibrator is stood in for instead."""
    model, recipe = small_cnn(), Recipe(mode="static", calibration=method)
    stats = collect_activation_statistics(model, _batches("cnn", 3, seed=6))
    built = {}
    for use_cache in (True, False):
        out = tmp_path / f"{use_cache}.onnx"
        with quantizer._quiet():
            quantizer._quantize_static(onnx.load_from_string(model.SerializeToString()), out, recipe, stats,
                                       tmp_path, {"per_channel": True, "extra_options": {"ActivationSymmetric": False}},
                                       use_cache_argument=use_cache)
        built[use_cache] = out.read_bytes()
    assert built[True] == built[False]
    assert importlib.import_module("onnxruntime.quantization.quantize").create_calibrator is create_calibrator


def test_statistics_of_another_model_are_refused():
    stats = collect_activation_statistics(small_cnn(), _batches("cnn", 2, seed=7), histograms=False)
    with pytest.raises(ValueError, match="another model"):
        quantize(attention_block(), Recipe(mode="static"), None, statistics=stats)
    with pytest.raises(ValueError, match="need histograms"):
        stats.tensors_data("percentile")


# -- (c) streaming: one batch alive at a time ----------------------------------------------------------


class OneBatchAlive:
    """A re-iterable source that fails when it reads a batch while an earlier one is still referenced
    anywhere (weak references to every array it handed out)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._data = [{k: v.copy() for k, v in b.items()} for b in batches]
        self.walks = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.walks += 1
        return self._walk()

    def _walk(self) -> Iterator[dict[str, np.ndarray]]:
        handed: list[weakref.ref] = []
        for index, template in enumerate(self._data):
            if any(ref() is not None for ref in handed):
                raise AssertionError(f"batch {index - 1} is still alive while batch {index} is read")
            batch = {name: array.copy() for name, array in template.items()}  # a fresh array per read
            handed = [weakref.ref(array) for array in batch.values()]
            yield batch
            del batch


def test_calibration_keeps_one_batch_alive():
    model = small_cnn()
    data = _batches("cnn", 5, seed=8)
    source = OneBatchAlive(data)
    with pytest.raises(AssertionError, match="still alive"):
        list(source)  # the guard works: a consumer that keeps batches is caught
    streamed = collect_activation_statistics(model, OneBatchAlive(data))
    listed = collect_activation_statistics(model, data)
    assert streamed.ranges() == listed.ranges() and streamed.batches == 5
    for name, stats in streamed.tensors.items():
        assert np.array_equal(stats.histogram.counts, listed.tensors[name].histogram.counts)


def test_sources_lists_functions_and_streams_agree_and_generators_are_refused():
    model = small_cnn()
    data = _batches("cnn", 4, seed=9, sizes=(2, 3))
    events: list = []
    ranges = [
        collect_activation_statistics(model, data, histograms=False).ranges(),
        collect_activation_statistics(model, lambda: iter(data), histograms=False).ranges(),
        collect_activation_statistics(model, BatchStream(lambda: iter(data), samples=10, batch_size=3),
                                      events=Events(events.append), histograms=False).ranges(),
    ]
    assert ranges[0] == ranges[1] == ranges[2]
    assert [(e.done, e.total) for e in events if e.kind == "progress"] == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert events[-1].message == "calibration: 10/10 samples"
    with pytest.raises(TypeError, match="re-iterable"):
        reiterable(b for b in data)


# -- (d) a search calibrates once ---------------------------------------------------------------------


class CountingSource:
    """Counts how often the calibration data is walked, and how many walks reach the end."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches, self.walks, self.complete, self.read = batches, 0, 0, 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.walks += 1
        for batch in self.batches:
            self.read += 1
            yield batch
        self.complete += 1


def test_search_calibrates_once_for_every_static_candidate():
    source = CountingSource(_batches("cnn", 6, seed=10))
    evaluation = _batches("cnn", 4, seed=11, sizes=(1,))
    # A cosine floor no int8 model meets: every static candidate also re-quantizes for mixed precision.
    # (techniques off: a model they transform has activations of its own, calibrated on their own pass)
    options = QuantizeOptions(mode="auto", measure_latency=False, min_cosine=0.999999, metrics={"*": "cosine"},
                              techniques=False)
    _shipped, outcome = search(small_cnn(), target=load_target("host"), options=options, calibration=source,
                               evaluation=evaluation, labels=None, timing_feeds=evaluation[0])
    static = [c for c in outcome.candidates if c.recipe.mode == "static"]
    assert len(static) >= 3 and all(c.status != "rejected" for c in static)  # 4 on x86: ± reduce_range
    assert sum(len(c.mixed_precision) + len(c.mixed_precision_ranking) for c in static) > 0
    # one full pass for the statistics; the up-front range check reads the first two batches
    assert source.complete == 1 and source.read == len(source.batches) + 2


def test_a_forgotten_model_gives_up_its_pass_and_a_kept_one_is_not_recomputed():
    from edgeopt.stages.quantize.calibration import StatisticsCache

    reads = []

    def batches() -> Iterator[dict[str, np.ndarray]]:
        reads.append(1)
        yield from _batches("cnn", 2, seed=3)

    kept, trial = small_cnn(), small_cnn()
    cache = StatisticsCache(batches)
    kept_stats = cache.get(kept)
    cache.get(trial)
    assert len(reads) == 2
    cache.retain(kept)
    assert cache.get(kept) is kept_stats and len(reads) == 2
    cache.get(trial)  # its pass (and the reference to the trial model) was dropped
    assert len(reads) == 3


def test_histograms_are_collected_only_when_asked_for():
    from edgeopt.stages.quantize.calibration import StatisticsCache

    reads = []

    def batches() -> Iterator[dict[str, np.ndarray]]:
        reads.append(1)
        yield from _batches("cnn", 2, seed=3)

    model = small_cnn()
    cache = StatisticsCache(batches)
    ranges = cache.get(model)  # min/max serve minmax recipes
    assert not ranges.has_histograms and cache.get(model) is ranges and len(reads) == 1
    with_histograms = cache.get(model, histograms=True)  # percentile/entropy: the pass again, with them
    assert with_histograms.has_histograms and len(reads) == 2
    assert with_histograms.ranges() == ranges.ranges()
    assert cache.get(model) is with_histograms and cache.get(model, histograms=True) is with_histograms
    assert len(reads) == 2
    never = StatisticsCache(batches, histograms=False)  # not allowed at construction: never collected
    assert not never.get(model, histograms=True).has_histograms
