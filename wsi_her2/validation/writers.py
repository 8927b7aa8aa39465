"""The validation report's files: the per-case CSV and the figure (the HTML page is in :mod:`.html`).

Each is written under a temporary name and renamed; ``validation.json`` is written last by the runner.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.her2 import CLASS_COLORS_RGB, SCORES_4
from wsi_her2.outputs.atomic import atomic_path, write_text
from wsi_her2.outputs.tile_table import csv_cell
from wsi_her2.validation.html import write_html

__all__ = ["CASE_COLUMNS", "write_case_table", "write_figure", "write_html"]

CASE_COLUMNS = (
    "case",
    "pathologist_score",
    "ish",
    "reference_status",
    "status",
    "tool_score",
    "agree",
    "difference",
    "index",
    "index_source",
    "n_cells",
    "n_tumour_cells",
    "n_tiles_scored",
    "confidence",
    "cv_score",
    "calibrated_score",
    "rerun_identical",
    "roi_score_changed",
    "roi_index_spread",
    "mpp_used",
    "seconds",
    "folder",
    "slide",
    "roi",
    "line",
    "message",
)


def write_case_table(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """One row per case; the columns that no row has (no calibration, no checks) are left out."""
    columns = [c for c in CASE_COLUMNS if any(c in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return write_text(path, buffer.getvalue())


def _colour(label: str | None) -> tuple[float, float, float]:
    rgb = CLASS_COLORS_RGB.get(label or "", (128, 128, 128))
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def write_figure(path: Path, summary: dict[str, Any]) -> Path:
    """Confusion matrix, the index by pathologist score (ISH as marker), and the ROI check's spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["cases"] if r["status"] == "done"]
    roi = (summary.get("checks") or {}).get("roi")
    panels = 3 if roi and roi["per_case"] else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6))
    _confusion_panel(axes[0], summary["concordance"])
    _index_panel(axes[1], rows, summary)
    if roi and panels == 3:
        _roi_panel(axes[2], roi)
    fig.suptitle(f"HER2 validation: {summary['n_scored']} of {summary['n_cases']} cases scored", fontsize=12)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _confusion_panel(ax: Any, concordance: dict[str, Any]) -> None:
    matrix = np.asarray(concordance["confusion_matrix"])
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
    for i in range(4):
        for j in range(4):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > 0.6 * max(1, matrix.max()) else "black",
            )
    ax.set_xticks(range(4), SCORES_4)
    ax.set_yticks(range(4), SCORES_4)
    ax.set_xlabel("wsi-her2 score")
    ax.set_ylabel("pathologist score")
    exact = concordance["exact_agreement"]["value"]
    qwk = concordance["quadratic_weighted_kappa"]["value"]
    kappa_text = "undefined" if qwk is None else f"{qwk:.2f}"
    exact_text = "–" if exact is None else f"{exact:.0%}"
    ax.set_title(f"agreement {exact_text}, quadratic-weighted kappa {kappa_text}", fontsize=10)


def _index_panel(ax: Any, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    markers = {"positive": "^", "negative": "v", None: "o"}
    for ish, marker in markers.items():
        chosen = [r for r in rows if r["ish"] == ish and r["index"] is not None]
        if not chosen:
            continue
        x = np.array([SCORES_4.index(r["pathologist_score"]) for r in chosen]) + rng.uniform(-0.15, 0.15, len(chosen))
        ax.scatter(
            x,
            [r["index"] for r in chosen],
            c=[_colour(r["tool_score"]) for r in chosen],
            marker=marker,
            edgecolors="black",
            linewidths=0.5,
            s=46,
            label=f"ISH {ish or 'not done'}",
        )
    ax.set_xticks(range(4), SCORES_4)
    ax.set_xlim(-0.5, 3.5)
    ax.set_xlabel("pathologist score (marker colour: wsi-her2 score)")
    ax.set_ylabel("index (0-300)")
    rho = summary["index_vs_pathologist_spearman"]["value"]
    ax.set_title("index by pathologist score" + ("" if rho is None else f", Spearman {rho:.2f}"), fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8, loc="upper left")


def _roi_panel(ax: Any, roi: dict[str, Any]) -> None:
    # Each variant's index minus the case's own: every case on one scale around 0.
    for k, row in enumerate(roi["per_case"]):
        if row["index"] is None:
            continue
        deltas = [v["index"] - row["index"] for v in row["variants"].values() if v.get("index") is not None]
        colour = "tab:orange" if row["score_changed"] else "tab:green"
        ax.scatter([k] * len(deltas), deltas, color=colour, s=20, edgecolors="black", linewidths=0.4, zorder=2)
    ax.axhline(0, color="0.4", lw=1)
    n = len(roi["per_case"])
    ax.set_xticks(range(n), [r["case"] for r in roi["per_case"]], rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylabel("index change with the ROI varied")
    changed = len(roi["cases_with_a_score_change"])
    ax.set_title(
        f"ROI ±{roi['jitter_um']:g} µm: {changed} of {roi['cases_checked']} cases change score (orange)", fontsize=10
    )
    ax.grid(alpha=0.3)
