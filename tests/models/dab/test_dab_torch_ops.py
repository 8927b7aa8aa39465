"""The torch image operations reproduce the OpenCV calls of the DAB scorer (both the CPU and the CUDA kernels)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import require_models

require_models()

import torch

from wsi_her2.models.dab import torch_ops


@pytest.fixture(params=["cpu-views", "cuda-kernels"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with the CPU implementation and with the single-kernel one CUDA uses (on CPU tensors)."""
    if request.param == "cuda-kernels":
        monkeypatch.setattr(torch_ops, "_fused", lambda t: True)
    return request.param


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.random((101, 131, 3)).astype(np.float32)  # odd sizes exercise the borders
    return np.ascontiguousarray(cv2.GaussianBlur(noise, (0, 0), 2).transpose(2, 0, 1))


def _each(fn, images: np.ndarray) -> np.ndarray:
    return np.stack([fn(np.ascontiguousarray(im)) for im in images])


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0, 4.0])
def test_gaussian_blur_matches_opencv_reflect_border(kernels: str, images: np.ndarray, sigma: float) -> None:
    ref = _each(lambda im: cv2.GaussianBlur(im, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT), images)
    out = torch_ops.gaussian_blur(torch.from_numpy(images), sigma).numpy()
    assert np.abs(out - ref).max() < 1e-6


def test_blur_below_0_3_px_is_identity(images: np.ndarray) -> None:
    x = torch.from_numpy(images)
    assert torch_ops.gaussian_blur(x, 0.2) is x


def test_two_pyramid_levels_and_linear_resize_match_opencv(kernels: str, images: np.ndarray) -> None:
    small = _each(lambda im: cv2.pyrDown(cv2.pyrDown(im)), images)
    out = torch_ops.pyr_down(torch_ops.pyr_down(torch.from_numpy(images)))
    assert out.shape[1:] == small.shape[1:]
    assert np.abs(out.numpy() - small).max() < 1e-6
    big = _each(lambda im: cv2.resize(im, (131, 101), interpolation=cv2.INTER_LINEAR), small)
    assert np.abs(torch_ops.resize_linear(out, (101, 131)).numpy() - big).max() < 1e-6


@pytest.mark.parametrize("radius", [1, 3, 4, 7])
def test_disk_morphology_matches_opencv_exactly(kernels: str, images: np.ndarray, radius: int) -> None:
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    x = torch.from_numpy(images)
    assert np.array_equal(torch_ops.dilate_disk(x, radius).numpy(), _each(lambda im: cv2.dilate(im, se), images))
    assert np.array_equal(torch_ops.erode_disk(x, radius).numpy(), _each(lambda im: cv2.erode(im, se), images))
    mask = images > 0.5
    closed = _each(lambda m: cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, se), mask).astype(bool)
    ours = torch_ops.erode_mask(torch_ops.dilate_mask(torch.from_numpy(mask), radius), radius)
    assert np.array_equal(ours.numpy(), closed)


def test_3x3_dilation_matches_opencv(kernels: str, images: np.ndarray) -> None:
    ref = _each(lambda im: cv2.dilate(im, np.ones((3, 3), np.uint8)), images)
    assert np.array_equal(torch_ops.dilate_3x3(torch.from_numpy(images)).numpy(), ref)


def test_connected_components_are_opencvs_8_connected_components(images: np.ndarray) -> None:
    mask = images > 0.55
    labels = torch_ops.connected_components(torch.from_numpy(mask)).numpy()
    assert np.all(labels[~mask] == -1)
    for m, lab in zip(mask, labels):
        n, cc = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        pairs = set(zip(cc[m].tolist(), lab[m].tolist()))
        assert len(pairs) == n - 1 == len(np.unique(lab[m]))  # the same partition
        # each label is the raster index of its component's first pixel
        first = {int(np.flatnonzero(cc.ravel() == c)[0]) for c in range(1, n)}
        assert set(np.unique(lab[m]).tolist()) == first


def _chamfer(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """OpenCV's 5x5 DIST_L2 chamfer metric in its fixed point."""
    a, b, c = (round(w * 65536) for w in (1.0, 1.4, 2.1969))
    big, small = np.maximum(np.abs(dx), np.abs(dy)), np.minimum(np.abs(dx), np.abs(dy))
    d = np.where(2 * small <= big, c * small + a * (big - 2 * small), c * (big - small) + b * (2 * small - big))
    return d.astype(np.float32) * np.float32(1 / 65536)


def test_chamfer_distance_matches_opencv_within_the_radius_and_labels_a_nearest_pixel() -> None:
    rng = np.random.default_rng(1)
    zero = rng.random((3, 97, 120)) < 0.004
    dist, nearest = torch_ops.chamfer_nearest(torch.from_numpy(zero), 12)
    dist, nearest = dist.numpy(), nearest.numpy()
    yy, xx = np.mgrid[0:97, 0:120]
    for z, d, idx in zip(zero, dist, nearest):
        ref, _ = cv2.distanceTransformWithLabels((~z).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
        within = ref <= 12
        assert np.array_equal(d[within], ref[within])
        assert np.all(d[~within] > 12)
        # The labelled pixel is a zero pixel at exactly that distance (ties may differ from OpenCV's pick).
        ny, nx = np.divmod(idx[within], 120)
        assert z[ny, nx].all()
        assert np.array_equal(_chamfer(nx - xx[within], ny - yy[within]), ref[within])


def test_chamfer_ties_go_to_the_first_pixel_in_raster_order() -> None:
    zero = torch.zeros((1, 9, 9), dtype=torch.bool)
    zero[0, 4, 1] = zero[0, 4, 7] = zero[0, 1, 4] = zero[0, 7, 4] = True  # all 3 px from the centre
    dist, nearest = torch_ops.chamfer_nearest(zero, 5)
    assert dist[0, 4, 4] == 3.0
    assert nearest[0, 4, 4] == 1 * 9 + 4  # the upper one: first in raster order
