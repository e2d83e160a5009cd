"""Thin convolutions widened (graph/onnx_conv_widening.py, stages/widen.py): the same numbers in float and
in int8 for every factor, only Convs whose output width is fixed, and the stage keeping a factor only where
its Conv measured faster."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.graph.onnx_conv_widening import conv_alone, thin_convs, widen
from edgeopt.graph.onnx_shapes import resolve_shapes


def _conv_model(rank=2, cin=8, cout=8, taps=9, stride=1, dilation=1, pads=None, activation="Relu", bias=True,
                width=48, group=1, extra_reader=False, height=10, width_dim: str | int = 48):
    """x [n, cin, (height,) width] -> Conv (-> activation) -> Neg -> y."""
    rng = np.random.default_rng(0)
    spatial = [height, width_dim][-rank:] if rank == 2 else [width_dim]
    weight = rng.standard_normal((cout, cin // group, *([3] * (rank - 1)), taps)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        inputs.append("b")
    pads = pads if pads is not None else [1] * (rank - 1) + [taps // 2] + [1] * (rank - 1) + [taps // 2]
    nodes = [helper.make_node("Conv", inputs, ["c"], name="conv", group=group, pads=pads,
                              strides=[1] * (rank - 1) + [stride], dilations=[1] * (rank - 1) + [dilation])]
    last, outputs = "c", ["y"]
    if activation:
        nodes.append(helper.make_node(activation, ["c"], ["a"], name="act"))
        last = "a"
    nodes.append(helper.make_node("Neg", [last], ["y"], name="neg"))
    if extra_reader:
        nodes.append(helper.make_node("Abs", [last if not activation else "c"], ["z"], name="abs"))
        outputs.append("z")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, *spatial])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _shapes(model, shape):
    return {name: info.shape for name, info in resolve_shapes(model, {"x": shape}).items()}


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _copy(model):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


CASES = {
    "2d 8->8 3x9 relu": dict(),
    "2d stride 2 sigmoid": dict(cin=3, cout=4, taps=5, stride=2, activation="Sigmoid", width=96, width_dim=96),
    "2d dilation 2, no activation": dict(cin=3, cout=4, taps=5, dilation=2, activation=None, pads=[1, 4, 1, 4]),
    "1d stride 3 dilation 2, no bias": dict(rank=1, cin=4, cout=2, taps=7, stride=3, dilation=2, pads=[5, 1],
                                            bias=False, width=203, width_dim=203),
}


@pytest.mark.parametrize("case", CASES)
def test_a_widened_conv_computes_the_same_numbers_for_every_factor(case):
    spec = CASES[case]
    model = _conv_model(**spec)
    rank = spec.get("rank", 2)
    shape = (2, spec.get("cin", 8), *([10] if rank == 2 else []), spec.get("width", 48))
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    found = thin_convs(model, _shapes(model, shape), _shapes(model, (4, *shape[1:])))
    assert [c.node for c in found] == ["conv"]
    conv = found[0]
    assert conv.activation == ("act" if spec.get("activation", "Relu") else None)
    assert conv.factors and all(conv.width % k == 0 for k in conv.factors)
    reference = _run(model, x)[0]
    for factor in conv.factors:
        widened = widen(_copy(model), conv, factor)
        convs = [n for n in widened.graph.node if n.op_type == "Conv"]
        weight = next(t for t in widened.graph.initializer if t.name == convs[0].input[1])
        assert len(convs) == 1 and weight.dims[0] == conv.channels * factor
        assert {t.name for t in widened.graph.initializer}.isdisjoint({"w", "b"})  # the old weights are gone
        result = _run(widened, x)[0]
        assert result.shape == reference.shape
        np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-5)
        # the one-Conv model the stage times reads the Conv's input and gives its (activated) output
        alone = conv_alone(model, conv, shape, factor)
        np.testing.assert_allclose(_run(alone, x)[0], -reference, rtol=1e-5, atol=1e-5)


def test_int8_of_a_widened_conv_is_the_int8_of_the_conv():
    """The widened kernel's channels are copies of the original's (zeros around them): per-channel weight
    scales and the output's range come out the same, so onnxruntime's QDQ int8 gives the same bytes."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = _conv_model(cin=8, cout=4, taps=15, width=64, width_dim=64)
    shape = (1, 8, 10, 64)
    rng = np.random.default_rng(2)
    data = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    conv = thin_convs(model, _shapes(model, shape))[0]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(data)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"x": row}

    def int8(m, path):
        source = path.with_suffix(".float.onnx")
        onnx.save(m, source)
        quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(path)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        plain = int8(model, Path(folder) / "plain.onnx")
        wide = int8(widen(_copy(model), conv, 4), Path(folder) / "wide.onnx")
    for x in data:
        np.testing.assert_array_equal(_run(plain, x)[0], _run(wide, x)[0])


