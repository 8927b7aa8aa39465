"""Settings of the tumour-cell gate (:mod:`wsi_her2.models.dab.gate`).

The ASCO/CAP percentages are fractions of *invasive tumour cells*. Without trained weights, the
gate labels a detected cell as tumour (carcinoma epithelium) from what the hematoxylin and the
geometry show: an epithelial-sized, not spindle-shaped, not densely hyperchromatic nucleus that
sits in a cohesive cluster of such nuclei. How each default was chosen is in
``docs/dab-scorer.md`` (*Tumour-cell gate*).
"""

from __future__ import annotations

import dataclasses

from wsi_her2.config import StageConfig, require, require_fraction, require_positive


@dataclasses.dataclass(frozen=True)
class TumourGateConfig(StageConfig):
    """How the DAB scorer tells tumour cells from stroma and inflammatory cells.

    Attributes:
        enabled: gate the cells; when False every detected cell counts as a tumour cell (the
            behaviour before the gate, e.g. for a region already outlined with ``--roi``).
        min_nucleus_area_um2: smallest epithelial-like nucleus. Small lymphocytes have nuclei of
            5-7 µm (20-38 µm²); carcinoma nuclei are larger (40-150 µm²).
        max_elongation: longest epithelial-like nucleus (length / width). Fibroblast, smooth-muscle
            and endothelial nuclei are spindles (3-5 and more); columnar carcinoma nuclei reach ~2.5.
        max_relative_darkness: nuclei whose mean hematoxylin OD exceeds this multiple of the
            slide's median over epithelial-sized nuclei are dense, hyperchromatic (lymphocytes,
            plasma cells, fibroblasts) rather than the vesicular nuclei of carcinoma cells.
            0 turns the criterion off.
        radius_um: neighbourhood radius (centre to centre) in which cohesion is counted:
            about two to three cell diameters.
        min_neighbours: a tumour cell has at least this many other epithelial-like nuclei within
            ``radius_um``: a cohesive cluster of at least ``min_neighbours + 1`` cells (the gastric
            criteria's "cluster of at least five cells"), not a scattered stromal or inflammatory cell.
        min_epithelial_share: and at least this share of all nuclei within ``radius_um`` are
            epithelial-like (a nest, not a cellular stroma with a few large nuclei in it).
        density_cell_um: grid spacing of the raster on which neighbours are counted (the radius is
            resolved to within half of this).
    """

    enabled: bool = True
    min_nucleus_area_um2: float = 35.0
    max_elongation: float = 2.5
    max_relative_darkness: float = 1.3
    radius_um: float = 30.0
    min_neighbours: int = 5
    min_epithelial_share: float = 0.6
    density_cell_um: float = 2.5

    def __post_init__(self) -> None:
        self.check_types()
        require(isinstance(self.enabled, bool), f"enabled must be true or false, got {self.enabled!r}")
        for name in ("min_nucleus_area_um2", "max_elongation", "radius_um", "density_cell_um"):
            require_positive(name, getattr(self, name))
        require(self.max_elongation >= 1, "max_elongation must be >= 1 (a circle is 1)")
        require(
            isinstance(self.max_relative_darkness, (int, float)) and 0 <= self.max_relative_darkness < 100,
            f"max_relative_darkness must be 0 (off) or a positive multiple, got {self.max_relative_darkness!r}",
        )
        require(
            isinstance(self.min_neighbours, int) and 0 <= self.min_neighbours <= 1000,
            f"min_neighbours must be a whole number between 0 and 1000, got {self.min_neighbours!r}",
        )
        require_fraction("min_epithelial_share", self.min_epithelial_share)
        require(
            self.density_cell_um <= self.radius_um / 2,
            "density_cell_um must be at most half of radius_um",
            hint=f"got density_cell_um={self.density_cell_um}, radius_um={self.radius_um}",
        )
