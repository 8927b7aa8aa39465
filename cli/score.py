"""wsi-her2 score SLIDE -o OUT: the slide's HER2 score, per-tile probabilities and a heatmap."""

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


def model_options(func):  # type: ignore[no-untyped-def]
    """--model, --device, --batch-size, --compile, --rule, --no-stain-check."""
    for decorator in reversed(
        [
            click.option(
                "--model",
                default="dab",
                show_default=True,
                help="'dab' (weight-free IHC scorer) or a checkpoint folder / .safetensors file from `wsi-her2 train`.",
            ),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                help="auto, cpu, cuda, cuda:N or mps (trained models only).",
            ),
            click.option(
                "--batch-size",
                type=click.IntRange(1),
                default=None,
                help="Tiles per forward pass. [default: 256 on GPU, 32 on CPU]",
            ),
            click.option(
                "--compile",
                "compile_model",
                is_flag=True,
                help="torch.compile the model (GPU; slower start, faster run).",
            ),
            click.option(
                "--rule",
                type=click.Choice(["auto", "asco_cap", "mean_probability", "cells"]),
                default=None,
                help="Slide-level rule giving the score (all are reported). [default: auto]",
            ),
            click.option("--no-stain-check", is_flag=True, help="Score even if the slide's stain is not the model's."),
        ]
    ):
        func = decorator(func)
    return func


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
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging
    from wsi_her2_cli.summaries import print_score_summary

    from wsi_her2.aggregate import AggregateConfig
    from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig, TissueConfig
    from wsi_her2.errors import NoTissueError
    from wsi_her2.models import load_scorer
    from wsi_her2.models.dab import DabConfig
    from wsi_her2.outputs.scoring import write_score_outputs
    from wsi_her2.pipeline import score_slide
    from wsi_her2.roi import load_roi
    from wsi_her2.tiling.loader import worker_count

    setup_logging(verbose, quiet)
    grid_values = {
        "tile_size_px": tile_size_px,
        "target_mpp": target_mpp,
        "overlap_px": overlap_px,
        "min_tissue_fraction": min_tissue_fraction,
    }
    sections = stage_configs(
        config_path,
        tissue={"reject_pen": False if no_pen_filter else None},
        grid=grid_values,
        loader={
            "workers": workers,
            "pixel_check": False if no_pixel_check else None,
            "min_blur_score": min_blur_score,
        },
        aggregate={"rule": rule},
        inference={"device": device, "batch_size": batch_size, "compile": compile_model or None},
        dab={},
    )
    sections["loader"].setdefault("workers", worker_count(None))
    user_grid = frozenset(k for k, v in sections["grid"].items() if v is not None)
    scorer = load_scorer(
        model,
        inference=InferenceConfig.from_dict(sections["inference"]),
        dab=DabConfig.from_dict(sections["dab"]),
    )
    roi = load_roi(roi_path) if roi_path else None
    try:
        with RichProgress(enabled=not quiet and not as_json) as progress:
            result = score_slide(
                slide,
                scorer,
                mpp=mpp,
                backend=backend,
                tissue=TissueConfig.from_dict(sections["tissue"]),
                grid=GridConfig.from_dict(sections["grid"]),
                grid_user_set=user_grid,
                loader=LoaderConfig.from_dict(sections["loader"]),
                aggregate=AggregateConfig.from_dict(sections["aggregate"]),
                roi=roi,
                check_stain=not no_stain_check,
                progress=progress,
            )
    finally:
        scorer.close()
    result.config["model"] = str(model)
    result.config["roi"] = str(roi_path) if roi_path else None
    files = write_score_outputs(result, out_dir)
    if as_json:
        click.echo(files["report"].read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        print_score_summary(result, files, err_console)
    if result.status == "no_tissue":
        raise NoTissueError(
            str(result.slide.no_tissue),
            hint=f"{result.slide.no_tissue_hint}; a report saying so is in {out_dir}",
        )
    return 0
