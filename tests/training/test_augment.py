"""Augmentation: flips, shifts and stain jitter, reproducible per (seed, epoch, image)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import require_models

require_models()
import numpy as np  # noqa: E402

from wsi_her2.training.augment import Augmentation, augment, hed_jitter, shift  # noqa: E402
from wsi_her2.training.config import DataConfig  # noqa: E402
from wsi_her2.training.datasets import load_images  # noqa: E402
from wsi_her2.training.loader import ImageDataset, epoch_order  # noqa: E402


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)


def test_flips_only_give_one_of_the_four_flips() -> None:
    rgb = _image()
    variants = [rgb, rgb[:, ::-1], rgb[::-1], rgb[::-1, ::-1]]
    seen = set()
    for seed in range(20):
        out = augment(rgb, Augmentation(shift_fraction=0.0), np.random.default_rng(seed))
        matches = [i for i, v in enumerate(variants) if np.array_equal(out, v)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_shift_fills_with_the_nearest_pixels() -> None:
    rgb = _image()
    out = shift(rgb, 3, -2)
    assert np.array_equal(out[:-2, 3:], rgb[2:, :-3])
    assert np.array_equal(out[:-2, 0], out[:-2, 3])  # left edge repeated
    assert shift(rgb, 0, 0) is rgb


def test_hed_jitter_keeps_glass_white_and_changes_stain() -> None:
    rgb = np.full((16, 16, 3), 250, np.uint8)
    rgb[4:12, 4:12] = (120, 80, 60)  # brown-ish DAB
    rng = np.random.default_rng(1)
    out = hed_jitter(rgb, 0.2, rng)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out[0, 0].astype(int) - 250).max() <= 8
    assert np.abs(out[8, 8].astype(int) - rgb[8, 8]).max() > 0
    same = hed_jitter(rgb, 0.0, np.random.default_rng(1))
    assert np.abs(same.astype(int) - rgb).max() <= 1  # the optical-density round trip is exact to a level


def test_dataset_items_depend_on_seed_epoch_and_index_only(bci_small: Path) -> None:
    images = load_images(bci_small, DataConfig(), "train")
    dataset = ImageDataset(images, 48, Augmentation(hed_jitter=0.05), seed=7)
    a, label = dataset[(3, 1)]
    assert a.shape == (48, 48, 3) and label == int(images.labels[3])
    assert np.array_equal(a.numpy(), dataset[(3, 1)][0].numpy())
    assert not all(np.array_equal(a.numpy(), dataset[(3, e)][0].numpy()) for e in range(2, 6))
    plain = ImageDataset(images, 48)
    assert np.array_equal(plain[3][0].numpy(), plain[(3, 5)][0].numpy())


def test_epoch_order_is_a_seeded_permutation_or_a_balanced_draw() -> None:
    labels = np.array([0] * 4 + [1] * 96)
    order = epoch_order(labels, 0, 0, shuffle=True)
    assert sorted(order) == list(range(100)) and order == epoch_order(labels, 0, 0, shuffle=True)
    assert order != epoch_order(labels, 1, 0, shuffle=True)
    assert epoch_order(labels, 0, 0, shuffle=False) == list(range(100))
    draws = np.concatenate([labels[epoch_order(labels, e, 0, shuffle=True, balanced=True)] for e in range(20)])
    assert 0.4 < np.mean(draws == 0) < 0.6  # 4% of the images, half of the draws
