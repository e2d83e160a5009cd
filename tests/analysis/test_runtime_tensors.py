"""Tensors onnxruntime allocates that the model does not show (Graph.runtime_tensors): the int8 Transposes'
copies and the int32 accumulators of an int8 Conv off MLAS's symmetric kernel, checked against onnxruntime's
optimized graph and against the memory a real session's run takes."""

from __future__ import annotations

import base64
import platform
import sys

import numpy as np
import onnx
import pytest

from edgeopt.graph.onnx_adapter import to_graph
from edgeopt.runtime.microbench import qdq_model, qdq_stack

MiB = 1 << 20
# what onnxruntime's x86 build does (MLAS's symmetric int8 kernel, its channels-last Transposes): not measured on ARM
x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="onnxruntime's x86 int8 kernels (ARM's were not measured)")


def stem(input_channels: int) -> onnx.ModelProto:
    """A QDQ Conv to 64 channels on a 64x64 map."""
    weights = np.random.default_rng(0).standard_normal((64, input_channels, 3, 3)).astype(np.float32) * 0.1
    return onnx.load_from_string(qdq_model("Conv", weights, [1, input_channels, 64, 64], [1, 64, 64, 64],
                                           pads=[1, 1, 1, 1]))


def accumulators(graph) -> list[int]:
    return [t.bytes for t in graph.runtime_tensors[16] if t.name.endswith("@accumulators")]


def test_an_int8_conv_whose_input_channels_are_not_a_multiple_of_4_holds_its_int32_accumulators():
    # 64 x 64 x 64 outputs, 4 bytes each, while the Conv runs; at 4 or 8 input channels the symmetric kernel
    # writes its 8-bit outputs directly
    for channels in (1, 3, 6):
        graph = to_graph(stem(channels))
        (conv,) = [n.index for n in graph.nodes if n.op_type == "Conv"]
        (tensor,) = [t for t in graph.runtime_tensors[16] if t.name.endswith("@accumulators")]
        assert (tensor.start, tensor.end, tensor.bytes) == (conv, conv, 4 * 64 * 64 * 64)
        assert graph.runtime_tensors[8] == graph.runtime_tensors[16]
    assert accumulators(to_graph(stem(4))) == accumulators(to_graph(stem(8))) == []
    # a float Conv runs no int8 kernel
    from edgeopt.runtime.microbench import op_stack

    plain = to_graph(onnx.load_from_string(op_stack("Conv", 1, (64, 3, 3, 3), [1, 3, 64, 64], [1, 64, 64, 64],
                                                    pads=[1] * 4)))
    assert accumulators(plain) == []


def quantized_output_stem(input_channels: int) -> onnx.ModelProto:
    """:func:`stem` with its output left 8-bit (no DequantizeLinear after the last QuantizeLinear): no float output
    whose arena chunk the freed accumulators would hand on."""
    model = stem(input_channels)
    (last,) = [node for node in model.graph.node if node.op_type == "DequantizeLinear" and node.output[0] == "y_dq"]
    model.graph.node.remove(last)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("y_q", onnx.TensorProto.UINT8, [1, 64, 64, 64]))
    return model


@x86_only
def test_onnxruntimes_run_holds_the_accumulators_where_the_rule_says():
    """Each model's first runs in a fresh process, as `targets calibrate` probes them: at 3 input channels the run
    takes about the accumulators' 1 MiB more than at 4 (1.2 MiB more measured with onnxruntime 1.32 on x86), and
    the estimated arena about as much."""
    from edgeopt.analysis.memory import liveness_plan
    from edgeopt.analysis.runtime_memory import X86_ONNXRUNTIME, estimate_runtime_memory
    from edgeopt.runtime.device_runner import memory_probes

    if sys.platform != "linux":
        pytest.skip("the probes read /proc")
    models = {channels: quantized_output_stem(channels) for channels in (3, 4)}
    found = memory_probes([{"name": str(channels), "model_b64": base64.b64encode(
        model.SerializeToString()).decode("ascii")} for channels, model in models.items()], 1)
    run = {int(name): probe["run_peak"] - probe["after_load"] for name, probe in found.items()}
    assert run[3] - run[4] > 0.6 * MiB, run

    def arena(model: onnx.ModelProto) -> int:
        graph = to_graph(model)
        estimate = estimate_runtime_memory(graph, liveness_plan(graph), X86_ONNXRUNTIME, 16)
        return next(part.bytes for part in estimate.parts if part.key == "arena")
    assert arena(models[3]) - arena(models[4]) > 0.6 * MiB


@x86_only
def test_the_int8_transposes_write_copies_as_large_as_onnxruntimes_transposes_outputs(tmp_path):
    """Two QDQ Convs in a chain: onnxruntime keeps a Transpose where the input enters the channels-last region and
    one where the output leaves; each writes an 8-bit tensor of 16 x 8 x 8 bytes, which the runtime tensors hold
    (the entering copy while the first Conv runs, the leaving one from its producer after the second Conv to the
    end: the graph's output)."""
    import onnxruntime as ort

    model = onnx.load_from_string(qdq_stack("Conv", 2, (16, 16, 3, 3), [1, 16, 8, 8], pads=[1] * 4))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    written = [node.output[0] for node in optimized.graph.node if node.op_type == "Transpose"]
    graph = to_graph(model)
    copies = [t for t in graph.runtime_tensors[16] if "@nhwc" in t.name or "@transposed" in t.name]
    assert len(copies) == len(written) == 2
    assert all(t.bytes == 16 * 8 * 8 for t in copies)
    convs = [n.index for n in graph.nodes if n.op_type == "Conv"]
    entering, leaving = copies
    assert entering.start == entering.end == convs[0]
    assert convs[1] < leaving.start <= leaving.end == len(graph.nodes) - 1
