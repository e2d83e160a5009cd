"""Issue 22: convert reports its own cost and keeps the quantize stage within a memory budget.

Every stage record carries its wall time and the process's peak RSS (report.json, --json, the HTML page);
--calib-batch sets the batch calibration runs at; the quantize stage estimates its peak before it starts and
lowers the batch, or refuses in one line, when --max-memory is too small. Real graphs, real onnxruntime, the
real CLI (in-process, and in subprocesses where two runs must start from the same resident memory)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_classifier
from onnx import TensorProto, helper, numpy_helper

from edgeopt.report.html import render_html
from edgeopt.report.schema import report_from_json
from edgeopt.runtime.rss import peak_window

MIB = 1024 * 1024


def wide_cnn(size: int = 128, width: int = 32) -> onnx.ModelProto:
    """x[N,3,size,size] -> Conv(3->width) -> Relu -> Conv(width->width) -> Relu -> GlobalAveragePool -> Flatten
    -> Gemm(width->10). Every activation carries the batch axis, so activation bytes are proportional to it."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    zeros = [numpy_helper.from_array(np.zeros(n, np.float32), name) for name, n in
             (("c0.b", width), ("c1.b", width), ("fc.b", 10))]
    node = helper.make_node
    graph = helper.make_graph(
        [node("Conv", ["x", "c0.w", "c0.b"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
         node("Relu", ["c0"], ["r0"], name="relu0"),
         node("Conv", ["r0", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         node("Relu", ["c1"], ["r1"], name="relu1"),
         node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
         node("Flatten", ["p"], ["f"], name="flatten"),
         node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)],
        "wide_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [weight("c0.w", (width, 3, 3, 3)), weight("c1.w", (width, width, 3, 3)), weight("fc.w", (10, width)), *zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _model_and_calibration(folder: Path, model: onnx.ModelProto, side: int, seed: int) -> tuple[Path, Path]:
    """The model and 40 random 3 x side x side calibration samples, saved in ``folder``."""
    onnx.save(model, str(folder / "model.onnx"))
    samples = np.random.default_rng(seed).standard_normal((40, 3, side, side)).astype(np.float32)
    np.savez(folder / "calib.npz", x=samples)
    return folder / "model.onnx", folder / "calib.npz"


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> tuple[Path, Path]:
    return _model_and_calibration(tmp_path_factory.mktemp("wide"), wide_cnn(), side=128, seed=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    return _model_and_calibration(tmp_path_factory.mktemp("small"), conv_classifier(), side=8, seed=0)


def _stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["name"] == name)


def _convert(*args) -> subprocess.CompletedProcess:
    """A fresh process: two runs then start the quantize stage with the same memory resident."""
    return subprocess.run([sys.executable, "-m", "edgeopt", "convert", *map(str, args)], check=False,
                          capture_output=True, text=True)


def _clear_refs_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- each stage's cost


def test_every_stage_records_its_time_and_peak_rss_in_json_and_html(cli, wide, tmp_path):
    model, calib = wide
    result = cli("convert", model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "out" / "report.json").read_text())
    names = [s["name"] for s in printed["stages"]]
    assert {"load", "quantize", "finalize"} <= set(names)
    for stage in printed["stages"]:
        assert stage["duration_s"] >= 0
        # a Python process with onnxruntime loaded is tens of MiB at least, and never more than this machine has
        assert 30 * MIB < stage["peak_rss_bytes"] < 1024 ** 4
        assert 0 <= stage["peak_rss_increase_bytes"] <= stage["peak_rss_bytes"]
        assert stage["peak_rss_scope"] == ("stage" if _clear_refs_works() else "process")
    quantize = _stage(printed, "quantize")
    # calibrating 16 samples of 3x128x128 through two 32-channel convolutions needs real memory on top
    assert quantize["peak_rss_increase_bytes"] > 16 * 2 * MIB

    page = render_html(report_from_json(printed, "report"))
    cost = page[page.index('id="cost"'):]
    cost = cost[:cost.index("</section>")]
    text = re.sub(r"<[^>]+>", " ", cost)
    assert "peak RSS (MiB)" in text
    for stage in printed["stages"]:
        assert f"{stage['peak_rss_bytes'] / MIB:,.1f}" in text and stage["name"] in text
    estimate = quantize["details"]["memory"]["estimate"]
    assert f"expected ~{estimate['expected_peak_bytes'] / MIB:,.0f} MiB at calibration batch 16" in text


def test_a_report_without_stage_costs_still_renders_without_the_cost_table(cli, small, tmp_path):
    model, calib = small
    assert cli("convert", model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "out").code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for stage in report["stages"]:  # as written before stage costs were recorded
        for key in ("peak_rss_bytes", "peak_rss_increase_bytes", "peak_rss_scope"):
            del stage[key]
    from edgeopt.report.schema import report_from_json

    assert report_from_json(report, "old report").stages[0].peak_rss_bytes is None
    page = render_html(report_from_json(report, "old report"))
    assert 'id="cost"' not in page and "could not be rendered" not in page


def test_a_window_sees_its_own_peak_and_an_outer_window_sees_the_inner_one():
    with peak_window() as outer:
        with peak_window() as inner:
            block = np.ones(64 * MIB // 8)  # 64 MiB, touched
            del block
        with peak_window() as after:
            pass
    assert inner.increase_bytes >= 60 * MIB and inner.peak_bytes >= 60 * MIB
    assert outer.peak_bytes >= inner.peak_bytes
    if inner.scope == "stage":  # the mark was reset: the freed block is not this window's peak
        assert after.increase_bytes < 60 * MIB


def test_without_a_resettable_mark_a_window_reports_the_process_peak(monkeypatch):
    from edgeopt.runtime import rss

    monkeypatch.setattr(rss, "_CLEAR_REFS", "/nonexistent/clear_refs")  # as on macOS or in a sandbox
    with peak_window() as window:
        block = np.ones(16 * MIB // 8)
        del block
    assert window.scope == "process"
    assert window.peak_bytes >= rss.current_rss_bytes() and window.increase_bytes >= 0


# --------------------------------------------------------------------------- --calib-batch


def test_calib_batch_sets_the_batch_calibration_runs_at(cli, wide, tmp_path):
    model, calib = wide
    runs = {}
    for batch in (4, 16):
        result = cli("convert", model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / f"b{batch}", "--json",
                     "--calib-batch", batch)
        assert result.code == 0, result.stderr
        runs[batch] = _stage(json.loads(result.stdout), "quantize")["details"]["memory"]
    for batch, memory in runs.items():
        assert memory["calibration_batch"] == memory["requested_batch"] == memory["estimate"]["batch"] == batch
    # every activation of this model carries the batch axis: a quarter of the batch, a quarter of the bytes
    small_act, large_act = (sum(runs[b]["estimate"]["activation_bytes"].values()) for b in (4, 16))
    assert large_act == 4 * small_act


def test_a_batch_axis_the_model_fixes_wins_over_calib_batch(cli, tmp_path):
    onnx.save(conv_classifier(batch=2), str(tmp_path / "fixed.onnx"))
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32))
    result = cli("convert", tmp_path / "fixed.onnx", "--calib", tmp_path / "calib.npz", "-t", "rpi4b",
                 "--calib-batch", "8", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    assert _stage(json.loads(result.stdout), "quantize")["details"]["memory"]["calibration_batch"] == 2


def test_calib_batch_and_max_memory_are_edgeopt_toml_keys(tmp_path):
    from edgeopt.config.project import load_config, pipeline_config
    from edgeopt.config.settings import ConvertConfig

    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "m.onnx"\noutput = "out"\n'
                                           '[pipeline.quantize]\ncalib_batch = 4\nmax_memory = "1.5 GiB"\n')
    from_file = pipeline_config(load_config(tmp_path / "edgeopt.toml"))
    assert from_file.quantize.calib_batch == 4 and from_file.quantize.max_memory == 3 * 512 * MIB
    assert from_file == ConvertConfig(source=str(tmp_path / "m.onnx"), output_dir=str(tmp_path / "out"),
                                      quantize={"calib_batch": 4, "max_memory": 1610612736})


@pytest.mark.parametrize("flag, value, fragment", [("--calib-batch", "0", "--calib-batch"),
                                                   ("--max-memory", "4 parsecs", "--max-memory"),
                                                   ("--max-memory", "0", "must be positive")])
def test_bad_values_name_their_flag(cli, small, tmp_path, flag, value, fragment):
    model, calib = small
    result = cli("convert", model, "--calib", calib, "-o", tmp_path / "out", flag, value)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the memory estimate and --max-memory


def test_the_estimate_covers_the_weights_and_a_batch_of_activations_counted_by_onnxruntime(cli, wide, tmp_path):
    model, calib = wide
    result = cli("convert", model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    estimate = _stage(json.loads(result.stdout), "quantize")["details"]["memory"]["estimate"]
    # every tensor of one batch of 16, as onnxruntime hands them back when all are graph outputs
    graph = onnx.load(str(model))
    graph.graph.output.extend(helper.make_empty_tensor_value_info(name) for node in graph.graph.node
                              for name in node.output if name != "y")
    import onnxruntime as ort

    feeds = {"x": np.zeros((16, 3, 128, 128), np.float32)}
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    one_batch = feeds["x"].nbytes + sum(v.nbytes for v in session.run(None, feeds))
    weights = sum(t.ByteSize() for t in graph.graph.initializer)
    assert estimate["activation_bytes"]["calibration"] == one_batch
    assert estimate["expected_peak_bytes"] >= weights + one_batch
    assert estimate["unknown_tensors"] == 0


def test_max_memory_too_small_for_one_batch_is_one_line_and_exit_2(cli, small, tmp_path):
    model, calib = small
    result = cli("convert", model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "out", "--max-memory", "1 MiB")
    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert re.search(r"expected to need ~[\d,.]+ MiB even at calibration batch 1, more than --max-memory 1\.0 MiB",
                     lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_a_max_memory_that_fits_batch_4_but_not_16_lowers_the_batch_and_says_so(wide, tmp_path):
    model, calib = wide
    first = _convert(model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "a", "--json")
    assert first.returncode == 0, first.stderr
    estimate = _stage(json.loads(first.stdout), "quantize")["details"]["memory"]["estimate"]
    per_sample = sum(estimate["activation_bytes"].values()) / 16  # proportional to the batch (see wide_cnn)
    fixed = estimate["expected_peak_bytes"] - 16 * per_sample
    assert per_sample > 8 * MIB  # far above how much the resident memory of two fresh runs differs
    limit = int(fixed + 4.5 * per_sample)

    second = _convert(model, "--calib", calib, "-t", "rpi4b", "-o", tmp_path / "b", "--json", "--max-memory", limit)
    assert second.returncode == 0, second.stderr
    quantize = _stage(json.loads(second.stdout), "quantize")
    memory = quantize["details"]["memory"]
    assert 1 <= memory["calibration_batch"] <= 4 and memory["requested_batch"] == 16
    assert memory["estimate"]["expected_peak_bytes"] <= limit < memory["requested_estimate_bytes"]
    said = f"calibration batch 16 → {memory['calibration_batch']}"
    assert any(w.startswith(said) and "exceeds --max-memory" in w for w in quantize["warnings"])
    assert said in second.stderr  # printed as a warning too
