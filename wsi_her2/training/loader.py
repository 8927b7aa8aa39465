"""Batches of uint8 images and labels for training and evaluation (torch ``DataLoader``).

Workers decode and resize the image files to the network input size (area averaging, as the
tile loader does for ``score``) and apply the augmentation; the training loop then runs
:func:`wsi_her2.models.preprocess.to_input` on the device. Batches are (B, S, S, 3) uint8: four
times fewer bytes to move than floats.

Workers persist across epochs; the sampler hands them (index, epoch) keys, so the augmentation of
an image depends on the seed, the epoch and the index only, not on the number of workers. The
loader draws its worker seeds from its own generator, never from torch's global one, so the global
stream (dropout) is the same with and without workers and across a resume.
Workers must not call ``cv2.setNumThreads``: in a child forked from a process whose OpenCV thread
pool ran, that call deadlocks (seen here); decoding works without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wsi_her2.training.augment import Augmentation, augment
from wsi_her2.training.datasets import LabelledImages, read_rgb

# Separates the shuffling stream from the per-image augmentation streams of the same seed.
_ORDER_STREAM = 1_000_003


class ImageDataset(Dataset):
    """Images of a :class:`LabelledImages` at ``size_px``, augmented when training.

    Items are looked up by ``(index, epoch)`` (from :class:`EpochSampler`) or by a plain index
    (epoch 0); the augmentation's random generator is seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        images: LabelledImages,
        size_px: int,
        augmentation: Augmentation | None = None,
        seed: int = 0,
        *,
        cache: np.ndarray | None = None,
    ) -> None:
        self.paths = list(images.paths)
        # (N, S, S, 3) uint8 from :func:`decode_all`: no file is read again (forked workers share it).
        self.cache = cache
        self.labels = np.asarray(images.labels, np.int64)
        self.size_px = size_px
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rgb = self.cache[index] if self.cache is not None else read_rgb(self.paths[index], self.size_px)
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            rgb = augment(rgb, self.augmentation, rng)
        return torch.from_numpy(np.ascontiguousarray(rgb)), int(self.labels[index])


def decode_all(images: LabelledImages, size_px: int, workers: int = 1) -> np.ndarray:
    """Every image decoded and resized once, as one (N, S, S, 3) uint8 array (S*S*3 bytes per image)."""
    from concurrent.futures import ThreadPoolExecutor

    out = np.empty((len(images), size_px, size_px, 3), np.uint8)

    def fill(i: int) -> None:
        out[i] = read_rgb(images.paths[i], size_px)

    # OpenCV releases the GIL while decoding and resizing: threads run in parallel.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(fill, range(len(images))))
    return out


def epoch_order(labels: np.ndarray, epoch: int, seed: int, *, shuffle: bool, balanced: bool = False) -> list[int]:
    """The order in which one epoch visits the images.

    Args:
        labels: class index per image.
        epoch: the epoch (0-based); with ``seed`` it fixes the order.
        seed: the run's seed.
        shuffle: a fresh permutation each epoch (training) or the stored order (evaluation).
        balanced: draw with replacement, each class equally likely overall (as many draws as images).
    """
    n = len(labels)
    rng = np.random.default_rng([seed, _ORDER_STREAM, epoch])
    if balanced and n:
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        return [int(i) for i in rng.choice(n, size=n, replace=True, p=weights / weights.sum())]
    return [int(i) for i in rng.permutation(n)] if shuffle else list(range(n))


class EpochSampler(Sampler):
    """Yields (index, epoch) keys in :func:`epoch_order`; set ``epoch`` before each pass."""

    def __init__(self, labels: np.ndarray, seed: int, *, shuffle: bool, balanced: bool = False) -> None:
        self.labels = np.asarray(labels)
        self.seed = seed
        self.shuffle = shuffle
        self.balanced = balanced
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.labels, self.epoch, self.seed, shuffle=self.shuffle, balanced=self.balanced)
        return iter([(i, self.epoch) for i in order])

    def __len__(self) -> int:
        return len(self.labels)


def make_loader(
    dataset: ImageDataset, sampler: EpochSampler, batch_size: int, workers: int, *, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over ``dataset`` delivering (uint8 images, int64 labels) in the sampler's order.

    With ``workers`` > 0 the worker processes persist across passes (the sampler's epoch still
    reaches them through the keys).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(sampler.seed),
    )
