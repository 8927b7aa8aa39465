"""wsi-her2 tile SLIDE -o OUT: find tissue, lay the tile grid, drop empty tiles, optionally save tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import TILE, common_options, config_option, table_options, tile_settings


@click.command()
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@table_options(TILE)
@click.option(
    "--save-tiles",
    "save_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the kept tiles as images into this folder (with a tiles.csv index).",
)
@click.option("--save-format", type=click.Choice(["png", "jpg"]), default="png", show_default=True)
@config_option
@common_options
def tile(
    slide: Path,
    out_dir: Path,
    mpp: float | None,
    roi_path: Path | None,
    save_dir: Path | None,
    save_format: str,
    quiet: bool,
    verbose: int,
    **options: Any,
) -> None:
    """Tile SLIDE: tissue mask, grid of tiles, empty-tile filter.

    \b
    Writes into OUT:
      tiles.csv        every tile over tissue: level-0 x, y, size, tissue fraction, kept, why dropped
      tissue.geojson   the tissue outline (File > Import objects in QuPath)
      thumbnail.png    the slide with the tissue outline, kept tiles (blue), dropped tiles (red)
      manifest.json    slide facts, µm/px used, every setting, counts, version (written last)
    """
    from wsi_her2.pipeline import run_tile
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging
    from wsi_her2_cli.summaries import print_tiling_summary

    setup_logging(verbose, quiet)
    settings = tile_settings(options)
    with RichProgress(enabled=not quiet) as progress:
        result = run_tile(
            slide, out_dir, settings, mpp=mpp, roi_path=roi_path, save_dir=save_dir, save_format=save_format,
            progress=progress,
        )  # fmt: skip
    if not quiet:
        print_tiling_summary(result, result.files, err_console)
