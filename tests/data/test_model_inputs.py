"""Real models' inputs, end to end through the CLI: symbolic dims sized from the data, layouts without a
batch axis, streams with recurrent state and an integer sample rate, -1 / 0 dims, a transformer with
symbolic batch and sequence. Each converts with its calibration data, quantizes, and profiles with MACs
counted at the data's shape; the bad cases give one line and exit 2.

``-t rpi4b`` (not timed) and ``--min-cosine 0.9`` make int8 ship on every CPU: what is under test is
the inputs, not the int8 kernels of the machine the test lands on."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from .models import (
    fpn_detector, fpn_macs, paddle_macs, paddle_style_cnn, sequence_model, streaming_model, transformer_encoder,
    transformer_macs,
)

QUANTIZE = ("-t", "rpi4b", "--min-cosine", "0.9", "--json")


def _convert(cli, *args):
    result = cli("convert", *args, *QUANTIZE)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _resolved(report) -> dict:
    return {entry["name"]: entry for entry in report["stages"][0]["details"]["resolved_inputs"]["inputs"]}


def _quantized(report) -> dict:
    """int8 shipped, and its fidelity was measured on the evaluation data at the resolved shapes."""
    quant = report["summary"]["quantization"]
    assert quant["shipped"] == "int8", quant["reason"]
    (stage,) = [s for s in report["stages"] if s["name"] == "quantize"]
    chosen = next(c for c in stage["details"]["candidates"] if c["name"] == stage["details"]["chosen"])
    assert chosen["quantized_nodes"] > 0 and chosen["fidelity"]["samples"] > 0
    return quant


def _refused(cli, *args, says: list[str]):
    result = cli(*args)
    assert result.code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in says:
        assert fragment in result.stderr, result.stderr
    return result


def _profile(cli, model, *args) -> dict:
    result = cli("profile", model, "-t", "rpi4b", "--json", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


# -- a detector whose Concat needs both branches at the data's size -----------------------------------------


def test_fpn_detector_takes_height_and_width_from_the_calibration_data(cli, tmp_path):
    model = fpn_detector(tmp_path / "fpn.onnx")
    images = np.random.default_rng(0).standard_normal((24, 3, 20, 28)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", images=images)
    # at 1x1 (the old silent default) the upsampled branch is 2x2 and Concat refuses: no size, no run
    _refused(cli, "convert", model, "-o", tmp_path / "bare", says=["input 'images' dim 'height'", "dim 'width'",
                                                                  "--dim height=SIZE", "--dim width=SIZE"])
    assert not (tmp_path / "bare").exists() or not any((tmp_path / "bare").iterdir())

    report = _convert(cli, model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "out")
    resolved = _resolved(report)["images"]
    assert resolved["shape"] == [1, 3, 20, 28]
    assert resolved["sources"] == ["deployment batch", "model", "data calib.npz", "data calib.npz"]
    _quantized(report)
    assert report["summary"]["macs_total"] == fpn_macs(20, 28)
    (profile,) = [s for s in report["stages"] if s["name"] == "profile"]
    assert profile["details"]["rpi4b"]["input_shapes"] == {"images": [1, 3, 20, 28]}

    # profile and inspect count MACs at the data's shape (or the flags'), never at 1x1
    profiled = _profile(cli, model, "--inputs", tmp_path / "calib.npz")
    assert profiled["estimates"]["rpi4b"]["macs_total"] == fpn_macs(20, 28)
    assert profiled["input_shapes"] == {"images": [1, 3, 20, 28]}
    by_flags = _profile(cli, model, "--dim", "height=32", "--dim", "width=32")
    assert by_flags["estimates"]["rpi4b"]["macs_total"] == fpn_macs(32, 32)
    inspected = json.loads(cli("inspect", model, "--dim", "height=32", "--dim", "width=32", "--json").stdout)
    assert inspected["graph"]["macs_total"] == fpn_macs(32, 32) and "height=32 from --dim height" in \
        inspected["counted_at"]
    unsized = json.loads(cli("inspect", model, "--json").stdout)
    assert unsized["graph"]["macs_total"] is None and "--dim height=SIZE" in unsized["unsized_dims"]
    _refused(cli, "profile", model, "-t", "rpi4b", says=["dim 'height'", "--dim height=SIZE"])


def test_a_dim_the_user_fixes_must_match_the_data(cli, tmp_path):
    model = fpn_detector(tmp_path / "fpn.onnx")
    np.savez(tmp_path / "calib.npz", images=np.zeros((4, 3, 20, 28), np.float32))
    _refused(cli, "convert", model, "--calib", tmp_path / "calib.npz", "--dim", "height=32", "-o", tmp_path / "o",
             says=["axis 2 has size 20 but the model fixes it to 32", "--dim"])
    _refused(cli, "convert", model, "--dim", "hieght=32", "-o", tmp_path / "o",
             says=["--dim names 'hieght'", "batch, height, width"])


# -- a sequence model with no batch axis ------------------------------------------------------------------


def test_time_by_features_model_reads_samples_on_a_new_leading_axis(cli, tmp_path):
    model = sequence_model(tmp_path / "seq.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((24, 10, 12)).astype(np.float32))
    report = _convert(cli, model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "out")
    assert _resolved(report)["x"]["shape"] == [10, 12]
    layouts = report["stages"][0]["details"]["quantization_data"]["calibration"]["layouts"]
    assert layouts["x"].startswith("sample axis") and "each a whole 10x12 input" in layouts["x"]
    assert _quantized(report)["recipe"].startswith(("dynamic", "static"))
    lstm_macs = 10 * 4 * 48 * (12 + 48)
    assert report["summary"]["macs_total"] == lstm_macs + 10 * 48 * 5
    assert _profile(cli, model, "--inputs", tmp_path / "calib.npz")["estimates"]["rpi4b"]["macs_total"] == \
        lstm_macs + 10 * 48 * 5

    # data of the model's own rank cannot say whether axis 0 is samples or time steps
    np.savez(tmp_path / "ambiguous.npz", x=rng.standard_normal((10, 12)).astype(np.float32))
    _refused(cli, "convert", model, "--calib", tmp_path / "ambiguous.npz", "-o", tmp_path / "o2",
             says=["'time' in timex12", "is not a batch axis", "Sxtimex12"])


# -- a stream: float state, an int64 sample rate selecting an If branch ----------------------------------------


def test_streaming_model_with_state_and_sample_rate(cli, tmp_path):
    model = streaming_model(tmp_path / "vad.onnx")
    rng = np.random.default_rng(2)
    chunks = rng.standard_normal((24, 1, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=chunks, sr=np.full(24, 16000, np.int64))
    # the sample rate is never invented: without data or a fill it is refused by name
    np.savez(tmp_path / "chunks_only.npz", input=chunks)
    _refused(cli, "convert", model, "--calib", tmp_path / "chunks_only.npz", "-o", tmp_path / "o",
             says=["input 'sr' (int64) is not in the data", "--fill sr=VALUE"])
    _refused(cli, "convert", model, "--dim", "n=64", "-o", tmp_path / "o", says=["'sr' is int64", "--fill sr=VALUE"])

    report = _convert(cli, model, "--calib", tmp_path / "calib.npz", "--state-pair", "stateN=state",
                      "-o", tmp_path / "out")
    load = report["stages"][0]["details"]
    assert _resolved(report)["input"]["shape"] == [1, 64]
    assert load["resolved_inputs"]["fills"] == {
        "state": {"value": "zeros", "why": "default: zeros for a float input the data lacks"}}
    assert load["resolved_inputs"]["state_pairs"] == {"stateN": "state"}
    assert any("'state' is not in the data: fed zeros" in w for w in report["warnings"])
    assert load["quantization_data"]["eval"]["source"].startswith("the last 5 samples of the calibration stream")
    _quantized(report)
    # calibrated on the state the float model carries (an accumulator far from the data's zeros), the static
    # recipe is faithful: worst state channel about 0.996; calibrated on the zero state it falls to about 0.92
    (stage,) = [s for s in report["stages"] if s["name"] == "quantize"]
    static = next(c for c in stage["details"]["candidates"] if c["name"] == "static-qdq-s8s8-perchannel-minmax")
    state_fidelity = next(o for o in static["fidelity"]["outputs"] if o["name"] == "stateN")
    assert min(state_fidelity["cosine_mean"], state_fidelity["channel_cosine_min"]) > 0.97

    # a fill gives the sample rate where the data has none; the float state can be given too
    filled = _convert(cli, model, "--calib", tmp_path / "chunks_only.npz", "--fill", "sr=16000", "--fill",
                      "state=0.1", "-o", tmp_path / "filled")
    assert _resolved(filled)["sr"]["shape"] == [] and filled["summary"]["quantization"]["shipped"] == "int8"

    profiled = _profile(cli, model, "--inputs", tmp_path / "calib.npz", "--state-pair", "stateN=state", "--measure",
                        "--runs", "3", "--threads", "1")
    assert profiled["input_shapes"] == {"input": [1, 64], "state": [2, 1, 64], "sr": []}
    assert profiled["measurements"]["host"][0]["inputs"]["sr"] == {"shape": [], "dtype": "int64"}
    assert profiled["resolved_inputs"]["fills"]["state"]["value"] == "zeros"


def test_a_stream_carries_each_models_own_state(tmp_path):
    """run_stream feeds every call the state the model itself returned (here a counter)."""
    from onnx import TensorProto, helper

    from edgeopt.data import run_stream

    graph = helper.make_graph(
        [helper.make_node("Add", ["state", "one"], ["stateN"]), helper.make_node("Identity", ["state"], ["seen"])],
        "counter", [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("seen", TensorProto.FLOAT, [1])],
        [helper.make_tensor(name="one", data_type=TensorProto.FLOAT, dims=[1], vals=[1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def run(feeds):
        return dict(zip(["stateN", "seen"], session.run(None, feeds)))

    feeds = [{"state": np.array([10.0], np.float32)}] * 4  # the data's state: only the first call keeps it
    seen = [float(out["seen"][0]) for _fed, out in run_stream(run, feeds, {"stateN": "state"})]
    assert seen == [10.0, 11.0, 12.0, 13.0]
    assert [float(out["seen"][0]) for _fed, out in run_stream(run, feeds, {})] == [10.0] * 4


# -- -1 and 0 dims (paddle2onnx, older exporters) -------------------------------------------------------------


@pytest.mark.parametrize("free", [-1, 0])
def test_minus_one_and_zero_dims_are_symbolic(cli, tmp_path, free):
    model = paddle_style_cnn(tmp_path / "paddle.onnx", free=free)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(3).standard_normal((24, 3, 16, 16)).astype(np.float32))
    report = _convert(cli, model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "out")
    assert _resolved(report)["x"]["declared"] == ["?", 3, "?", "?"] and _resolved(report)["x"]["shape"] == \
        [1, 3, 16, 16]
    assert report["stages"][0]["details"]["freed_dims"][0] == f"x[0]={free}"
    _quantized(report)
    assert report["summary"]["macs_total"] == paddle_macs(16, 16)
    # any concrete shape is accepted; the model file itself is left as it was
    by_shape = _profile(cli, model, "--input-shape", "x=1x3x24x24", "--measure", "--runs", "2", "--threads", "1")
    assert by_shape["estimates"]["rpi4b"]["macs_total"] == paddle_macs(24, 24)
    assert by_shape["measurements"]["host"][0]["inputs"]["x"]["shape"] == [1, 3, 24, 24]
    _refused(cli, "profile", model, "-t", "rpi4b", says=["input 'x' axis 2 (unnamed, in ?x3x?x?)", "--input-shape x=1x3xNxN"])


# -- a transformer with symbolic batch and sequence ------------------------------------------------------------


def test_transformer_with_symbolic_batch_and_sequence(cli, tmp_path):
    model = transformer_encoder(tmp_path / "encoder.onnx")
    rng = np.random.default_rng(4)
    mask = np.ones((24, 12), np.int64)
    mask[::3, 9:] = 0  # padded samples: the additive mask matters
    np.savez(tmp_path / "calib.npz", ids=rng.integers(0, 50, (24, 12)).astype(np.int64), attention_mask=mask)
    report = _convert(cli, model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "out")
    assert {n: e["shape"] for n, e in _resolved(report).items()} == {"ids": [1, 12], "attention_mask": [1, 12]}
    _quantized(report)
    assert report["summary"]["macs_total"] == transformer_macs(12)
    profiled = _profile(cli, model, "--inputs", tmp_path / "calib.npz")
    estimate = profiled["estimates"]["rpi4b"]
    assert estimate["macs_total"] == transformer_macs(12) and not estimate["unknown_nodes"]
    assert _profile(cli, model, "--dim", "seq=64", "--fill", "ids=1", "--fill",
                    "attention_mask=1")["estimates"]["rpi4b"]["macs_total"] == transformer_macs(64)
    # the attention mask is an integer input: without data it needs a value, it is never random
    _refused(cli, "profile", model, "-t", "rpi4b", "--dim", "seq=64", "--measure",
             says=["'ids' is int64 and there is no data for it", "--fill ids=VALUE"])


def test_dims_fills_and_state_pairs_in_edgeopt_toml(cli, tmp_path, monkeypatch):
    model = streaming_model(tmp_path / "vad.onnx")
    np.savez(tmp_path / "chunks.npz", input=np.random.default_rng(6).standard_normal((16, 1, 64)).astype(np.float32))
    (tmp_path / "edgeopt.toml").write_text(
        '[pipeline]\nsource = "vad.onnx"\noutput = "out"\ntargets = ["rpi4b"]\n'
        'fills = { sr = 16000 }\nstate_pairs = { stateN = "state" }\n'
        '[pipeline.quantize]\ncalib = "chunks.npz"\nmin_cosine = 0.9\n')
    monkeypatch.chdir(tmp_path)
    result = cli("convert", "--json")
    assert result.code == 0, result.stderr
    load = json.loads(result.stdout)["stages"][0]["details"]["resolved_inputs"]
    assert load["fills"]["sr"] == {"value": "16000", "why": "--fill"} and load["state_pairs"] == {"stateN": "state"}
    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "vad.onnx"\nfills = { sr = "lots" }\n')
    bad = cli("convert")
    assert bad.code == 2 and "edgeopt.toml:3: pipeline.fills" in bad.stderr and "bad --fill sr value" in bad.stderr
    assert model.exists()
