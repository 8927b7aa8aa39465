"""Options shared by several commands, with units in their names, checked at the edge."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def common_options(func: F) -> F:
    """--quiet, -v and --debug (the last is read by the error handler before parsing)."""
    return _compose(
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries; errors only."),
        click.option("--verbose", "-v", count=True, help="More log messages (-vv for debug logs)."),
        click.option("--debug", is_flag=True, expose_value=False, help="Show tracebacks on errors."),
    )(func)


def backend_option(func: F) -> F:
    """--backend."""
    return click.option(
        "--backend",
        type=click.Choice(["auto", "tifffile", "openslide", "image"]),
        default="auto",
        show_default=True,
        help="Slide reader; auto picks the fastest that reads the file.",
    )(func)


def slide_options(func: F) -> F:
    """--mpp (an override) and --backend."""
    return _compose(
        click.option(
            "--mpp",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="µm per level-0 pixel, overriding the slide's metadata (needed for JPEG/PNG images).",
        ),
        backend_option,
    )(func)


def grid_options(func: F) -> F:
    """Tile grid settings and the pen filter."""
    return _compose(
        click.option(
            "--tile-size",
            "tile_size_px",
            type=click.IntRange(16, 16384),
            default=None,
            help="Tile side in pixels: level-0 pixels, or pixels at --target-mpp when given. [default: 1024]",
        ),
        click.option(
            "--target-mpp",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="µm/px that --tile-size refers to, so tiles cover the same tissue on 20x and 40x slides.",
        ),
        click.option(
            "--overlap", "overlap_px", type=click.IntRange(0), default=None, help="Tile overlap in pixels. [default: 0]"
        ),
        click.option(
            "--min-tissue",
            "min_tissue_fraction",
            type=click.FloatRange(0, 1),
            default=None,
            help="Keep tiles with at least this fraction on the tissue mask. [default: 0.25]",
        ),
        click.option("--no-pen-filter", is_flag=True, help="Do not reject marker-pen ink."),
    )(func)


def tiling_options(func: F) -> F:
    """Grid settings plus --roi (one slide's regions of interest)."""
    return _compose(
        grid_options,
        click.option(
            "--roi",
            "roi_path",
            type=click.Path(path_type=Path),
            default=None,
            help="GeoJSON of regions to score (e.g. the invasive tumour exported from QuPath).",
        ),
    )(func)


def loader_options(func: F) -> F:
    """Worker processes and the pixel-level tile check."""
    return _compose(
        click.option(
            "--workers",
            type=click.IntRange(0, 256),
            default=None,
            help="Worker processes reading tiles (0 = in this process). [default: one per core, at most 16]",
        ),
        click.option(
            "--no-pixel-check",
            is_flag=True,
            help="Keep every tile over the mask threshold (no glass/blur check).",
        ),
        click.option(
            "--min-blur",
            "min_blur_score",
            type=click.FloatRange(0),
            default=None,
            help="Drop tiles whose blur score (Laplacian variance) is below this (0 = no blur check). [default: 50]",
        ),
    )(func)


def config_option(func: F) -> F:
    """--config FILE (TOML, YAML or JSON with sections per stage; options on the line win)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Config file (TOML/YAML/JSON) with one section per stage; options given on the line win.",
    )(func)


def stage_configs(config_path: Path | None, **overrides: dict[str, Any]) -> dict[str, Any]:
    """Resolve each stage's config: file section, then command-line overrides (None = not given).

    Args:
        config_path: optional config file.
        overrides: per stage name ("tissue", "grid", "loader", ...), the option values.

    Returns:
        The config file's sections merged with the overrides, by stage name.
    """
    from wsi_her2.config import load_config_file

    sections = load_config_file(config_path) if config_path else {}
    merged: dict[str, Any] = {}
    for name, values in overrides.items():
        section = dict(sections.get(name) or {})
        section.update({k: v for k, v in values.items() if v is not None})
        merged[name] = section
    for name, section in sections.items():
        merged.setdefault(name, section)
    return merged


def model_options(func: F) -> F:
    """--model, --device, --batch-size, --decode, --compile, --rule, --no-stain-check."""
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
                "--decode",
                type=click.Choice(["auto", "cpu", "gpu"]),
                default=None,
                help="Where a trained model's stored JPEG tiles are decoded: auto (on the GPU when the model runs on "
                "CUDA and the slide's tiles allow), cpu (worker processes) or gpu (an error where the slide cannot). "
                "[default: auto]",
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


def score_settings_from_options(params: Mapping[str, Any], *, workers: int | None = None) -> Any:
    """The :class:`~wsi_her2.settings.ScoreSettings` of ``score`` / ``batch`` options over a config file.

    Args:
        params: the command's option values (``click.Context.params``).
        workers: loader workers to use instead of ``params["workers"]`` (batch shares the cores).
    """
    from wsi_her2.settings import ScoreSettings
    from wsi_her2.tiling.loader import worker_count

    p = params
    sections = stage_configs(
        p.get("config_path"),
        tissue={"reject_pen": False if p.get("no_pen_filter") else None},
        grid={k: p.get(k) for k in ("tile_size_px", "target_mpp", "overlap_px", "min_tissue_fraction")},
        loader={
            "workers": workers if workers is not None else p.get("workers"),
            "pixel_check": False if p.get("no_pixel_check") else None,
            "min_blur_score": p.get("min_blur_score"),
            "decode": p.get("decode"),
        },
        aggregate={"rule": p.get("rule")},
        inference={
            "device": p.get("device"),
            "batch_size": p.get("batch_size"),
            "compile": p.get("compile_model") or None,
        },
        dab={},
    )
    sections["loader"].setdefault("workers", worker_count(None))
    return ScoreSettings.from_sections(
        sections, model=p["model"], backend=p.get("backend", "auto"), check_stain=not p.get("no_stain_check")
    )
