"""The weight-free HER2 scorer built on the DAB stain itself (the default model; no trained weights).

Colour deconvolution with the slide's own stain vectors, nuclei in the hematoxylin channel, the
membrane DAB on a ring around each nucleus, and ASCO/CAP cell classes from membrane intensity
and completeness. See ``docs/dab-scorer.md``.
"""

from wsi_her2.models.dab.cells import CellTable
from wsi_her2.models.dab.config import DabConfig
from wsi_her2.models.dab.evidence import render_evidence
from wsi_her2.models.dab.stain import (
    StainVectors,
    default_stain_vectors,
    estimate_stain_vectors,
    optical_density,
    separate_stains,
)
from wsi_her2.models.dab.stain_check import StainCheck, check_stain
from wsi_her2.models.dab.tile import (
    TILE_KEYS,
    DabTileFunction,
    DabTileResult,
    classify_cell_counts,
    score_tile,
)

__all__ = [
    "TILE_KEYS",
    "CellTable",
    "DabConfig",
    "DabTileFunction",
    "DabTileResult",
    "StainCheck",
    "StainVectors",
    "check_stain",
    "classify_cell_counts",
    "default_stain_vectors",
    "estimate_stain_vectors",
    "optical_density",
    "render_evidence",
    "score_tile",
    "separate_stains",
]
