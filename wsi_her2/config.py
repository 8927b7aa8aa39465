"""Frozen, validated configuration: one dataclass per stage, loadable from and savable to a file.

Every stage takes its own config; invalid values raise :class:`ConfigError` at construction, so a
bad option fails before any slide is opened. ``to_dict`` gives the resolved values that every
output records.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from wsi_her2.errors import ConfigError, InputNotFoundError

T = TypeVar("T", bound="StageConfig")


class StageConfig:
    """Mixin for the frozen config dataclasses: dict round-trip and shared validation helpers."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values of every field."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, StageConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None = None, **overrides: Any) -> T:
        """Build from a mapping (e.g. a config file section) plus keyword overrides.

        Unknown keys are an error, so a typo in a config file never goes unnoticed. ``None``
        overrides are ignored: they stand for "option not given".
        """
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(
                f"[{cls.section()}] must be a table of settings, got {_short(values)}",
                hint=f"write it as [{cls.section()}] with one 'name = value' per line",
            )
        merged = dict(values or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in set(merged) - names)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} setting(s): {', '.join(unknown)}",
                hint=f"valid settings are: {', '.join(sorted(names))}",
            )
        hints = get_type_hints(cls)
        for name, value in list(merged.items()):
            if isinstance(value, list) and "tuple" in str(hints.get(name, "")):
                merged[name] = tuple(value)
        _check_values(cls, merged, hints)
        return cls(**merged)

    @classmethod
    def section(cls) -> str:
        """The config-file section of this stage: ``TissueConfig`` reads ``[tissue]``."""
        return cls.__name__.removesuffix("Config").lower()

    def check_types(self) -> None:
        """Every field holds a value of its annotated type (numbers finite, flags true/false).

        Called first by each stage's ``__post_init__`` (and by :meth:`from_dict` before
        construction), so a config file's ``"false"``, ``nan`` or ``inf`` is a
        :class:`ConfigError`, never a wrong result or a crash deep inside a stage.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        _check_values(type(self), values, get_type_hints(type(self)))

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2


def _short(value: Any) -> str:
    """A bounded repr: a YAML alias bomb or a huge string must not make the message itself a bomb."""
    return _REPR.repr(value)


def _expected(hint: Any, value: Any) -> str | None:
    """What ``value`` should have been for the annotation ``hint``, or None when it fits."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        wanted = [_expected(arg, value) for arg in args if arg is not type(None)]
        if any(w is None for w in wanted):
            return None
        return " or ".join(w for w in wanted if w) + (" (or left out)" if type(None) in args else "")
    if origin is Literal:
        fits = any(value == a and type(value) is type(a) for a in args)
        return None if fits else "one of " + ", ".join(map(repr, args))
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "text"
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if isinstance(value, tuple) and (item is None or all(_expected(item, v) is None for v in value)):
            return None
        return f"a list ({_expected(item, object()) or 'a value'} each)"
    return None


def _check_values(cls: type, values: Mapping[str, Any], hints: Mapping[str, Any]) -> None:
    section = cls.section() if hasattr(cls, "section") else cls.__name__
    for name, value in values.items():
        wanted = _expected(hints.get(name, Any), value)
        if wanted is not None:
            raise ConfigError(f"[{section}] {name} must be {wanted}, got {_short(value)}")


def require(condition: bool, message: str, hint: str | None = None) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message, hint=hint)


def require_fraction(name: str, value: float) -> None:
    """A value in [0, 1]."""
    require(
        isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0,
        f"{name} must be between 0 and 1, got {value!r}",
    )


def require_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    """A finite value > 0 (or None when allowed)."""
    if value is None and allow_none:
        return
    require(
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
        f"{name} must be a positive number, got {value!r}",
    )


# Plausible µm/px for brightfield slides. 0.05 is beyond any scanner's 100x; 20 is a 0.5x overview.
MIN_PLAUSIBLE_MPP = 0.05
MAX_PLAUSIBLE_MPP = 20.0


