"""Score whole folders of slides, resumably, on one machine or a Dask cluster (``wsi-her2 batch``).

Typical use::

    from wsi_her2.batch import discover_slides, prepare_discovery, run_batch
    from wsi_her2.settings import ScoreSettings

    found = prepare_discovery(discover_slides("slides/", exclude=["out/"]), mpp=None, shard=None)
    outcome = run_batch(found, "out/", ScoreSettings(), jobs=2)
    print(outcome.counts, outcome.files["csv"])
"""

from __future__ import annotations

from wsi_her2.batch.discovery import (
    Discovery,
    SkippedEntry,
    SlideEntry,
    discover_slides,
    parse_shard,
    read_slide_list,
    split_images_without_mpp,
    take_shard,
)
from wsi_her2.batch.manifest import MANIFEST, model_hash, slide_fingerprint
from wsi_her2.batch.runner import BatchOutcome, loader_workers_per_job, run_batch, summary_stem
from wsi_her2.batch.summary import STATUSES, csv_columns
from wsi_her2.batch.task import SlideTask, score_task

__all__ = [
    "MANIFEST",
    "STATUSES",
    "BatchOutcome",
    "Discovery",
    "SkippedEntry",
    "SlideEntry",
    "SlideTask",
    "csv_columns",
    "discover_slides",
    "loader_workers_per_job",
    "model_hash",
    "parse_shard",
    "prepare_discovery",
    "read_slide_list",
    "run_batch",
    "score_task",
    "slide_fingerprint",
    "split_images_without_mpp",
    "summary_stem",
    "take_shard",
]


def prepare_discovery(discovery: Discovery, *, mpp: float | None, shard: tuple[int, int] | None) -> Discovery:
    """Skip images without a µm/px, then keep this shard's part (every N-th name from the I-th)."""
    return take_shard(split_images_without_mpp(discovery, mpp), shard)
