"""`edgeopt tune MODEL --calib DATA -t TARGET -o OUT`: the search, its progress and its front."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeopt.cli.flags import given_settings, with_setting_options
from edgeopt.cli.output import EventLines, err_console, out_console, print_json, warn
from edgeopt.cli.pipeline_settings import merged_settings, project_pipeline, validated_settings
from edgeopt.config.settings import TUNE_OBJECTIVES, TUNE_SAMPLERS, ConvertConfig
from edgeopt.events import Events


def _seconds(text: str) -> float:
    from edgeopt.errors import InputError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(h|m|min|s)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"bad --timeout {text!r}", "e.g. 2h, 90m, 600s or 600")
    return float(match.group(1)) * {"h": 3600, "m": 60, "min": 60, "s": 1, None: 1}[match.group(2)]


def _tune(
    ctx: typer.Context,
    model: str = typer.Argument(None, show_default=False,
                                help="Source, as for convert. Omitted: the [pipeline] of edgeopt.toml."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder: OUT/model.onnx (the winner), "
                                                             "OUT/pareto/, OUT/tune.json, the study."),
    config_file: Path = typer.Option(None, "--config", "-c", help="Project file ([pipeline], [tune], [[budgets]]; "
                                                                  "default ./edgeopt.toml)."),
    trials: int = typer.Option(None, "--trials", help="Finished trials the study should hold (default 20)."),
    timeout: str = typer.Option(None, "--timeout", help="Stop starting trials after this long (2h, 90m, 600s)."),
    sampler: str = typer.Option(None, "--sampler", help="tpe|nsga2|gp|random|grid (default tpe)."),
    storage: str = typer.Option(None, "--storage", help="Study storage URL (default sqlite in OUT; "
                                                        "postgresql://... for workers on many machines)."),
    study: str = typer.Option(None, "--study", help="Study name (default edgeopt-tune); a rerun continues it."),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing study (refused if there is none)."),
    seed: int = typer.Option(None, "--seed", help="Sampler seed (default 0)."),
    objectives: str = typer.Option(None, "--objectives", help="Comma list of metric, latency, size, memory "
                                                              "(default metric,latency,size): the Pareto front."),
    objective: str = typer.Option(None, "--objective", help="One of metric, latency, size, memory: a single "
                                                            "scalar instead of a front."),
    halving: int = typer.Option(None, "--halving", help="Successive halving factor η for trials that train: "
                                                         "epochs/η², epochs/η, then all, only the top 1/η going "
                                                         "on (default 3; 0: every trial at full budget)."),
    measure: bool = typer.Option(False, "--measure", help="Time each trial's model on this machine (-t host): "
                                                           "latency and memory objectives and budgets use the "
                                                           "measurement, not the estimate. With --ssh the device "
                                                           "measures every trial."),
    as_json: bool = typer.Option(False, "--json", help="Print tune.json on stdout."),
    **settings: Any,
) -> None:
    """Search pruning, fine-tuning and quantization settings for the Pareto front within the budgets."""
    from edgeopt.cli.app import invocation
    from edgeopt.errors import InputError
    from edgeopt.tune.run import plan_tune, run_tune

    partial, flags = given_settings(ConvertConfig, settings)
    if model is not None and output is None:
        raise InputError("-o OUT is required when MODEL is given", "e.g. edgeopt tune model.onnx --calib c.npz -o out")
    loaded = _project(config_file)
    if model is not None:
        base, origin = {"source": model, "output_dir": str(output)}, "the command line"
    else:
        base, origin = project_pipeline(config_file, output)
    config = validated_settings(merged_settings(base, partial, flags, origin), flags, "tune")
    tune = _tune_settings(loaded, {"trials": trials, "sampler": sampler, "storage": storage, "study": study,
                                   "seed": seed, "objective": objective, "resume": resume or None,
                                   "halving": halving, "measure": measure or None,
                                   "timeout_s": _seconds(timeout) if timeout else None,
                                   "objectives": [o.strip() for o in objectives.split(",") if o.strip()]
                                   if objectives else None})
    budgets = _budgets(loaded, Path(config.output_dir))
    plan = plan_tune(config, tune, budgets, _space_error(loaded), command=["edgeopt", *invocation])
    err_console.print(f"search space: {plan.space.describe()}")
    if plan.space.fixed:
        err_console.print("fixed: " + ", ".join(f"{k} = {v!r}" for k, v in plan.space.fixed.items()))
    err_console.print(f"budgets as constraints: {', '.join(b.label for b in budgets) or 'none'}; study "
                      f"{tune.study!r} in {plan.storage.split('@')[-1]}")
    stop = {"asked": False}

    def on_interrupt(_signum: int, _frame: Any) -> None:
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        warn("stopping after the trial in flight (Ctrl-C again to abandon it; it will be run again on resume)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=False,
                      disable=not err_console.is_terminal) as progress:
            result = run_tune(plan, Events(EventLines(progress, "tune")), should_stop=lambda: stop["asked"])
    finally:
        signal.signal(signal.SIGINT, previous)
    if as_json:
        print_json(result.document)
    else:
        _render(result.document, plan.objectives)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _project(config_file: Path | None) -> Any:
    """The project file ([tune], [[budgets]]) where there is one."""
    from edgeopt.config.project import find_config, load_config

    path = find_config(config_file)
    return load_config(path) if path is not None else None


def _tune_settings(loaded: Any, flags: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from edgeopt.config.settings import TuneConfig
    from edgeopt.errors import InputError, first_validation_error

    base = loaded.config.tune.model_dump() if loaded is not None and loaded.config.tune is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return TuneConfig.model_validate({**base, **given})
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        field = where.split(".")[0]
        hints = {"objectives": f"objectives: {', '.join(TUNE_OBJECTIVES)}",
                 "objective": f"objectives: {', '.join(TUNE_OBJECTIVES)}",
                 "sampler": f"samplers: {', '.join(TUNE_SAMPLERS)}"}
        flag = f"--{field.replace('_s', '').replace('_', '-')}" if field in TuneConfig.model_fields else where
        source = f" ({loaded.path.name} [tune] or the flag)" if loaded is not None and loaded.config.tune else ""
        raise InputError(f"bad value for {flag}{source}: {message}",
                         hints.get(field, "see edgeopt tune --help")) from None


def _budgets(loaded: Any, out_dir: Path) -> list[Any]:
    """The project's budgets on the model tune writes (OUT/model.onnx); all of them when none names it."""
    if loaded is None:
        return []
    budgets = list(loaded.config.budgets)
    target = (out_dir / "model.onnx").resolve()
    own = [b for b in budgets if loaded.resolve(b.artifact).resolve() == target]
    if budgets and not own:
        warn(f"no budget names {out_dir / 'model.onnx'}: every budget of {loaded.path.name} constrains the search")
        return budgets
    return own


