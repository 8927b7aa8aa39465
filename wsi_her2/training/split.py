"""Training/validation split: seeded, stratified by class, whole slides at a time when slides are known."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_train_val(
    labels: np.ndarray, groups: Sequence[str], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/validation split; whole groups (slides) go to one side when known.

    With groups, each group counts for its most frequent class, and groups of each class are
    moved to validation until that class's share reaches ``fraction``; a class with a single
    group stays in training. Without groups the split is per image, stratified by class.

    Returns:
        (training indices, validation indices), each sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if fraction <= 0 or n < 2:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    val = np.zeros(n, bool)
    if all(groups) and len(set(groups)) > 1:
        group_ids = np.asarray(groups, dtype=object)
        members: dict[str, np.ndarray] = {g: np.flatnonzero(group_ids == g) for g in sorted(set(groups))}
        majority = {g: int(np.bincount(labels[idx]).argmax()) for g, idx in members.items()}
        for c in np.unique(labels):
            candidates = [g for g in members if majority[g] == c]
            rng.shuffle(candidates)
            target = fraction * np.count_nonzero(labels == c)
            taken = 0
            for g in candidates[: max(0, len(candidates) - 1)]:  # keep at least one group for training
                if taken >= target:
                    break
                val[members[g]] = True
                taken += int(np.count_nonzero(labels[members[g]] == c))
    else:
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            if len(idx) < 2:
                continue
            k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
            val[rng.choice(idx, size=k, replace=False)] = True
    return np.flatnonzero(~val), np.flatnonzero(val)
