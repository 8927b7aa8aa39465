"""Progress reporting: the library calls a callback, the command line draws the bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update of a long stage.

    Attributes:
        stage: short name of the stage ("tissue", "tiles", "inference", "write", ...).
        completed: units done so far in this stage.
        total: units in the stage, None when unknown.
        unit: what is counted ("tiles", "slides", "batches", ...).
        message: optional human-readable detail.
    """

    stage: str
    completed: int
    total: int | None = None
    unit: str = "tiles"
    message: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Send ``event`` to ``callback`` when there is one."""
    if callback is not None:
        callback(event)
