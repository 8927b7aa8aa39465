"""The option table: every option that sets a setting, once, with the commands that offer it.

Each :class:`Option` says its flags, which commands have it and where its value goes: a
``section.key`` of the settings (``grid.tile_size_px``), a whole section (a mapping, e.g. read from
a file), a top-level setting (``model``, ``backend``, ``check_stain``), several sections read from
a file (:data:`FILE_SECTIONS`: ``--dab-config``), or nowhere (None: the command reads it itself,
e.g. ``--mpp``, ``--roi``, validate's checks). :func:`table_options` puts a command's
options on it; :func:`settings_sections` turns the values given, over a ``--config`` file, into
the settings' sections; :func:`score_settings` and :func:`tile_settings` build the one settings
object the library takes whole. Adding an option is one entry here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from wsi_her2.config import MAX_PLAUSIBLE_MPP, MIN_PLAUSIBLE_MPP

F = TypeVar("F", bound=Callable[..., Any])

INFO, SCORE, BATCH, TILE, EXPLAIN = "info", "score", "batch", "tile", "explain"
TRAIN, EVALUATE, VALIDATE = "train", "evaluate", "validate"
SCORING = (SCORE, BATCH, VALIDATE)
TILING = (*SCORING, TILE)
READING = (INFO, SCORE, TILE, EXPLAIN)
DATA = (TRAIN, EVALUATE)
# Settings that are not in a section (arguments of ScoreSettings.from_sections / TileSettings.from_sections).
TOP_LEVEL = ("model", "backend", "check_stain", "calibration")
# The setting of an option whose value is a mapping of whole sections (and top-level settings): they
# apply over the --config file and under every other option given on the line.
FILE_SECTIONS = "sections"


class FiniteFloat(click.FloatRange):
    """A float option between two finite bounds: nan, inf and -inf are refused like any value outside.

    click's :class:`~click.FloatRange` lets nan through every bound (nan compares false) and inf
    through an open upper end; this refuses both with the range in the message (one line, exit 2).
    """

    def __init__(self, min: float, max: float, *, min_open: bool = False, max_open: bool = False) -> None:
        if not (math.isfinite(min) and math.isfinite(max) and min < max):
            raise ValueError(f"FiniteFloat needs finite bounds min < max, got {min!r}, {max!r}")
        super().__init__(min, max, min_open=min_open, max_open=max_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The float, or click's one-line refusal naming the range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            return super().convert(value, param, ctx)  # click's "is not a valid float range"
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number in the range {self._describe_range()}.", param, ctx)
        return super().convert(number, param, ctx)


# Bounds shared by several options (see the comments at their use).
MPP = FiniteFloat(MIN_PLAUSIBLE_MPP, MAX_PLAUSIBLE_MPP)
MAX_TILE_PX = 16384
MAX_CASES = 100_000
SEED = click.IntRange(0, 2**32 - 1)


def _dab_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from wsi_her2.validation.calibration_file import load_dab_config

    sections, block = load_dab_config(path)
    return {**sections, "calibration": block}


def _false_if_set(flag: bool) -> bool | None:
    return False if flag else None


def _true_if_set(flag: bool) -> bool | None:
    return True if flag else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class Option:
    """One command-line option.

    Attributes:
        name: the parameter name the command receives.
        flags: the option's flags, e.g. ("--tile-size",).
        commands: the commands that offer it.
        setting: where the value goes: "section.key", a section name (a mapping value merges into
            it), a top-level setting name, or None (the command uses the value itself).
        value: option value -> setting value (None means "not given": the config file or default holds).
        attrs: the rest of :func:`click.option`'s arguments (type, default, help, ...).
    """

    name: str
    flags: tuple[str, ...]
    commands: tuple[str, ...]
    setting: str | None = None
    value: Callable[[Any], Any] | None = None
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def decorator(self) -> Callable[[F], F]:
        """The click option."""
        return click.option(*self.flags, self.name, **self.attrs)


def _opt(
    name: str,
    flags: str | tuple[str, ...],
    commands: tuple[str, ...],
    setting: str | None = None,
    value: Callable[[Any], Any] | None = None,
    **attrs: Any,
) -> Option:
    return Option(name, (flags,) if isinstance(flags, str) else flags, commands, setting, value, attrs)


# One entry per option (per command group when the help differs); columns: parameter name, flags,
# commands, setting, value conversion, then click's arguments.
# fmt: off
OPTIONS: tuple[Option, ...] = (
    # -- the model (score, batch) ---------------------------------------------------------------
    _opt("model", "--model", SCORING, "model", default="dab", show_default=True,
         help="'dab' (weight-free IHC scorer) or a checkpoint folder / .safetensors file from `wsi-her2 train`."),
    _opt("device", "--device", SCORING, "inference.device", default="auto", show_default=True,
         help="auto, cpu, cuda, cuda:N or mps; the DAB scorer runs on cpu or cuda (auto: a GPU when present)."),
    _opt("device", "--device", (EXPLAIN,), "inference.device", default="auto", show_default=True,
         help="auto, cpu, cuda, cuda:N or mps."),
    # The inference settings' own limit (a batch of 8192 224-px tiles is 1.2 GB of float32 already).
    _opt("batch_size", "--batch-size", SCORING, "inference.batch_size", type=click.IntRange(1, 8192), default=None,
         help="Tiles per forward pass. [default: 256 on GPU, 32 on CPU]"),
    _opt("batch_size", "--batch-size", (EXPLAIN,), None, type=click.IntRange(1, 8192), default=None,
         help="Tiles per Grad-CAM pass. [default: 64 GPU, 8 CPU]"),
    _opt("decode", "--decode", (*SCORING, EXPLAIN), "loader.decode", type=click.Choice(["auto", "cpu", "gpu"]),
         default=None,
         help="Where stored JPEG tiles are decoded: auto (on the GPU when the model or the DAB scorer runs on CUDA "
              "and the slide's tiles allow), cpu (the loader's workers) or gpu (an error where they cannot). "
              "[default: auto]"),
    _opt("compile_model", "--compile", SCORING, "inference.compile", _true_if_set, is_flag=True,
         help="torch.compile the model (GPU; slower start, faster run)."),
    _opt("rule", "--rule", SCORING, "aggregate.rule",
         type=click.Choice(["auto", "asco_cap", "mean_probability", "cells"]), default=None,
         help="Slide-level rule giving the score (all are reported). [default: auto]"),
    _opt("no_stain_check", "--no-stain-check", SCORING, "check_stain", _false_if_set, is_flag=True,
         help="Score even if the slide's stain is not the model's."),
    # -- the slide --------------------------------------------------------------------------------
    # µm/px (--mpp, --target-mpp, --tile-mpp): the range a slide's own metadata must be in, 0.05 (beyond
    # any scanner's 100x) to 20 (a 0.5x overview, where a cell is a pixel). Finer, the slide becomes
    # petapixels of tissue (--mpp 1e-9 asked OpenCV for 244 TB); coarser, tiles of a few µm shrink to
    # under a pixel and multiply (--mpp 100 made ~600,000 tiles of a 2048-px image: 500 s).
    _opt("mpp", "--mpp", READING, None, type=MPP, default=None,
         help="µm per level-0 pixel, overriding the slide's metadata (needed for JPEG/PNG images)."),
    _opt("mpp", "--mpp", (BATCH, VALIDATE), None, type=MPP, default=None,
         help="µm/px of JPEG/PNG images and of slides whose metadata has none (a fallback; an mpp column "
              "of the list overrides)."),
    _opt("backend", "--backend", (INFO, *TILING, EXPLAIN), "backend",
         type=click.Choice(["auto", "tifffile", "openslide", "image"]), default="auto", show_default=True,
         help="Slide reader; auto picks the fastest that reads the file."),
    # -- the tissue mask and the grid -------------------------------------------------------------
    _opt("tile_size_px", "--tile-size", TILING, "grid.tile_size_px", type=click.IntRange(16, MAX_TILE_PX), default=None,
         help="Tile side in pixels: level-0 pixels, or pixels at --target-mpp when given. [default: 1024]"),
    _opt("target_mpp", "--target-mpp", TILING, "grid.target_mpp", type=MPP,
         default=None, help="µm/px that --tile-size refers to, so tiles cover the same tissue on 20x and 40x slides."),
    # Below the largest tile; the grid checks it against the tile size in use (exit 2, one line).
    _opt("overlap_px", "--overlap", TILING, "grid.overlap_px", type=click.IntRange(0, MAX_TILE_PX - 1), default=None,
         help="Tile overlap in pixels. [default: 0]"),
    _opt("min_tissue_fraction", "--min-tissue", TILING, "grid.min_tissue_fraction", type=FiniteFloat(0, 1),
         default=None, help="Keep tiles with at least this fraction on the tissue mask. [default: 0.25]"),
    _opt("no_pen_filter", "--no-pen-filter", TILING, "tissue.reject_pen", _false_if_set, is_flag=True,
         help="Do not reject marker-pen ink."),
    _opt("roi_path", "--roi", (SCORE, TILE), None, type=click.Path(path_type=Path), default=None,
         help="GeoJSON of regions to score (e.g. the invasive tumour exported from QuPath)."),
    _opt("dab_config", "--dab-config", (*SCORING, EXPLAIN), FILE_SECTIONS, _dab_config,
         type=click.Path(path_type=Path), default=None,
         help="DAB scorer calibration from `wsi-her2 validate --calibrate` (or a file of [dab]/[aggregate] "
              "settings): over --config, under the options on the line; every report records it."),
    # -- the tile loader --------------------------------------------------------------------------
    _opt("workers", "--workers", TILING, "loader.workers", type=click.IntRange(0, 256), default=None,
         help="Worker processes reading tiles (0 = in this process). [default: one per core, at most 16]"),
    _opt("workers", "--workers", (EXPLAIN,), "loader.workers", type=click.IntRange(0, 256), default=None,
         help="Processes reading tiles when scoring here and for --cam-heatmap. [default: one per core, at most 16]"),
    _opt("no_pixel_check", "--no-pixel-check", TILING, "loader.pixel_check", _false_if_set, is_flag=True,
         help="Keep every tile over the mask threshold (no glass/blur check)."),
    # Sharp tissue scores 440-12,000; 1e6 is about the Laplacian variance of a 0/255 checkerboard, the
    # most 8-bit grey levels give (|Laplacian| <= 1020): a higher threshold could only drop every tile.
    _opt("min_blur_score", "--min-blur", TILING, "loader.min_blur_score", type=FiniteFloat(0, 1_000_000), default=None,
         help="Drop tiles whose blur score (Laplacian variance) is below this (0 = no blur check). [default: 50]"),
    _opt("save_size", "--save-size", (TILE,), "loader.output_size_px", lambda v: 1024 if v == "1024" else None,
         type=click.Choice(["224", "1024"]), default="224", show_default=True,
         help="Side in pixels of the saved tile images."),
    # -- validation on a lab's cases ----------------------------------------------------------------
    _opt("calibrate", "--calibrate", (VALIDATE,), None, type=click.Choice(["auto", "levels", "percentages", "both"]),
         is_flag=False, flag_value="auto", default=None,
         help="Fit the DAB scorer by cross-validation and write calibration.json: its membrane levels, the "
              "ASCO/CAP cut-offs, or both. [--calibrate alone: auto = levels]"),
    # Case counts: a case list of more than 100,000 cases is not one validation run (days of scoring).
    _opt("folds", "--folds", (VALIDATE,), None, type=click.IntRange(2, MAX_CASES), default=None,
         help="k-fold cross-validation for --calibrate. [default: leave-one-out up to 50 cases, else 10]"),
    _opt("rerun", "--rerun", (VALIDATE,), None, type=click.IntRange(0, MAX_CASES), default=None,
         help="Cases (a seeded random subset) scored again for the rerun check; 0 skips it. [default: all]"),
    _opt("roi_check", "--roi-check", (VALIDATE,), None, type=click.IntRange(0, MAX_CASES), default=None,
         help="Cases scored again with shrunk, grown and shifted ROIs; 0 skips it. [default: all]"),
    # 10 mm: more than the width of a biopsy or core; a larger shrink empties every ROI.
    _opt("roi_jitter_um", "--roi-jitter-um", (VALIDATE,), None, type=FiniteFloat(0, 10_000, min_open=True),
         default=50.0, show_default=True, help="How far the ROI check shrinks, grows and shifts each ROI (µm)."),
    _opt("bootstrap_samples", "--bootstrap", (VALIDATE,), None, type=click.IntRange(100, 100_000), default=2000,
         show_default=True, help="Bootstrap resamples of the 95% intervals."),
    # Seeds: numpy's default_rng and torch take 0..2**32-1 alike (a negative seed raised ValueError).
    _opt("seed", "--seed", (VALIDATE,), None, type=SEED, default=0, show_default=True,
         help="Seed of the intervals, the check subsets and the folds."),
    # -- training and evaluation --------------------------------------------------------------------
    _opt("architecture", "--arch", (TRAIN,), "train.architecture", default=None,
         help="Network: convnext_tiny, resnet50, mobilenetv2_100, inception_v3. [default: convnext_tiny]"),
    _opt("stain", "--stain", (TRAIN,), "data.stain", type=click.Choice(["ihc", "he"]), default=None,
         help="Stain of the images. [default: ihc]"),
    _opt("stain", "--stain", (EVALUATE,), None, type=click.Choice(["ihc", "he"]), default=None,
         help="Stain of DATA; must match the model's unless --allow-stain-mismatch. [default: the model's]"),
    _opt("num_classes", "--classes", (TRAIN,), "data.num_classes", lambda v: int(v) if v else None,
         type=click.Choice(["4", "3"]), default=None,
         help="4 = 0/1+/2+/3+; 3 = negative (0, 1+) / equivocal (2+) / positive (3+). [default: 4]"),
    _opt("epochs", "--epochs", (TRAIN,), "train.epochs", type=click.IntRange(1, 10_000), default=None,
         help="Epochs. [default: 30]"),
    _opt("batch_size", "--batch-size", (TRAIN,), "train.batch_size", type=click.IntRange(1, 4096), default=None,
         help="Batch size. [default: 16]"),
    _opt("batch_size", "--batch-size", (EVALUATE,), None, type=click.IntRange(1, 4096), default=64, show_default=True),
    # Adam moves each weight by about lr per step: above 1 that is many times a weight's own size.
    _opt("lr", "--lr", (TRAIN,), "train.lr", type=FiniteFloat(0, 1, min_open=True), default=None,
         help="Adam learning rate. [default: 1e-4]"),
    _opt("pretrained_weights", "--pretrained-weights", (TRAIN,), "train.pretrained_weights", _text,
         type=click.Path(path_type=Path), default=None,
         help="Local ImageNet weight file (timm/torchvision) for the backbone: works offline."),
    _opt("no_pretrained", "--no-pretrained", (TRAIN,), "train.pretrained", _false_if_set, is_flag=True,
         help="Train from random weights (no ImageNet start)."),
    _opt("class_weighting", "--class-weights", (TRAIN,), "train.class_weighting",
         type=click.Choice(["none", "balanced"]), default=None,
         help="Loss weights per class; balanced = inverse class frequency. [default: none]"),
    _opt("balanced_sampler", "--balanced-sampler/--no-balanced-sampler", (TRAIN,), "train.balanced_sampler",
         default=None, help="Draw each class equally often. [default: no]"),
    _opt("cache_images", "--cache-images/--no-cache-images", (TRAIN,), "train.cache_images", default=None,
         help="Decode and resize every image once into memory (150 KB each at 224 px): files are read once."),
    _opt("hed_jitter", "--hed-jitter", (TRAIN,), "train.hed_jitter", type=FiniteFloat(0, 0.5), default=None,
         help="Stain augmentation strength (e.g. 0.05). [default: 0 = off, as the paper]"),
    _opt("val_fraction", "--val-fraction", (TRAIN,), "data.val_fraction",
         type=FiniteFloat(0, 0.9, max_open=True), default=None,
         help="Share of training images held out for validation (by slide when known). [default: 0.1]"),
    _opt("input_size_px", "--input-size", (TRAIN,), "data.input_size_px", type=click.IntRange(16, 2048),
         default=None, help="Network input side in px."),
    _opt("tile_size_px", "--tile-size", (TRAIN,), "data.tile_size_px", type=click.IntRange(16, MAX_TILE_PX),
         default=None,
         help="Side of a training image in px at --tile-mpp, recorded for `score`. [default: from the data]"),
    _opt("tile_mpp", "--tile-mpp", (TRAIN,), "data.tile_mpp", type=MPP,
         default=None,
         help="µm/px of the training images, recorded so `score` cuts slide tiles alike. [default: unknown]"),
    _opt("seed", "--seed", (TRAIN,), "train.seed", type=SEED, default=None,
         help="Random seed. [default: 0]"),
    _opt("name", "--name", (TRAIN,), "train.name", default=None, help="Model name in the card."),
    _opt("layout", "--layout", DATA, "data.layout", type=click.Choice(["auto", "bci", "tiles", "folders"]),
         default=None,
         help="Dataset layout: BCI, a --save-tiles folder with labels, or ROOT/<class>/*.png. [default: auto]"),
    _opt("labels_csv", "--labels", DATA, "data.labels_csv", _text, type=click.Path(path_type=Path), default=None,
         help="CSV with columns file,label[,slide] labelling a tile folder (instead of tiles.csv)."),
    _opt("drop_blank", "--drop-blank/--keep-blank", DATA, "data.drop_blank", default=None,
         help="Drop glass-only images with the tiler's empty-tile check. [default: keep]"),
    _opt("min_image_tissue", "--min-image-tissue", DATA, "data.min_tissue_fraction", type=FiniteFloat(0, 1),
         default=None, help="With --drop-blank: least tissue fraction of a kept image. [default: 0.1]"),
    _opt("device", "--device", DATA, "train.device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
         help="Compute device. [default: auto = CUDA, then MPS, then CPU]"),
    _opt("workers", "--workers", DATA, "train.workers", type=click.IntRange(0, 64), default=None,
         help="Worker processes decoding images. [default: 2]"),
)
# fmt: on


def table_options(command: str, table: tuple[Option, ...] = OPTIONS) -> Callable[[F], F]:
    """Put every option of ``command`` in the table on it, in table order (the order of ``--help``)."""
    chosen = [option for option in table if command in option.commands]

    def apply(func: F) -> F:
        for option in reversed(chosen):
            func = option.decorator()(func)
        return func

    return apply


def common_options(func: F) -> F:
    """--quiet, -v and --debug (the last is read by the error handler before parsing)."""
    for decorator in (
        click.option("--debug", is_flag=True, expose_value=False, help="Show tracebacks on errors."),
        # A count: -vvv and more are -vv (clamped), the most there is.
        click.option(
            "--verbose",
            "-v",
            count=True,
            type=click.IntRange(0, 2, clamp=True),
            help="More log messages (-vv for debug logs).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or summaries; errors only."),
    ):
        func = decorator(func)
    return func


def config_option(func: F) -> F:
    """--config FILE (TOML, YAML or JSON with sections per stage; options on the line win)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Config file (TOML/YAML/JSON) with one section per stage; options given on the line win.",
    )(func)


