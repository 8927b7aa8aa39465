"""Fixtures of the viewer tests: score folders whose tile classes are known, batch folders, servers, Chromium."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CLASSES = ("0", "1+", "2+", "3+")
TILE = 512
WIDTH, HEIGHT = 4000, 3000  # not multiples of the tile: edge tiles run past the slide
NO_TILE = -1
DROPPED = -2


@dataclass
class FakeResult:
    """A score folder made by hand: the class of each grid position is known."""

    folder: Path
    slide: Path
    kind: str
    class_map: np.ndarray  # (rows, cols): class index, NO_TILE or DROPPED
    tile_size: int = TILE
    extra: dict[str, Any] = field(default_factory=dict)

    def tile_at(self, cls: str) -> tuple[int, int]:
        """(col, row) of the first grid position predicted ``cls``."""
        rows, cols = np.nonzero(self.class_map == CLASSES.index(cls))
        return int(cols[0]), int(rows[0])

    def centre(self, col: int, row: int) -> tuple[float, float]:
        """Level-0 centre of a grid position."""
        return (col + 0.5) * self.tile_size, (row + 0.5) * self.tile_size

    def probability(self, col: int, row: int, cls: str) -> float:
        k = int(self.class_map[row, col])
        return 0.85 if CLASSES[k] == cls else 0.05


def scorer_outputs(kind: str) -> Any:
    """What the real scorer of ``kind`` declares for its result folder."""
    from wsi_her2.models.dab.scorer import DabScorer
    from wsi_her2.outputs.schema import ScorerOutputs

    return DabScorer().outputs() if kind == "dab" else ScorerOutputs("p")


def no_tissue_report(slide: str, **slide_facts: Any) -> dict[str, Any]:
    """The report of a slide without tissue, as `score` writes it (DAB scorer)."""
    return {"command": "score", "status": "no_tissue", "result": None, "message": "no tissue found",
            "slide": {"path": slide, "width": 100, "height": 100, **slide_facts},
            "model": {"kind": "dab", "classes": list(CLASSES)}, "grid": {},
            "scorer_outputs": scorer_outputs("dab").to_dict(CLASSES)}  # fmt: skip


def class_map_for(rows: int, cols: int) -> np.ndarray:
    """(r + c) % 4 everywhere, with no tile at (0, 0) and a dropped tile at (1, 0)."""
    grid = (np.add.outer(np.arange(rows), np.arange(cols)) % 4).astype(np.int64)
    grid[0, 0] = NO_TILE
    grid[0, 1] = DROPPED
    return grid


def make_score_folder(
    out: Path, slide: Path, *, kind: str = "deep", width: int = WIDTH, height: int = HEIGHT
) -> FakeResult:
    """Write a complete score folder (report.json, heatmap.zarr, tiles.csv, no overlay.png) for ``slide``."""
    from wsi_her2.config import GridConfig
    from wsi_her2.outputs.atomic import ensure_dir, write_json
    from wsi_her2.outputs.heatmap import write_heatmap
    from wsi_her2.outputs.tile_table import write_csv_columns
    from wsi_her2.tiling.grid import TileGrid

    out = ensure_dir(out)
    rows, cols = -(-height // TILE), -(-width // TILE)
    class_map = class_map_for(rows, cols)
    rr, cc = np.nonzero(class_map != NO_TILE)
    n = len(rr)
    grid = TileGrid(
        x=cc * TILE, y=rr * TILE, col=cc, row=rr, tissue_fraction=np.full(n, 0.9), tile_size_px=TILE, stride_px=TILE,
        n_cols=cols, n_rows=rows, slide_width=width, slide_height=height, mpp=0.5, positions_on_tissue=n,
        config=GridConfig(),
    )  # fmt: skip
    labels = class_map[rr, cc]
    scored = labels >= 0
    probs = np.full((n, 4), np.nan, np.float32)
    probs[scored] = 0.05
    probs[np.flatnonzero(scored), labels[scored]] = 0.85
    prefix = "fraction_cells" if kind == "dab" else "p"
    names = [f"{prefix}({c})" for c in CLASSES]
    predicted = np.where(scored, labels, np.nan)
    channels = [*names, "predicted_class"]
    columns = [probs[:, i] for i in range(4)] + [predicted]
    colors = ["7070E1", "FFD700", "E19632", "C83232", "FFFFFF"]
    windows = [(0.0, 1.0)] * 4 + [(0.0, 3.0)]
    n_cells = np.where(scored, 100 + np.arange(n), np.nan)
    if kind == "dab":
        channels += ["mean_membrane_dab_od", "n_cells"]
        columns += [np.where(scored, 0.2, np.nan), n_cells]
        colors += ["8B4513", "FFFFFF"]
        windows += [(0.0, 0.6), (0.0, float(np.nanmax(n_cells)))]
    channels.append("tissue_fraction")
    columns.append(grid.tissue_fraction)
    colors.append("00A000")
    windows.append((0.0, 1.0))
    write_heatmap(
        out / "heatmap.zarr", grid, channels, np.stack(columns, axis=1), colors=colors, windows=windows,
        class_channels=range(4), predicted_channel=4, attrs={"classes": list(CLASSES)},
    )  # fmt: skip
    table: dict[str, Any] = {
        "tile_id": np.arange(n), "col": cc, "row": rr, "x_level0_px": cc * TILE, "y_level0_px": rr * TILE,
        "width_level0_px": np.full(n, TILE), "height_level0_px": np.full(n, TILE),
        "tissue_fraction": grid.tissue_fraction, "scored": scored,
        "drop_reason": ["" if s else "blur" for s in scored],
        "predicted_class": [CLASSES[k] if k >= 0 else "" for k in labels],
    }  # fmt: skip
    for i, name in enumerate(names):
        table[name] = probs[:, i]
    if kind == "dab":
        table["n_cells"] = n_cells
        for i, suffix in enumerate(("0", "1plus", "2plus", "3plus")):
            table[f"n_cells_{suffix}"] = np.where(scored, np.where(labels == i, 85, 5), np.nan)
        table["mean_membrane_dab_od"] = np.where(scored, 0.2, np.nan)
    write_csv_columns(out / "tiles.csv", table)
    fractions = {c: float(np.mean(labels[scored] == i)) for i, c in enumerate(CLASSES)}
    model = {"name": f"fake-{kind}", "kind": kind, "architecture": "none" if kind == "dab" else "resnet18",
             "classes": list(CLASSES), "stain": "ihc", "weights_sha256": None}  # fmt: skip
    outputs = scorer_outputs(kind)
    report = {
        "wsi_her2_version": "test",
        "command": "score",
        "created": "2026-01-01T00:00:00+00:00",
        "status": "done",
        "slide": {"path": str(slide), "path_resolved": str(slide.resolve()), "width": width, "height": height,
                  "mpp_used": 0.5, "vendor": "aperio", "levels": []},
        "result": {
            "score": "3+", "rule": "asco_cap",
            "rules": {"asco_cap": {"score": "3+", "fractions": fractions}, "mean_probability": {"score": "2+"}},
            "clinical_group": "positive", "clinical_action": "HER2 positive", "her2_low": False,
            "ultralow_like": False, "class_fractions": fractions,
            "cell_counts": {c: 100 * (i + 1) for i, c in enumerate(CLASSES)} if kind == "dab" else {},
            "n_tiles_scored": int(scored.sum()), "n_tiles_dropped": {"blur": int((~scored).sum())},
            "confidence": 0.97, "notes": ["a test note <b>not bold</b>"],
        },
        "model": model,
        "model_card": {**model, "intended_use": "tests only", "tile_size_um": 256.0},
        "scorer_outputs": outputs.to_dict(CLASSES),
        "grid": {**grid.summary()},
        "caveats": ["Not validated for clinical use."],
    }  # fmt: skip
    write_json(out / "report.json", report)
    return FakeResult(out, slide, kind, class_map)


@pytest.fixture(scope="session")
def viewer_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4000 x 3000 IHC-like SVS, tissue everywhere, at 0.5 µm/px."""
    from wsi_her2.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("viewer-slide") / "viewer.svs"
    write_synthetic_slide(path, width=WIDTH, height=HEIGHT, mpp=0.5, stain="ihc",
                          tissue_map=np.ones((8, 8), bool), downsamples=(1, 4), seed=3)  # fmt: skip
    return path


