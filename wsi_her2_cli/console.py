"""Rich output for the command line: a stderr console for progress and messages, stdout for results."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from wsi_her2.progress import ProgressEvent

err_console = Console(stderr=True)
out_console = Console()


def setup_logging(verbose: int, quiet: bool) -> None:
    """Configure logging once, for the command line only (the library never does)."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
    # tifffile logs a warning for every oddity of a damaged file; our own error says it once.
    logging.getLogger("tifffile").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)
    # The hub client's retry chatter adds nothing to our one-line error when offline.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR if verbose < 2 else logging.DEBUG)


class RateColumn(ProgressColumn):
    """Units per second, e.g. "1,234 tiles/s"."""

    def render(self, task: Task) -> Text:
        """The rate of ``task`` since it started, in its own unit.

        Batches arrive in bursts (workers deliver a batch at a time), so rich's short-window
        speed swings wildly; the average since the start is what a user wants to read.
        """
        unit = task.fields.get("unit", "it")
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:,.0f} {unit}/s", style="progress.data.speed")


class RichProgress:
    """A :data:`wsi_her2.progress.ProgressCallback` that draws rich progress bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {}
        self._live = False
        self.started = time.perf_counter()

    def __enter__(self) -> RichProgress:
        # The bars start with the first progress event: an error before it stays one line on stderr.
        self._live = False
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._progress.__exit__(exc_type, exc, tb)

    def __call__(self, event: ProgressEvent) -> None:
        """Update (or create) the bar of ``event.stage``."""
        if not self._live:
            self._progress.__enter__()
            self._live = True
        task = self._tasks.get(event.stage)
        description = event.stage if event.message is None else f"{event.stage}: {event.message}"
        if task is None:
            task = self._progress.add_task(description, total=event.total, unit=event.unit)
            self._tasks[event.stage] = task
        self._progress.update(task, completed=event.completed, total=event.total, description=description)
