"""Everything that decides how a slide is tiled or scored, in one frozen, picklable object per command.

A command builds its settings once, from its options and a config file (the option table in
``wsi_her2_cli/options.py``); the library takes them whole (:func:`wsi_her2.pipeline.run_score`,
:func:`wsi_her2.pipeline.run_tile`), batch workers (local processes or Dask) receive them whole,
and every report's resolved configuration comes from them. The fingerprint of
:class:`ScoreSettings` goes into every resume manifest, so a changed setting means the slide is
scored again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from wsi_her2.aggregate import AggregateConfig
from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig, TissueConfig
from wsi_her2.models.dab.config import DabConfig

SECTIONS = ("tissue", "grid", "loader", "aggregate", "inference", "dab")
TILE_SECTIONS = ("tissue", "grid", "loader")


def _check_sections(sections: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    from wsi_her2.errors import ConfigError

    unknown = sorted(set(sections) - set(valid))
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(unknown)}", hint=f"valid: {', '.join(valid)}")


def _given(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values given (None = an option not given)."""
    return {k: v for k, v in (section or {}).items() if v is not None}


def require_dab_model(model: str) -> None:
    """A ``--dab-config`` calibration tunes the DAB scorer: refuse it with a trained model.

    Raises:
        ConfigError: ``model`` is not tuned by the ``[dab]`` settings.
    """
    from wsi_her2.models import takes_dab_settings

    if not takes_dab_settings(model):
        from wsi_her2.errors import ConfigError

        raise ConfigError(
            f"--dab-config tunes the DAB scorer, not the model {model}",
            hint="leave out --dab-config, or score with the DAB scorer (--model dab)",
        )


@dataclasses.dataclass(frozen=True)
class TileSettings:
    """How to tile a slide (``wsi-her2 tile``).

    Attributes:
        tissue: tissue detection.
        grid: tile grid.
        loader: tile loader (output size, workers, pixel check).
        backend: slide reader to force, or "auto".
    """

    tissue: TissueConfig = dataclasses.field(default_factory=TissueConfig)
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    backend: str = "auto"

    @classmethod
    def from_sections(cls, sections: Mapping[str, Mapping[str, Any]], *, backend: str = "auto") -> TileSettings:
        """Build from config sections (file sections merged with options; None values = not given).

        Sections of other commands (a config file shared with ``score``) are not read.

        Raises:
            ConfigError: an unknown key or invalid value.
        """
        return cls(
            tissue=TissueConfig.from_dict(sections.get("tissue")),
            grid=GridConfig.from_dict(_given(sections.get("grid"))),
            loader=LoaderConfig.from_dict(sections.get("loader")),
            backend=backend,
        )

    def report_config(self, *, loader: LoaderConfig | None = None) -> dict[str, Any]:
        """The resolved configuration a tiling manifest records (``loader``: as the run adjusted it)."""
        return {
            "tissue": self.tissue.to_dict(),
            "grid": self.grid.to_dict(),
            "loader": (loader or self.loader).to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """How to score slides.

    Attributes:
        model: "dab" or a checkpoint path.
        tissue: tissue detection.
        grid: tile grid (model geometry applies to fields not in ``grid_user_set``).
        grid_user_set: grid fields set explicitly by the user.
        loader: tile loader.
        aggregate: slide-level rules.
        inference: device, batch size, precision (trained models).
        dab: the DAB scorer's thresholds.
        backend: slide reader to force, or "auto".
        check_stain: refuse slides whose stain is not the model's.
        calibration: what a ``--dab-config`` file applied (its path, SHA-256, overrides and
            provenance: :func:`wsi_her2.validation.calibration_file.calibration_block`), recorded in
            every report; its hash enters the fingerprint, and only when set.
    """

    model: str = "dab"
    tissue: TissueConfig = dataclasses.field(default_factory=TissueConfig)
    grid: GridConfig = dataclasses.field(default_factory=GridConfig)
    grid_user_set: frozenset[str] = frozenset()
    loader: LoaderConfig = dataclasses.field(default_factory=LoaderConfig)
    aggregate: AggregateConfig = dataclasses.field(default_factory=AggregateConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    dab: DabConfig = dataclasses.field(default_factory=DabConfig)
    backend: str = "auto"
    check_stain: bool = True
    calibration: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.calibration is not None:
            require_dab_model(self.model)

    @classmethod
    def from_sections(
        cls,
        sections: Mapping[str, Mapping[str, Any]],
        *,
        model: str = "dab",
        backend: str = "auto",
        check_stain: bool = True,
        calibration: Mapping[str, Any] | None = None,
    ) -> ScoreSettings:
        """Build from config sections (file sections merged with options; None values = not given).

        Raises:
            ConfigError: an unknown section, unknown key or invalid value; a calibration with a
                model that is not the DAB scorer.
        """
        _check_sections(sections, SECTIONS)
        grid_values = _given(sections.get("grid"))
        return cls(
            model=str(model),
            tissue=TissueConfig.from_dict(sections.get("tissue")),
            grid=GridConfig.from_dict(grid_values),
            grid_user_set=frozenset(grid_values),
            loader=LoaderConfig.from_dict(sections.get("loader")),
            aggregate=AggregateConfig.from_dict(sections.get("aggregate")),
            inference=InferenceConfig.from_dict(sections.get("inference")),
            dab=DabConfig.from_dict(sections.get("dab")),
            backend=backend,
            check_stain=check_stain,
            calibration=calibration,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values of every setting."""
        values = {
            "model": self.model,
            **{name: getattr(self, name).to_dict() for name in SECTIONS},
            "grid_user_set": sorted(self.grid_user_set),
            "backend": self.backend,
            "check_stain": self.check_stain,
        }
        if self.calibration is not None:  # only then, so that uncalibrated fingerprints stay as they were
            values["calibration_sha256"] = self.calibration.get("sha256")
        return values

    def fingerprint(self) -> str:
        """SHA-256 of the settings that change results (worker counts, batch sizes and decoding do not)."""
        values = self.to_dict()
        # Where tiles are decoded and when workers start change speed, not results (decoders agree
        # within JPEG decoder tolerance, see gpu_decode).
        speed_only = ("workers", "prefetch_batches", "min_parallel_work_s", "decode")
        values["loader"] = {k: v for k, v in values["loader"].items() if k not in speed_only}
        values["inference"] = {}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()

    def report_config(self, *, grid: GridConfig | None = None, loader: LoaderConfig | None = None) -> dict[str, Any]:
        """The resolved configuration a score report records (``grid``, ``loader``: as the model set them)."""
        return {
            "tissue": self.tissue.to_dict(),
            "grid": (grid or self.grid).to_dict(),
            "loader": (loader or self.loader).to_dict(),
            "aggregate": self.aggregate.to_dict(),
            "check_stain": self.check_stain,
        }


def __getattr__(name: str) -> Any:
    # `from wsi_her2.settings import run_score` (the README's example) keeps working; the runners
    # live in the pipeline, which sits above the settings.
    if name in ("run_score", "run_tile"):
        from wsi_her2 import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
