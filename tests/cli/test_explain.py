"""wsi-her2 explain end to end: patches, slides (scored here or reused), the DAB scorer, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import fixture_path
from tests.explain.conftest import image_with_square, square_checkpoint, square_slide  # noqa: F401
from wsi_her2.models.dab.evidence import NOT_TUMOUR_RGB, TUMOUR_RGB
from wsi_her2.outputs.heatmap import read_heatmap


def _explanation(out: Path) -> dict:
    return json.loads((out / "explanation.json").read_text())


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Hash and mtime of every file under a folder."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def top_left_patch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512-px patch with a bright 128-px square in its top-left quadrant."""
    image = image_with_square(np.random.default_rng(3), 512, 40, 60, 128)
    path = tmp_path_factory.mktemp("patch") / "top-left.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def slide_explained(tmp_path_factory, square_checkpoint, square_slide) -> Path:  # noqa: F811
    """The square slide explained with scoring done here, with the slide-wide CAM."""
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    out = tmp_path_factory.mktemp("explain") / "slide"
    args = ["explain", square_checkpoint, square_slide[0], "-o", out, "--mpp", "0.5", "--top-k", "2",
            "--cam-heatmap", "--workers", "0", "--device", "cpu", "-q"]  # fmt: skip
    assert run_guarded(cli, [str(a) for a in args]) == 0
    return out


