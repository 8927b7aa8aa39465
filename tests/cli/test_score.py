"""wsi-her2 score end to end: the DAB scorer on real cores, trained models, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import fixture_path
from wsi_her2.outputs.heatmap import read_heatmap
from wsi_her2.outputs.tile_table import read_csv_columns

OUTPUTS = {"report.json", "heatmap.zarr", "tiles.csv", "predictions.geojson", "overlay.png"}
DAB_OUTPUTS = OUTPUTS | {"cells.npz"}


@pytest.fixture(scope="module")
def checkpoint_he(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classifier with fixed random weights, carded as H&E, 1024-px tiles."""
    import torch

    from wsi_her2.models.card import ModelCard
    from wsi_her2.models.loading import save_checkpoint
    from wsi_her2.models.registry import create_model

    torch.manual_seed(0)
    card = ModelCard(architecture="test_resnet", classes=("0", "1+", "2+", "3+"), stain="he", name="tiny-he",
                     label_granularity="tile")  # fmt: skip
    return save_checkpoint(create_model("test_resnet", 4), card, tmp_path_factory.mktemp("ckpt") / "tiny")


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize(
    ("core", "expected"), [("her2-tma-core-score0.jpg", "0"), ("her2-tma-core-score2plus.jpg", "2+")]
)
def test_dab_scorer_gives_the_pathologists_scores_on_the_real_cores(
    run_cli, tmp_path: Path, core: str, expected: str
) -> None:
    out = tmp_path / "out"
    result = run_cli("score", fixture_path("ihc", core), "--mpp", "0.25", "-o", out, "--workers", "2", "-q")
    assert result.exit_code == 0, result.stderr
    report = _report(out)
    assert report["result"]["score"] == expected and report["result"]["rule"] == "cells"
    assert {p.name for p in out.iterdir()} == DAB_OUTPUTS
    assert sum(report["result"]["cell_counts"].values()) > 1000
    assert report["model"]["kind"] == "dab" and report["model_facts"]["stain_check"]["stain"] == "ihc"
    # The guideline's denominator is tumour cells: both denominators, the tumour count and the index.
    summary = report["result"]["scorer_summary"]
    assert summary["denominator"] == "tumour cells"
    assert 500 < summary["n_tumour_cells"] < summary["n_cells_detected"]
    assert sum(summary["tumour_cells"]["counts"].values()) == summary["n_tumour_cells"]
    assert sum(report["result"]["cell_counts"].values()) == summary["n_tumour_cells"]
    assert sum(summary["all_cells"]["counts"].values()) == summary["n_cells_detected"]
    assert (summary["membrane_index"] < 10) if expected == "0" else (summary["membrane_index"] > 100)
    assert summary["membrane_levels"]["source"] == "slide nuclei"
    tiles = read_csv_columns(out / "tiles.csv")
    assert {"n_tumour_cells", "membrane_index"} <= set(tiles)
    scored = np.asarray(tiles["scored"]) == "true"
    assert np.nansum(np.asarray(tiles["n_tumour_cells"], float)[scored]) == summary["n_tumour_cells"]
    with np.load(out / "cells.npz", allow_pickle=False) as cells:
        assert int(cells["is_tumour"].sum()) == summary["n_tumour_cells"]
        assert len(cells["x_level0_px"]) == summary["n_cells_detected"]