def test_only_thin_convs_with_a_fixed_output_width_are_candidates():
    shape = (1, 8, 10, 48)

    def found(model, other=None):
        return thin_convs(model, _shapes(model, shape), other)

    assert found(_conv_model(cout=16)) == []  # wide enough already
    assert found(_conv_model(group=2)) == []  # grouped
    # a width that follows the input's: the Reshape back would fix it
    free = _conv_model(width_dim="w")
    assert found(free, _shapes(free, (1, 8, 10, 96))) == []
    tall = _conv_model(height="h")  # batch and height may change
    assert [c.node for c in found(tall, _shapes(tall, (2, 8, 20, 48)))] == ["conv"]
    # the output width 47 has no factor
    assert found(_conv_model(taps=10, pads=[1, 4, 1, 4])) == []
    # an activation that something else also reads stays where it is (the Conv's output is read twice)
    assert found(_conv_model(extra_reader=True))[0].activation is None
    # a name another node shares: rewriting by name could change the other one
    shared = _conv_model()
    shared.graph.node[2].name = "conv"  # the Neg
    assert found(shared) == []


def test_widening_keeps_readers_of_the_activation_and_the_graph_outputs():
    model = _conv_model(extra_reader=True, activation=None)
    shape = (1, 8, 10, 48)
    conv = thin_convs(model, _shapes(model, shape))[0]
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    widened = widen(_copy(model), conv, 8)
    for a, b in zip(_run(model, x), _run(widened, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the stage


def _stats(**ratios):
    from edgeopt.runtime.latency import LatencyStats

    stats = {"float": LatencyStats(median_ms=1.0, p90_ms=1.0, mean_ms=1.0, runs=9, threads=1)}
    for label, ratio in ratios.items():
        stats[label] = LatencyStats(median_ms=ratio, p90_ms=ratio, mean_ms=ratio, runs=9, threads=1,
                                    ratio_to_reference=ratio)
    return stats


def test_the_stage_keeps_the_smallest_factor_near_the_fastest_and_only_a_clear_gain():
    from edgeopt.stages.widen import _choose

    assert _choose(_stats(x2=0.7, x4=0.45, x8=0.42)) == "x4"  # within 10% of the fastest: fewer stored zeros
    assert _choose(_stats(x2=0.7, x4=0.55, x8=0.42)) == "x8"
    assert _choose(_stats(x2=0.95, x4=0.93)) is None  # within noise of the original
    assert _choose(_stats(x2=1.4)) is None


def _thin_model_file(path):
    # 8 -> 4 channels, 3x15 kernel over 32x256: 15.7 M MACs, a thin Conv worth timing
    model = _conv_model(cin=8, cout=4, taps=15, width=256, width_dim=256, height=32)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 32
    onnx.save(model, path)
    return path


def _convert(source, out, **settings):
    from edgeopt.config.settings import ConvertConfig
    from edgeopt.events import Events
    from edgeopt.pipeline import convert

    config = ConvertConfig(source=str(source), output_dir=str(out), input_shapes={"": [1, 8, 32, 256]},
                           **settings)
    return convert(config, Events())


def test_the_stage_times_each_thin_conv_here_and_ships_what_it_chose(tmp_path):
    result = _convert(_thin_model_file(tmp_path / "thin.onnx"), tmp_path / "out")
    report = json.loads(result.report_path.read_text())
    stage = next(s for s in report["stages"] if s["name"] == "widen")
    [timed] = stage["details"]["convs"]
    assert timed["node"] == "conv" and timed["channels"] == 4 and timed["original_ms"] > 0
    shipped = onnx.load(result.model_path)
    conv = next(n for n in shipped.graph.node if n.op_type == "Conv")
    weight = next(t for t in shipped.graph.initializer if t.name == conv.input[1])
    if timed["factor"] is None:  # not faster here: the model is as it was
        assert stage["status"] == "skipped" and weight.dims[0] == 4 and timed["ratio"] > 0.9
    else:
        assert weight.dims[0] == 4 * timed["factor"] and timed["ratio"] <= 0.9
        assert all(check["passed"] for check in stage["parity"])


def test_the_stage_applies_the_factor_it_measured_best(tmp_path, monkeypatch):
    from edgeopt.stages import widen as stage

    monkeypatch.setattr(stage, "_time", lambda variants, *_: _stats(**{
        label: (0.5 if label == "x4" else 0.8) for label in variants if label != "float"}))
    result = _convert(_thin_model_file(tmp_path / "thin.onnx"), tmp_path / "out")
    shipped = onnx.load(result.model_path)
    conv = next(n for n in shipped.graph.node if n.op_type == "Conv")
    assert next(t for t in shipped.graph.initializer if t.name == conv.input[1]).dims[0] == 16
    assert [n.op_type for n in shipped.graph.node] == ["Conv", "Relu", "Reshape", "Transpose", "Reshape", "Neg"]
    report = json.loads(result.report_path.read_text())
    widened = next(s for s in report["stages"] if s["name"] == "widen")
    assert widened["details"]["convs"][0]["factor"] == 4 and widened["details"]["bytes_added"] > 0
    assert widened["parity"][0]["passed"]


def test_the_stage_measures_nothing_for_another_target_or_when_switched_off(tmp_path):
    source = _thin_model_file(tmp_path / "thin.onnx")
    for out, settings in (("pi", {"targets": ["rpi4b"]}), ("off", {"widen_convs": False})):
        result = _convert(source, tmp_path / out, **settings)
        report = json.loads(result.report_path.read_text())
        assert "widen" not in [s["name"] for s in report["stages"]]