@pytest.mark.models
def test_patch_gives_probabilities_a_map_per_stage_and_the_paper_panel(
    run_cli,
    tmp_path: Path,
    square_checkpoint: Path,  # noqa: F811
    top_left_patch: Path,
) -> None:
    out = tmp_path / "out"
    result = run_cli("explain", square_checkpoint, top_left_patch, "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "predicted 3+" in result.stderr
    summary = _explanation(out)
    assert summary["mode"] == "patch" and summary["predicted_class"] == "3+" == summary["explained_class"]
    assert sum(summary["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    layers = summary["method"]["layers"]
    assert [layer["module"] for layer in layers] == [f"backbone.layer{i}.0" for i in range(1, 5)]
    assert [layer["feature_size"] for layer in layers] == [[32, 32], [16, 16], [8, 8], [4, 4]]
    for name in ("input.png", "panel.png", "cam_stage1.png", "cam_stage4.png"):
        assert (out / name).stat().st_size > 1000
    assert _png(out / "cam_stage4.png").shape == (512, 512, 3)
    panel = _png(out / "panel.png")
    assert panel.shape[1] > 3.5 * panel.shape[0]  # the input and four stages in one row
    deepest = np.load(out / "cams.npz")["stage4"]
    r, c = np.unravel_index(int(np.argmax(deepest)), deepest.shape)
    assert r < 2 and c < 2  # the square's quadrant
    assert not list(out.glob(".tmp-*"))


@pytest.mark.models
def test_patch_class_option_explains_that_class(run_cli, tmp_path, square_checkpoint, top_left_patch) -> None:  # noqa: F811
    out = tmp_path / "out"
    result = run_cli(
        "explain", square_checkpoint, top_left_patch, "-o", out, "--class", "0", "--json", "--device", "cpu"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["explained_class"] == "0" and summary["predicted_class"] == "3+"


@pytest.mark.models
def test_real_he_patch_is_explained(run_cli, tmp_path: Path, square_checkpoint: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    patch = fixture_path("he", "he-patch-1000px.png")
    # 1000 px is four of this model's 256-px tiles: auto mode would call it a slide.
    result = run_cli("explain", square_checkpoint, patch, "-o", out, "--mode", "patch", "--mpp", "0.5", "-q")
    assert result.exit_code == 0, result.stderr
    summary = _explanation(out)
    assert summary["mode"] == "patch" and summary["image"]["width"] == 1000
    assert any("1000 px, the model's training tiles 256 px" in note for note in summary["notes"])
    assert _png(out / "input.png").shape == (1000, 1000, 3) and _png(out / "panel.png").shape[0] > 200


@pytest.mark.models
def test_slide_scored_here_gives_galleries_tiles_and_a_slide_wide_cam(slide_explained: Path, square_slide) -> None:  # noqa: F811
    out = slide_explained
    summary = _explanation(out)
    assert summary["mode"] == "slide" and summary["scores"]["reused"] is False
    assert (out / "score" / "report.json").is_file() and (out / "score" / "heatmap.zarr").is_dir()
    assert set(summary["classes"]) == {"0", "1+", "2+", "3+"}
    bright = {(x - x % 256, y - y % 256) for x, y, is_bright in square_slide[1] if is_bright}
    top3 = summary["classes"]["3+"]["tiles"]
    assert len(top3) == 2 and top3[0]["value"] >= top3[1]["value"]
    assert all((t["x_level0_px"], t["y_level0_px"]) in bright for t in top3)
    for name in ("0", "1plus", "2plus", "3plus"):
        assert _png(out / f"gallery_{name}.png").shape[0] > 300
    for tile in top3:
        assert len(tile["files"]) == 5 and all((out / f).is_file() for f in tile["files"])
    # gradcam.zarr: in every bright tile, the hottest 3+ cell is the bright square's cell.
    heat = read_heatmap(out / "gradcam.zarr")
    assert heat.attrs["cell_size_level0_px"] == 64 and heat.scale_um == (32.0, 32.0)
    cam = heat.channel("gradcam(3+)")
    for x, y, is_bright in square_slide[1]:
        if not is_bright:
            continue
        r0, c0 = heat.pixel_of(x - x % 256, y - y % 256)
        block = cam[r0 : r0 + 4, c0 : c0 + 4]
        assert heat.pixel_of(x, y) == tuple(
            int(v) for v in np.add((r0, c0), np.unravel_index(np.nanargmax(block), (4, 4)))
        )


@pytest.mark.models
def test_slide_reuses_a_score_folder_without_scoring_or_touching_it(
    run_cli,
    tmp_path,
    monkeypatch,
    square_checkpoint,  # noqa: F811
    square_slide,  # noqa: F811
    slide_explained,
) -> None:
    scores = tmp_path / "scores"
    shutil.copytree(slide_explained / "score", scores)
    before = _fingerprint(scores)

    def no_scoring(*args, **kwargs):
        raise AssertionError("run_score must not be called when --scores is given")

    monkeypatch.setattr("wsi_her2.settings.run_score", no_scoring)
    out = tmp_path / "out"
    result = run_cli("explain", square_checkpoint, square_slide[0], "--scores", scores, "-o", out, "--class", "3+",
                     "--top-k", "1", "--mpp", "0.5", "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert _fingerprint(scores) == before
    summary = _explanation(out)
    assert summary["scores"]["reused"] is True and list(summary["classes"]) == ["3+"]
    assert (out / "gallery_3plus.png").is_file() and not (out / "score").exists()


@pytest.mark.models
def test_bad_inputs_give_one_line_errors_and_exit_codes(
    run_cli,
    tmp_path,
    square_checkpoint,  # noqa: F811
    top_left_patch,
    square_slide,  # noqa: F811
    slide_explained,
) -> None:
    out = tmp_path / "out"
    cases = [
        (("explain", tmp_path / "missing", top_left_patch, "-o", out), 3, "checkpoint not found"),
        (("explain", square_checkpoint, tmp_path / "missing.png", "-o", out), 3, "not found"),
        (("explain", square_checkpoint, top_left_patch, "-o", out, "--class", "4+", "--device", "cpu"), 2,
         "not a class of this model"),
        (("explain", "dab", top_left_patch, "-o", out, "--class", "4+"), 2, "not a class of the DAB scorer"),
        (("explain", square_checkpoint, square_slide[0], "-o", out, "--scores", tmp_path / "nope", "--mpp", "0.5",
          "--device", "cpu"), 3, "score folder not found"),
        (("explain", "dab", square_slide[0], "-o", out, "--scores", slide_explained / "score", "--mpp", "0.5"), 7,
         "scored by the trained model"),
        (("explain", "dab", square_slide[0], "-o", out, "--cam-heatmap", "--mode", "slide", "--mpp", "0.5"), 2,
         "needs a trained model"),
        (("explain", square_checkpoint, square_slide[0], "-o", out, "--device", "cuda:7"), 9, "CUDA"),
    ]  # fmt: skip
    for args, code, text in cases:
        result = run_cli(*args)
        if code == 9 and result.exit_code == 0:  # pragma: no cover - a machine with 8 GPUs
            continue
        assert result.exit_code == code, (args, result.stderr)
        assert text in result.stderr and result.stderr.count("\n") == 1, result.stderr

    # A score folder made by another checkpoint (other weights), and one of another slide.
    other = tmp_path / "other-model"
    shutil.copytree(slide_explained / "score", other)
    report = json.loads((other / "report.json").read_text())
    report["model"]["weights_sha256"] = "0" * 64
    (other / "report.json").write_text(json.dumps(report))
    result = run_cli("explain", square_checkpoint, square_slide[0], "-o", out, "--scores", other, "--mpp", "0.5",
                     "--device", "cpu")  # fmt: skip
    assert result.exit_code == 7 and "another model" in result.stderr
    result = run_cli("explain", square_checkpoint, top_left_patch, "-o", out, "--scores", slide_explained / "score",
                     "--mpp", "0.5", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2 and "another slide" in result.stderr
    result = run_cli("explain", square_checkpoint, square_slide[0], "-o", slide_explained / "score",
                     "--scores", slide_explained / "score", "--mpp", "0.5", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 10 and "is the score folder" in result.stderr


@pytest.fixture(scope="module")
def dab_scores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real 2+ HER2 core scored once by the DAB scorer."""
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    out = tmp_path_factory.mktemp("dab") / "scores"
    assert run_guarded(cli, ["score", str(core), "--mpp", "0.25", "-o", str(out), "--workers", "2", "-q"]) == 0
    return out


def _has_colour(bgr: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Many pixels lean strongly towards ``colour``'s hue (the gate blends it over the faded tile)."""
    rgb = bgr[..., ::-1].astype(np.int32)
    if colour == TUMOUR_RGB:  # green
        lean = rgb[..., 1] - np.maximum(rgb[..., 0], rgb[..., 2])
    else:  # magenta
        lean = np.minimum(rgb[..., 0], rgb[..., 2]) - rgb[..., 1]
    return int((lean > 60).sum()) > 200


def test_dab_slide_galleries_show_the_evidence_of_a_real_core(run_cli, tmp_path: Path, dab_scores: Path) -> None:
    core = fixture_path("ihc", "her2-tma-core-score2plus.jpg")
    before = _fingerprint(dab_scores)
    out = tmp_path / "out"
    result = run_cli("explain", "dab", core, "--mpp", "0.25", "--scores", dab_scores, "-o", out, "--top-k", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert _fingerprint(dab_scores) == before
    summary = _explanation(out)
    assert summary["scores"]["score"] == "2+" and summary["method"]["name"] == "DAB scorer evidence"
    tiles = summary["classes"]["2+"]["tiles"]
    assert len(tiles) == 2 and tiles[0]["value"] >= tiles[1]["value"] > 0.3 and tiles[0]["n_cells"] > 20
    for tile in tiles:
        evidence = _png(out / tile["files"][1])
        assert evidence.shape == (512, 512, 3)  # 1024 px at 0.25 µm/px, analysed at 0.5 µm/px
        # The gate as the slide decided it (cells.npz), tumour nuclei green and the rest magenta.
        assert tile["gate_from"] == "the slide (cells.npz)"
        gate = _png(out / tile["files"][2])
        assert _has_colour(gate, TUMOUR_RGB) and _has_colour(gate, NOT_TUMOUR_RGB)
    for name in ("0", "1plus", "2plus"):
        assert _png(out / f"gallery_{name}.png").shape[0] > 300


def test_dab_patch_evidence(run_cli, tmp_path: Path) -> None:
    core = cv2.imread(str(fixture_path("ihc", "her2-tma-core-score2plus.jpg")))
    patch = tmp_path / "crop.png"
    cv2.imwrite(str(patch), core[2200:3224, 2200:3224])
    out = tmp_path / "out"
    result = run_cli("explain", "dab", patch, "--mpp", "0.25", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    summary = _explanation(out)
    assert summary["mode"] == "patch" and sum(summary["cell_counts"].values()) > 100
    assert summary["patch_class"] in ("1+", "2+", "3+") and summary["stain_vectors"]["source"] == "estimated"
    assert _png(out / "evidence.png").shape == (512, 512, 3)
    assert summary["measurements"]["n_tumour_cells"] <= summary["measurements"]["n_cells"]
    assert _has_colour(_png(out / "gate.png"), TUMOUR_RGB)
    assert _png(out / "panel.png").shape[1] > 900
    result = run_cli("explain", "dab", patch, "-o", tmp_path / "no-mpp", "--mode", "patch")
    assert result.exit_code == 5 and "--mpp" in result.stderr
