"""Entry point: a click group whose commands are imported only when used, so ``--help`` is instant."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from wsi_her2_cli.errors import run_guarded

# name -> "module:function"; modules import heavy libraries inside their functions only.
COMMANDS: dict[str, str] = {
    "info": "wsi_her2_cli.info:info",
    "tile": "wsi_her2_cli.tile:tile",
    "score": "wsi_her2_cli.score:score",
    "train": "wsi_her2_cli.train:train",
    "evaluate": "wsi_her2_cli.evaluate:evaluate",
    "explain": "wsi_her2_cli.explain:explain",
    "batch": "wsi_her2_cli.batch:batch",
    "validate": "wsi_her2_cli.validate:validate",
    "view": "wsi_her2_cli.view:view",
    "report": "wsi_her2_cli.report:report",
}


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is used or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Names of the installed commands, in the documented order."""
        return [name for name in COMMANDS if self._available(name)]

    def _available(self, name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return one command."""
        target = COMMANDS.get(cmd_name)
        if target is None or not self._available(cmd_name):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


def _version() -> str:
    from wsi_her2._version import __version__

    return __version__


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", prog_name="wsi-her2")
def cli() -> None:
    """Score HER2 (0, 1+, 2+, 3+) of breast cancer whole-slide images.

    \b
    Start with:  wsi-her2 info SLIDE            what the slide is
                 wsi-her2 score SLIDE -o OUT    the HER2 score, tile table, heatmap, report
    Every command takes --help. Coordinates in all outputs are level-0 pixels.
    Exit codes: 0 ok, 1 internal error, 2 bad option, 3 input not found, 4 unreadable slide,
    5 unknown µm/px, 6 no tissue, 7 model problem, 8 stain mismatch, 9 device, 10 cannot write
    output, 11 bad dataset or case list, 12 some slides of a batch (cases of a validation) failed,
    130 interrupted.
    """


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_guarded(cli, sys.argv[1:]))


if __name__ == "__main__":
    main()
