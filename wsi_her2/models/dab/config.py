"""Settings of the weight-free DAB scorer (:mod:`wsi_her2.models.dab`).

Every optical density (OD) here is base-10 (``OD = -log10(I / 255)``) and, for a stain, the OD
carried by that stain's unit vector: the convention of QuPath and of Ruifrok & Johnston, not
scikit-image's ``rgb2hed`` (natural log, divided again by ``log(1e-6)``; about OD/6).
How each default was chosen is in ``docs/dab-scorer.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from wsi_her2.config import StageConfig, require, require_fraction, require_positive
from wsi_her2.errors import ConfigError
from wsi_her2.models.dab.gate_config import TumourGateConfig


@dataclasses.dataclass(frozen=True)
class DabConfig(StageConfig):
    """Settings of :func:`wsi_her2.models.dab.score_tile` and the stain estimate.

    Attributes:
        work_mpp: µm/px tiles are analysed at. 0.5 µm/px (20x) resolves 1-2 µm membranes as
            2-4 px lines and 6-12 µm nuclei as 12-24 px blobs, at a quarter of the pixels of 40x.
        tissue_min_od: a pixel is tissue when its mean RGB optical density exceeds this
            (glass is below 0.03, the palest stroma of a HER2-0 core about 0.1).
        nucleus_sigma_um: Gaussian smoothing of the hematoxylin before nucleus segmentation.
        seed_sigma_um: Gaussian smoothing of the hematoxylin for nucleus seeds (about half a
            small nucleus radius, so that chromatin texture gives one peak per nucleus).
        background_sigma_um: Gaussian smoothing that gives the local hematoxylin background
            (cytoplasm, stroma); seeds and nuclei are measured above it.
        seed_radius_um: a seed is the maximum within this radius (closest nuclei kept apart).
        nucleus_min_od: lowest smoothed hematoxylin OD at a seed.
        nucleus_min_contrast: lowest rise of a seed's smoothed hematoxylin above its local
            background (pale nuclei of a HER2-0 core rise about 0.05-0.1 above their cytoplasm).
        nucleus_rel_threshold: a nucleus extends to where its rise above the background falls
            to this fraction of the seed's (low, because pale vesicular nuclei are ringed by
            chromatin and a higher cut finds only the rim).
        nucleus_max_radius_um: no nucleus pixel lies further than this from its seed.
        nucleus_min_area_um2: nuclei smaller than this are not scored (debris, apoptotic
            bodies, most lymphocytes; carcinoma nuclei are 40-150 µm²).
        nucleus_max_area_um2: nuclei larger than this are not scored (clumps, folds).
        nucleus_max_elongation: nuclei longer than this times their width are not scored
            (fibroblasts, smooth muscle, endothelium: stroma, which the guideline does not score).
        dab_blob_radius_um: DAB regions at least twice this wide are "compact" (nuclear or
            cytoplasmic blobs); thinner lines (membranes) are not.
        nuclear_dab_od: compact DAB above this OD that lies largely on a nucleus is a stained
            nucleus (Ki67-like nuclear staining): all of it becomes nucleus and, with a halo, is
            kept out of every membrane ring, so that its brown rim never reads as membrane.
        ring_gap_um: the membrane ring starts this far outside the nucleus edge, so that
            nuclear DAB blurred across the edge (Ki67-like staining) does not read as membrane.
        ring_width_um: width of the ring in which each cell's membrane is sought; the ring is
            also cut where it meets a neighbour's (nearest-nucleus partition).
        membrane_max_width_um: brown lines narrower than this are membrane: the line signal is the
            DAB minus its opening by a disk this wide (white top-hat). A membrane blurred to 2-4 µm
            passes; a sheet of cytoplasmic blush survives the opening and gives no line signal.
        membrane_sigma_um: Gaussian smoothing of the DAB before the membrane is measured (about a
            membrane's width: keeps a 1-2 µm brown line, averages out pixel noise and JPEG artefacts).
        n_sectors: angular sectors of the ring; completeness is the fraction that is stained.
        membrane_od_1plus: contrast above the slide's background (see ``membrane_reference``) of
            the membrane line signal (the peak DAB OD of a thin brown line above the DAB around
            it, per ring sector) from which a sector counts as stained: faint, barely perceptible
            brown. The level itself (background + contrast) is also the DAB OD above which a pixel
            counts in ``dab_area_fraction``.
        membrane_od_2plus: contrast above background of weak-to-moderate staining.
        membrane_od_3plus: contrast above background of intense staining.
        membrane_reference: "nuclei": the levels are the contrasts above the slide's own
            unstained background, the line signal measured inside nuclei (where HER2 never is);
            "absolute": above ``background_default_od`` on every slide.
        background_default_od: the background used when it cannot be measured (too few nuclei)
            or with ``membrane_reference = "absolute"``; that of the visible HER2-0 core.
        background_max_od: a measured background above this is capped (strong staining spilling
            into nuclei must not raise the levels until membranes vanish).
        intensity_reference: "hematoxylin": nucleus and membrane thresholds are scaled by this
            slide's counterstain level over ``reference_hematoxylin_od`` (a uniformly lighter or
            darker slide keeps its classes; :mod:`~wsi_her2.models.dab.intensity`); "none": not.
        reference_hematoxylin_od: the counterstain level (90th percentile of the tissue's
            hematoxylin OD on the tissue mask's thumbnail) at which the thresholds apply as
            written: that of the two visible cores (0.146 and 0.145).
        intensity_factor_min: the scaling factor is kept at or above this.
        intensity_factor_max: and at or below this (a counterstain far off the reference is more
            likely a different protocol than a thicker section).
        tumour_gate: the tumour-cell gate (:class:`~wsi_her2.models.dab.gate_config.TumourGateConfig`).
        complete_fraction: a membrane stained in at least this fraction of its sectors is
            "complete" (2+ and 3+ need it). Below 1 because a 2D section of a ring is never
            stained all round and because gastric criteria accept lateral/basolateral staining.
        partial_fraction: a membrane stained (at the 1+ OD) in at least this fraction of its
            sectors is "incomplete" staining: 1+.
        min_3plus_focus: fraction of 3+ cells above which a sub-10% 3+ focus makes a tile 2+
            (``classify_by_percentages``); 0.02 keeps a few stray 3+ calls from doing so.
        estimate_min_dab_fraction: a stain estimate needs at least this fraction of tissue
            pixels with DAB (else the standard vectors are used: a DAB-free slide has no DAB colour).
        estimate_max_angle_deg: an estimated vector further than this from the standard one is
            implausible and the standard vectors are used.
        estimate_min_separation_deg: the estimated hematoxylin and DAB must be at least this far
            apart (the standard ones are 37° apart).
    """

    work_mpp: float = 0.5
    tissue_min_od: float = 0.06
    nucleus_sigma_um: float = 1.0
    seed_sigma_um: float = 2.0
    background_sigma_um: float = 6.0
    seed_radius_um: float = 3.5
    nucleus_min_od: float = 0.1
    nucleus_min_contrast: float = 0.03
    nucleus_rel_threshold: float = 0.3
    nucleus_max_radius_um: float = 8.0
    nucleus_min_area_um2: float = 20.0
    nucleus_max_area_um2: float = 300.0
    nucleus_max_elongation: float = 3.5
    dab_blob_radius_um: float = 2.0
    nuclear_dab_od: float = 0.25
    ring_gap_um: float = 1.0
    ring_width_um: float = 4.0
    membrane_max_width_um: float = 4.5
    membrane_sigma_um: float = 0.5
    n_sectors: int = 16
    membrane_od_1plus: float = 0.045
    membrane_od_2plus: float = 0.115
    membrane_od_3plus: float = 0.285
    membrane_reference: str = "nuclei"
    background_default_od: float = 0.015
    background_max_od: float = 0.05
    complete_fraction: float = 0.5
    partial_fraction: float = 0.25
    min_3plus_focus: float = 0.02
    estimate_min_dab_fraction: float = 0.01
    estimate_max_angle_deg: float = 20.0
    estimate_min_separation_deg: float = 20.0
    intensity_reference: str = "hematoxylin"
    reference_hematoxylin_od: float = 0.1455
    intensity_factor_min: float = 0.7
    intensity_factor_max: float = 1.4
    tumour_gate: TumourGateConfig = dataclasses.field(default_factory=TumourGateConfig)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> DabConfig:  # type: ignore[override]
        """As :meth:`StageConfig.from_dict`; a ``tumour_gate`` mapping (``[dab.tumour_gate]``) becomes its config."""
        merged = dict(values or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        gate = merged.get("tumour_gate")
        if gate is not None and not isinstance(gate, TumourGateConfig):
            if not isinstance(gate, Mapping):
                raise ConfigError(f"dab.tumour_gate must be a table of settings, got {gate!r}")
            merged["tumour_gate"] = TumourGateConfig.from_dict(gate)
        return super().from_dict(merged)

    def __post_init__(self) -> None:
        self.check_types()
        for name in (
            "work_mpp",
            "tissue_min_od",
            "nucleus_sigma_um",
            "seed_sigma_um",
            "background_sigma_um",
            "seed_radius_um",
            "nucleus_min_od",
            "nucleus_max_radius_um",
            "nucleus_min_area_um2",
            "nucleus_max_area_um2",
            "nucleus_max_elongation",
            "nuclear_dab_od",
            "ring_width_um",
            "membrane_max_width_um",
            "membrane_od_1plus",
            "membrane_od_2plus",
            "membrane_od_3plus",
            "estimate_max_angle_deg",
            "estimate_min_separation_deg",
        ):
            require_positive(name, getattr(self, name))
        for name in ("nucleus_min_contrast", "dab_blob_radius_um", "ring_gap_um", "membrane_sigma_um"):
            value = getattr(self, name)
            require(
                isinstance(value, (int, float)) and value >= 0,
                f"{name} must be a number >= 0, got {value!r}",
            )
        for name in ("nucleus_rel_threshold", "complete_fraction", "partial_fraction", "min_3plus_focus"):
            require_fraction(name, getattr(self, name))
        require_fraction("estimate_min_dab_fraction", self.estimate_min_dab_fraction)
        require(0.05 <= self.work_mpp <= 4.0, f"work_mpp must be within 0.05..4 µm/px, got {self.work_mpp!r}")
        require(
            isinstance(self.n_sectors, int) and 4 <= self.n_sectors <= 64,
            f"n_sectors must be an integer between 4 and 64, got {self.n_sectors!r}",
        )
        require(
            self.membrane_od_1plus < self.membrane_od_2plus < self.membrane_od_3plus,
            "membrane OD thresholds must increase: membrane_od_1plus < membrane_od_2plus < membrane_od_3plus",
            hint=f"got {self.membrane_od_1plus}, {self.membrane_od_2plus}, {self.membrane_od_3plus}",
        )
        require(
            self.partial_fraction <= self.complete_fraction,
            "partial_fraction must not exceed complete_fraction",
        )
        require(
            self.nucleus_min_area_um2 < self.nucleus_max_area_um2,
            "nucleus_min_area_um2 must be smaller than nucleus_max_area_um2",
        )
        require(
            self.seed_sigma_um < self.background_sigma_um,
            "seed_sigma_um must be smaller than background_sigma_um",
        )
        require(self.nucleus_max_elongation >= 1, "nucleus_max_elongation must be >= 1")
        require(self.estimate_max_angle_deg < 90, "estimate_max_angle_deg must be below 90")
        require(
            self.membrane_reference in ("nuclei", "absolute"),
            f"membrane_reference must be 'nuclei' or 'absolute', got {self.membrane_reference!r}",
        )
        for name in ("background_default_od", "background_max_od"):
            value = getattr(self, name)
            require(
                isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 0.5,
                f"{name} must be a number between 0 and 0.5, got {value!r}",
            )
        require(
            self.intensity_reference in ("hematoxylin", "none"),
            f"intensity_reference must be 'hematoxylin' or 'none', got {self.intensity_reference!r}",
        )
        require_positive("reference_hematoxylin_od", self.reference_hematoxylin_od)
        require_positive("intensity_factor_min", self.intensity_factor_min)
        require_positive("intensity_factor_max", self.intensity_factor_max)
        require(
            self.intensity_factor_min <= 1.0 <= self.intensity_factor_max,
            "intensity_factor_min must be <= 1 <= intensity_factor_max",
            hint=f"got {self.intensity_factor_min} and {self.intensity_factor_max}",
        )
        require(
            isinstance(self.tumour_gate, TumourGateConfig),
            f"tumour_gate must be a TumourGateConfig, got {type(self.tumour_gate).__name__}",
        )
