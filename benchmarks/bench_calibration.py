"""Speed of `validate --calibrate levels`: leave-one-out over ~50 cases of real cell tables, against scoring one case.

Scores the two real cores of ``../shared/fixtures/ihc`` and three software restainings of the 2+
core (a third, a half and a quarter of its DAB) once with the DAB scorer, reads their per-cell
tables as the membrane-level space does, then builds N cases (default 50) by resampling each
source's tumour cells (seeded), with the pathologist scores of their sources (0, 2+, 2+, 1+, 1+).
Reports the seconds of: scoring one real core, loading a case, one rescoring, the rescoring of
every candidate for every case, and the whole leave-one-out cross-validation (with its bootstrap
intervals); and the ratio of the cross-validation to scoring one core, measured in this run.

Usage: python benchmarks/bench_calibration.py [--cases 50] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / ".." / "shared" / "fixtures" / "ihc"
SOURCES = (  # file, DAB scale, pathologist score of the cases drawn from it
    ("her2-tma-core-score0.jpg", 1.0, 0),
    ("her2-tma-core-score2plus.jpg", 1.0, 2),
    ("her2-tma-core-score2plus.jpg", 0.5, 2),
    ("her2-tma-core-score2plus.jpg", 0.35, 1),
    ("her2-tma-core-score2plus.jpg", 0.25, 1),
)


def write_sources(folder: Path) -> list[tuple[Path, int]]:
    from tests.models.dab.conftest import load_rgb, restain
    from wsi_her2.models.dab import DabConfig, estimate_stain_vectors

    out = []
    for name, scale, score in SOURCES:
        rgb = load_rgb(FIXTURES / name)
        if scale != 1.0:
            thumb = cv2.resize(rgb, (rgb.shape[1] // 8, rgb.shape[0] // 8), interpolation=cv2.INTER_AREA)
            rgb = restain(rgb, estimate_stain_vectors(thumb, None, DabConfig()), dab_scale=scale)
        path = folder / f"{Path(name).stem}-dab{scale:g}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out.append((path, score))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="Folder for the images and score folders.")
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"the real fixtures are needed: {FIXTURES}")
    from wsi_her2.config import LoaderConfig
    from wsi_her2.pipeline import run_score
    from wsi_her2.settings import ScoreSettings
    from wsi_her2.validation.calibration import cross_validate
    from wsi_her2.validation.levels import LevelSpace

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    folder.mkdir(parents=True, exist_ok=True)
    settings = ScoreSettings(loader=LoaderConfig(workers=args.workers))
    space = LevelSpace()
    sources, score_s = [], []
    for k, (path, score) in enumerate(write_sources(folder)):
        t0 = time.perf_counter()
        run_score(path, folder / f"score-{k}", settings, mpp=0.25)
        score_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sources.append((space.load_case(folder / f"score-{k}"), score))
        load_s = time.perf_counter() - t0
    space.check_reproduces([s for s, _ in sources], [str(k) for k in range(len(sources))])
    rng = np.random.default_rng(0)
    cases, truth = [], []
    for i in range(args.cases):
        source, score = sources[i % len(sources)]
        pick = rng.integers(0, len(source.partial_od), len(source.partial_od))
        cases.append(
            dataclasses.replace(source, partial_od=source.partial_od[pick], complete_od=source.complete_od[pick])
        )
        truth.append(score)
    candidates = space.candidates()
    t0 = time.perf_counter()
    for _ in range(20):
        space.rescore(cases[0], candidates[-1])
    one_s = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for case in cases:
        for c in candidates:
            space.rescore(case, c)
    all_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cv = cross_validate(space, cases, truth, [str(i) for i in range(len(cases))])
    cv_s = time.perf_counter() - t0
    cells = np.mean([len(c.partial_od) for c in cases])
    print(f"machine: {platform.node()}, {platform.machine()}, Python {platform.python_version()}")
    print(f"scoring one real core (5468 px at 0.25 µm/px, {args.workers} loader processes): "
          f"{np.median(score_s):.2f} s (median of {len(score_s)})")  # fmt: skip
    print(f"loading one case (cells.npz and report): {load_s * 1000:.1f} ms")
    print(f"{len(cases)} cases, {cells:.0f} tumour cells each on average, {len(candidates)} candidates")
    print(f"one rescoring: {one_s * 1e6:.0f} µs; every candidate for every case: {all_s:.2f} s")
    print(f"leave-one-out ({cv.method}, {len(cv.folds)} folds, 2000-resample intervals): {cv_s:.2f} s")
    print(f"ratio: cross-validation / scoring one core = {cv_s / np.median(score_s):.2f}")
    print(f"fitted {cv.fitted}; cross-validated kappa "
          f"{cv.metrics['cross_validated']['quadratic_weighted_kappa']['value']:.3f}, defaults' "
          f"{cv.metrics['defaults']['quadratic_weighted_kappa']['value']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
