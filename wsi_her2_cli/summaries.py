"""Human-readable summaries printed after a command (rich tables on stderr, results stay on stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_tiling_summary(result: Any, files: dict[str, Path], console: Console) -> None:
    """What ``tile`` did, in a few lines."""
    prepared = result.slide
    grid = prepared.grid
    reasons = list(result.drop_reason)
    table = Table(show_header=False, title=f"tiled {Path(prepared.info.path).name}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("µm/px used", f"{prepared.info.mpp:.4g} ({prepared.info.mpp_source})")
    size_um = grid.tile_size_um
    table.add_row("tile", f"{grid.tile_size_px} level-0 px" + (f" = {size_um:.0f} µm" if size_um else ""))
    table.add_row("tissue", f"{prepared.mask.tissue_fraction:.1%} of the slide")
    table.add_row("tiles over tissue threshold", f"{len(grid):,}")
    table.add_row("dropped: background / blur", f"{reasons.count('background'):,} / {reasons.count('blur'):,}")
    table.add_row("kept", f"[bold green]{int(result.kept.sum()):,}[/]")
    for note in prepared.mask.notes:
        table.add_row("note", note)
    table.add_row("written", ", ".join(str(p) for p in files.values()))
    console.print(table)


def print_score_summary(result: Any, files: dict[str, Path], console: Console) -> None:
    """The slide score and the facts behind it."""
    prepared = result.slide
    name = Path(prepared.info.path).name
    table = Table(show_header=False, title=f"HER2 score of {name}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    model = result.model
    table.add_row(
        "model",
        f"{model.get('name') or model.get('architecture')} ({model.get('kind')}, {model.get('stain')})",
    )
    if result.status != "done":
        console.print(f"no score for {name}; wrote {', '.join(str(p) for p in files.values())}")
        return
    score = result.score
    colour = {"negative": "green", "equivocal": "yellow", "positive": "red"}.get(score.clinical_group, "white")
    table.add_row("HER2 score", f"[bold {colour}]{score.score}[/] by rule {score.rule}")
    table.add_row("clinical group", f"[{colour}]{score.clinical_action}[/]")
    if score.her2_low is not None:
        table.add_row("HER2-low", "yes (1+, or 2+ with negative ISH)" if score.her2_low else "no")
    if score.ultralow_like is not None:
        table.add_row("ultralow-like", "yes (0 with faint staining)" if score.ultralow_like else "no")
    basis = "cells" if score.rule == "cells" else "tissue"
    table.add_row(f"class fractions ({basis})", ", ".join(f"{c}: {v:.1%}" for c, v in score.class_fractions.items()))
    if score.cell_counts:
        table.add_row("cells counted", ", ".join(f"{c}: {n:,}" for c, n in score.cell_counts.items()))
    for field in result.outputs.summary_fields:  # what the scorer adds (e.g. tumour cells, index)
        value = (result.scorer_summary or {}).get(field.key)
        if value is not None:
            table.add_row(field.label, _format_value(value, field.percent))
    for rule_name, verdict in score.rules.items():
        if rule_name != score.rule:
            table.add_row(f"rule {rule_name}", verdict.score)
    dropped = sum(score.n_tiles_dropped.values())
    table.add_row("tiles", f"{score.n_tiles_scored:,} scored, {dropped:,} dropped")
    if score.confidence is not None:
        table.add_row("confidence", f"{score.confidence:.0%} of bootstrap resamples agree")
    rate = result.timings_s.get("tiles_per_s")
    if rate:
        table.add_row("speed", f"{rate:,.0f} tiles/s ({result.runtime.get('device', 'cpu')})")
    for note in score.notes:
        table.add_row("note", note)
    table.add_row("written", ", ".join(str(p) for p in files.values()))
    console.print(table)


def _format_value(value: Any, percent: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if percent:
        return f"{value:.1%}"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"
