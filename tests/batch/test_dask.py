"""Slides as tasks on a real Dask cluster (a small LocalCluster in this process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.batch.conftest import place, stable_rows, tree_files
from wsi_her2.batch import MANIFEST, discover_slides, prepare_discovery, run_batch
from wsi_her2.config import LoaderConfig
from wsi_her2.errors import ConfigError
from wsi_her2.settings import ScoreSettings

distributed = pytest.importorskip("distributed")
SETTINGS = ScoreSettings(loader=LoaderConfig(workers=0))


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, silence_logs=40
    ) as local:
        yield local


def _run(slides: Path, out: Path, **kwargs):
    found = prepare_discovery(discover_slides(slides, exclude=[out]), mpp=None, shard=None)
    return run_batch(found, out, SETTINGS, **kwargs)


def test_a_cluster_run_equals_a_local_run_and_resumes_the_same_way(
    cluster, ihc_slides: list[Path], tmp_path: Path
) -> None:
    slides = tmp_path / "slides"
    place(ihc_slides[0], slides / "a", "s.svs")
    place(ihc_slides[1], slides / "b", "s.svs")
    (slides / "broken.svs").write_text("not a slide")
    local, remote = tmp_path / "local", tmp_path / "remote"
    expected = _run(slides, local)
    outcome = _run(slides, remote, scheduler=cluster.scheduler_address)
    assert outcome.counts == expected.counts and outcome.counts["done"] == 2 and outcome.counts["failed"] == 1
    assert stable_rows(remote / "summary.json") == stable_rows(local / "summary.json")
    assert tree_files(remote) == tree_files(local)
    # resume on the cluster: only the redone slide is sent
    shutil.rmtree(remote / "b/s.svs")
    (remote / "a/s.svs" / MANIFEST).unlink()
    again = _run(slides, remote, scheduler=cluster.scheduler_address)
    assert again.already_done == 0 and again.scored_now == 3
    third = _run(slides, remote, scheduler=cluster.scheduler_address)
    assert third.already_done == 2 and third.scored_now == 1
    assert stable_rows(remote / "summary.json") == stable_rows(local / "summary.json")


def test_workers_keep_the_model_between_slides(
    cluster, ihc_slides: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_her2.models
    from wsi_her2.aggregate import AggregateConfig

    loads = []
    real = wsi_her2.models.load_scorer

    def counting(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(wsi_her2.models, "load_scorer", counting)  # the workers are threads of this process
    slides = tmp_path / "slides"
    for i, slide in enumerate(ihc_slides):
        place(slide, slides, f"s{i}.svs")
    fresh = ScoreSettings(loader=LoaderConfig(workers=0), aggregate=AggregateConfig(bootstrap_samples=50))
    found = prepare_discovery(discover_slides(slides), mpp=None, shard=None)
    outcome = run_batch(found, tmp_path / "out", fresh, scheduler=cluster.scheduler_address, dask_loader_workers=0)
    assert outcome.counts["done"] == 3
    assert 1 <= len(loads) <= 2  # once per worker thread, not once per slide


def test_an_unreachable_scheduler_is_a_clear_error(ihc_slides: list[Path], tmp_path: Path, monkeypatch) -> None:
    from wsi_her2.batch import dask_executor

    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1)
    slides = tmp_path / "slides"
    place(ihc_slides[0], slides)
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        _run(slides, tmp_path / "out", scheduler="tcp://127.0.0.1:1")
