"""wsi-her2 score SLIDE -o OUT: the slide's HER2 score, per-tile probabilities and a heatmap."""

from __future__ import annotations

from pathlib import Path

import click

from wsi_her2_cli.options import (
    common_options,
    config_option,
    loader_options,
    model_options,
    score_settings_from_options,
    slide_options,
    tiling_options,
)


@click.command()
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@model_options
@slide_options
@tiling_options
@loader_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a summary.")
@config_option
@common_options
def score(
    slide: Path,
    out_dir: Path,
    model: str,
    device: str,
    batch_size: int | None,
    decode: str | None,
    compile_model: bool,
    rule: str | None,
    no_stain_check: bool,
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
    as_json: bool,
    config_path: Path | None,
    quiet: bool,
    verbose: int,
) -> int:
    """Score the HER2 status of SLIDE.

    \b
    Without --model, the weight-free DAB scorer reads HER2 IHC slides (H&E needs a trained model).
    Writes into OUT:
      report.json          the score, both rules, clinical group, flags, model, settings, timings
      heatmap.zarr         OME-NGFF (OME-Zarr) heatmap, one pixel per tile, in µm (napari, QuPath)
      tiles.csv            every tile: level-0 x, y, size, tissue fraction, class probabilities
      predictions.geojson  scored tiles with class and measurements (QuPath: File > Import objects)
      overlay.png          the slide with the tile classes and a legend
    Exit code 6 (with a report saying so) when the slide has no tissue.
    """
    from wsi_her2.errors import NoTissueError
    from wsi_her2.settings import run_score
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging
    from wsi_her2_cli.summaries import print_score_summary

    setup_logging(verbose, quiet)
    settings = score_settings_from_options(click.get_current_context().params)
    with RichProgress(enabled=not quiet and not as_json) as progress:
        result = run_score(slide, out_dir, settings, mpp=mpp, roi_path=roi_path, progress=progress)
    if as_json:
        click.echo(result.files["report"].read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        print_score_summary(result, result.files, err_console)
    if result.status == "no_tissue":
        raise NoTissueError(
            str(result.slide.no_tissue), hint=f"{result.slide.no_tissue_hint}; a report saying so is in {out_dir}"
        )
    return 0
