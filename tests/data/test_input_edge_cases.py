"""Inputs at the edges: sequence tensors, inputs the simplifier drops, metadata sizes, recurrent state
beside a batch axis, mistyped state pairs, fills outside an input's dtype, fills from file and flags,
inputs whose names are capital letters."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .models import fpn_detector, fpn_macs, streaming_model

F = TensorProto.FLOAT


def _save(nodes, inputs, outputs, path, inits=(), opset=17):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _one_line_exit_2(result, *fragments):
    assert result.code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_sequence_tensors_do_not_break_the_shape_probe(cli, tmp_path):
    model = _save([helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=0),
                   helper.make_node("SequenceAt", ["parts", "one"], ["y"])],
                  [helper.make_tensor_value_info("x", F, [4, 3])], [helper.make_tensor_value_info("y", F, None)],
                  tmp_path / "seq.onnx", [numpy_helper.from_array(np.array([1, 3], np.int64), "split"),
                                          numpy_helper.from_array(np.array(1, np.int64), "one")])
    result = cli("inspect", model, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["graph"]["macs_total"] == 0


def test_an_input_the_simplifier_drops_keeps_params_and_macs(cli, tmp_path):
    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    model = _save([helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("unused", F, [1, 2])],
                  [helper.make_tensor_value_info("y", F, [1, 2])], tmp_path / "unused.onnx", [weight])
    result = cli("convert", model, "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["parameter_count"] == 8 and summary["macs_total"] == 8


def test_imgsz_metadata_as_one_number_or_a_pair(cli, tmp_path):
    for value, size in (("64", (64, 64)), ("[48, 80]", (48, 80))):
        model = onnx.load(str(fpn_detector(tmp_path / "fpn.onnx")))
        helper.set_model_props(model, {"imgsz": value})
        onnx.save(model, str(tmp_path / "fpn_meta.onnx"))
        result = cli("inspect", tmp_path / "fpn_meta.onnx", "--json")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["graph"]["macs_total"] == fpn_macs(*size)


def test_recurrent_state_beside_a_batch_axis_follows_the_feeds_batch(cli, tmp_path):
    """x[batch, 8] with h0[2, batch, 4] the data lacks: the zeros fill takes the feed's batch on its own
    batch axis (1), and the layers axis (2) is not mistaken for a fixed batch."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Unsqueeze", ["x", "zero"], ["seq"]),
             helper.make_node("GRU", ["seq", "W", "R", "B", "", "h0"], ["", "h"], hidden_size=4,
                              direction="bidirectional"),
             helper.make_node("Transpose", ["h"], ["hb"], perm=[1, 0, 2]),
             helper.make_node("Flatten", ["hb"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array((rng.standard_normal((2, 12, 8)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((2, 12, 4)) * 0.3).astype(np.float32), "R"),
             numpy_helper.from_array(np.zeros((2, 24), np.float32), "B")]
    model = _save(nodes, [helper.make_tensor_value_info("x", F, ["batch", 8]),
                          helper.make_tensor_value_info("h0", F, [2, "batch", 4])],
                  [helper.make_tensor_value_info("y", F, ["batch", 8])], tmp_path / "gru.onnx", inits)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((24, 8)).astype(np.float32))
    result = cli("convert", model, "--calib", tmp_path / "calib.npz", "-t", "rpi4b", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stages"][0]["details"]["resolved_inputs"]["fills"]["h0"]["value"] == "zeros"
    quantize = next(s for s in report["stages"] if s["name"] == "quantize")
    assert quantize["details"]["data"]["eval"]["batch_size"] == 1  # the free batch, not the 2 layers


def test_a_mistyped_state_pair_is_one_line(cli, tmp_path):
    model = streaming_model(tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", input=np.zeros((4, 1, 64), np.float32), sr=np.full(4, 16000, np.int64))
    base = ("convert", model, "--calib", tmp_path / "calib.npz", "-o", tmp_path / "out")
    _one_line_exit_2(cli(*base, "--state-pair", "stateX=state"), "no output 'stateX'", "prob, stateN")
    _one_line_exit_2(cli(*base, "--state-pair", "stateN=stat"), "no input 'stat'", "input, state, sr")
    _one_line_exit_2(cli("profile", model, "--inputs", tmp_path / "calib.npz", "--state-pair", "stateN=stat"),
                     "no input 'stat'")


def test_a_fill_must_fit_the_inputs_dtype(cli, tmp_path):
    model = _save([helper.make_node("Cast", ["mask"], ["y"], to=F)],
                  [helper.make_tensor_value_info("mask", TensorProto.UINT8, [1, 4])],
                  [helper.make_tensor_value_info("y", F, [1, 4])], tmp_path / "u8.onnx")
    out = ("-o", tmp_path / "out")
    _one_line_exit_2(cli("convert", model, *out, "--fill", "mask=300"), "outside the range of uint8 (0 to 255)")
    _one_line_exit_2(cli("convert", model, *out, "--fill", "mask=-1"), "outside the range of uint8")
    _one_line_exit_2(cli("convert", model, *out, "--fill", "mask=0.5"), "takes whole numbers")
    assert cli("convert", model, *out, "--fill", "mask=7").code == 0


def test_fills_from_the_file_and_the_flags_add_up(cli, tmp_path, monkeypatch):
    streaming_model(tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", input=np.zeros((12, 1, 64), np.float32))
    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "vad.onnx"\ntargets = ["rpi4b"]\n'
                                           'fills = { sr = 16000 }\n[pipeline.quantize]\ncalib = "calib.npz"\n')
    monkeypatch.chdir(tmp_path)
    result = cli("convert", "--fill", "state=ones", "--json")
    assert result.code == 0, result.stderr
    fills = json.loads(result.stdout)["stages"][0]["details"]["resolved_inputs"]["fills"]
    assert fills["sr"]["value"] == "16000" and fills["state"]["value"] == "ones"


def test_an_input_named_with_a_capital_x(cli, tmp_path):
    model = _save([helper.make_node("Relu", ["X"], ["Y"])], [helper.make_tensor_value_info("X", F, ["N", "F"])],
                  [helper.make_tensor_value_info("Y", F, ["N", "F"])], tmp_path / "X.onnx")
    result = cli("inspect", model, "--input-shape", "X=1X4", "--json")
    assert result.code == 0, result.stderr
    assert "X=1x4" in json.loads(result.stdout)["counted_at"]
