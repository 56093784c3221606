"""The ``u2eval`` command line: the commands gathered, help tidied, and every error one line. Logging is
configured here and nowhere else.

Every user mistake (a bad flag value, an unknown model or task, a missing folder) ends as one red line and
exit code 2, without a traceback. A run that finished with infra errors exits 3: its scores exclude them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, get_args, get_origin

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperOption

from u2eval.cli.common import EXIT_USAGE, app, console, out
from u2eval.errors import U2EvalError

# Importing a command module registers its commands, in the order `u2eval --help` lists them.
# isort: off
from u2eval.cli import run_commands  # noqa: E402, F401
from u2eval.cli import report_commands  # noqa: E402, F401
from u2eval.cli import judge_commands  # noqa: E402, F401
from u2eval.cli import view_commands  # noqa: E402, F401
from u2eval.cli import info_commands  # noqa: E402, F401
# isort: on


def _version(value: bool) -> None:
    if value:
        from u2eval.provenance import version

        out.print(f"u2eval {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print u2eval's version and exit"),
    ] = False,
) -> None:
    """Evaluate vision-language models on U2-Bench (ultrasound)."""


_METAVARS: dict[type, str] = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _tidy_help(command: object) -> None:
    """Help without type noise: a flag shows no value, an option a short name for its value, an argument its
    name alone (``<bool>``, ``<list[Path]>`` say nothing a user needs)."""
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperOption) and param.metavar is None:
            annotation: object = param.type_descriptor.annotation
            inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
            param.metavar = _METAVARS.get(inner, "TEXT") if isinstance(inner, type) else "TEXT"
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    made = getattr(command, "get_help_option", None)
    if made is not None:  # --help is made when help is asked for, not listed among the params

        def help_option(ctx: object, made: Callable[[object], object] = made) -> object:
            option = made(ctx)
            if option is not None:
                option.metavar = ""  # type: ignore[attr-defined]
            return option

        command.get_help_option = help_option  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        command = typer.main.get_command(app)
        _tidy_help(command)
        command(standalone_mode=True)
    except U2EvalError as exc:
        # escape: paths and specs such as hf:OWNER/NAME[@REV] contain brackets rich would read as markup
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
