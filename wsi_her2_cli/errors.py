"""Errors to exit codes: one line on stderr, no traceback unless --debug."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


def _debug_requested(args: Sequence[str]) -> bool:
    return "--debug" in args or os.environ.get("WSI_HER2_DEBUG", "") not in ("", "0")


def usage_message(exc: click.UsageError) -> str:
    """The message of a click usage error on one line, with where to find the command's options."""
    message = " ".join(line.strip() for line in exc.format_message().splitlines() if line.strip())
    if exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return message


def run_guarded(command: click.Command, args: Sequence[str]) -> int:
    """Run a click command and turn every failure into a one-line message and an exit code.

    ``--debug`` anywhere on the line (or WSI_HER2_DEBUG=1) shows tracebacks instead.
    """
    from wsi_her2.errors import WsiHer2Error

    debug = _debug_requested(args)
    args = [a for a in args if a != "--debug"]
    try:
        result = command.main(args=args, prog_name="wsi-her2", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # `wsi-her2` alone: the help
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:  # a bad option or argument: one line (no usage block), exit 2
        click.echo(f"wsi-her2: error: {usage_message(exc)}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("wsi-her2: interrupted", err=True)
        return EXIT_INTERRUPTED
    except WsiHer2Error as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"wsi-her2: error: {exc.user_message()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("wsi-her2: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `wsi-her2 info --json x | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(
            f"wsi-her2: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback, and please report it)",
            err=True,
        )
        return EXIT_INTERNAL
