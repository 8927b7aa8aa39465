"""wsi-her2 batch SLIDES_DIR -o OUT: score every slide of a folder tree, resumably, here or on a Dask cluster."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import BATCH, common_options, config_option, score_settings, table_options

STATUS_STYLE = {"done": "green", "no_tissue": "yellow", "failed": "bold red", "skipped": "dim", "pending": "dim"}
RECENT_ROWS = 8


class BatchDisplay:
    """A live view on stderr: a progress bar over slides, the slides running and the last ones finished."""

    def __init__(self, enabled: bool, total: int, executor: str) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from wsi_her2_cli.console import err_console

        self.enabled = enabled
        self.executor = executor
        self.progress = Progress(
            TextColumn("[bold]slides"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=err_console,
        )
        self.task = self.progress.add_task("batch", total=total, counts="")
        self.running: dict[str, float] = {}
        self.waiting: set[str] = set()  # slides another run is scoring: this one waits for them
        self.recent: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._group = Group(self.progress, self._table())
        self.live = Live(self._group, console=err_console, refresh_per_second=4, transient=False)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_edge=False, pad_edge=False, expand=True)
        table.add_column("slide", ratio=1, no_wrap=True, overflow="ellipsis")
        for column, width in (("status", 14), ("score", 5), ("group", 9), ("tiles", 7), ("s", 5)):
            table.add_column(column, width=width, no_wrap=True, justify="left" if width > 7 else "right")
        now = time.monotonic()
        for name, started in list(self.running.items())[:RECENT_ROWS]:
            where = "queued/running" if self.executor == "dask" else "running"
            if name in self.waiting:
                where = "other run"
            table.add_row(name, f"[cyan]{where}[/]", "", "", "", f"{now - started:.0f}")
        for row in self.recent[-RECENT_ROWS:]:
            status = row["status"]
            style = STATUS_STYLE.get(status, "white")
            tiles = "" if row.get("n_tiles_scored") is None else f"{row['n_tiles_scored']:,}"
            seconds = "" if row.get("seconds") is None else f"{row['seconds']:.0f}"
            table.add_row(
                row["slide"], f"[{style}]{status}[/]", row.get("score") or "", row.get("clinical_group") or "", tiles,
                seconds,
            )  # fmt: skip
        return table

    def __enter__(self) -> BatchDisplay:
        if self.enabled:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._refresh()
            self.live.__exit__(None, None, None)
            if not self.live.console.is_terminal:
                self.live.console.line()  # rich leaves the last frame without a newline off a terminal

    def _refresh(self) -> None:
        from rich.console import Group

        counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in self.counts.items() if n)
        self.progress.update(self.task, counts=counts)
        self._group = Group(self.progress, self._table())
        self.live.update(self._group)

    def progress_event(self, event: Any) -> None:
        """A :class:`~wsi_her2.progress.ProgressEvent` of stage "batch"."""
        if self.enabled:
            self.progress.update(self.task, completed=event.completed, total=event.total)
            self._refresh()

    def executor_event(self, event: tuple[str, Any, dict[str, Any] | None]) -> None:
        """A slide started or finished."""
        kind, task, row = event
        name = task.entry.name
        if kind == "start":
            self.running[name] = time.monotonic()
            self.waiting.discard(name)
        elif kind == "wait":
            self.running.setdefault(name, time.monotonic())
            self.waiting.add(name)
        elif row is not None:
            self.running.pop(name, None)
            self.waiting.discard(name)
            self.recent.append(row)
            self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        if self.enabled:
            self._refresh()


def _print_found(console: Any, usable: Any, scoring: Any, shard: tuple[int, int] | None) -> None:
    reasons = usable.skip_reasons()
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    line = f"found {len(usable.slides) + len(usable.skipped)} slides in {usable.source}"
    if skipped:
        line += f"; skipped: {skipped}"
    console.print(line, soft_wrap=True, highlight=False)
    if shard is not None:
        console.print(
            f"shard {shard[0]}/{shard[1]}: {len(scoring.slides)} slides, {len(scoring.skipped)} skipped",
            soft_wrap=True,
            highlight=False,
        )


def _print_outcome(console: Any, outcome: Any, out_dir: Path) -> None:
    from rich.table import Table

    counts = outcome.counts
    table = Table(show_header=False, title="batch summary", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for status in ("done", "no_tissue", "failed", "skipped", "pending"):
        if counts.get(status):
            table.add_row(status.replace("_", " "), f"[{STATUS_STYLE[status]}]{counts[status]}[/]")
    table.add_row("scored now / done earlier", f"{outcome.scored_now} / {outcome.already_done}")
    scores: dict[str, int] = {}
    for row in outcome.rows:
        if row.get("score"):
            scores[row["score"]] = scores.get(row["score"], 0) + 1
    if scores:
        table.add_row("scores", ", ".join(f"{s}: {n}" for s, n in sorted(scores.items())))
    rate = outcome.scored_now / outcome.seconds * 3600 if outcome.seconds > 0 and outcome.scored_now else None
    table.add_row("time", f"{outcome.seconds:.1f} s" + (f" ({rate:,.0f} slides/hour)" if rate else ""))
    table.add_row("summary", f"{outcome.files['csv']}, {outcome.files['json'].name}")
    console.print(table)
    for row in outcome.failed[:20]:
        console.print(f"[red]failed[/] {row['slide']}: {row['message']}", soft_wrap=True, highlight=False)
    if len(outcome.failed) > 20:
        console.print(f"... and {len(outcome.failed) - 20} more failures in {outcome.files['csv']}")


@click.command()
@click.argument("slides_dir", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--list",
    "list_path",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV of slides instead of SLIDES_DIR: a path column, optional mpp and roi columns.",
)
# One process per slide, each holding a model and its loader workers: 256 is more than one machine has cores.
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Slides scored at once on this machine, one process each (the model loads once per process).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Dask scheduler (e.g. tcp://head:8786): slides become tasks on its workers (shared file system).",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Score only the I-th of N parts (1 <= I <= N): slides sorted by name, every N-th from the I-th.",
)
@click.option("--force", is_flag=True, help="Score every slide again, even those an earlier run completed.")
@table_options(BATCH)
@config_option
@common_options
def batch(
    slides_dir: Path | None,
    out_dir: Path,
    list_path: Path | None,
    jobs: int,
    scheduler: str | None,
    shard: str | None,
    force: bool,
    mpp: float | None,
    workers: int | None,
    quiet: bool,
    verbose: int,
    **options: Any,
) -> int:
    """Score the HER2 status of every slide in SLIDES_DIR (recursively), or of those in --list.

    \b
    Finds SVS, NDPI, MRXS, SCN, TIFF, BIF, VMS, DICOM series (one slide per folder of .dcm) and,
    with --mpp, JPEG/PNG images. Writes into OUT:
      SLIDE/               for each slide (named by its path under SLIDES_DIR) what `score` writes,
                           plus batch_manifest.json once the folder is complete
      summary.csv, .json   one row per slide: status (done, no_tissue, failed, skipped), score,
                           clinical group, class fractions, tiles, seconds, error message
    \b
    Rerunning the same command skips the slides already done (same slide file, settings and
    model) and redoes the rest, also after a crash or kill. --mpp gives the µm/px of images and
    of slides whose metadata has none. Exit code 12 when any slide failed (see the summary).
    """
    from wsi_her2.batch import (
        discover_slides,
        loader_workers_per_job,
        parse_shard,
        read_slide_list,
        run_batch,
        split_images_without_mpp,
        take_shard,
    )
    from wsi_her2.errors import BatchFailedError, ConfigError, InputNotFoundError
    from wsi_her2_cli.console import err_console, setup_logging

    setup_logging(verbose, quiet)
    if (slides_dir is None) == (list_path is None):
        raise ConfigError("give either SLIDES_DIR or --list FILE", hint="see `wsi-her2 batch --help`")
    if scheduler and jobs != 1:
        raise ConfigError("--jobs is for one machine", hint="with --scheduler the cluster's workers set the pace")
    shard_part = parse_shard(shard)
    loader_workers = workers
    if loader_workers is None and not scheduler:
        loader_workers = loader_workers_per_job(jobs)
    settings = score_settings(BATCH, options, workers=loader_workers)
    if list_path is not None:
        found = read_slide_list(list_path)
    else:
        assert slides_dir is not None
        found = discover_slides(slides_dir, exclude=[out_dir])
    usable = split_images_without_mpp(found, mpp)
    scoring = take_shard(usable, shard_part)
    if not found.slides:
        ignored = ", ".join(f"{n} {r}" for r, n in found.skip_reasons().items())
        raise InputNotFoundError(
            f"no slides found in {found.source}" + (f" ({ignored})" if ignored else " (it is empty)"),
            hint="slides are .svs, .ndpi, .mrxs, .scn, .tif/.tiff, .bif, .vms, folders of .dcm, "
            "and .jpg/.png images with --mpp",
        )
    if not usable.slides:
        reasons = ", ".join(f"{n} {r}" for r, n in usable.skip_reasons().items())
        raise InputNotFoundError(f"no slides to score in {found.source}: {reasons}")
    if not quiet:
        _print_found(err_console, usable, scoring, shard_part)
    from wsi_her2.batch.locks import locking_supported
    from wsi_her2.outputs.atomic import ensure_dir

    if not locking_supported(ensure_dir(out_dir)):
        logging.getLogger("wsi_her2").warning(
            "the file system of %s cannot lock files: do not run two batches into it at once", out_dir
        )
    executor = "dask" if scheduler else "local"
    total = len(scoring.slides) + len(scoring.skipped)
    with BatchDisplay(not quiet, total, executor) as display:
        outcome = run_batch(
            scoring,
            out_dir,
            settings,
            jobs=jobs,
            scheduler=scheduler,
            force=force,
            shard=shard_part,
            mpp=mpp,
            dask_loader_workers=workers,
            progress=display.progress_event,
            on_event=display.executor_event,
        )
    if not quiet:
        _print_outcome(err_console, outcome, out_dir)
    if outcome.failed:
        raise BatchFailedError(
            f"{len(outcome.failed)} of {len(outcome.rows)} slides failed",
            hint=f"their errors are in {outcome.files['csv']}; rerun the same command to retry them "
            "(done slides are skipped)",
        )
    return 0
