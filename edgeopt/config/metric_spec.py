"""The task-metric spec grammar: ``[OUTPUT=]METRIC[[PARAM]][@FLOOR]`` (``--metric``, ``[pipeline] metrics``).

The metrics themselves live in ``edgeopt.metrics``; settings only need to check a spec is well formed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeopt.errors import InputError

BUILTIN_FLOORS: dict[str, float] = {
    "top1": 0.98, "accuracy": 0.99, "cosine": 0.99, "retrieval": 0.98, "iou": 0.98, "detection": 0.98,
    "sequence": 0.98, "sqnr": 20.0, "exact": 1.0,
}
ALL_OUTPUTS = "*"
_SPEC = re.compile(r"^(?:(?P<output>[^=]+)=)?(?P<metric>[A-Za-z_][\w.]*(?::[A-Za-z_]\w*)?)"
                   r"(?:\[(?P<param>[^\]]+)\])?(?:@(?P<floor>[-+0-9.eE]+))?$")


@dataclass(frozen=True)
class MetricSpec:
    metric: str  # a built-in name or "pkg.mod:fn"
    param: float | None = None
    floor: float | None = None

    @property
    def is_hook(self) -> bool:
        return ":" in self.metric

    @property
    def resolved_floor(self) -> float:
        if self.floor is not None:
            return self.floor
        return BUILTIN_FLOORS.get(self.metric, 0.99)

    def text(self) -> str:
        return (self.metric + (f"[{self.param:g}]" if self.param is not None else "")
                + (f"@{self.floor:g}" if self.floor is not None else ""))


def parse_metric_spec(text: str) -> tuple[str, MetricSpec]:
    """``[OUTPUT=]METRIC[[PARAM]][@FLOOR]`` → (output or "*", spec); InputError on anything else."""
    match = _SPEC.match(text.strip())
    hint = ("write [OUTPUT=]METRIC[[PARAM]][@FLOOR] with METRIC one of " + ", ".join(sorted(BUILTIN_FLOORS))
            + " or a hook pkg.module:function (e.g. --metric probs=iou[0.3]@0.9)")
    if not match:
        raise InputError(f"--metric {text!r} is not a metric spec", hint)
    metric = match["metric"]
    if ":" not in metric and metric not in BUILTIN_FLOORS:
        raise InputError(f"--metric {text!r}: unknown metric {metric!r}", hint)
    try:
        param = float(match["param"]) if match["param"] is not None else None
        floor = float(match["floor"]) if match["floor"] is not None else None
    except ValueError:
        raise InputError(f"--metric {text!r}: the parameter and the floor must be numbers", hint) from None
    if param is not None and metric not in ("iou", "detection"):
        raise InputError(f"--metric {text!r}: only iou (mask threshold) and detection (score threshold) take "
                         "a [PARAM]", hint)
    output = (match["output"] or ALL_OUTPUTS).strip()
    return output, MetricSpec(metric=metric, param=param, floor=floor)


def parse_metric_flags(values: list[str]) -> dict[str, str]:
    """Repeated ``--metric`` values → {output or "*": spec text}, each checked now (bad input fails early)."""
    parsed: dict[str, str] = {}
    for value in values:
        output, spec = parse_metric_spec(value)
        parsed[output] = spec.text()
    return parsed
