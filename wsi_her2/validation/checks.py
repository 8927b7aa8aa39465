"""The CAP QIA reproducibility checks: the same result on a rerun, and when the ROI is drawn differently.

* **Rerun** (CAP QIA statement 3, reproducibility within and between runs): cases are scored again,
  in reverse order, with a freshly loaded scorer, into ``OUT/checks/rerun/<case>/``; the score, the
  index, the class fractions, the cell counts, the whole tile table and every per-cell table the
  scorer writes must be identical.
* **ROI** (statement 4, reproducibility between operators' regions of interest): each case's ROI
  is shrunk and grown by ``jitter_um`` and shifted by it along x and along y, and the case is
  scored again with each (``OUT/checks/roi/<case>/<variant>/``). A case without an ROI uses its
  tissue outline (as ``score`` finds it) instead, scored unchanged as well, since an outline
  restricts cells slightly differently from no ROI at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, mapping

from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.schema import TILES
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.validation.cases import Case
from wsi_her2.validation.scoring import CaseRun, case_fractions, case_index

DEFAULT_JITTER_UM = 50.0
OUTLINE_VARIANT = "tissue_outline"

ScoreFunction = Callable[[Case, Path, Path | None], CaseRun]


def choose_subset(case_ids: Sequence[str], n: int | None, seed: int) -> list[int]:
    """Indices of ``n`` cases drawn without replacement (seeded), in list order; all when n is None."""
    if n is None or n >= len(case_ids):
        return list(range(len(case_ids)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(len(case_ids), size=max(0, n), replace=False))


def compare_runs(first: CaseRun, second: CaseRun) -> list[str]:
    """What differs between two scorings of one case (empty when identical)."""
    if first.status != second.status:
        return [f"status {first.status} vs {second.status}"]
    if first.scores is None or second.scores is None:
        return []
    a, b = first.scores.result, second.scores.result
    diffs = [
        f"{key}: {a.get(key)!r} vs {b.get(key)!r}"
        for key in ("score", "cell_counts", "n_tiles_scored")
        if a.get(key) != b.get(key)
    ]
    index_a, index_b = case_index(first.scores)[0], case_index(second.scores)[0]
    if index_a != index_b:
        diffs.append(f"index: {index_a!r} vs {index_b!r}")
    fa, fb = case_fractions(first.scores), case_fractions(second.scores)
    diffs += [
        f"fraction {c}: {fa.get(c)!r} vs {fb.get(c)!r}" for c in sorted(set(fa) | set(fb)) if fa.get(c) != fb.get(c)
    ]
    tiles_a, tiles_b = first.folder / TILES, second.folder / TILES
    if tiles_a.is_file() != tiles_b.is_file() or (tiles_a.is_file() and tiles_a.read_bytes() != tiles_b.read_bytes()):
        diffs.append(f"{TILES} differs")
    for name in sorted(set(first.scores.outputs.files) | set(second.scores.outputs.files)):
        if not _same_table(first.folder / name, second.folder / name):
            diffs.append(f"{name} differs")
    return diffs


def _same_table(a: Path, b: Path) -> bool:
    # .npz archives carry their write time: compare the arrays, not the bytes.
    if a.is_file() != b.is_file() or not a.is_file():
        return a.is_file() == b.is_file()
    if a.suffix != ".npz":
        return a.read_bytes() == b.read_bytes()
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        return sorted(x.files) == sorted(y.files) and all(_same_array(x[k], y[k]) for k in x.files)


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=bool(np.issubdtype(a.dtype, np.inexact)))


def rerun_check(
    cases: Sequence[Case],
    runs: Sequence[CaseRun],
    out_dir: Path,
    score: ScoreFunction,
    *,
    n: int | None,
    seed: int,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Score a (seeded) subset of the scored cases again and compare everything exactly.

    Args:
        cases: the cases.
        runs: their first scoring, same order.
        out_dir: ``OUT/checks/rerun``.
        score: scores a case into a folder (with an ROI file or None), with a freshly loaded scorer.
        n: cases to rerun; None for all.
        seed: seed of the subset.
        progress: progress callback.
    """
    scored = [i for i, r in enumerate(runs) if r.status == "done"]
    chosen = [scored[i] for i in choose_subset([cases[i].case_id for i in scored], n, seed)]
    rows = []
    for k, i in enumerate(reversed(chosen)):  # reverse order: no result may depend on what ran before
        report(progress, ProgressEvent("rerun", k, len(chosen), "cases", cases[i].case_id))
        again = score(cases[i], out_dir / cases[i].case_id, cases[i].roi)
        diffs = compare_runs(runs[i], again) if again.status != "failed" else [f"failed: {again.message}"]
        rows.append(
            {"case": cases[i].case_id, "identical": not diffs, "differences": diffs, "folder": str(again.folder)}
        )
    report(progress, ProgressEvent("rerun", len(chosen), len(chosen), "cases"))
    rows.sort(key=lambda r: str(r["case"]))
    return {
        "statement": "CAP QIA 3: results reproducible within and between runs",
        "method": "cases scored again in reverse order with a freshly loaded scorer; score, index, class "
        "fractions, cell counts, tiles.csv and the per-cell table compared exactly",
        "cases_checked": len(rows),
        "of_scored_cases": len(scored),
        "subset_seed": seed if n is not None and n < len(scored) else None,
        "identical": sum(r["identical"] for r in rows),
        "passed": bool(rows) and all(r["identical"] for r in rows),
        "per_case": rows,
    }


