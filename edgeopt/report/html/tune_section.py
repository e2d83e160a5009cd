"""The tuning section: the trials as an SVG scatter of task metric against latency (the feasible Pareto front
joined, the winner ringed, infeasible trials hollow) and the per-trial table."""

from __future__ import annotations

from edgeopt.report.html.blocks import DASH, Col, Html, badge_html, esc, fixed_html, fmt_bytes, fmt_ms, para, \
    table_html
from edgeopt.report.tune_schema import TuneDocument

_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 640, 320, 70, 44, 16, 20


def _scale(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:
        spread = abs(high) * 0.05 or 1.0
        return low - spread, high + spread
    margin = (high - low) * 0.06
    return low - margin, high + margin


def pareto_chart(document: TuneDocument) -> Html:
    points = [t for t in document.trials if t.state == "complete" and t.values
              and t.values.get("metric") is not None and t.values.get("latency") is not None]
    if not points:
        return Html("")
    x_low, x_high = _scale([t.values["latency"] for t in points])
    y_low, y_high = _scale([t.values["metric"] for t in points])

    def xy(trial) -> tuple[float, float]:
        x = _PAD_L + (trial.values["latency"] - x_low) / (x_high - x_low) * (_W - _PAD_L - _PAD_R)
        y = _PAD_T + (y_high - trial.values["metric"]) / (y_high - y_low) * (_H - _PAD_T - _PAD_B)
        return x, y

    parts = [f'<line x1="{_PAD_L}" y1="{_H - _PAD_B}" x2="{_W - _PAD_R}" y2="{_H - _PAD_B}" class="axis"/>',
             f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_H - _PAD_B}" class="axis"/>']
    for fraction in (0.0, 0.5, 1.0):
        latency = x_low + fraction * (x_high - x_low)
        metric = y_low + fraction * (y_high - y_low)
        x = _PAD_L + fraction * (_W - _PAD_L - _PAD_R)
        y = _H - _PAD_B - fraction * (_H - _PAD_T - _PAD_B)
        parts.append(f'<text x="{x:.1f}" y="{_H - _PAD_B + 16}" class="legend" text-anchor="middle">'
                     f'{esc(fmt_ms(latency))}</text>')
        parts.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" class="legend" text-anchor="end">{metric:.4f}</text>')
    parts.append(f'<text x="{(_W + _PAD_L) / 2:.0f}" y="{_H - 6}" class="label" text-anchor="middle">'
                 f'latency (ms)</text>')
    parts.append(f'<text x="14" y="{(_H - _PAD_B) / 2:.0f}" class="label" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(_H - _PAD_B) / 2:.0f})">task metric</text>')
    front = sorted((t for t in points if t.number in document.front), key=lambda t: t.values["latency"])
    if len(front) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, front))
        parts.append(f'<polyline points="{line}" class="front"/>')
    winner = document.winner.get("number") if document.winner else None
    for trial in points:
        x, y = xy(trial)
        css = "front" if trial.number in document.front else ("feasible" if trial.feasible else "infeasible")
        tip = (f"trial {trial.number}: metric {trial.values['metric']:.4f}, latency {trial.values['latency']:.4g} ms"
               + ("" if trial.feasible else " (misses a budget)"))
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" class="point {css}"><title>{esc(tip)}</title></circle>')
        if trial.number == winner:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" class="winner"/>')
    title = ("Trials: task metric against latency (filled: meets the budgets; joined: the Pareto front; "
             "ringed: the winner)")
    return Html(f'<figure class="chart"><figcaption>{esc(title)}</figcaption>'
                f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
                f'role="img" aria-label="{esc(title)}">{"".join(parts)}</svg></figure>')


def tune_section(document: TuneDocument | None) -> Html | None:
    if document is None:
        return None
    params = [d["path"] for d in document.space.get("dimensions", [])]
    winner = document.winner.get("number") if document.winner else None
    columns = [Col("trial", numeric=True), Col("state"), Col("budgets"),
               *[Col(name, numeric=True) for name in document.objectives],
               *[Col(path.rsplit(".", 1)[-1]) for path in params], Col("shipped"), Col("note", wrap=True)]
    rows, classes = [], []
    for trial in document.trials:
        values = trial.values or {}
        cells = []
        for name in document.objectives:
            value = values.get(name)
            cells.append(fmt_ms(value) if name == "latency" else fmt_bytes(value) if name in ("size", "memory")
                         else fixed_html(value, 4))
        note = trial.error or (f"same settings as trial {trial.same_as}" if trial.same_as is not None else "")
        budget = (badge_html("met", "ok") if trial.feasible else badge_html("missed", "bad")
                  if trial.state == "complete" else DASH)
        rows.append([trial.number, badge_html(trial.state), budget, *cells,
                     *[trial.params.get(p, DASH) for p in params], trial.shipped or DASH, note])
        classes.append("highlight" if trial.number == winner else "")
    why = document.winner["why"] if document.winner else (
        document.nearest_miss["why"] if document.nearest_miss else "no trial finished")
    built = document.float_models
    summary = (f"study {document.study}, sampler {document.sampler} (seed {document.seed}), "
               f"{len(document.trials)} trials, stopped by {document.stopped_by}; float models built "
               f"{built.get('built', 0)}, reused {built.get('reused', 0)}; budgets: "
               f"{', '.join(document.budgets) or 'none'}")
    return Html(para(summary) + para(why) + pareto_chart(document)
                + table_html(columns, rows, row_classes=classes))
