"""Training curves and confusion matrices as PNG (matplotlib, headless), written atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2.outputs.atomic import atomic_path


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(log: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, training and validation, side by side (the paper's Figs. 2-5).

    Args:
        log: columns ``epoch``, ``train_accuracy``, ``train_loss`` and, when there is a validation
            set, ``val_accuracy`` and ``val_loss`` (NaN where missing).
        path: the PNG to write.
        title: figure title (model, stain, classes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.asarray(log["epoch"], float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = np.asarray(log.get(f"{split}_{metric}", []), float)
            if values.size and np.isfinite(values).any():
                label = "training" if split == "train" else "validation"
                ax.plot(epochs, values, style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"model {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix with counts and row percentages (rows = true class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{matrix[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return _save(fig, Path(path))
