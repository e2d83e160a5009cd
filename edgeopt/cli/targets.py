"""`edgeopt targets list|show|calibrate`."""

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
    table = Table(title="Targets (edgeopt targets show NAME for details and sources)", title_justify="left")
    for column in ("name", "kind", "cores", "GHz", "RAM", "fp32 GOPS", "int8 GOPS", "runs on"):
        table.add_column(column, no_wrap=column != "runs on", overflow="fold", justify="right" if column in ("cores", "GHz") or "GOPS" in column
                         else "left")
    for t in targets:
        peaks = t.accelerator.peak_ops_per_s if t.accelerator else t.peak_ops_per_s
        runs_on = (t.accelerator.delegate if t.accelerator else t.execution_provider or t.runtime)
        runs_on = runs_on.removesuffix("ExecutionProvider") or runs_on
        table.add_row(t.name, t.kind, str(t.cores or "-"), f"{t.clock_ghz:g}" if t.clock_ghz else "-",
                      format_bytes(t.ram_bytes), _gops(peaks.fp32), _gops(peaks.int8), runs_on)
    out_console().print(table)


def _gops(value: float | None) -> str:
    return f"{value / 1e9:,.1f}" if value else "-"


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


@app.command("calibrate")
def calibrate_command(
    name: str = typer.Argument("host", help="Target to calibrate: host (this machine), or a CPU target measured "
                                            "on a device with --ssh.", show_default=True),
    ssh: str = typer.Option(None, "--ssh", help="Run the microbenchmarks on this device (~/.ssh/config alias, "
                                                "user@host or user@host:port)."),
    save_as: str = typer.Option(None, "--save-as", help="Write the calibrated profile under this name (default: "
                                                        "NAME, which then overrides the built-in profile)."),
    output_dir: Path = typer.Option(None, "--output-dir",
                                    help="Where to write NAME.toml (default: ~/.config/edgeopt/targets)."),
    threads: int = typer.Option(None, "--threads", min=1, help="Threads for the microbenchmarks (default: all)."),
    seconds: float = typer.Option(1.5, "--seconds", min=0.01, help="Time spent on each microbenchmark."),
    targets_dir: Path = _TARGETS_DIR,
    ssh_config: Path = typer.Option(None, "--ssh-config", help="OpenSSH client config file to use (ssh -F)."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Trust the device's host key on first contact (accept-new)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device."),
    as_json: bool = typer.Option(False, "--json", help="Print the calibrated profile as JSON on stdout."),
) -> None:
    """Measure peaks (GEMM/conv per dtype, memory bandwidth) here or on a device into a target file."""

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from edgeopt.cli.output import EventLines, err_console
    from edgeopt.commands.calibrate import calibrate_target
    from edgeopt.events import Events

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                  disable=not err_console.is_terminal) as progress:
        ssh_options = {"python": remote_python, "accept_new_host_key": accept_new_host_key,
                       **({"config_file": ssh_config} if ssh_config else {})}
        done = calibrate_target(name, ssh=ssh, ssh_options=ssh_options, threads=threads, seconds=seconds,
                                save_as=save_as, output_dir=output_dir, targets_dir=targets_dir,
                                events=Events(EventLines(progress, "calibrating")))
    profile, path, result, where = done.profile, done.path, done.result, done.where
    data = {**profile.model_dump(mode="json"), "origin": str(path), "microbenchmarks": result.model_dump()}
    if as_json:
        print_json(data)
        return
    out_console().print(
        f"wrote {path}: fp32 {profile.peak_ops_per_s.fp32 / 1e9:.1f} GOPS, "
        f"int8 {(profile.peak_ops_per_s.int8 or 0) / 1e9:.1f} GOPS, "
        f"memory {profile.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s ({result.threads} threads"
        + (f", on {where}" if where else "") + ")")
    classes = {key: value for key, value in profile.efficiency.items() if "." in key or "@" in key or key == "lstm"}
    if classes:
        out_console().print("efficiency by op class (of the peak): "
                            + ", ".join(f"{key} {value:.2f}" for key, value in sorted(classes.items())))
    if profile.kernel_bandwidth is not None:
        kernel = profile.kernel_bandwidth
        out_console().print(f"kernels read weights at {kernel.dram / 1e9:.1f} GB/s from DRAM"
                            + (f", {kernel.cache / 1e9:.1f} GB/s from cache" if kernel.cache else ""))
    if profile.estimate_error is not None and profile.estimate_error.latency:
        out_console().print(f"estimates on this target: ±{profile.estimate_error.latency:.0%} "
                            f"({profile.estimate_error.source})")
