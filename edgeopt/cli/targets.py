"""`edgeopt targets list|show`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeopt.cli.output import out_console, print_json
from edgeopt.units import format_bytes

app = typer.Typer(help="Hardware target profiles.", no_args_is_help=True)

_TARGETS_DIR = typer.Option(None, "--targets-dir", help="Extra folder of target .toml files "
                                                         "(also EDGEOPT_TARGETS_DIR).")


@app.command("list")
def list_command(
    targets_dir: Path = _TARGETS_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """List the known hardware targets."""
    from edgeopt.targets import list_targets

    targets = list_targets(targets_dir)
    if as_json:
        print_json([t.model_dump(mode="json") for t in targets])
        return
    table = Table(title="Targets", title_justify="left")
    for column in ("name", "kind", "arch", "cores", "RAM", "runtime", "description"):
        table.add_column(column)
    for t in targets:
        table.add_row(t.name, t.kind, t.arch, str(t.cores or "-"), format_bytes(t.ram_bytes), t.runtime,
                      t.display_name)
    out_console().print(table)


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Target name (see `edgeopt targets list`).", show_default=False),
    targets_dir: Path = _TARGETS_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Show one hardware target profile."""
    from edgeopt.targets import load_target

    target = load_target(name, targets_dir)
    data = target.model_dump(mode="json")
    if as_json:
        print_json(data)
        return
    table = Table(title=f"Target {name}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "-"
        table.add_row(key, "-" if value is None else str(value))
    out_console().print(table)
