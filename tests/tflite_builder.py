"""Small .tflite files built in the tests with the flatbuffer schema's object API (the module that ships in
ai-edge-litert): float, float16-weight, fully int8, custom-op and several-input models. Nothing is
downloaded and no binary is committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

schema = __import__("pytest").importorskip("ai_edge_litert.schema_py_generated")
import flatbuffers  # noqa: E402

TYPES = {"float32": schema.TensorType.FLOAT32, "float16": schema.TensorType.FLOAT16, "int32": schema.TensorType.INT32,
         "int8": schema.TensorType.INT8, "uint8": schema.TensorType.UINT8, "int64": schema.TensorType.INT64}


class Builder:
    """One subgraph: tensors, operators, inputs and outputs, and a serving signature."""

    def __init__(self) -> None:
        self.buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every activation points at
        self.tensors: list = []
        self.operators: list = []
        self.opcodes: list = []

    def tensor(self, name: str, shape: list[int], dtype: str = "float32", data: np.ndarray | None = None,
               scales: list[float] | None = None, zero_points: list[int] | None = None, axis: int = 0,
               signature: list[int] | None = None) -> int:
        tensor = schema.TensorT()
        tensor.name, tensor.shape, tensor.type = name.encode(), list(shape), TYPES[dtype]
        if signature is not None:
            tensor.shapeSignature = list(signature)
        tensor.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        if scales is not None:
            quant = schema.QuantizationParametersT()
            quant.scale = list(scales)
            quant.zeroPoint = list(zero_points if zero_points is not None else [0] * len(scales))
            quant.quantizedDimension = axis
            tensor.quantization = quant
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def _opcode(self, builtin: int, custom: str | None) -> int:
        key = (builtin, custom)
        for index, code in enumerate(self.opcodes):
            if (code.builtinCode, code.customCode and code.customCode.decode()) == key:
                return index
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        if custom is not None:
            code.customCode = custom.encode()
        self.opcodes.append(code)
        return len(self.opcodes) - 1

    def op(self, name: str, inputs: list[int], outputs: list[int], options: object = None,
           custom: str | None = None) -> None:
        builtin = schema.BuiltinOperator.CUSTOM if custom else getattr(schema.BuiltinOperator, name)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self._opcode(builtin, custom), list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self.operators.append(op)

    def build(self, inputs: list[int], outputs: list[int], path: Path, signature: str | None = "serving_default",
              signature_names: dict[int, str] | None = None) -> Path:
        graph = schema.SubGraphT()
        graph.tensors, graph.operators, graph.inputs, graph.outputs = self.tensors, self.operators, inputs, outputs
        graph.name = b"main"
        model = schema.ModelT()
        model.version, model.description = 3, b"built by edgeopt's tests"
        model.operatorCodes, model.subgraphs, model.buffers = self.opcodes, [graph], self.buffers
        if signature is not None:
            sig = schema.SignatureDefT()
            sig.signatureKey, sig.subgraphIndex = signature.encode(), 0

            def entries(indices: list[int]) -> list:
                found = []
                for index in indices:
                    entry = schema.TensorMapT()
                    name = (signature_names or {}).get(index)
                    entry.name = name.encode() if name else self.tensors[index].name.split(b":")[0]
                    entry.tensorIndex = index
                    found.append(entry)
                return found

            sig.inputs, sig.outputs = entries(inputs), entries(outputs)
            model.signatureDefs = [sig]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(bytes(builder.Output()))
        return path


def _conv_options(relu: bool = True) -> object:
    options = schema.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = schema.Padding.SAME, 1, 1
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.RELU if relu else 0
    return options


def float_cnn(path: Path, fp16_weights: bool = False, seed: int = 0) -> Path:
    """image [1, 8, 8, 1] → CONV_2D 3x3 (4 channels, ReLU) → RESHAPE → FULLY_CONNECTED (10): float32, or with
    float16 weights dequantized at load (what the TFLite converter's float16 option writes)."""
    rng = np.random.default_rng(seed)
    b = Builder()
    image = b.tensor("image", [1, 8, 8, 1])
    filters = rng.standard_normal((4, 3, 3, 1)).astype(np.float32) * 0.5
    dense = rng.standard_normal((10, 256)).astype(np.float32) * 0.1
    if fp16_weights:
        half = b.tensor("conv/filter_fp16", [4, 3, 3, 1], "float16", filters.astype(np.float16))
        conv_w = b.tensor("conv/filter", [4, 3, 3, 1])
        b.op("DEQUANTIZE", [half], [conv_w])
        half_fc = b.tensor("dense/weights_fp16", [10, 256], "float16", dense.astype(np.float16))
        fc_w = b.tensor("dense/weights", [10, 256])
        b.op("DEQUANTIZE", [half_fc], [fc_w])
    else:
        conv_w = b.tensor("conv/filter", [4, 3, 3, 1], data=filters)
        fc_w = b.tensor("dense/weights", [10, 256], data=dense)
    conv_b = b.tensor("conv/bias", [4], data=np.zeros(4, np.float32))
    features = b.tensor("conv/out", [1, 8, 8, 4])
    b.op("CONV_2D", [image, conv_w, conv_b], [features], _conv_options())
    shape = b.tensor("flatten/shape", [2], "int32", np.array([1, 256], np.int32))
    flat = b.tensor("flatten/out", [1, 256])
    b.op("RESHAPE", [features, shape], [flat])
    fc_b = b.tensor("dense/bias", [10], data=np.zeros(10, np.float32))
    logits = b.tensor("logits", [1, 10])
    options = schema.FullyConnectedOptionsT()
    b.op("FULLY_CONNECTED", [flat, fc_w, fc_b], [logits], options)
    return b.build([image], [logits], path)


def int8_cnn(path: Path, seed: int = 0, input_tensor: str = "image") -> Path:
    """The same CNN fully int8 (inputs and outputs too): per-channel filter scales, int32 biases. Its signature
    names the input ``image`` whatever ``input_tensor`` names the tensor (converters write
    ``serving_default_image:0``)."""
    rng = np.random.default_rng(seed)
    b = Builder()
    in_scale, conv_scale, out_scale = 1 / 64, 1 / 32, 1 / 16
    image = b.tensor(input_tensor, [1, 8, 8, 1], "int8", scales=[in_scale], zero_points=[0])
    filter_scales = [0.01, 0.02, 0.015, 0.012]
    filters = rng.integers(-127, 128, (4, 3, 3, 1)).astype(np.int8)
    conv_w = b.tensor("conv/filter", [4, 3, 3, 1], "int8", filters, scales=filter_scales, zero_points=[0] * 4, axis=0)
    conv_b = b.tensor("conv/bias", [4], "int32", np.zeros(4, np.int32), scales=[in_scale * s for s in filter_scales],
                      zero_points=[0] * 4, axis=0)
    features = b.tensor("conv/out", [1, 8, 8, 4], "int8", scales=[conv_scale], zero_points=[-128])
    b.op("CONV_2D", [image, conv_w, conv_b], [features], _conv_options())
    shape = b.tensor("flatten/shape", [2], "int32", np.array([1, 256], np.int32))
    flat = b.tensor("flatten/out", [1, 256], "int8", scales=[conv_scale], zero_points=[-128])
    b.op("RESHAPE", [features, shape], [flat])
    dense = rng.integers(-127, 128, (10, 256)).astype(np.int8)
    fc_w = b.tensor("dense/weights", [10, 256], "int8", dense, scales=[0.004], zero_points=[0])
    fc_b = b.tensor("dense/bias", [10], "int32", np.zeros(10, np.int32), scales=[conv_scale * 0.004], zero_points=[0])
    logits = b.tensor("logits", [1, 10], "int8", scales=[out_scale], zero_points=[0])
    b.op("FULLY_CONNECTED", [flat, fc_w, fc_b], [logits], schema.FullyConnectedOptionsT())
    return b.build([image], [logits], path, signature_names={image: "image"})


def two_input_add(path: Path) -> Path:
    """A signature with two inputs: ``a + b * w`` over [1, 4] float tensors, and a dynamic batch."""
    b = Builder()
    a = b.tensor("a", [1, 4], signature=[-1, 4])
    x = b.tensor("b", [1, 4], signature=[-1, 4])
    w = b.tensor("w", [4], data=np.array([1, 2, 3, 4], np.float32))
    scaled = b.tensor("scaled", [1, 4], signature=[-1, 4])
    b.op("MUL", [x, w], [scaled], schema.MulOptionsT())
    total = b.tensor("total", [1, 4], signature=[-1, 4])
    b.op("ADD", [a, scaled], [total], schema.AddOptionsT())
    return b.build([a, x], [total], path)


def custom_op_model(path: Path) -> Path:
    """x → a custom op no stock runtime has → y."""
    b = Builder()
    x = b.tensor("x", [1, 4])
    y = b.tensor("y", [1, 4])
    b.op("CUSTOM", [x], [y], custom="EdgeoptSecretOp")
    return b.build([x], [y], path)


def stateful_add(path: Path) -> Path:
    """x + state (a variable tensor, kept between calls as an RNN's state is) → MUL by a constant → y."""
    b = Builder()
    x = b.tensor("x", [1, 4])
    state = b.tensor("state", [1, 4])
    b.tensors[state].isVariable = True
    total = b.tensor("total", [1, 4])
    b.op("ADD", [x, state], [total], schema.AddOptionsT())
    w = b.tensor("w", [4], data=np.array([1, 2, 3, 4], np.float32))
    y = b.tensor("y", [1, 4])
    b.op("MUL", [total, w], [y], schema.MulOptionsT())
    return b.build([x], [y], path)


def long_conv(path: Path, length: int = 32768, taps: int = 39, channels: int = 8) -> Path:
    """signal [1, 1, length, channels] → CONV_2D 1 x ``taps`` (``channels`` → ``channels``, SAME): a 1-D
    convolution over a long axis, the shape whose scratch buffers dominate an audio model's memory."""
    rng = np.random.default_rng(5)
    b = Builder()
    signal = b.tensor("signal", [1, 1, length, channels])
    filters = b.tensor("filter", [channels, 1, taps, channels],
                       data=rng.standard_normal((channels, 1, taps, channels)).astype(np.float32) * 0.1)
    bias = b.tensor("bias", [channels], data=np.zeros(channels, np.float32))
    out = b.tensor("out", [1, 1, length, channels])
    b.op("CONV_2D", [signal, filters, bias], [out], _conv_options(relu=False))
    return b.build([signal], [out], path)
