"""The scorer protocol: what a scorer declares reaches every output, and nothing outside models/ asks its kind.

A scorer built on the DAB scorer adds what the DAB work plugs in next: a per-tile array from its
tile function (one row per cell), a finishing step that revises tiles once the whole slide is in
and summarises the slide, an extra per-tile value, heatmap channel and batch-summary field, and
two extra files. Each must come out in the result folder, in the report, in batch summaries and
in the viewer's readout, through the same code every scorer uses.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import fixture_path
from wsi_her2.models.base import SlideFinish, SlideTiles
from wsi_her2.models.dab.scorer import DabScorer
from wsi_her2.models.dab.tile import CELL_COLUMNS, CELLS_KEY, DabTileFunction
from wsi_her2.outputs.schema import HeatmapChannel, ScorerOutputs, SummaryField, ValueColumn
from wsi_her2.settings import ScoreSettings


class CellsTileFunction:
    """The DAB tile function plus a per-tile array: one row (n_cells, tile mean OD) per tile (picklable)."""

    def __init__(self, inner: DabTileFunction) -> None:
        self.inner = inner

    def __call__(self, rgb: np.ndarray, valid_mask: np.ndarray | None = None) -> dict[str, Any]:
        values = dict(self.inner(rgb, valid_mask))
        membrane = values[CELLS_KEY][:, CELL_COLUMNS.index("membrane_od")]
        mean_od = float(membrane.mean()) if len(membrane) else float("nan")
        values["cells"] = np.array([[values["n_cells"], mean_od]], np.float64)
        return values


class SlideAwareScorer(DabScorer):
    """The DAB scorer with more slide-level work: the tile with the most cells is set aside."""

    def tile_function(self, prepared: Any, output_size_px: int) -> CellsTileFunction:
        return CellsTileFunction(super().tile_function(prepared, output_size_px))

    def outputs(self) -> ScorerOutputs:
        base = super().outputs()
        return ScorerOutputs(
            base.probability_prefix,
            (*base.value_columns, ValueColumn("cells_rank", "rank by cells", geojson=False)),
            (*base.heatmap_channels, HeatmapChannel("cells_rank", "123456", (0.0, 10.0))),
            (*base.summary_fields, SummaryField("cells_total", "cells on the slide")),
            ("cells.npz", "cells.csv"),
            base.caveat,
        )

    def finish(self, tiles: SlideTiles, prepared: Any) -> SlideFinish:
        self.seen = tiles
        base = super().finish(tiles, prepared)
        cells = tiles.measurements["n_cells"]
        rank = np.full(len(cells), np.nan)
        kept = np.flatnonzero(np.isfinite(cells))
        rank[kept[np.argsort(-cells[kept], kind="stable")]] = np.arange(len(kept))
        probabilities = base.probabilities.copy()
        probabilities[int(np.nanargmax(cells))] = np.nan  # a slide-wide decision: this tile gets no result
        rows = [a for a in tiles.tile_arrays["cells"] if a is not None]
        table = {"n_cells": np.concatenate(rows)[:, 0], "mean_od": np.concatenate(rows)[:, 1]}
        return SlideFinish(
            probabilities,
            {**base.measurements, "cells_rank": rank},
            {**base.summary, "cells_total": int(np.nansum(cells))},
            {**base.tables, "cells.csv": table},
        )


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, SlideAwareScorer]:
    from wsi_her2.pipeline import run_score

    scorer = SlideAwareScorer()
    out = tmp_path_factory.mktemp("protocol") / "out"
    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    settings = ScoreSettings(loader=ScoreSettings().loader.replace(workers=2))
    result = run_score(core, out, settings, mpp=0.25, scorer=scorer)
    return result, out, scorer


def test_tile_arrays_of_the_tile_function_reach_the_finish(scored: tuple[Any, Path, SlideAwareScorer]) -> None:
    result, _, scorer = scored
    arrays = scorer.seen.tile_arrays["cells"]
    kept = scorer.seen.kept
    assert len(arrays) == len(result.slide.grid) and kept.any()
    assert all((a is not None) == bool(k) for a, k in zip(arrays, kept, strict=True))
    cells = scorer.seen.measurements["n_cells"]
    assert all(a[0, 0] == cells[i] for i, a in enumerate(arrays) if a is not None)


def test_the_finish_revises_tiles_and_its_summary_is_in_the_report(
    scored: tuple[Any, Path, SlideAwareScorer],
) -> None:
    result, out, scorer = scored
    most = int(np.nanargmax(scorer.seen.measurements["n_cells"]))
    assert not result.predictions.scored[most] and result.predictions.drop_reason[most] == "no result"
    report = json.loads((out / "report.json").read_text())
    total = int(np.nansum(scorer.seen.measurements["n_cells"]))
    assert report["result"]["scorer_summary"]["cells_total"] == total
    assert report["result"]["scorer_summary"]["n_cells_detected"] == total  # the DAB scorer's own finish ran too
    assert report["result"]["n_tiles_scored"] == int(result.predictions.scored.sum())
    fields = report["scorer_outputs"]["summary_fields"]
    assert fields[-1] == {"key": "cells_total", "label": "cells on the slide", "percent": False}
    assert report["files"]["cells_npz"] == "cells.npz" and report["files"]["cells_csv"] == "cells.csv"


def test_declared_columns_channels_and_files_are_written(scored: tuple[Any, Path, SlideAwareScorer]) -> None:
    from wsi_her2.outputs.heatmap import read_heatmap
    from wsi_her2.outputs.tile_table import read_csv_columns

    _, out, scorer = scored
    table = read_csv_columns(out / "tiles.csv")
    assert list(table)[-2:] == ["dab_area_fraction", "cells_rank"]
    ranks = [float(v) for v, s in zip(table["cells_rank"], table["scored"], strict=True) if s == "true"]
    assert sorted(ranks)[0] >= 1  # rank 0, the set-aside tile, is not scored
    features = json.loads((out / "predictions.geojson").read_text())["features"]
    measured = features[0]["properties"]["measurements"]
    assert "n_cells" in measured and "cells_rank" not in measured  # geojson=False
    heatmap = read_heatmap(out / "heatmap.zarr")
    assert heatmap.channels[-2:] == ("cells_rank", "tissue_fraction")
    with np.load(out / "cells.npz") as cells:
        assert len(cells["x_level0_px"]) == np.nansum(scorer.seen.measurements["n_cells"])
    with open(out / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len([a for a in scorer.seen.tile_arrays["cells"] if a is not None])


def test_batch_rows_and_summary_csv_carry_the_declared_summary_field(
    scored: tuple[Any, Path, SlideAwareScorer],
) -> None:
    from wsi_her2.batch.summary import csv_columns, result_row, summary_csv_text

    result, _, _ = scored
    row = result_row("core.jpg", "/data/core.jpg", result, 1.0)
    declared = [f.key for f in result.outputs.summary_fields]
    assert row["scorer_summary"] == {k: result.scorer_summary[k] for k in declared}
    columns = csv_columns([row])
    assert columns.index("cells_total") > columns.index("membrane_index") > columns.index("fraction(3+)")
    text = summary_csv_text([row])
    assert f",{result.scorer_summary['cells_total']}," in text.splitlines()[1]


def test_the_viewer_reads_the_declared_columns_from_the_report(scored: tuple[Any, Path, SlideAwareScorer]) -> None:
    from wsi_her2.viewer.result import ScoreView

    result, out, _ = scored
    view = ScoreView(out)
    grid = result.slide.grid
    i = int(np.flatnonzero(result.predictions.scored)[0])
    readout = view.tile_readout(int(grid.col[i]), int(grid.row[i]))
    assert readout["value_columns"]["cells_rank"] == "rank by cells"
    assert readout["probability_columns"]["2+"] == "fraction_cells(2+)"
    assert view.summary()["scorer_summary"] == result.scorer_summary


def test_a_file_the_schema_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="SCORER_FILES"):
        ScorerOutputs(files=("secret.bin",))


def test_the_fingerprint_without_loading_equals_the_scorer_s() -> None:
    from wsi_her2.models import model_fingerprint
    from wsi_her2.models.dab import DabConfig

    cfg = DabConfig(work_mpp=0.4)
    assert model_fingerprint("dab", dab=cfg) == DabScorer(cfg).fingerprint() != DabScorer().fingerprint()