def settings_sections(
    command: str, params: Mapping[str, Any], table: tuple[Option, ...] = OPTIONS
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The settings the options of ``command`` give, over its ``--config`` file.

    Args:
        command: the command's name.
        params: its parameter values (``config_path`` names the config file).
        table: the option table.

    Returns:
        (sections: the file's sections with the options given merged in; every section an option of
        the command names is present; top-level settings given, by name).

    Raises:
        ConfigError, InputNotFoundError: the config file is unreadable or malformed.
    """
    from wsi_her2.config import load_config_file

    path = params.get("config_path")
    sections: dict[str, dict[str, Any]] = {
        name: dict(s or {}) for name, s in (load_config_file(path) if path else {}).items()
    }
    top: dict[str, Any] = {}
    # Whole-file options first, so that the options given on the line win over them.
    for option in sorted(table, key=lambda o: o.setting != FILE_SECTIONS):
        if command not in option.commands or option.setting is None or option.name not in params:
            continue
        value = params[option.name]
        value = option.value(value) if option.value is not None else value
        if option.setting == FILE_SECTIONS:
            for name, values in (value or {}).items():
                if name in TOP_LEVEL:
                    top[name] = values
                else:
                    sections.setdefault(name, {}).update(values)
            continue
        section, _, key = option.setting.partition(".")
        if not key and section in TOP_LEVEL:
            if value is not None:
                top[section] = value
            continue
        target = sections.setdefault(section, {})
        if value is None:
            continue
        if key:
            target[key] = value
        else:
            target.update(value)
    return sections, top


def _default_workers(sections: dict[str, dict[str, Any]], workers: int | None = None) -> None:
    from wsi_her2.tiling.loader import worker_count

    loader = sections.setdefault("loader", {})
    if workers is not None:
        loader["workers"] = workers
    loader.setdefault("workers", worker_count(None))


def score_settings(
    command: str,
    params: Mapping[str, Any],
    *,
    workers: int | None = None,
    table: tuple[Option, ...] = OPTIONS,
    **top: Any,
) -> Any:
    """The :class:`~wsi_her2.settings.ScoreSettings` of a command's options over its config file.

    Args:
        command: "score", "batch", "explain" or "validate".
        params: the command's parameter values.
        workers: loader workers instead of the option's (batch shares the cores).
        table: the option table.
        top: top-level settings the command sets itself (e.g. ``model`` from an argument).
    """
    from wsi_her2.settings import ScoreSettings

    sections, given = settings_sections(command, params, table)
    _default_workers(sections, workers)
    return ScoreSettings.from_sections(sections, **{**given, **top})


def tile_settings(params: Mapping[str, Any]) -> Any:
    """The :class:`~wsi_her2.settings.TileSettings` of ``tile``'s options over its config file."""
    from wsi_her2.settings import TileSettings

    sections, given = settings_sections(TILE, params)
    _default_workers(sections)
    return TileSettings.from_sections(sections, **given)
