"""The ``apt-viz`` Typer app, its exit codes and the entry point.

``apt-viz IMAGE ...`` runs the ``run`` command: :func:`main` inserts ``run`` when the first
argument is not a subcommand, so ``apt-viz --help``, ``apt-viz --version`` and the other
subcommands keep working. Commands live in their own modules and register themselves on
:data:`app`; torch and friends are imported only once a command runs.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from .. import __version__
from .options import AmbiguousArguments, join_threshold_values

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES_TEXT = (
    "Exit codes: 0 all done, 1 some inputs failed (the rest completed), 2 usage error, "
    "3 internal error (a bug or a worker process that died: rerun with --debug and report it), 130 interrupted."
)


def exit_code(failed: int, internal: int = 0, interrupted: bool = False) -> int:
    """The exit code of every command that processes inputs (see :mod:`apt_viz.batch.failures`).

    Args:
        failed: Inputs that failed, whatever the reason.
        internal: Of those, internal errors (a bug in apt-viz, or a worker process that died).
        interrupted: The run was stopped by Ctrl-C or SIGTERM.

    Returns:
        130 when interrupted, else 3 for any internal error, else 1 for any failed input, else 0.
    """
    if interrupted:
        return EXIT_INTERRUPTED
    if internal:
        return EXIT_INTERNAL
    return EXIT_FAILURES if failed else EXIT_OK

EXAMPLES = f"""\
Examples:

  apt-viz image.jpg --patch-selection-method budget --alpha 0.3

  apt-viz photos/ --recursive --workers 2 -o out/

  apt-viz photos/ --stats-only --json > stats.json

  apt-viz image.jpg --patch-selection-method v1 --thresholds 3.5 2.5 --scorer laplacian

  apt-viz image.jpg --model-family qwen3-vl -m budget --alpha 0.3

{EXIT_CODES_TEXT}
"""

app = typer.Typer(
    name="apt-viz",
    help="See and measure Adaptive Patch Tokenization (APT) for the Qwen VL models "
    "(Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5).\n\n"
    "apt-viz IMAGE... is short for apt-viz run IMAGE...; apt-viz run --help lists every option.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"apt-viz {__version__}")
        raise typer.Exit()


@app.callback()
def _app(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Options of apt-viz itself (the help text is the app's)."""


GROUP_ARGUMENTS = ("-h", "--help", "--version")


def command_names() -> set[str]:
    names = set()
    for info in app.registered_commands:
        callback_name = info.callback.__name__ if info.callback is not None else ""
        names.add(info.name or callback_name.replace("_", "-"))
    return names


def route(args: Sequence[str]) -> list[str]:
    """Insert ``run`` unless the first argument is a subcommand or an option of ``apt-viz`` itself."""
    args = list(args)
    if not args or args[0] in command_names() or args[0] in GROUP_ARGUMENTS:
        return args
    return ["run", *args]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``apt-viz``, ``python -m apt_viz``, ``./cli.py``)."""
    args = route(sys.argv[1:] if argv is None else argv)
    try:
        args = join_threshold_values(args)
    except AmbiguousArguments as exc:
        print(f"apt-viz: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        app(args=args, prog_name="apt-viz")
    except KeyboardInterrupt:  # a second Ctrl-C: abort without a traceback
        print("apt-viz: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if "--debug" in args:
            raise
        print(f"apt-viz: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
