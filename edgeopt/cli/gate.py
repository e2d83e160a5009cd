"""`edgeopt gate`: check the run's artifacts against the budgets in edgeopt.toml."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from edgeopt.cli.output import err_console, out_console, print_json, warn


def gate_command(
    config: Path = typer.Option(None, "--config", "-c", help="edgeopt.toml or pyproject.toml with [tool.edgeopt] "
                                                             "(default: found in the current folder)."),
    report: Path = typer.Option(None, "--report", help="The convert run's report.json (default: [gate] report, "
                                                       "else <pipeline.output>/report.json)."),
    baseline: str = typer.Option(None, "--baseline", help="A previous report.json, a baseline file, or a git ref "
                                                          "whose committed baseline file is read (e.g. main)."),
    profile_report: list[Path] = typer.Option([], "--profile-report", help="`edgeopt profile -o` output with "
                                                                           "measurements (repeatable)."),
    targets_dir: Path = typer.Option(None, "--targets-dir", help="Extra folder of target .toml files."),
    junit: Path = typer.Option(None, "--junit", help="Also write JUnit XML here."),
    markdown: Path = typer.Option(None, "--markdown", help="Also write a Markdown summary (a PR comment) here."),
    update_baseline: bool = typer.Option(False, "--update-baseline",
                                         help="Write the current numbers to the baseline file ([gate] baseline_file)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON on stdout."),
) -> None:
    """Check size, latency, memory, accuracy and fidelity budgets. Exit 0 all within budget,
    1 a budget exceeded, 2 bad config or a number that could not be found."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from edgeopt.cli.output import EventLines
    from edgeopt.config.project import ConfigError, find_config, load_config
    from edgeopt.events import Events
    from edgeopt.fsutil import write_text_atomic
    from edgeopt.gate.baseline import load_baseline
    from edgeopt.gate.render import to_junit, to_markdown
    from edgeopt.gate.run import GateInputs, default_report_path, run_gate

    path = find_config(config)
    if path is None:
        raise ConfigError("no edgeopt.toml here (and no [tool.edgeopt] in pyproject.toml)",
                          "create one with [[budgets]], or pass --config FILE")
    loaded = load_config(path)
    gate_settings = loaded.config.gate
    pipeline = loaded.config.pipeline
    folder_targets = loaded.resolve(pipeline.targets_dir) if pipeline and pipeline.targets_dir else None
    inputs = GateInputs(
        loaded=loaded,
        report_path=report if report is not None else default_report_path(loaded),
        profile_paths=[*profile_report, *(loaded.resolve(p) for p in gate_settings.profile_reports)],
        baseline=load_baseline(baseline or gate_settings.baseline, loaded)
        if (baseline or gate_settings.baseline) and not update_baseline else None,
        targets_dir=targets_dir or folder_targets,
    )
    if report is not None and not report.is_file():
        raise ConfigError(f"report not found: {report}", "run edgeopt convert first, or fix --report")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True,
                  disable=not err_console.is_terminal) as progress:
        result, document = run_gate(inputs, events=Events(EventLines(progress, "gate")))
    if update_baseline:
        import json

        target = loaded.resolve(gate_settings.baseline_file)
        write_text_atomic(target, json.dumps(document, indent=2, sort_keys=True) + "\n")
        err_console.print(f"baseline written: {target} (commit it to gate later changes against it)")
    md = to_markdown(result)
    if junit is not None:
        write_text_atomic(junit, to_junit(result))
    if markdown is not None:
        write_text_atomic(markdown, md)
    for message in result.warnings:
        warn(message)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        _github(result, loaded.path, md, as_json)
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        _render(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _github(result, config_path: Path, md: str, as_json: bool) -> None:
    """Step summary (Markdown) and ::error annotations at the budget's line in the config file."""
    from edgeopt.gate.render import github_annotations

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:  # appended: other steps write there too
            fh.write(md + "\n")
    workspace = Path(os.environ.get("GITHUB_WORKSPACE") or Path.cwd())
    try:
        shown = config_path.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:
        shown = str(config_path)
    # workflow commands are read from the job's output (never wrapped); with --json keep stdout pure JSON
    stream = sys.stderr if as_json else sys.stdout
    for line in github_annotations(result, shown):
        print(line, file=stream)
    stream.flush()


def _render(result) -> None:
    from edgeopt.gate.render import table_rows

    console = out_console()
    table = Table(title="edgeopt gate" + (f" (baseline: {result.baseline})" if result.baseline else ""),
                  title_justify="left")
    for column in ("budget", "metric", "limit", "actual", "Δ vs baseline", "status"):
        table.add_column(column, justify="right" if column in ("limit", "actual", "Δ vs baseline") else "left")
    styles = {"pass": "green", "FAIL": "bold red", "ERROR": "bold yellow", "skipped": "dim"}
    for row in table_rows(result):
        table.add_row(*(escape(cell) for cell in row[:5]), f"[{styles[row[5]]}]{row[5]}[/]")
    console.print(table)
    for check in result.checks:
        if check.status in ("fail", "error"):
            console.print(f"{'FAIL' if check.status == 'fail' else 'ERROR'}: {escape(check.budget)}: "
                          f"{escape(check.message)}")
    failed = sum(c.status == "fail" for c in result.checks)
    console.print("all budgets met" if result.passed else
                  f"{failed} check(s) over budget" if result.exit_code == 1 else
                  "some numbers could not be found (exit 2)")