def test_ki67_nuclear_stain_is_not_her2_positive(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("score", fixture_path("ihc", "ki67-ihc-hamamatsu-crop.ome.tif"), "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 0, result.stderr
    result = _report(out)["result"]
    # Faint (1+) membranes on 15% of the cells, almost no 2+/3+: 1+ by the cells rule, HER2-negative.
    assert result["score"] == "1+" and result["clinical_group"] == "negative" and result["rule"] == "cells"


def test_dab_scorer_refuses_h_and_e(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("score", fixture_path("slides", "aperio-cmu1-small-region.svs"), "-o", out, "--workers", "0")
    assert result.exit_code == 8, result.stderr
    assert "H&E" in result.stderr and "--model" in result.stderr
    assert not out.exists() or not (out / "report.json").exists()


def test_no_tissue_gives_a_report_saying_so_and_exit_6(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("score", fixture_path("slides", "hamamatsu-fluorescence-dapi.ndpi"), "-o", out, "-q")
    assert result.exit_code == 6
    report = _report(out)
    assert report["status"] == "no_tissue" and report["result"] is None and "fluorescence" in report["message"]


def test_stroma_without_tumour_cells_is_not_scored_0_but_reported_unscorable(run_cli, tmp_path: Path) -> None:
    import cv2

    from tests.models.dab.conftest import render_tissue

    rgb, boundary = render_tissue(membrane_od=0.2)  # the right half: fibroblasts, lymphocytes, macrophages
    image = tmp_path / "stroma.png"
    cv2.imwrite(str(image), cv2.cvtColor(np.ascontiguousarray(rgb[:, boundary + 20 :]), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    result = run_cli("score", image, "--mpp", 0.5, "--tile-size", 256, "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 6, result.stderr
    assert "no tile could be scored" in result.stderr and "no tumour cell" in result.stderr
    report = _report(out)
    assert report["status"] == "no_tissue" and report["result"] is None  # no HER2 0 called on no tumour


@pytest.mark.models
def test_trained_model_on_a_synthetic_slide_writes_consistent_outputs(
    run_cli, tmp_path: Path, synthetic_slide, checkpoint_he: Path
) -> None:
    path, _ = synthetic_slide
    out = tmp_path / "out"
    result = run_cli("score", path, "--model", checkpoint_he, "-o", out, "--workers", "2", "-q", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = _report(out)
    assert report["model"]["weights_sha256"] and report["runtime"]["device"] == "cpu"
    assert report["result"]["rule"] == "asco_cap" and set(report["result"]["rules"]) == {
        "asco_cap",
        "mean_probability",
    }
    table = read_csv_columns(out / "tiles.csv")
    scored = [i for i, v in enumerate(table["scored"]) if v == "true"]
    assert len(scored) == report["tiles"]["scored"] > 10
    probs = np.array([[float(table[f"p({c})"][i]) for c in ("0", "1+", "2+", "3+")] for i in scored])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # Each scored tile's probabilities are at its heatmap pixel.
    heatmap = read_heatmap(out / "heatmap.zarr")
    for i in scored[:5]:
        row, col = heatmap.pixel_of(int(table["x_level0_px"][i]), int(table["y_level0_px"][i]))
        assert np.allclose(heatmap.data[:4, row, col], probs[scored.index(i)], atol=1e-6)
    geo = json.loads((out / "predictions.geojson").read_text())
    assert len(geo["features"]) == len(scored)
    feature = geo["features"][0]
    assert feature["properties"]["objectType"] == "tile"
    assert feature["properties"]["classification"]["name"] in ("0", "1+", "2+", "3+")
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5


@pytest.mark.models
def test_same_slide_same_model_same_result_on_cpu(
    run_cli, tmp_path: Path, synthetic_slide, checkpoint_he: Path
) -> None:
    path, _ = synthetic_slide
    reports = []
    for name, workers in (("a", "0"), ("b", "2")):
        assert (
            run_cli(
                "score", path, "--model", checkpoint_he, "-o", tmp_path / name, "--workers", workers, "-q"
            ).exit_code
            == 0
        )
        reports.append(read_csv_columns(tmp_path / name / "tiles.csv"))
    assert reports[0]["p(3+)"] == reports[1]["p(3+)"]


@pytest.mark.models
def test_trained_he_model_refuses_an_ihc_slide(run_cli, tmp_path: Path, checkpoint_he: Path) -> None:
    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "--model", checkpoint_he, "-o", tmp_path / "o", "--workers", "0")
    assert result.exit_code == 8 and "H&E" in result.stderr
    forced = run_cli("score", core, "--mpp", "0.25", "--model", checkpoint_he, "-o", tmp_path / "o", "--workers", "0",
                     "--no-stain-check", "-q")  # fmt: skip
    assert forced.exit_code == 0, forced.stderr


def test_roi_restricts_scoring_and_reports_the_area(run_cli, tmp_path: Path) -> None:
    roi = tmp_path / "roi.geojson"
    square = [[1024, 1024], [3072, 1024], [3072, 3072], [1024, 3072], [1024, 1024]]
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}}]}))  # fmt: skip
    out = tmp_path / "out"
    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "--roi", roi, "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 0, result.stderr
    report = _report(out)
    assert report["roi_area_um2"] == pytest.approx(2048 * 2048 * 0.25**2)
    table = read_csv_columns(out / "tiles.csv")
    xs = np.array(table["x_level0_px"], int)
    assert xs.min() >= 0 and xs.max() <= 3072 and report["tiles"]["scored"] <= 9


@pytest.mark.models
def test_dab_scorer_on_a_missing_gpu_is_a_device_error(run_cli, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the DAB scorer would run on it")
    image = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = run_cli("score", image, "--mpp", "0.25", "-o", tmp_path / "out", "--device", "cuda")
    assert result.exit_code == 9 and "CUDA" in result.stderr and "--device cpu" in result.stderr
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--model", "/nonexistent/ckpt"], 3, "checkpoint not found"),
        (["--model", "dab", "--device", "cpu", "--rule", "cells"], 0, ""),
        (["--rule", "bogus"], 2, "bogus"),
    ],
)
def test_model_option_errors(run_cli, tmp_path: Path, args: list[str], code: int, words: str) -> None:
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--workers", "0", "-q", *args)
    assert result.exit_code == code, result.stderr
    assert words in result.stderr


