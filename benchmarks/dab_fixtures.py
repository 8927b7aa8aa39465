"""The DAB scorer's figures on the real fixtures and on restained variants (the table in docs/dab-scorer.md).

Each image is scored as ``wsi-her2 score`` scores a slide (tiles of 256 µm at 0.5 µm/px, one
background, one tumour gate: :func:`wsi_her2.models.dab.slide_cells.score_image`), once as it is and
once per restained variant: DAB only scaled (a weaker chromogen step), all optical densities scaled
(a thinner section or a brighter scan), JPEG recompression.

Usage: python benchmarks/dab_fixtures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.dab.conftest import load_rgb, resample, restain  # noqa: E402
from wsi_her2.models.dab import DabConfig, estimate_stain_vectors  # noqa: E402
from wsi_her2.models.dab.slide_cells import score_image  # noqa: E402

FIXTURES = ROOT / ".." / "shared" / "fixtures" / "ihc"
CORES = (("HER2 core, score 0", "her2-tma-core-score0.jpg", 0.25), ("HER2 core, score 2+", "her2-tma-core-score2plus.jpg", 0.25),
         ("Ki67 crop (nuclear DAB)", "ki67-ihc-hamamatsu-crop.ome.tif", 0.23))  # fmt: skip
VARIANTS = (("as scanned", {}), ("JPEG quality 60", {"jpeg_quality": 60}), ("all OD x0.75", {"all_scale": 0.75}),
            ("all OD x1.33", {"all_scale": 1.33}), ("DAB x0.25 (faint)", {"dab_scale": 0.25}),
            ("DAB x0.25, all OD x0.75", {"dab_scale": 0.25, "all_scale": 0.75}), ("DAB x0.15", {"dab_scale": 0.15}))  # fmt: skip


def row(label: str, rgb: np.ndarray, cfg: DabConfig) -> str:
    thumb = cv2.resize(rgb, (rgb.shape[1] // 4, rgb.shape[0] // 4), interpolation=cv2.INTER_AREA)
    stains = estimate_stain_vectors(thumb, None, cfg)
    s = score_image(rgb, stains, cfg, min_tissue_fraction=0.25).summary
    t, a = s["tumour_cells"]["fractions"], s["all_cells"]["fractions"]
    score = ("0", "1+", "2+", "3+")[_rule(s["tumour_cells"]["counts"], cfg)]
    pct = lambda f: " / ".join(f"{100 * f[c]:.1f}" for c in ("0", "1+", "2+", "3+"))  # noqa: E731
    return (f"| {label} | {s['stain_intensity']['factor']:.2f} | {s['membrane_levels']['background_od']:.3f} | "
            f"{s['n_cells_detected']:,} | {s['n_tumour_cells']:,} | {pct(t)} | {pct(a)} | "
            f"{s['membrane_index'] or 0:.1f} | **{score}** |")  # fmt: skip


def _rule(counts: dict[str, int], cfg: DabConfig) -> int:
    from wsi_her2.models.dab import classify_cell_counts

    return classify_cell_counts([counts[c] for c in ("0", "1+", "2+", "3+")], cfg)


def main() -> None:
    cfg = DabConfig()
    print("| image | stain factor | background OD | cells | tumour cells | % 0/1+/2+/3+ (tumour) "
          "| % 0/1+/2+/3+ (all) | index | score |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, filename, mpp in CORES:
        path = FIXTURES / filename
        if not path.exists():
            print(f"| {name} | fixture not found |")
            continue
        work = resample(load_rgb(path), mpp, cfg.work_mpp)
        thumb = cv2.resize(work, (work.shape[1] // 4, work.shape[0] // 4), interpolation=cv2.INTER_AREA)
        stains = estimate_stain_vectors(thumb, None, cfg)
        variants = VARIANTS if "HER2" in name else VARIANTS[:1]
        for label, change in variants:
            if "score 0" in name and "dab_scale" in change:
                continue  # no DAB to scale
            rgb = restain(work, stains, **change) if change else work
            print(row(f"{name}, {label}", rgb, cfg))


if __name__ == "__main__":
    main()
