""".tflite as a format of its own: inspect reads the flatbuffer (float, float16-weight and fully int8 files,
several inputs, a custom op, a truncated file), profile estimates it per target and measures it with the
LiteRT interpreter. Every file is built here with the schema's writer (tflite_builder.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter")

import tflite_builder as build  # noqa: E402

# CONV_2D 3x3 (1 → 4 channels) over 8x8, then FULLY_CONNECTED 256 → 10
CONV_MACS, FC_MACS = 8 * 8 * 4 * 3 * 3 * 1, 256 * 10
PARAMS = 4 * 9 + 4 + 2560 + 10


def _inspect(cli, path: Path) -> dict:
    result = cli("inspect", path, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_inspect_a_float_model(cli, tmp_path):
    found = _inspect(cli, build.float_cnn(tmp_path / "float.tflite"))
    graph = found["graph"]
    assert found["file"]["format"] == "tflite" and found["file"]["size_bytes"] == (tmp_path / "float.tflite").stat().st_size
    assert graph["op_counts"] == {"CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert graph["macs_by_op"] == {"CONV_2D": CONV_MACS, "FULLY_CONNECTED": FC_MACS}
    assert graph["macs_total"] == CONV_MACS + FC_MACS and graph["parameter_count"] == PARAMS
    assert graph["signatures"] == [{"key": "serving_default", "subgraph": 0, "inputs": ["image"],
                                     "outputs": ["logits"]}]
    assert graph["inputs"] == [{"name": "image", "shape": [1, 8, 8, 1], "dtype": "float32", "quantization": None}]
    assert not graph["fully_int8"] and graph["float_inputs"] == ["image"] and len(graph["float_ops"]) == 3
    assert graph["float16_weights"] == [] and graph["weight_bytes_by_dtype"]["float32"] == PARAMS * 4
    assert graph["largest_tensors"][0] == {"name": "dense/weights", "dtype": "float32", "bytes": 2560 * 4}


def test_inspect_float16_weights(cli, tmp_path):
    graph = _inspect(cli, build.float_cnn(tmp_path / "fp16.tflite", fp16_weights=True))["graph"]
    assert graph["float16_weights"] == ["conv/filter_fp16", "dense/weights_fp16"]
    assert graph["weight_bytes_by_dtype"]["float16"] == (36 + 2560) * 2
    assert graph["op_counts"]["DEQUANTIZE"] == 2
    # the weights' DEQUANTIZE runs once at load: the MACs are the same model's
    assert graph["macs_total"] == CONV_MACS + FC_MACS and not graph["fully_int8"]


def test_inspect_a_fully_int8_model_with_per_channel_scales(cli, tmp_path):
    graph = _inspect(cli, build.int8_cnn(tmp_path / "int8.tflite"))["graph"]
    assert graph["fully_int8"] and graph["float_ops"] == [] and graph["float_inputs"] == []
    assert graph["inputs"][0]["quantization"] == {"kind": "per-tensor", "scale": 1 / 64, "zero_point": 0}
    tensors = {t["name"]: t for t in graph["tensors"]}
    conv = tensors["conv/filter"]["quantization"]
    assert conv["kind"] == "per-axis" and conv["axis"] == 0 and conv["channels"] == 4
    assert conv["scale_min"] == pytest.approx(0.01) and conv["scale_max"] == pytest.approx(0.02)
    assert graph["weight_bytes_by_dtype"] == {"int8": 36 + 2560, "int32": 4 * 4 + 10 * 4 + 2 * 4}
    assert graph["parameter_count"] == PARAMS


def test_several_inputs_and_a_run_time_batch(cli, tmp_path):
    model = build.two_input_add(tmp_path / "two.tflite")
    graph = _inspect(cli, model)["graph"]
    assert graph["signatures"][0]["inputs"] == ["a", "b"]
    assert [i["shape"] for i in graph["inputs"]] == [[-1, 4], [-1, 4]]
    result = cli("profile", model, "--measure", "--runs", "5", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    profile = json.loads(result.stdout)
    assert profile["input_shapes"] == {"a": [1, 4], "b": [1, 4]}  # the run-time batch at 1
    (run,) = profile["measurements"]["host"]
    assert run["runtime"]["name"] == "ai-edge-litert" and run["latency_ms"]["p50"] > 0


def test_profile_estimates_per_target_and_measures_with_the_interpreter(cli, tmp_path):
    model = build.int8_cnn(tmp_path / "int8.tflite")
    result = cli("profile", model, "-t", "rpi4b", "--measure", "--runs", "10", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    profile = json.loads(result.stdout)
    estimate = profile["estimates"]["rpi4b"]
    assert estimate["macs_total"] == CONV_MACS + FC_MACS and estimate["latency_ms"] > 0
    assert {n["op_type"] for n in estimate["nodes"]} == {"CONV_2D", "RESHAPE", "FULLY_CONNECTED"}
    assert all(n["execution_dtype"] == "int8" for n in estimate["nodes"])
    # the CPU figures are onnxruntime's: said, and no onnxruntime-validated band is claimed for LiteRT
    assert any("onnxruntime's figures" in a and "tflite interpreter's kernels differ" in a
               for a in estimate["assumptions"]) and estimate["latency_error"] is None
    (run,) = profile["measurements"]["host"]
    assert run["runs"] == 10 and run["latency_ms"]["p50"] > 0 and run["threads"] == 1
    assert run["runtime"]["name"] == "ai-edge-litert"
    assert run["memory"]["peak_rss_increase_bytes"] > 0


def test_measure_times_every_op_alone_and_ties_it_to_the_estimate(cli, tmp_path):
    model = build.float_cnn(tmp_path / "float.tflite")
    result = cli("profile", model, "-t", "host", "--measure", "--runs", "5", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    profile = json.loads(result.stdout)
    (run,) = profile["measurements"]["host"]
    assert run["per_op_method"] == "op-by-op" and run["per_op_skipped"] == []
    nodes = {n["name"]: n["op_type"] for n in profile["estimates"]["host"]["nodes"]}
    assert {op["node"]: op["op_type"] for op in run["per_op"]} == nodes
    assert all(op["source_nodes"] == [op["node"]] and op["median_us"] > 0 and op["calls"] == 5
               for op in run["per_op"])
    (comparison,) = profile["comparisons"]
    assert set(comparison["by_op_type"]) == set(nodes.values())
    assert all(entry["measured_ms"] > 0 for entry in comparison["by_op_type"].values())
    shown = cli("profile", model, "--measure", "--runs", "5", "--threads", "1")
    assert "Slowest ops on host" in shown.stdout and "timed op by op" in shown.stdout


def test_an_op_that_keeps_state_is_named_not_timed_alone(cli, tmp_path):
    model = build.stateful_add(tmp_path / "stateful.tflite")
    result = cli("profile", model, "--measure", "--runs", "3", "--threads", "1", "--json")
    assert result.code == 0, result.stderr
    (run,) = json.loads(result.stdout)["measurements"]["host"]
    assert [op["node"] for op in run["per_op"]] == ["mul_1"]
    assert run["per_op_skipped"] == [{"node": "add_0", "op_type": "ADD", "reason": "keeps state between calls"}]


@pytest.mark.parametrize("make", [build.float_cnn, build.int8_cnn, build.two_input_add])
def test_each_single_op_model_computes_what_its_op_computed_in_the_whole_model(tmp_path, make):
    """The per-op models time the same kernel on the same values: fed the inputs its operator saw in the whole
    model, each one returns exactly that operator's outputs there."""
    import io

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeopt.formats.tflite import load_tflite
    from edgeopt.formats.tflite_ops import op_models_bundle

    path = make(tmp_path / "model.tflite")
    plain = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    whole = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, **plain)
    whole.allocate_tensors()
    rng = np.random.default_rng(3)
    for detail in whole.get_input_details():
        value = rng.standard_normal(detail["shape"]) * 40
        whole.set_tensor(detail["index"], value.clip(-128, 127).astype(detail["dtype"]))
    whole.invoke()
    graph = load_tflite(path).main
    operators = graph.operators
    with np.load(io.BytesIO(op_models_bundle(path)), allow_pickle=False) as bundle:
        manifest = json.loads(bundle["manifest"].tobytes())
        assert [entry["node"] for entry in manifest] == [f"{op.op.lower()}_{op.index}" for op in operators]
        for entry, op in zip(manifest, operators):
            # weights stay constants of the op's model (the runtime packs them as it does in the whole model)
            assert entry["inputs"] == [i for i in op.inputs if i >= 0 and graph.tensors[i].buffer_bytes == 0]
            alone = Interpreter(model_content=bundle[entry["key"]].tobytes(), **plain)
            alone.allocate_tensors()
            for detail, index in zip(alone.get_input_details(), entry["inputs"]):
                alone.set_tensor(detail["index"], whole.get_tensor(index))
            alone.invoke()
            for detail, index in zip(alone.get_output_details(), op.outputs):
                np.testing.assert_array_equal(alone.get_tensor(detail["index"]), whole.get_tensor(index))