@pytest.fixture(scope="session")
def deep_result(tmp_path_factory: pytest.TempPathFactory, viewer_slide: Path) -> FakeResult:
    """A trained-model score folder with known classes."""
    return make_score_folder(tmp_path_factory.mktemp("deep") / "out", viewer_slide, kind="deep")


@pytest.fixture(scope="session")
def dab_result(tmp_path_factory: pytest.TempPathFactory, viewer_slide: Path) -> FakeResult:
    """A DAB-scorer score folder with known classes and cell counts."""
    return make_score_folder(tmp_path_factory.mktemp("dab") / "out", viewer_slide, kind="dab")


@pytest.fixture(scope="session")
def batch_dir(tmp_path_factory: pytest.TempPathFactory, viewer_slide: Path) -> Path:
    """A batch folder as `wsi-her2 batch` writes it: two scored slides (one nested), one failed (no folder)."""
    import json

    root = tmp_path_factory.mktemp("batch") / "batch_out"
    make_score_folder(root / "alpha.svs", viewer_slide, kind="deep")
    make_score_folder(root / "cases" / "beta.svs", viewer_slide, kind="dab")
    (root / "gamma.svs").mkdir()  # a failed slide's folder keeps no report
    rows = [
        {"slide": "alpha.svs", "status": "done", "score": "3+", "clinical_group": "positive", "seconds": 1.5,
         "class_fractions": {"0": 0.25, "3+": 0.75}, "n_tiles_scored": 40, "output": "alpha.svs",
         "path": "/data/alpha.svs", "message": ""},
        {"slide": "cases/beta.svs", "status": "done", "output": "cases/beta.svs"},  # columns missing: from the report
        {"slide": "gamma.svs", "status": "failed", "error_type": "SlideReadError", "output": "gamma.svs",
         "message": "unreadable slide <x>"},
    ]  # fmt: skip
    summary = {"command": "batch", "counts": {"done": 2, "failed": 1}, "slides": rows}
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def real_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `score` folder: the DAB scorer on a HER2 2+ TMA core (skips without ../shared/fixtures)."""
    from tests.conftest import fixture_path
    from wsi_her2.settings import ScoreSettings, run_score

    slide = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    out = tmp_path_factory.mktemp("real") / "out"
    settings = ScoreSettings.from_sections({"loader": {"workers": 0}})
    run_score(slide, out, settings, mpp=0.25)
    return out


@pytest.fixture(scope="module")
def deep_server(deep_result: FakeResult) -> Iterator[Any]:
    from wsi_her2.viewer.server import ViewerServer

    with ViewerServer(deep_result.folder) as server:
        yield server


@pytest.fixture(scope="module")
def dab_server(dab_result: FakeResult) -> Iterator[Any]:
    from wsi_her2.viewer.server import ViewerServer

    with ViewerServer(dab_result.folder) as server:
        yield server


@pytest.fixture(scope="module")
def batch_server(batch_dir: Path) -> Iterator[Any]:
    from wsi_her2.viewer.server import ViewerServer

    with ViewerServer(batch_dir) as server:
        yield server


# -- the browser ---------------------------------------------------------------------------------
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1280,900",
    "--force-device-scale-factor=1", "--disable-dev-shm-usage",
)  # fmt: skip


def _browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None and Path("/usr/bin/chromium").exists():
        browser = "/usr/bin/chromium"
    if driver is None and Path("/usr/bin/chromedriver").exists():
        driver = "/usr/bin/chromedriver"
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Selenium (skips without chromium, chromedriver or selenium)."""
    paths = _browser_paths()
    if paths is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wsi-her2-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]  # a fixed binary and driver: Selenium Manager never downloads anything
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