@dataclasses.dataclass(frozen=True)
class TissueConfig(StageConfig):
    """Settings of :func:`wsi_her2.tissue.detect_tissue`.

    Attributes:
        mask_mpp: µm/px of the image the mask is computed on (a low pyramid level or thumbnail).
        min_saturation: lowest Otsu threshold on HSV saturation (0-255), so a near-empty slide is
            not thresholded inside its own glass noise.
        min_optical_density: pixels whose optical density above the glass's exceeds this count as
            tissue even when faint in saturation (pale hematoxylin, faint DAB).
        min_texture: pixels whose local grey-level standard deviation (5x5 window at ``mask_mpp``)
            exceeds this count as tissue: cells and fibres have texture, glass does not.
        close_um: morphological closing radius that joins nearby fragments of one tissue piece.
        min_area_um2: tissue pieces smaller than this are dropped (dust, debris).
        max_hole_um2: holes smaller than this are filled; larger ones (lumina, tears) stay holes.
        reject_pen: drop red, green, blue and black marker ink.
        min_pen_area_um2: ink blobs smaller than this are left alone (dark nuclei, not strokes).
        simplify_um: tolerance of polygon simplification.
    """

    mask_mpp: float = 4.0
    min_saturation: int = 20
    min_optical_density: float = 0.06
    min_texture: float = 3.0
    close_um: float = 16.0
    min_area_um2: float = 20_000.0
    max_hole_um2: float = 10_000.0
    reject_pen: bool = True
    min_pen_area_um2: float = 5_000.0
    simplify_um: float = 4.0

    def __post_init__(self) -> None:
        self.check_types()
        require(0 < self.mask_mpp <= 100, f"mask_mpp must be within 0..100 µm/px, got {self.mask_mpp!r}")
        require(0 <= self.min_saturation <= 255, "min_saturation must be within 0..255")
        require_positive("min_optical_density", self.min_optical_density)
        require(self.min_texture >= 0, f"min_texture must be >= 0, got {self.min_texture!r}")
        for name in ("close_um", "min_area_um2", "max_hole_um2", "simplify_um", "min_pen_area_um2"):
            value = getattr(self, name)
            require(value >= 0, f"{name} must be >= 0, got {value!r}")
        # The closing kernel is (2 close_um / mask µm/px)² pixels: a 1-km radius would be a bomb.
        require(self.close_um <= 1000, f"close_um must be at most 1000 µm, got {self.close_um!r}")


@dataclasses.dataclass(frozen=True)
class GridConfig(StageConfig):
    """Settings of :func:`wsi_her2.tiling.grid.build_tile_grid`.

    Attributes:
        tile_size_px: tile side in pixels at ``target_mpp``, or in level-0 pixels when
            ``target_mpp`` is None (the default 1024 matches the HER2 training patches).
        target_mpp: µm/px the tile size refers to, so that a tile covers the same tissue on a
            20x and a 40x slide; None means the slide's own level-0 pixels.
        overlap_px: overlap between neighbouring tiles, in the same pixels as ``tile_size_px``.
        min_tissue_fraction: a tile is kept when at least this fraction of it lies on the
            tissue mask (default 0.25: a quarter of a 1024-px tile is ~65x65 µm² at 0.25 µm/px,
            enough cells to score).
    """

    tile_size_px: int = 1024
    target_mpp: float | None = None
    overlap_px: int = 0
    min_tissue_fraction: float = 0.25

    def __post_init__(self) -> None:
        self.check_types()
        require(
            isinstance(self.tile_size_px, int) and 16 <= self.tile_size_px <= 16384,
            f"tile_size_px must be an integer between 16 and 16384, got {self.tile_size_px!r}",
        )
        require_positive("target_mpp", self.target_mpp, allow_none=True)
        require(
            isinstance(self.overlap_px, int) and 0 <= self.overlap_px < self.tile_size_px,
            f"overlap_px must be >= 0 and smaller than the tile ({self.tile_size_px} px)",
        )
        require_fraction("min_tissue_fraction", self.min_tissue_fraction)