def test_the_runner_takes_real_values_by_signature_name_for_an_int8_input(cli, tmp_path):
    """What edgeopt's stages hold (float values, keyed by the serving signature's names) runs an int8 file whose
    tensor is named otherwise: the runner quantizes with the input's scale, as SignatureModel does."""
    from edgeopt.runtime.device_runner import _LiteRT
    from edgeopt.stages.tflite.int8 import SignatureModel

    model = build.int8_cnn(tmp_path / "int8.tflite", input_tensor="serving_default_image:0")
    image = np.random.default_rng(2).uniform(-1.5, 1.5, (1, 8, 8, 1)).astype(np.float32)
    (raw,) = _LiteRT(str(model), 1, False).run({"image": image})
    assert raw.dtype == np.int8
    (expected,) = SignatureModel(model)({"image": image})
    np.testing.assert_array_equal((raw.astype(np.float32) - 0) / 16, expected)
    assert np.abs(expected).max() > 0  # not a model of zeros
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{"serving_default_image:0": image})  # profile --inputs names the file's tensors
    result = cli("profile", model, "--measure", "--runs", "3", "--threads", "1", "--inputs", inputs, "--json")
    assert result.code == 0, result.stderr
    (run,) = json.loads(result.stdout)["measurements"]["host"]
    assert run["latency_ms"]["p50"] > 0 and run["per_op_method"] == "op-by-op" and len(run["per_op"]) == 3


