"""Everything that decides how a slide is scored, in one frozen, picklable object.

``wsi-her2 score`` and ``wsi-her2 batch`` build a :class:`ScoreSettings` from options and config
files; batch workers (local processes or Dask) receive it whole. Its fingerprint goes into every
resume manifest, so a changed setting means the slide is scored again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_her2.aggregate import AggregateConfig
from wsi_her2.config import GridConfig, InferenceConfig, LoaderConfig, TissueConfig
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.progress import ProgressCallback

SECTIONS = ("tissue", "grid", "loader", "aggregate", "inference", "dab")


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

    @classmethod
    def from_sections(
        cls,
        sections: Mapping[str, Mapping[str, Any]],
        *,
        model: str = "dab",
        backend: str = "auto",
        check_stain: bool = True,
    ) -> ScoreSettings:
        """Build from config sections (file sections merged with options; None values = not given).

        Raises:
            ConfigError: an unknown section, unknown key or invalid value.
        """
        from wsi_her2.errors import ConfigError

        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(unknown)}", hint=f"valid: {', '.join(SECTIONS)}")
        grid_values = {k: v for k, v in (sections.get("grid") or {}).items() if v is not None}
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
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values of every setting."""
        return {
            "model": self.model,
            **{name: getattr(self, name).to_dict() for name in SECTIONS},
            "grid_user_set": sorted(self.grid_user_set),
            "backend": self.backend,
            "check_stain": self.check_stain,
        }

    def fingerprint(self) -> str:
        """SHA-256 of the settings that change results (worker counts, batch sizes and decoding do not)."""
        values = self.to_dict()
        # Where tiles are decoded and when workers start change speed, not results (decoders agree
        # within JPEG decoder tolerance, see gpu_decode).
        speed_only = ("workers", "prefetch_batches", "min_parallel_work_s", "decode")
        values["loader"] = {k: v for k, v in values["loader"].items() if k not in speed_only}
        values["inference"] = {}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def run_score(
    slide: str | Path,
    out_dir: str | Path,
    settings: ScoreSettings,
    *,
    mpp: float | None = None,
    roi_path: str | Path | None = None,
    scorer: Any = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Score one slide and write its outputs folder (``report.json`` last).

    Args:
        slide: the slide file.
        out_dir: its output folder.
        settings: how to score.
        mpp: µm/px override for this slide.
        roi_path: regions of interest (GeoJSON) for this slide.
        scorer: an already loaded scorer (batch workers load the model once); None loads it.
        progress: progress callback.

    Returns:
        The :class:`~wsi_her2.pipeline.SlideResult` (status "done" or "no_tissue").
    """
    from wsi_her2.models import load_scorer
    from wsi_her2.outputs.scoring import write_score_outputs
    from wsi_her2.pipeline import score_slide
    from wsi_her2.roi import load_roi

    own = scorer is None
    if scorer is None:
        scorer = load_scorer(settings.model, inference=settings.inference, dab=settings.dab)
    try:
        roi = load_roi(roi_path) if roi_path else None
        result = score_slide(
            slide,
            scorer,
            mpp=mpp,
            backend=settings.backend,
            tissue=settings.tissue,
            grid=settings.grid,
            grid_user_set=settings.grid_user_set,
            loader=settings.loader,
            aggregate=settings.aggregate,
            roi=roi,
            check_stain=settings.check_stain,
            progress=progress,
        )
    finally:
        if own:
            scorer.close()
    result.config.update({"model": settings.model, "roi": str(roi_path) if roi_path else None,
                          "settings_fingerprint": settings.fingerprint()})  # fmt: skip
    result.files = write_score_outputs(result, out_dir)
    return result
