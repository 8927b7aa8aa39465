"""Synthetic HER2 IHC cases with a known truth, and case lists, for the validation tests.

A case image is a square of rendered cells (``tests/models/dab/conftest.py``: hematoxylin nuclei,
DAB membranes of a chosen OD and completeness) on glass, saved as PNG at 0.5 µm/px: 512 x 512 µm
of tissue, four DAB-scorer tiles, a fraction of a second to score. The class mix is set by the
cell pattern, e.g. one faint cell in sixteen gives a tumour that is 6% faint (1+ cells).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.models.dab.conftest import CellSpec, render_tile, render_tissue

MPP = 0.5
ZERO = [CellSpec()]
FAINT = CellSpec(0.12, 0.4)  # 1+: faint, incomplete
MODERATE = CellSpec(0.2, 1.0)  # 2+: weak to moderate, complete
INTENSE = CellSpec(0.6, 1.0)  # 3+: intense, complete
PATTERNS: dict[str, list[CellSpec]] = {
    "0": ZERO,
    "1+": [FAINT],
    "2+": [MODERATE, CellSpec(), CellSpec()],
    "3+": [INTENSE],
    "faint6": [FAINT] + [CellSpec()] * 15,  # 6% faint cells: 0 by the 10% rule, 1+ by a lower cut-off
}


def write_case_image(path: Path, pattern: str, *, seed: int = 0, size_px: int = 1024, margin_px: int = 128) -> Path:
    """A synthetic IHC image of ``PATTERNS[pattern]`` cells with a glass margin, as PNG."""
    tissue = render_tile(PATTERNS[pattern], size_px=size_px, seed=seed)
    image = np.full((size_px + 2 * margin_px, size_px + 2 * margin_px, 3), 242, np.uint8)
    image[margin_px : margin_px + size_px, margin_px : margin_px + size_px] = tissue
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def write_tissue_image(path: Path, membrane_od: float, *, seed: int = 0, margin_px: int = 128) -> Path:
    """Synthetic tissue (``render_tissue``: a carcinoma nest beside stroma) with membranes of ``membrane_od``, as PNG.

    At 0.5 µm/px the scorer's levels on it are about 0.053 (1+), 0.13 (2+) and 0.33 (3+) OD of line
    signal, and the nest's membranes give a signal of about 0.78 x their OD: 0.06 reads as faint
    staining below the 1+ level (0 by the defaults), 0.25 as 2+, 0.5 as 3+.
    """
    tissue, _ = render_tissue(size_px=1024, seed=seed, membrane_od=membrane_od)
    image = np.full((1024 + 2 * margin_px, 1024 + 2 * margin_px, 3), 242, np.uint8)
    image[margin_px : margin_px + 1024, margin_px : margin_px + 1024] = tissue
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def write_restained_crop(path: Path, source: Path, dab_scale: float) -> Path:
    """The central quarter of a real core (``restain``: a weaker DAB step, re-encoded as JPEG), as PNG."""
    from tests.models.dab.conftest import load_rgb, restain
    from wsi_her2.models.dab import DabConfig, estimate_stain_vectors

    rgb = load_rgb(source)
    h, w = rgb.shape[:2]
    crop = np.ascontiguousarray(rgb[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2])
    thumb = cv2.resize(crop, (crop.shape[1] // 8, crop.shape[0] // 8), interpolation=cv2.INTER_AREA)
    image = restain(crop, estimate_stain_vectors(thumb, None, DabConfig()), dab_scale=dab_scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def write_square_roi(path: Path, x0: float, y0: float, x1: float, y1: float) -> Path:
    """A rectangular ROI (level-0 pixels) as QuPath-style GeoJSON."""
    import json

    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "annotation"},
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def write_cases_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """A case list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path


def read_case_rows(out: Path) -> dict[str, dict[str, str]]:
    """A validation's ``cases.csv`` by case id."""
    with open(out / "cases.csv", newline="", encoding="utf-8") as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def cli_result(capsys: Any, *args: object) -> Any:
    """Run ``wsi-her2 ARGS`` in process as the console script does; the exit code and captured output."""
    from tests.cli.conftest import Result
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    capsys.readouterr()
    code = run_guarded(cli, [str(a) for a in args])
    out = capsys.readouterr()
    return Result(code, out.out, out.err)