@pytest.mark.parametrize("xnnpack", [True, False])
def test_memory_is_estimated_as_the_interpreter_allocates_it(cli, tmp_path, xnnpack):
    """A long 1-D convolution: XNNPACK holds an indirection buffer of one pointer per output pixel and tap, the
    builtin kernel an im2col buffer of pixels x taps x channels floats. The estimate names the part and the
    whole lands near the runner's measured peak RSS increase."""
    length, taps, channels = 32768, 39, 8
    model = build.long_conv(tmp_path / "conv.tflite", length, taps, channels)
    flag = "--xnnpack" if xnnpack else "--no-xnnpack"
    result = cli("profile", model, "-t", "host", "--measure", "--runs", "3", "--threads", "1", flag, "--json")
    assert result.code == 0, result.stderr
    profile = json.loads(result.stdout)
    memory = profile["estimates"]["host"]["runtime_memory"]
    parts = {part["key"]: part["bytes"] for part in memory["parts"]}
    assert set(parts) == {"session", "weights", "arena", "scratch"}
    assert parts["scratch"] == (length * taps * 8 if xnnpack else length * taps * channels * 4)
    weights = channels * taps * channels * 4 + channels * 4
    assert parts["weights"] == weights * (2 if xnnpack else 1)
    assert parts["arena"] == 2 * length * channels * 4  # the input and the output, live together
    assert profile["estimates"]["host"]["memory_error"] is None  # no validated band for the interpreter
    (run,) = profile["measurements"]["host"]
    measured = run["memory"]["peak_rss_increase_bytes"]
    assert 0.75 < memory["peak_increase_bytes"] / measured < 1.25, (memory, run["memory"])


