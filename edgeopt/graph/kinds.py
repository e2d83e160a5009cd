"""Op kinds: the format-neutral names of what a node computes.

Each format's adapter maps its own op names to a kind (ONNX ``Conv``, ``QLinearConv`` and ``FusedConv``
are all ``conv``; TFLite's ``CONV_2D`` and ``DEPTHWISE_CONV_2D`` will be too), and everything that prices
or places nodes (target profiles' ``efficiency`` and ``supported_ops``, the static profile) speaks kinds.
A kind is a lower-case snake_case word; a convolution's class refines it as ``conv.depthwise`` or
``conv.1x1`` where a target states a separate efficiency for it.

Kinds are the snake_case of the ONNX operator names (``GlobalAveragePool`` -> ``global_average_pool``),
because ONNX's operator set is the broadest published vocabulary, with the exceptions in
:data:`SPELLING`. Ops outside the standard and onnxruntime's contrib sets are ``custom``.
"""

from __future__ import annotations

import re

CUSTOM = "custom"
DEFAULT = "default"  # the efficiency entry for kinds a target does not list

# Kinds that carry MACs, with a separate efficiency in most target profiles.
MAC_KINDS = frozenset({"conv", "conv_transpose", "matmul", "fully_connected", "einsum", "lstm", "gru", "rnn",
                       "attention"})

# Spellings snake_case would get wrong or that name one kind twice.
SPELLING = {"MatMul": "matmul", "PRelu": "prelu", "IsNaN": "is_nan", "Gemm": "fully_connected",
            "QuantizeLinear": "quantize", "DequantizeLinear": "dequantize",
            "DynamicQuantizeLinear": "dynamic_quantize"}

_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_kind(op_name: str) -> str:
    """The kind spelled from a CamelCase operator name (``LeakyRelu`` -> ``leaky_relu``)."""
    if op_name in SPELLING:
        return SPELLING[op_name]
    return _BOUNDARY.sub("_", op_name).lower()
