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
    table.add_row(
        "dropped: background / blur", f"{reasons.count('background'):,} / {reasons.count('blur'):,}"
    )
    table.add_row("kept", f"[bold green]{int(result.kept.sum()):,}[/]")
    for note in prepared.mask.notes:
        table.add_row("note", note)
    table.add_row("written", ", ".join(str(p) for p in files.values()))
    console.print(table)
