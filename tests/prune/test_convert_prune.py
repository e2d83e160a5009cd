"""edgeopt convert --prune / --finetune end to end: the torch path, the ONNX path, refusals, config file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, WIDE_FACTORY

DIGITS = REPO / "models" / "digits"
FACTORY = [f"{DIGITS / 'model.py'}:build_model", "--weights", DIGITS / "digits_cnn.pt", "--input-shape",
           "image=1x1x8x8"]


def conv_widths(path) -> dict[str, int]:
    model = onnx.load(str(path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    return {n.name: weights[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights}


def test_prune_and_finetune_a_torch_source(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", *FACTORY, "-o", out, "-t", "rpi4b", "--prune", "0.5", "--finetune", DIGITS / "train.npz",
                 "--epochs", "6", "--patience", "2", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    stage = next(s for s in report["stages"] if s["name"] == "prune")
    assert stage["status"] == "ok" and stage["details"]["path"] == "torch source"
    assert stage["parity"][0]["passed"]  # the exported pruned graph reproduces the pruned module
    pruning = report["summary"]["pruning"]
    assert pruning["channel_multiple"] == 4  # rpi4b: NEON, 4 fp32 lanes
    assert pruning["params_after"] < 0.5 * pruning["params_before"]
    # every pruned conv keeps a multiple of 4 channels; the classifier keeps its 10 classes
    widths = conv_widths(out / "model.onnx")
    assert widths and all(w % 4 == 0 for w in widths.values())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[-1] == 10
    steps = {s["step"]: s for s in pruning["steps"]}
    assert list(steps) == ["unpruned", "pruned", "fine-tuned"]
    assert steps["pruned"]["params"] < steps["unpruned"]["params"] and steps["pruned"]["macs"] < steps["unpruned"]["macs"]
    assert steps["pruned"]["estimated_latency_ms"]["rpi4b"] < steps["unpruned"]["estimated_latency_ms"]["rpi4b"]
    assert steps["pruned"]["host_latency_ratio"] > 0
    # fine-tuning wins the accuracy back (pruning alone destroys it on this model)
    assert steps["fine-tuned"]["accuracy"] >= 0.95 > steps["pruned"]["accuracy"]
    finetuned = stage["details"]["finetune"]
    curve = finetuned["curve"]
    assert len(curve) == finetuned["epochs_run"] and all(e["val_loss"] > 0 for e in curve)
    # all six epochs, or stopped after two (--patience) without a better validation loss
    if finetuned["stopped_early"]:
        assert finetuned["epochs_run"] < 6 and finetuned["epochs_run"] - finetuned["best_epoch"] == 2
    else:
        assert finetuned["epochs_run"] == 6
    # the table in the human output
    text = cli("convert", *FACTORY, "-o", tmp_path / "again", "--prune", "0.25")
    assert text.code == 0 and "Pruning 25%" in text.stdout


def test_l2_reaches_fine_tuning_and_shrinks_the_shipped_weights(cli, tmp_path):
    """--l2 is the optimizer's weight decay: a strong one pulls the weights toward zero while training (the
    validation loss of its first epoch is far worse), and leaves smaller weights in the exported model when
    a fine-tuned epoch is what ships. Where the pruned model already had the best validation loss (on an
    AVX-512 machine 25% pruning kept every digit), fine-tuning restores it, whatever the decay."""
    norms, first_val_loss, shipped_epoch = {}, {}, {}
    for l2 in ("0", "0.5"):
        out = tmp_path / f"l2-{l2}"
        result = cli("convert", *FACTORY, "-o", out, "--prune", "0.25", "--finetune", DIGITS / "train.npz",
                     "--epochs", "3", "--patience", "3", "--lr", "0.01", "--l2", l2, "--json")
        assert result.code == 0, result.stderr
        stage = next(s for s in json.loads(result.stdout)["stages"] if s["name"] == "prune")
        assert stage["options"]["finetune"]["weight_decay"] == float(l2)
        finetuned = stage["details"]["finetune"]
        first_val_loss[l2], shipped_epoch[l2] = finetuned["curve"][0]["val_loss"], finetuned["best_epoch"]
        model = onnx.load(str(out / "model.onnx"))
        conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
        norms[l2] = sum(float(np.square(numpy_helper.to_array(t)).sum()) for t in model.graph.initializer
                        if t.name in conv_weights)
    assert first_val_loss["0.5"] > 3 * first_val_loss["0"]
    if shipped_epoch["0.5"]:
        assert norms["0.5"] < 0.8 * norms["0"]
    else:
        assert norms["0.5"] == norms["0"] or shipped_epoch["0"]  # both the pruned weights, or only l2=0 trained


def test_prune_an_onnx_source_then_quantize(cli, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", DIGITS / "digits_cnn.onnx", "-o", out, "--prune", "0.5", "--finetune", DIGITS / "train.npz",
                 "--epochs", "4", "--calib", DIGITS / "calib.npz", "--eval", DIGITS / "eval.npz", "--force-int8",
                 "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    stage = next(s for s in report["stages"] if s["name"] == "prune")
    assert stage["details"]["path"] == "ONNX graph converted to torch"
    steps = report["summary"]["pruning"]["steps"]
    assert [s["step"] for s in steps] == ["unpruned", "pruned", "fine-tuned", "quantized"]
    # the same held-out samples score every step, the int8 one included
    assert steps[-1]["accuracy"] is not None and abs(steps[-1]["accuracy"] - steps[2]["accuracy"]) < 0.05
    assert report["summary"]["quantization"]["shipped"] == "int8"
    # the HTML page shows the per-step table
    from edgeopt.report.html import render_html
    from edgeopt.report.schema import report_from_json
    from edgeopt.units import format_count

    page = render_html(report_from_json(report, "report"))
    assert 'id="pruning"' in page and "fine-tuning curve" in page
    for step in steps:
        assert f"<td>{step['step']}</td>" in page and format_count(step["params"]) in page


def _nms_model(path):
    """A Conv then NonMaxSuppression: a graph the ONNX→torch converter cannot take."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["scores_raw"], name="mean", axes=[2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["scores_raw", "ax"], ["scores"], name="unsq"),
             helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="nms")]
    graph = helper.make_graph(
        nodes, "nms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8]),
                       helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 4])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        initializer=[weight, numpy_helper.from_array(np.array([0], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_unconvertible_onnx_is_refused_naming_the_op_unless_allowed(cli, tmp_path):
    source = _nms_model(tmp_path / "nms.onnx")
    refused = cli("convert", source, "-o", tmp_path / "a", "--prune", "0.5")
    assert refused.code == 2 and "NonMaxSuppression" in refused.stderr and "'nms'" in refused.stderr
    assert not (tmp_path / "a" / "model.onnx").exists()
    allowed = cli("convert", source, "-o", tmp_path / "b", "--prune", "0.5", "--allow-unprunable", "--json")
    assert allowed.code == 0, allowed.stderr
    report = json.loads(allowed.stdout)
    stage = next(s for s in report["stages"] if s["name"] == "prune")
    assert stage["status"] == "skipped" and any("NonMaxSuppression" in w for w in stage["warnings"])
    assert "pruning" not in report["summary"]


@pytest.mark.parametrize("args, message", [
    (["--prune", "1.5"], "between 0 and 1"),
    (["--prune", "0"], "between 0 and 1"),
    (["--factory-arg", "width=0.5"], "takes no argument width"),
    (["--factory-arg", "0width"], "bad --factory-arg"),
    (["--prune", "0.5", "--prune-criterion", "random"], "criterion"),
    (["--prune", "0.5", "--prune-criterion", "taylor"], "needs labelled data"),
])
def test_refusals(cli, tmp_path, args, message):
    result = cli("convert", *FACTORY, "-o", tmp_path / "out", *args)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_labels_that_do_not_fit_the_output_are_refused(cli, tmp_path):
    with np.load(DIGITS / "train.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["labels"] = arrays["labels"] + 10  # classes 10..19 for a 10-class model
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    result = cli("convert", *FACTORY, "-o", tmp_path / "out", "--prune", "0.5", "--finetune", bad)
    assert result.code == 2 and "10 outputs" in result.stderr, result.stderr


def test_prune_from_the_project_file(cli, tmp_path, monkeypatch):
    (tmp_path / "edgeopt.toml").write_text(f'''
[pipeline]
source = "{DIGITS / 'digits_cnn.onnx'}"
output = "build"
targets = ["cortex-a78"]

[pipeline.prune]
ratio = 0.25

[pipeline.finetune]
data = "{DIGITS / 'train.npz'}"
epochs = 2
''')
    monkeypatch.chdir(tmp_path)
    result = cli("convert", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["prune"]["ratio"] == 0.25 and report["summary"]["pruning"]["finetune"]["epochs_run"] <= 2
    # a flag refines the file's settings
    again = cli("convert", "--epochs", "1", "-o", tmp_path / "other", "--json")
    assert again.code == 0 and json.loads(again.stdout)["config"]["finetune"]["epochs"] == 1
    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "m.onnx"\n\n[prune]\nratio = 0.5\n')
    wrong = cli("convert")
    assert wrong.code == 2 and "edgeopt.toml:4: [prune] belongs to the pipeline" in wrong.stderr


def test_a_transformer_encoder_prunes_its_embedding_and_head_dims(cli, tmp_path):
    factory = tmp_path / "encoder.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Encoder(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = nn.Linear(16, 64)\n"
        "        self.layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)\n"
        "        self.head = nn.Linear(64, 5)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.layer(self.embed(x)).mean(1))\n\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Encoder().eval()\n")
    result = cli("convert", f"{factory}:build", "--input-shape", "x=1x10x16", "-o", tmp_path / "out", "-t", "rpi4b",
                 "--prune", "0.5", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    pruning = report["summary"]["pruning"]
    assert pruning["params_after"] < 0.5 * pruning["params_before"]
    layers = {layer["name"]: layer for layer in next(s for s in report["stages"] if s["name"] == "prune")
              ["details"]["prune"]["layers"]}
    assert layers["layer.self_attn.out_proj"]["out_after"] == 32 and layers["head"]["out_after"] == 5
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.random.default_rng(0).standard_normal((1, 10, 16)).astype(np.float32)})
    assert out.shape == (1, 5)




def test_finetune_alone_trains_a_factory_built_with_arguments(cli, tmp_path):
    """--factory-arg builds another architecture (tune's architecture trials); --finetune without --prune trains
    it as it is: steps unpruned (untrained) and fine-tuned, ratio 0, nothing timed against itself."""
    factory = tmp_path / "wide.py"
    factory.write_text(WIDE_FACTORY)
    out = tmp_path / "out"
    result = cli("convert", f"{factory}:build", "--factory-arg", "width=0.5", "--factory-arg", "dropout=0.1",
                 "--input-shape", "image=1x1x8x8", "--finetune", DIGITS / "train.npz", "--eval", DIGITS / "eval.npz",
                 "--epochs", "4", "--lr", "0.01", "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    pruning = report["summary"]["pruning"]
    assert pruning["ratio"] == 0.0 and pruning["params_before"] == pruning["params_after"]
    steps = {s["step"]: s for s in pruning["steps"]}
    assert list(steps) == ["unpruned", "fine-tuned"]
    assert steps["fine-tuned"]["accuracy"] > steps["unpruned"]["accuracy"] + 0.3  # trained from its random start
    assert conv_widths(out / "model.onnx") and set(conv_widths(out / "model.onnx").values()) == {8}  # 16 x 0.5
    assert report["config"]["factory_args"] == {"width": 0.5, "dropout": 0.1}
    onnx_source = cli("convert", DIGITS / "digits_cnn.onnx", "--factory-arg", "width=0.5", "-o", tmp_path / "o2")
    assert onnx_source.code == 2 and "only applies to a factory source" in onnx_source.stderr
