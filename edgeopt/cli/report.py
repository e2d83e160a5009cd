"""`edgeopt report REPORT.json -o report.html`."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(
    report: Path = typer.Argument(..., show_default=False,
                                  help="report.json from edgeopt convert (or its OUT folder), or a profile JSON "
                                       "from edgeopt profile -o."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="HTML file to write. Default: the report's path with .html."),
    gate: Path = typer.Option(None, "--gate", help="Gate result JSON (edgeopt gate --json) for the budget table."),
    tune: Path = typer.Option(None, "--tune", help="tune.json of edgeopt tune (default: the one beside the report, "
                                                    "if any) for the trials and their Pareto front."),
) -> None:
    """Render a run report as one self-contained HTML page (no scripts, nothing fetched when viewed)."""
    from edgeopt.errors import OutputError
    from edgeopt.fsutil import same_file, write_text_atomic
    from edgeopt.report.html import read_gate_json, read_report_json, read_tune_json, render_html

    if report.is_dir() and (report / "report.json").is_file():
        report = report / "report.json"  # `edgeopt report OUT` for a convert output folder
    data = read_report_json(report)
    gate_data = read_gate_json(gate) if gate is not None else None
    if tune is None and (report.parent / "tune.json").is_file():  # `edgeopt report OUT` after `edgeopt tune`
        tune = report.parent / "tune.json"
    tune_data = read_tune_json(tune) if tune is not None else None
    if output is None:
        output = report.with_suffix(".html")
    for given in (report, gate, tune):
        if given is not None and (same_file(output, given) or output.resolve() == given.resolve()):
            raise OutputError(f"the HTML output {output} would overwrite the input {given}",
                              "choose another path with -o")
    if output.is_dir():
        raise OutputError(f"output {output} is a folder", "give -o a file path such as report.html")
    page = render_html(data, gate_data, source_label=report.name, tune=tune_data)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output, page)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}",
                          "choose a path you can write to with -o") from None
    typer.echo(str(output))
