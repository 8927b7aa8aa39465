"""Slides as tasks on a Dask distributed cluster (``wsi-her2 batch --scheduler ADDRESS``).

Each slide is one task running :func:`~wsi_her2.batch.task.score_task` on a worker, which reads
the slide and writes its output folder itself, so workers and the submitting machine must see the
same paths (a shared file system, as on a SLURM cluster). The model is loaded once per worker
thread, on its first slide, and kept (:func:`~wsi_her2.batch.task.cached_scorer`): start workers
with one thread per GPU (dask-cuda's ``dask cuda worker`` does) or a few threads per CPU worker.
Resume rules and the summary are those of a local run: the client decides what is done, the
workers write manifests, the client writes the summary.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from wsi_her2.batch.summary import failed_row
from wsi_her2.batch.task import SlideTask, score_task
from wsi_her2.errors import ConfigError, WsiHer2Error

CONNECT_TIMEOUT_S = 30


def task_key(task: SlideTask) -> str:
    """A readable, unique Dask key for a slide's task (shown on the dashboard)."""
    name = task.entry.name
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"wsi-her2-score-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[-60:]}-{digest}"


def connect(address: str) -> Any:
    """A client of the scheduler at ``address``.

    Raises:
        ConfigError: dask.distributed is not installed or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError(
            "--scheduler needs dask.distributed, which is not installed", hint="pip install 'wsi-her2[dask]'"
        ) from exc
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc})",
            hint="start it with `dask scheduler` and workers with `dask worker ADDRESS`, and check the address",
        ) from exc


def run_on_dask(tasks: list[SlideTask], address: str) -> Iterator[tuple[str, SlideTask, dict[str, Any] | None]]:
    """Submit every slide to the cluster and yield its row as it finishes (any order).

    A task lost with its worker (killed, out of memory; after Dask's own retries) becomes a
    failed row, like any bad slide.
    """
    from distributed import as_completed

    if not tasks:
        return
    client = connect(address)
    futures: dict[Any, SlideTask] = {}
    try:
        for task in tasks:
            future = client.submit(score_task, task, key=task_key(task), pure=False)
            futures[future] = task
            yield ("start", task, None)
        for future in as_completed(list(futures), loop=client.loop):
            task = futures.pop(future)
            try:
                row = future.result()
            except WsiHer2Error as exc:
                row = failed_row(task.entry.name, task.entry.path, exc)
            except Exception as exc:
                row = failed_row(
                    task.entry.name,
                    task.entry.path,
                    WsiHer2Error(f"the Dask task for this slide failed ({type(exc).__name__}: {exc})"),
                )
                row["error_type"] = type(exc).__name__
            yield ("done", task, row)
    finally:
        if futures:
            client.cancel(list(futures))
        client.close()
