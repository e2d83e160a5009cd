"""ONNX operator names -> op kinds (graph.kinds): quantized and fused onnxruntime ops are the kind of the
float op they implement (QLinearConv, ConvInteger and FusedConv are ``conv``)."""

from __future__ import annotations

from edgeopt.graph.kinds import CUSTOM, snake_kind

# Quantized/fused ops -> the float op they implement (beyond the QLinear<Op> prefix rule).
_BASE_OPS = {
    "ConvInteger": "Conv",
    "MatMulInteger": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "DynamicQuantizeLSTM": "LSTM",
    "QGemm": "Gemm",
    "QAttention": "Attention",
    "FusedConv": "Conv",
    "FusedGemm": "Gemm",
    "FusedMatMul": "MatMul",
    "MatMulNBits": "MatMul",
    "NhwcMaxPool": "MaxPool",
}
_KNOWN_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft", "ai.onnx.ml"})


def base_op_type(op_type: str) -> str:
    """The float ONNX op a quantized/fused op implements (QLinearConv -> Conv), else itself."""
    if op_type in _BASE_OPS:
        return _BASE_OPS[op_type]
    if op_type.startswith("QLinear") and len(op_type) > len("QLinear"):
        return op_type[len("QLinear"):]
    return op_type


def onnx_kind(op_type: str, domain: str = "") -> str:
    """The op kind of an ONNX node; ops of other domains (a user's custom ops) are ``custom``."""
    if domain not in _KNOWN_DOMAINS:
        return CUSTOM
    return snake_kind(base_op_type(op_type))


def kind_of_key(key: str) -> str:
    """A target profile key as a kind: ``Conv`` -> ``conv``, ``Conv.depthwise`` -> ``conv.depthwise``;
    keys already spelled as kinds (and ``default``) are kept. Target files of schema 1 spelled ONNX names."""
    if key == key.lower():
        return key
    head, dot, refinement = key.partition(".")
    return onnx_kind(head) + dot + refinement.lower()
