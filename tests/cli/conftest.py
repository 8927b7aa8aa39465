"""Run the command line in-process, as a user would from a shell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Call ``wsi-her2 ARGS...`` through the same guard the console script uses."""
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    def run(*args: object) -> Result:
        capsys.readouterr()
        code = run_guarded(cli, [str(a) for a in args])
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run