# Where stored tiles are decoded for a scorer on a torch device (LoaderConfig.decode).
DECODES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class LoaderConfig(StageConfig):
    """Settings of the tile loader (:mod:`wsi_her2.tiling.loader`).

    Attributes:
        output_size_px: side of each delivered tile (224 for the paper's classifiers).
        batch_size: tiles per delivered batch.
        workers: worker processes reading and decoding tiles (0 reads in the calling process).
        prefetch_batches: batches read ahead per worker.
        pixel_check: run the pixel-level empty/blur check on every tile.
        min_pixel_tissue_fraction: a tile whose pixels are less than this fraction tissue is
            dropped as background or glass, whatever the low-resolution mask said.
        min_blur_score: tiles whose blur score (variance of the grey Laplacian at ~2 µm/px over
            the tissue, see :func:`wsi_her2.tiling.loader.pixel_check`) is below this are dropped as
            out of focus; 0 turns the blur check off. Measured on the real fixture tiles (224-px
            tiles of 256 µm): sharp tissue scores 440-12,000 (the pale score-0 core lowest); the
            pale cores blurred by a Gaussian of 1.7 µm score 44-200, of 2.3 µm 21-73; high-contrast
            H&E stays above 170 at 2.3 µm. The default 50 drops badly blurred tiles, never sharp ones.
        return_images: deliver the pixels; a tile function that runs in the workers may not need them.
        start_method: multiprocessing start method ("fork", "forkserver", "spawn"; None = best).
        min_parallel_work_s: with workers and no warm pool yet, tiles are read in the calling
            process until the rest of the slide is estimated to take longer than this there; only
            then are the workers started (they take over once up). A small slide never pays for
            worker start-up. 0 uses the workers from the first batch.
        decode: where stored JPEG tiles are decoded for a scorer that takes tiles on a torch device
            (a trained model, the DAB scorer on CUDA): "auto" (on the GPU when the scorer runs on
            CUDA and the slide's stored tiles allow it), "cpu" (worker processes) or "gpu" (on the
            scorer's device; an error where the slide or scorer does not allow it).
    """

    output_size_px: int = 224
    batch_size: int = 64
    workers: int = 2
    prefetch_batches: int = 2
    pixel_check: bool = True
    min_pixel_tissue_fraction: float = 0.10
    min_blur_score: float = 50.0
    return_images: bool = True
    start_method: Literal["fork", "forkserver", "spawn"] | None = None
    min_parallel_work_s: float = 1.0
    decode: Literal["auto", "cpu", "gpu"] = "auto"

    def __post_init__(self) -> None:
        self.check_types()
        require(
            isinstance(self.output_size_px, int) and 8 <= self.output_size_px <= 8192,
            "output_size_px must be an integer between 8 and 8192",
        )
        # Each worker holds prefetch_batches x batch_size tiles in shared memory: both are bounded.
        require(1 <= self.batch_size <= 4096, f"batch_size must be within 1..4096, got {self.batch_size!r}")
        require(isinstance(self.workers, int) and 0 <= self.workers <= 256, "workers must be within 0..256")
        require(1 <= self.prefetch_batches <= 64, f"prefetch_batches must be within 1..64, got {self.prefetch_batches}")
        require_fraction("min_pixel_tissue_fraction", self.min_pixel_tissue_fraction)
        require(self.min_blur_score >= 0, "min_blur_score must be >= 0")
        require(
            self.start_method in (None, "fork", "forkserver", "spawn"),
            f"start_method must be fork, forkserver or spawn, got {self.start_method!r}",
        )
        require(self.min_parallel_work_s >= 0, "min_parallel_work_s must be >= 0")
        require(self.decode in DECODES, f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")


DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class InferenceConfig(StageConfig):
    """Settings of the inference engine.

    Attributes:
        device: "auto" (CUDA when present, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps".
        batch_size: tiles per forward pass (None: 256 on CUDA, 32 elsewhere).
        precision: "auto" (bf16 on CUDA, fp32 elsewhere), "fp32", "bf16" or "fp16".
        channels_last: channels-last memory format on CUDA (faster convolutions).
        compile: ``torch.compile`` the model (slow first batch, faster afterwards).
        threads: CPU threads for torch (None leaves torch's default).
    """

    device: str = "auto"
    batch_size: int | None = None
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        self.check_types()
        require(
            self.device in DEVICES or self.device.startswith("cuda:"),
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}",
        )
        # A batch of 8192 tiles at 224 px is 4.9 GB of fp32 input already.
        require(
            self.batch_size is None or 1 <= self.batch_size <= 8192,
            f"batch_size must be within 1..8192, got {self.batch_size!r}",
        )
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        require(self.threads is None or 1 <= self.threads <= 1024, "threads must be within 1..1024")


# Every section any command reads from a config file (one file may serve score, tile and train);
# "run" is what `train` records about the run in train_config.json, which is a valid --config file.
CONFIG_SECTIONS = ("tissue", "grid", "loader", "aggregate", "inference", "dab", "data", "train", "run")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict of sections.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the file cannot be parsed, is not a mapping of known sections, or a section
            is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"config file not found: {path}", hint="check the --config path")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"unknown config file type {suffix!r}: {path}", hint="use .toml, .yaml/.yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type; the message is what matters
        detail = " ".join(str(exc).split())  # YAML's messages span several lines; ours is one
        raise ConfigError(f"cannot parse config file {path}: {detail[:300]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    unknown = sorted(str(name) for name in data if name not in CONFIG_SECTIONS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(_short(n) for n in unknown)}",
            hint=f"sections are {', '.join(CONFIG_SECTIONS)}",
        )
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(
                f"config file {path}: [{name}] must be a table of settings, got {_short(section)}",
                hint=f"write it as [{name}] with one 'name = value' per line",
            )
    return data
