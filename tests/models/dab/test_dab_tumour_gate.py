"""The tumour-cell gate: carcinoma nests in, stroma and inflammatory cells out, on synthetic and real tissue."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.models.dab.conftest import RealImage, render_tissue
from wsi_her2.errors import ConfigError
from wsi_her2.models.dab import DabConfig, default_stain_vectors
from wsi_her2.models.dab.gate import count_neighbours, gate_tumour_cells
from wsi_her2.models.dab.gate_config import TumourGateConfig
from wsi_her2.models.dab.slide_cells import score_image, tissue_share_at

STAINS = default_stain_vectors()


@pytest.fixture(scope="module")
def nest_and_stroma() -> tuple[dict[str, np.ndarray], int, dict]:
    rgb, boundary = render_tissue(membrane_od=0.2)
    done = score_image(rgb, STAINS, DabConfig(), min_tissue_fraction=0.0)
    return done.cells.columns, boundary, done.summary


def test_cells_of_a_carcinoma_nest_are_tumour_and_stromal_cells_are_not(nest_and_stroma) -> None:
    cells, boundary, _ = nest_and_stroma
    x, tumour = cells["x_level0_px"], cells["is_tumour"]
    nest, stroma = x < boundary, x >= boundary
    assert nest.sum() > 500 and stroma.sum() > 50
    assert tumour[nest].mean() > 0.9
    assert tumour[stroma].mean() < 0.1


def test_percentages_are_over_tumour_cells_and_the_report_gives_both_denominators(nest_and_stroma) -> None:
    _, _, summary = nest_and_stroma
    tumour, every = summary["tumour_cells"]["fractions"], summary["all_cells"]["fractions"]
    # The nest's cells are 2+; the unstained stroma dilutes the all-cells figure only.
    assert tumour["2+"] > 0.9
    assert every["2+"] < tumour["2+"] - 0.05
    assert summary["n_tumour_cells"] < summary["n_cells_detected"]
    assert summary["denominator"] == "tumour cells"
    assert 180 < summary["membrane_index"] <= 210


def test_gate_off_counts_every_detected_cell() -> None:
    rgb, _ = render_tissue()
    done = score_image(rgb, STAINS, DabConfig(tumour_gate=TumourGateConfig(enabled=False)), min_tissue_fraction=0.0)
    assert done.cells.columns["is_tumour"].all()
    assert done.summary["n_tumour_cells"] == done.summary["n_cells_detected"]
    assert done.summary["denominator"].startswith("all detected cells")


def test_spindle_small_and_dark_nuclei_are_not_epithelial_even_in_a_crowd() -> None:
    # A dense 3x3 cluster 12 µm apart: large round pale nuclei pass, spindles, small or dark ones fail.
    xs, ys = np.meshgrid(np.arange(3) * 12.0, np.arange(3) * 12.0)
    x, y = np.tile(xs.ravel(), 4), np.tile(ys.ravel(), 4) + np.repeat(np.arange(4) * 500.0, 9)
    area = np.repeat([60.0, 60.0, 25.0, 60.0], 9)
    elong = np.repeat([1.3, 4.0, 1.2, 1.3], 9)
    h_od = np.repeat([0.3, 0.3, 0.3, 0.9], 9)
    cfg = TumourGateConfig(min_neighbours=4)
    gate = gate_tumour_cells(x, y, area, elong, h_od, cfg)
    groups = gate.is_tumour.reshape(4, 9)
    assert groups[0].sum() >= 5  # the centre and edge cells of the round, pale cluster
    assert not groups[1:].any()  # spindles, lymphocyte-sized, hyperchromatic


def test_an_isolated_epithelial_like_cell_is_not_a_tumour_cell() -> None:
    gate = gate_tumour_cells(np.array([0.0, 200.0]), np.array([0.0, 0.0]), np.array([60.0, 60.0]),
                             np.array([1.2, 1.2]), np.array([0.3, 0.3]))  # fmt: skip
    assert gate.epithelial_like.all() and not gate.is_tumour.any()


def test_tissue_edge_correction_keeps_a_nest_cut_by_the_tissue_border() -> None:
    # A half-disk of cells: at the tissue's straight edge each cell sees half a neighbourhood.
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 300, 400), rng.uniform(0, 300, 400)
    keep = x >= 150
    x, y = x[keep], y[keep]
    n = len(x)
    args = (x, y, np.full(n, 60.0), np.full(n, 1.2), np.full(n, 0.3), TumourGateConfig(min_neighbours=8))
    plain = gate_tumour_cells(*args)
    mask = np.zeros((300, 300), bool)
    mask[:, 150:] = True
    share = tissue_share_at(mask, 1.0, 1.0, x, y, 30.0)
    corrected = gate_tumour_cells(*args, tissue_share=share)
    edge = x < 165
    assert corrected.is_tumour[edge].mean() > plain.is_tumour[edge].mean() + 0.2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.floats(10, 40), n=st.integers(1, 300))
def test_neighbour_counts_match_brute_force_within_the_raster(seed: int, radius: float, n: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 400, n), rng.uniform(0, 400, n)
    sel = rng.random(n) < 0.7
    cell = 2.5
    got = count_neighbours(x, y, sel, radius, cell)
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    inner = ((d <= radius - 2 * cell) & sel[None]).sum(axis=1)
    outer = ((d <= radius + 2 * cell) & sel[None]).sum(axis=1)
    assert np.all(got >= inner) and np.all(got <= outer)


def test_neighbour_counts_do_not_depend_on_the_band_height(monkeypatch: pytest.MonkeyPatch) -> None:
    import wsi_her2.models.dab.gate as gate_module

    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 3000, 2000), rng.uniform(0, 3000, 2000)
    sel = np.ones(2000, bool)
    whole = count_neighbours(x, y, sel, 30.0, 2.5)
    monkeypatch.setattr(gate_module, "_BAND_ROWS", 37)
    assert np.array_equal(count_neighbours(x, y, sel, 30.0, 2.5), whole)


@pytest.mark.parametrize(
    "bad",
    [{"min_nucleus_area_um2": 0}, {"max_elongation": 0.5}, {"min_neighbours": -1}, {"min_neighbours": 2.5},
     {"min_epithelial_share": 1.5}, {"radius_um": 4.0, "density_cell_um": 2.5}, {"enabled": "yes"},
     {"max_relative_darkness": float("nan")}],
)  # fmt: skip
def test_invalid_gate_settings_raise_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        TumourGateConfig(**bad)


def test_gate_settings_come_from_a_nested_config_section() -> None:
    cfg = DabConfig.from_dict({"membrane_od_1plus": 0.05, "tumour_gate": {"min_neighbours": 3}})
    assert cfg.tumour_gate.min_neighbours == 3 and cfg.membrane_od_1plus == 0.05
    assert DabConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        DabConfig.from_dict({"tumour_gate": {"min_neighbors": 3}})


# Hand-drawn regions of the real cores, in 1000-px thumbnail coordinates (x0, y0, x1, y1): stroma
# (collagen, smooth muscle, inflammatory stroma) and carcinoma, read off the images by eye.
REGIONS = {
    "score2plus": {
        "stroma": [(760, 380, 920, 540), (420, 230, 520, 330), (560, 320, 700, 400)],
        "tumour": [(100, 480, 250, 560), (620, 120, 780, 230), (400, 780, 550, 860), (300, 300, 400, 400)],
    },
    "score0": {
        "stroma": [(790, 480, 900, 700), (720, 800, 850, 880)],
        "tumour": [(400, 530, 500, 600), (480, 400, 560, 470), (420, 700, 500, 780)],
    },
}


def _in_boxes(image: RealImage, cells: dict[str, np.ndarray], boxes: list) -> np.ndarray:
    scale = image.work.shape[1] / 1000.0
    x, y = cells["x_level0_px"] / scale, cells["y_level0_px"] / scale
    inside = np.zeros(len(x), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    return inside


@pytest.mark.parametrize("core", ["score0", "score2plus"])
def test_stroma_rich_regions_of_the_real_cores_contribute_few_tumour_cells(
    core: str, core0: RealImage, core2: RealImage
) -> None:
    image = core0 if core == "score0" else core2
    cells = score_image(image.work, image.stains, DabConfig()).cells.columns
    tumour = cells["is_tumour"]
    stroma = _in_boxes(image, cells, REGIONS[core]["stroma"])
    carcinoma = _in_boxes(image, cells, REGIONS[core]["tumour"])
    assert stroma.sum() > 50 and carcinoma.sum() > 100
    assert tumour[stroma].mean() < 0.3, tumour[stroma].mean()
    assert tumour[carcinoma].mean() > 0.6, tumour[carcinoma].mean()
    assert tumour[carcinoma].mean() > tumour[stroma].mean() + 0.4
