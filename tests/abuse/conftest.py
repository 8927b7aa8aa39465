"""Helpers of the abuse suite: the real command line in a subprocess, bounded in memory and time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


@dataclass
class Run:
    """One finished command: exit code, output, peak resident memory and wall time."""

    exit_code: int
    stdout: str
    stderr: str
    peak_rss_bytes: int
    seconds: float

    @property
    def message_lines(self) -> list[str]:
        """The non-empty stderr lines the user sees (the memory report removed)."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("peak_rss_kb=")]


def run_limited(*args: object, memory_bytes: int = 3 * GIB, timeout_s: float = 120, cwd: Path | None = None) -> Run:
    """``wsi-her2 ARGS`` in a fresh process whose address space is capped (see :mod:`tests.abuse.limited`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2", "COLUMNS": "200"}  # fmt: skip
    command = [sys.executable, "-m", "tests.abuse.limited", str(memory_bytes), *map(str, args)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd or ROOT)
    seconds = time.perf_counter() - t0
    peak = [line for line in done.stderr.splitlines() if line.startswith("peak_rss_kb=")]
    rss = int(peak[-1].split("=")[1]) * 1024 if peak else -1
    return Run(done.returncode, done.stdout, done.stderr, rss, seconds)


@pytest.fixture
def limited() -> Callable[..., Run]:
    """:func:`run_limited`."""
    return run_limited


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 x 2048 IHC SVS at 0.5 µm/px, tissue everywhere: 16 tiles of 256 µm for the DAB scorer."""
    from wsi_her2.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("abuse-slide") / "small.svs"
    write_synthetic_slide(path, width=2048, height=2048, mpp=0.5, stain="ihc", tissue_map=np.ones((4, 4), bool),
                          downsamples=(1, 4), seed=1)  # fmt: skip
    return path


@dataclass
class CliResult:
    """An in-process command: exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def message_lines(self) -> list[str]:
        """The non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``wsi-her2 ARGS`` in this process, through the guard the console script uses (fast, no subprocess)."""
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli as group

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = run_guarded(group, [str(a) for a in args])
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


def assert_one_line(result: CliResult | Run, exit_code: int, *needles: str) -> str:
    """The command failed with ``exit_code`` and one line on stderr that holds every needle."""
    assert result.exit_code == exit_code, result.stderr[-3000:]
    lines = result.message_lines
    assert len(lines) == 1 and lines[0].startswith("wsi-her2: error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
