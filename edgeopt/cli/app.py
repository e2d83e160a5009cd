"""The `edgeopt` command. Commands only parse flags, call the library and render."""

from __future__ import annotations

import os
import re
import sys
import traceback

import typer
from typer.exceptions import TyperException

from edgeopt import __version__
from edgeopt.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EdgeoptError

app = typer.Typer(
    name="edgeopt",
    help="Export, prune, quantize, profile and gate models for edge hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeopt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Export, prune, quantize, profile and gate models for edge hardware.

    Exit codes: 0 ok, 1 a check failed, 2 bad input or usage, 3 remote device error,
    4 the produced model does not match its source, 70 internal error.
    """


def _register() -> None:
    from edgeopt.cli import convert, gate, inspect, profile, report, targets, tune

    app.command("inspect")(inspect.inspect_command)
    app.command("convert")(convert.convert_command)
    app.command("profile")(profile.profile_command)
    app.command("gate")(gate.gate_command)
    app.command("tune")(tune.tune_command)
    app.command("report")(report.report_command)
    app.add_typer(targets.app, name="targets")


_register()


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("EDGEOPT_DEBUG", "") not in ("", "0")


# Terminal escape sequences (colours, cursor moves) that library messages carry (torch's exporter colours
# its errors): one plain line, readable in a CI log and a file.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _error_line(message: str) -> None:
    sys.stderr.write(f"error: {_ESCAPES.sub('', message)}\n")
    sys.stderr.flush()


# The arguments of the running invocation, for reports that record their command line
# (main() may be called in-process with its own argv, so sys.argv is not it).
invocation: list[str] = []


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every failure to one line and a documented exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    invocation[:] = argv
    debug = _debug_requested(argv)
    try:
        code = app(args=argv, prog_name="edgeopt", standalone_mode=False)
        if isinstance(code, int) and code != 0:  # click returns Exit codes in this mode
            sys.exit(code)
    except typer.Exit as exc:
        if exc.exit_code == 130:  # typer turns Ctrl-C into Exit(130)
            _error_line("interrupted")
        sys.exit(exc.exit_code)
    except TyperException as exc:  # click's usage errors (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError" and hasattr(exc, "show"):
            exc.show()  # prints the command's help
            sys.exit(EXIT_BAD_INPUT)
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "edgeopt"
        _error_line(f"{exc.format_message()} (see: {command} --help)")
        sys.exit(EXIT_BAD_INPUT if exc.exit_code in (1, 2) else exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _error_line("interrupted")
        sys.exit(130)
    except EdgeoptError as exc:
        if debug:
            traceback.print_exc()
        _error_line(str(exc))
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if debug:
            traceback.print_exc()
            _error_line(f"internal error: {type(exc).__name__}: {exc}")
        else:
            _error_line(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                        "(a bug in edgeopt; rerun with --debug for the traceback and please report it)")
        sys.exit(EXIT_INTERNAL)
