"""wsi-her2 explain CHECKPOINT IMAGE -o OUT: Grad-CAM per network stage for patches and slides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsi_her2_cli.options import EXPLAIN, common_options, config_option, score_settings, table_options


@click.command()
@click.argument("checkpoint")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "patch", "slide"]),
    default="auto",
    show_default=True,
    help="auto: slide when --scores is given or IMAGE is larger than two of the model's tiles.",
)
@click.option("--class", "target", default=None, help="Class to explain. [default: predicted (patch), all (slide)]")
@click.option(
    "--scores",
    "scores_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Existing `wsi-her2 score` folder of this slide and model (read only; not scored again).",
)
# Tiles per class and CAM cells per tile side: bounded so the pages and gradcam.zarr stay a few MB.
@click.option("--top-k", type=click.IntRange(1, 256), default=8, show_default=True, help="Tiles per class (slide).")
@click.option("--cam-heatmap", is_flag=True, help="Also write gradcam.zarr: every scored tile's CAM (slide).")
@click.option(
    "--cam-cells",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="gradcam.zarr cells per tile along each side.",
)
@table_options(EXPLAIN)
@click.option("--json", "as_json", is_flag=True, help="Print explanation.json instead of a summary.")
@config_option
@common_options
def explain(
    checkpoint: str,
    image: Path,
    out_dir: Path,
    mode: str,
    target: str | None,
    scores_dir: Path | None,
    top_k: int,
    cam_heatmap: bool,
    cam_cells: int,
    device: str,
    batch_size: int | None,
    workers: int | None,
    mpp: float | None,
    backend: str,
    as_json: bool,
    quiet: bool,
    verbose: int,
    **options: Any,
) -> int:
    """Show where the model sees the evidence for a HER2 class.

    \b
    CHECKPOINT is a folder from `wsi-her2 train` (or its .safetensors file), or `dab` for the
    weight-free DAB scorer. IMAGE is a patch (PNG, JPEG, TIFF) or a slide.
    A patch: the predicted class and probabilities, and Grad-CAM for it (or --class) at the last
    block of each network stage. Writes into OUT:
      panel.png            the input, then one heatmap per stage (as in the source paper)
      cam_stage<N>.png     each stage's overlay;  cams.npz  the raw maps
      explanation.json     probabilities, predicted and explained class, layers
    A slide: scored first (into OUT/score) unless --scores gives a score folder. Writes:
      gallery_<class>.png  top-k tiles of each class by probability, with their maps per stage
      tiles/<class>/       each tile and overlay;  gradcam.zarr  with --cam-heatmap (OME-NGFF)
    For `dab`, the DAB scorer's evidence (DAB, membranes, cells coloured by class) replaces Grad-CAM.
    """
    from wsi_her2.explain import explain as run_explain
    from wsi_her2_cli.console import RichProgress, err_console, setup_logging

    setup_logging(verbose, quiet)
    if options.get("dab_config") is not None and scores_dir is not None:
        from wsi_her2.errors import ConfigError

        raise ConfigError("--dab-config applies when scoring here", hint="the --scores folder has its own settings")
    settings = None
    if scores_dir is None and (mode != "patch" or options.get("dab_config") is not None):
        params = {**options, "device": device, "workers": workers, "backend": backend}
        settings = score_settings(EXPLAIN, params, model=checkpoint)
    if workers is None:
        from wsi_her2.tiling.loader import worker_count

        workers = worker_count(None)
    with RichProgress(enabled=not quiet and not as_json) as progress:
        result = run_explain(
            checkpoint, image, out_dir, mode=mode, scores=scores_dir, target=target, mpp=mpp, backend=backend,
            device=device, progress=progress, top_k=top_k, cam_heatmap=cam_heatmap, cam_cells=cam_cells,
            settings=settings, batch_size=batch_size, workers=workers,
        )  # fmt: skip
    if as_json:
        click.echo((result.out_dir / "explanation.json").read_text(encoding="utf-8"), nl=False)
    elif not quiet:
        _print_summary(result, err_console)
    return 0


def _print_summary(result: object, console: object) -> None:
    """A few lines: what was explained and where the figures are."""
    from wsi_her2.explain import Explanation

    assert isinstance(result, Explanation)
    summary = result.summary
    lines = []
    if result.mode == "patch":
        if "cell_counts" in summary:  # the DAB scorer's evidence
            counts = ", ".join(f"{c}: {n}" for c, n in summary["cell_counts"].items())
            lines.append(f"DAB scorer: patch class {summary['patch_class']} (cells {counts})")
        else:
            probs = ", ".join(f"p({c}) {p:.2f}" for c, p in summary["probabilities"].items())
            lines.append(f"predicted {summary['predicted_class']} ({probs}); Grad-CAM for {summary['explained_class']}")
    else:
        scores = summary["scores"]
        origin = "reused" if scores["reused"] else "scored here"
        lines.append(f"slide score {scores['score']} ({origin}: {scores['folder']})")
        for name, entry in summary["classes"].items():
            lines.append(f"  {name}: {len(entry['tiles'])} tiles -> {entry['gallery']}")
        if summary.get("cam_heatmap"):
            lines.append(f"  slide-wide Grad-CAM -> {summary['cam_heatmap']['file']}")
    lines.append(f"outputs in {result.out_dir}")
    for line in lines:
        console.print(line, highlight=False)  # type: ignore[attr-defined]
