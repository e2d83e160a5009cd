"""Where each node of a neutral graph (graph.model) runs on a target: CPU or accelerator, by its op kind.

**Placement** (targets with an ``accelerator`` section): a node runs on the accelerator
when its op kind (``conv`` for ONNX's Conv, QLinearConv and FusedConv alike; graph.kinds)
is listed in ``accelerator.supported_ops[dtype]`` for its execution dtype, and that dtype
is one of ``accelerator.dtypes``; otherwise it falls back to the CPU. Fused Q/DQ nodes
and Constants take the device of the node they belong to and never split a partition.

**Partitions and hand-overs.** Over the nodes that run on their own, in execution
order (the graph's node order): a *partition* is a maximal run of consecutive
accelerator nodes. The model's inputs and outputs live in CPU memory, so each
partition costs two *hand-overs*: CPU -> accelerator on entry and back on exit.
``handovers == 2 * partitions``; a graph with one unsupported op in the middle of
accelerator ops has 2 partitions and 4 hand-overs, a fully delegated graph 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeopt.graph.kinds import CUSTOM
from edgeopt.graph.model import Graph
from edgeopt.targets import TargetProfile

__all__ = ["Placement", "place_nodes"]

Device = Literal["cpu", "accelerator"]
_KEY_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "uint8": "int8"}


# ------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Device of every main-graph node and the resulting accelerator partitions.

    ``partitions`` holds the node indices of each accelerator partition (only nodes
    that run on their own); ``cpu_fallback`` maps CPU nodes to why they are not on the
    accelerator. Without an accelerator every node is on the CPU and there are no
    partitions. ``full_int8``/``int8_offenders`` are computed for every target;
    ``requires_full_int8`` says whether the target's accelerator demands it.
    """

    devices: tuple[Device, ...]
    accelerator: str | None
    partitions: tuple[tuple[int, ...], ...]
    handovers: int
    cpu_fallback: dict[str, str]
    full_int8: bool
    int8_offenders: tuple[str, ...]
    requires_full_int8: bool

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    @property
    def satisfies_int8_requirement(self) -> bool:
        return self.full_int8 or not self.requires_full_int8


def _supported(target: TargetProfile) -> dict[str, frozenset[str]]:
    acc = target.accelerator
    table: dict[str, set[str]] = {}
    if acc is None:
        return {}
    for key, ops in acc.supported_ops.items():
        norm = _KEY_ALIASES.get(key.lower(), key.lower())
        table.setdefault(norm, set()).update(ops)
    return {k: frozenset(v) for k, v in table.items()}


def place_nodes(graph: Graph, target: TargetProfile) -> Placement:
    """CPU/accelerator placement of the graph's nodes on ``target`` (module doc)."""
    acc = target.accelerator
    supported = _supported(target)
    acc_dtypes = {_KEY_ALIASES.get(d.lower(), d.lower()) for d in acc.dtypes} if acc else set()

    devices: list[Device] = ["cpu"] * len(graph.nodes)
    fallback: dict[str, str] = {}
    for row in graph.nodes:
        if not row.runs_alone or acc is None:
            continue
        dtype = row.dtype or "unknown"
        kinds = supported.get(dtype, frozenset())
        if dtype not in acc_dtypes or not kinds:
            fallback[row.name] = f"{acc.name} does not run {dtype} ops"
        elif row.kind != CUSTOM and row.kind in kinds:
            devices[row.index] = "accelerator"
        else:
            fallback[row.name] = f"{row.op_type} ({row.kind}, {dtype}) is not in {acc.name}'s supported ops"
    for row in graph.nodes:  # fused Q/DQ and Constants follow their node
        if not row.runs_alone and row.attached_to is not None:
            devices[row.index] = devices[row.attached_to]

    partitions: list[tuple[int, ...]] = []
    current: list[int] = []
    for row in graph.nodes:
        if not row.runs_alone:
            continue
        if devices[row.index] == "accelerator":
            current.append(row.index)
        elif current:
            partitions.append(tuple(current))
            current = []
    if current:
        partitions.append(tuple(current))

    offenders = tuple(graph.full_int8_offenders())
    return Placement(
        devices=tuple(devices),
        accelerator=acc.name if acc else None,
        partitions=tuple(partitions),
        handovers=2 * len(partitions),
        cpu_fallback=fallback,
        full_int8=not offenders,
        int8_offenders=offenders,
        requires_full_int8=bool(acc and acc.requires_full_int8),
    )