def test_the_interpreter_runs_what_inspect_describes(tmp_path):
    """The built files are real models: the interpreter's outputs are what numpy computes for the float CNN."""
    from ai_edge_litert.interpreter import Interpreter

    path = build.float_cnn(tmp_path / "float.tflite")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 1)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    rng = np.random.default_rng(0)
    filters = rng.standard_normal((4, 3, 3, 1)).astype(np.float32) * 0.5
    dense = rng.standard_normal((10, 256)).astype(np.float32) * 0.1
    padded = np.pad(x[0, :, :, 0], 1)
    conv = np.stack([[[(padded[i:i + 3, j:j + 3] * filters[c, :, :, 0]).sum() for c in range(4)]
                      for j in range(8)] for i in range(8)])
    expected = np.maximum(conv, 0).reshape(1, 256) @ dense.T
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_truncated_file_is_one_line_and_exit_2(cli, tmp_path):
    data = build.float_cnn(tmp_path / "full.tflite").read_bytes()
    for cut in (7, 40, len(data) // 2, len(data) - 100):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        for command in (("inspect", path), ("profile", path, "-t", "rpi4b")):
            result = cli(*command)
            assert result.code == 2, (cut, result.stderr)
            assert "is not a valid TFLite file" in result.stderr and "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) <= 2  # the line and its hint


def test_a_custom_op_is_named_and_refused_for_measurement(cli, tmp_path):
    model = build.custom_op_model(tmp_path / "custom.tflite")
    graph = _inspect(cli, model)["graph"]
    assert graph["custom_ops"] == ["EdgeoptSecretOp"]
    assert any("EdgeoptSecretOp" in w and "cannot run it" in w for w in graph["warnings"])
    estimated = cli("profile", model, "-t", "rpi4b", "--json")
    assert estimated.code == 0, estimated.stderr  # a static estimate, with the op's cost unknown
    measured = cli("profile", model, "--measure", "--runs", "3")
    assert measured.code == 2 and "EdgeoptSecretOp" in measured.stderr, measured.stderr
    assert "Traceback" not in measured.stderr


def test_the_gate_checks_a_tflite_artifact_as_it_checks_onnx(cli, tmp_path):
    """Size, parameters, MACs and an estimated latency from the file; a measured latency from `edgeopt profile
    --measure -o`; a limit past the numbers fails with exit 1."""
    (tmp_path / "out").mkdir()
    model = build.int8_cnn(tmp_path / "out" / "model.tflite")
    profile = tmp_path / "host.json"
    done = cli("profile", model, "-t", "host", "--measure", "--threads", "1", "--runs", "5", "-o", profile)
    assert done.code == 0, done.stderr
    measured = json.loads(profile.read_text())["measurements"]["host"][0]["latency_ms"]["p50"]
    size = model.stat().st_size
    page = cli("report", profile, "-o", tmp_path / "profile.html")  # the HTML report reads it as any profile
    assert page.code == 0, page.stderr
    html = (tmp_path / "profile.html").read_text()
    assert "model.tflite" in html and "FULLY_CONNECTED" in html
    config = tmp_path / "edgeopt.toml"
    config.write_text(f"""[gate]
profile_reports = ["host.json"]

[[budgets]]
artifact = "out/model.tflite"
target = "rpi4b"
max_size = {size}
max_params = {PARAMS}
max_macs = {CONV_MACS + FC_MACS}
max_latency_ms = 50

[[budgets]]
artifact = "out/model.tflite"
target = "host"
source = "measured"
max_latency_ms = {measured * 2}
""")
    result = cli("gate", "--config", config, "--json")
    assert result.code == 0, result.stdout + result.stderr
    checks = {(c["budget"], c["metric"]): c for c in json.loads(result.stdout)["checks"]}
    values = {metric: c["actual"] for (_budget, metric), c in checks.items()}
    assert values["size"] == size and values["params"] == PARAMS and values["macs"] == CONV_MACS + FC_MACS
    measured_check = next(c for c in checks.values() if c["source"].startswith("measured on host"))
    assert measured_check["actual"] == measured
    config.write_text(config.read_text().replace(f"max_size = {size}", f"max_size = {size - 1}"))
    failed = cli("gate", "--config", config, "--json")
    assert failed.code == 1 and any(c["status"] == "fail" and c["metric"] == "size"
                                    for c in json.loads(failed.stdout)["checks"])


def test_a_broken_op_bundle_costs_the_per_op_times_not_the_measurement(tmp_path):
    """Per-op timing is the extra: when it cannot run (here a bundle that is not an .npz) the runner still
    returns latency and memory, and says why the per-op times are missing."""
    import subprocess
    import sys

    from edgeopt.runtime.measure import RUNNER_PATH

    model = build.float_cnn(tmp_path / "float.tflite")
    bundle = tmp_path / "op_models.npz"
    bundle.write_bytes(b"not a zip")
    done = subprocess.run([sys.executable, str(RUNNER_PATH), str(model), "--runs", "3", "--profile", "--op-models",
                           str(bundle)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["latency_ms"]["p50"] > 0 and result["per_op"] is None
    (skipped,) = result["per_op_skipped"]
    assert skipped["node"] == "*" and skipped["reason"].startswith("per-op timing failed")