def test_json_prints_the_report(run_cli, tmp_path: Path) -> None:
    core = fixture_path("ihc", "her2-tma-core-score0.jpg")
    result = run_cli("score", core, "--mpp", "0.25", "-o", tmp_path / "o", "--workers", "0", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["result"]["score"] == "0"


@pytest.mark.models
def test_a_checkpoint_from_train_scores_a_slide(run_cli, tmp_path: Path, tmp_path_factory) -> None:
    """The output of `wsi-her2 train` is what `score --model` takes; its card steers the rule."""
    from tests.training.helpers import trained_checkpoint
    from wsi_her2.synthetic import write_synthetic_slide

    checkpoint = trained_checkpoint(tmp_path_factory.getbasetemp())
    slide = tmp_path / "ihc.svs"
    write_synthetic_slide(slide, width=4096, height=3072, stain="ihc", seed=3)
    out = tmp_path / "out"
    result = run_cli("score", slide, "--model", checkpoint, "--tile-size", "1024", "-o", out, "--workers", "0", "-q")
    assert result.exit_code == 0, result.stderr
    report = _report(out)
    assert report["model"]["architecture"] == "test_resnet" and report["model"]["stain"] == "ihc"
    assert report["model_card"]["label_granularity"] == "slide"
    assert report["result"]["rule"] == "mean_probability"  # BCI-style slide-level labels
    assert report["grid"]["tile_size_level0_px"] == 1024  # --tile-size wins over the card's 64-px patches


def test_decode_gpu_where_tiles_cannot_be_decoded_there_is_one_line_and_exit_9(run_cli, tmp_path: Path) -> None:
    core = fixture_path("ihc", "ki67-ihc-hamamatsu-crop.ome.tif")
    result = run_cli("score", core, "-o", tmp_path / "out", "--workers", "0", "--decode", "gpu", "-q")
    assert result.exit_code == 9
    assert result.stderr.startswith("wsi-her2: error: --decode gpu") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