def _as_multi(geometry: Any) -> MultiPolygon | None:
    if geometry is None or geometry.is_empty:
        return None
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon) and g.area > 0]
    return MultiPolygon(parts) if parts else None


def roi_variants(outline: MultiPolygon, jitter_px: float, jitter_um: float) -> dict[str, MultiPolygon | None]:
    """The outline shrunk, grown and shifted (x, then y) by ``jitter_px`` level-0 pixels."""
    label = f"{jitter_um:g}um"
    return {
        f"shrink_{label}": _as_multi(outline.buffer(-jitter_px)),
        f"grow_{label}": _as_multi(outline.buffer(jitter_px)),
        f"shift_x_{label}": _as_multi(affinity.translate(outline, jitter_px, 0)),
        f"shift_y_{label}": _as_multi(affinity.translate(outline, 0, jitter_px)),
    }


def write_roi(path: Path, polygons: MultiPolygon, name: str) -> Path:
    """An ROI as a GeoJSON annotation (level-0 pixels), as ``--roi`` and QuPath read it."""
    feature = {
        "type": "Feature",
        "geometry": mapping(polygons),
        "properties": {"objectType": "annotation", "name": name},
    }
    return write_json(path, {"type": "FeatureCollection", "features": [feature]})


def case_outline(case: Case, run: CaseRun, settings: Any) -> tuple[MultiPolygon, str]:
    """The case's ROI, or (no ROI) its tissue outline found with the run's settings and µm/px."""
    from wsi_her2.roi import load_roi

    if case.roi is not None:
        return load_roi(case.roi), "roi"
    from wsi_her2.slide import open_slide
    from wsi_her2.tissue import detect_tissue

    reader = open_slide(case.slide, mpp=run.mpp_used, backend=settings.backend)
    try:
        return detect_tissue(reader, settings.tissue).polygons, "tissue outline (the case has no ROI)"
    finally:
        reader.close()


def roi_check(
    cases: Sequence[Case],
    runs: Sequence[CaseRun],
    out_dir: Path,
    score: ScoreFunction,
    settings: Any,
    *,
    n: int | None,
    seed: int,
    jitter_um: float = DEFAULT_JITTER_UM,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Score a (seeded) subset of the scored cases with perturbed ROIs; report score changes and index spread."""
    scored = [i for i, r in enumerate(runs) if r.status == "done"]
    chosen = [scored[i] for i in choose_subset([cases[i].case_id for i in scored], n, seed)]
    rows = []
    for k, i in enumerate(chosen):
        case, run = cases[i], runs[i]
        report(progress, ProgressEvent("roi", k, len(chosen), "cases", case.case_id))
        rows.append(_perturb_case(case, run, out_dir / case.case_id, score, settings, jitter_um))
    report(progress, ProgressEvent("roi", len(chosen), len(chosen), "cases"))
    spreads = [r["index_spread"] for r in rows if r["index_spread"] is not None]
    changed = [r["case"] for r in rows if r["score_changed"]]
    return {
        "statement": "CAP QIA 4: results reproducible between operators' regions of interest",
        "method": f"each ROI (or, without one, the tissue outline) shrunk and grown by {jitter_um:g} µm and "
        f"shifted by {jitter_um:g} µm along x and along y; the case scored again with each",
        "jitter_um": jitter_um,
        "cases_checked": len(rows),
        "of_scored_cases": len(scored),
        "subset_seed": seed if n is not None and n < len(scored) else None,
        "cases_with_a_score_change": changed,
        "passed": bool(rows) and not changed,
        "index_spread_max": max(spreads) if spreads else None,
        "index_spread_median": float(np.median(spreads)) if spreads else None,
        "per_case": rows,
    }


def _perturb_case(
    case: Case, run: CaseRun, folder: Path, score: ScoreFunction, settings: Any, jitter_um: float
) -> dict[str, Any]:
    base_score, base_index = run.score, case_index(run.scores)[0]
    row: dict[str, Any] = {"case": case.case_id, "score": base_score, "index": base_index, "variants": {}}
    try:
        outline, source = case_outline(case, run, settings)
    except Exception as exc:  # the check is recorded as not done; the validation goes on
        row.update(source=None, message=f"no outline to perturb: {exc}", score_changed=False, index_spread=None)
        return row
    mpp = float(run.mpp_used or 0) or 1.0
    variants = roi_variants(outline, jitter_um / mpp, jitter_um)
    if case.roi is None:
        variants = {OUTLINE_VARIANT: outline, **variants}
    row["outline"] = source
    ensure_dir(folder)
    for name, polygons in variants.items():
        if polygons is None:
            row["variants"][name] = {"status": "skipped", "message": "the ROI vanishes (smaller than the change)"}
            continue
        roi_file = write_roi(folder / f"{name}.geojson", polygons, name)
        again = score(case, folder / name, roi_file)
        index, _ = case_index(again.scores)
        row["variants"][name] = {
            "status": again.status,
            "score": again.score,
            "index": index,
            "message": again.message or None,
            "folder": str(again.folder),
        }
    done = [v for v in row["variants"].values() if v["status"] == "done"]
    indices = [v["index"] for v in done if v["index"] is not None and math.isfinite(v["index"])]
    if base_index is not None:
        indices.append(base_index)
    row["score_changed"] = any(v["score"] != base_score for v in done)
    row["scores_seen"] = sorted({v["score"] for v in done} | {base_score})
    row["index_spread"] = (max(indices) - min(indices)) if indices else None
    return row