def _space_error(loaded: Any) -> Any:
    from edgeopt.config.project import ConfigError

    def error(key: str, message: str, hint: str) -> Exception:
        if loaded is None:
            return ConfigError(f"tune.space.{key}: {message}", hint)
        line = loaded.line_of(("tune", "space", key)) or loaded.line_of(("tune", "space", *key.split(".")))
        return ConfigError(f"{loaded.path}:{line or '?'}: tune.space.{key}: {message}", hint)

    return error


def _render(document: dict[str, Any], objectives: list[str]) -> None:
    console = out_console()
    table = Table(title=f"Pareto front ({len(document['front'])} of {len(document['trials'])} trials; study "
                        f"{document['study']})", title_justify="left")
    params = [d["path"] for d in document["space"]["dimensions"]]
    for column in ("trial", *objectives):
        table.add_column(column, justify="right")
    for path in params:  # the field's own name: the section is clear from it (ratio, lr, activation_type)
        table.add_column(path.rsplit(".", 1)[-1])
    table.add_column("shipped")
    by_number = {row["number"]: row for row in document["trials"]}
    for number in document["front"]:
        row = by_number[number]
        values = row["values"] or {}
        table.add_row(str(number), *[_value(name, values.get(name)) for name in objectives],
                      *[str(row["params"].get(p, "-")) for p in params], str(row.get("shipped") or "-"))
    console.print(table)
    built = document["float_models"]
    console.print(f"float models built {built['built']}, reused {built['reused']}; stopped by "
                  f"{document['stopped_by']}")
    if document["winner"]:
        console.print(f"[bold]winner: trial {document['winner']['number']}[/bold]: {document['winner']['why']}")
    elif document["nearest_miss"]:
        miss = document["nearest_miss"]
        console.print(f"[bold red]no trial met the budgets[/bold red]; nearest miss: trial {miss['number']} "
                      f"({miss.get('published') or 'files on ' + str(miss.get('worker'))})")
        for line in miss["checks"]:
            console.print(f"  {line}")
    else:
        console.print("[bold red]no trial finished[/bold red]")


def _value(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    from edgeopt.units import format_bytes

    if name in ("size", "memory"):
        return format_bytes(value)
    return f"{value:.4g} ms" if name == "latency" else f"{value:.4f}"


tune_command = with_setting_options(ConvertConfig, _tune)
