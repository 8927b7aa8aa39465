"""wsi-her2 tile SLIDE -o OUT: find tissue, lay the tile grid, drop empty tiles, optionally save tiles."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_her2_cli.options import (
    common_options,
    config_option,
    loader_options,
    slide_options,
    stage_configs,
    tiling_options,
)


@click.command()
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@slide_options
@tiling_options
@loader_options
@click.option(
    "--save-tiles",
    "save_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the kept tiles as images into this folder (with a tiles.csv index).",
)
@click.option(
    "--save-size",
    type=click.Choice(["224", "1024"]),
    default="224",
    show_default=True,
    help="Side in pixels of the saved tile images.",
)
@click.option("--save-format", type=click.Choice(["png", "jpg"]), default="png", show_default=True)
@config_option
@common_options
def tile(
    slide: Path,
    out_dir: Path,
    mpp: float | None,
    backend: str,
    tile_size_px: int | None,
    target_mpp: float | None,
    overlap_px: int | None,
    min_tissue_fraction: float | None,
    no_pen_filter: bool,
    roi_path: Path | None,
    workers: int | None,
    no_pixel_check: bool,
    min_blur_score: float | None,
    save_dir: Path | None,
    save_size: str,
    save_format: str,
    config_path: Path | None,
    quiet: bool,
    verbose: int,
) -> None:
    """Tile SLIDE: tissue mask, grid of tiles, empty-tile filter.

    \b
    Writes into OUT:
      tiles.csv        every tile over tissue: level-0 x, y, size, tissue fraction, kept, why dropped
      tissue.geojson   the tissue outline (File > Import objects in QuPath)
      thumbnail.png    the slide with the tissue outline, kept tiles (blue), dropped tiles (red)
      manifest.json    slide facts, µm/px used, every setting, counts, version (written last)
    """
    from wsi_her2.config import GridConfig, LoaderConfig, TissueConfig
    from wsi_her2.outputs.tile_images import TileImageWriter
    from wsi_her2.outputs.tiling import write_tiling_outputs
    from wsi_her2.pipeline import prepare_slide, tile_slide
    from wsi_her2.roi import load_roi
    from wsi_her2.tiling.loader import worker_count
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging
    from wsi_her2_cli.summaries import print_tiling_summary

    setup_logging(verbose, quiet)
    sections = stage_configs(
        config_path,
        tissue={"reject_pen": False if no_pen_filter else None},
        grid={
            "tile_size_px": tile_size_px,
            "target_mpp": target_mpp,
            "overlap_px": overlap_px,
            "min_tissue_fraction": min_tissue_fraction,
        },
        loader={
            "workers": workers,
            "pixel_check": False if no_pixel_check else None,
            "min_blur_score": min_blur_score,
            "output_size_px": 1024 if save_size == "1024" else None,
            "return_images": save_dir is not None,
        },
    )
    sections["loader"].setdefault("workers", worker_count(None))
    tissue_cfg = TissueConfig.from_dict(sections["tissue"])
    grid_cfg = GridConfig.from_dict(sections["grid"])
    loader_cfg = LoaderConfig.from_dict(sections["loader"])
    roi = load_roi(roi_path) if roi_path else None
    with RichProgress(enabled=not quiet) as progress:
        prepared = prepare_slide(
            slide, mpp=mpp, backend=backend, tissue=tissue_cfg, grid=grid_cfg, roi=roi, progress=progress
        )
        try:
            writer = (
                TileImageWriter(save_dir, slide.name.split(".")[0], prepared.grid, f".{save_format}")
                if save_dir
                else None
            )
            result = tile_slide(prepared, loader_cfg, on_batch=writer, progress=progress)
        finally:
            prepared.reader.close()
        if writer is not None:
            writer.finish()
    config = {
        "tissue": tissue_cfg.to_dict(),
        "grid": grid_cfg.to_dict(),
        "loader": loader_cfg.to_dict(),
        "roi": str(roi_path) if roi_path else None,
    }
    files = write_tiling_outputs(result, out_dir, config)
    if not quiet:
        print_tiling_summary(result, files, err_console)
