"""Evaluate a checkpoint on a labelled image set: the paper's metrics, kappa, confusion matrix, baseline.

For BCI the official test split is used; for tile sets and class folders, the whole folder.
Images go through the same path as in training and scoring (area resize, then
:func:`wsi_her2.models.preprocess.to_input`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsi_her2.errors import StainMismatchError
from wsi_her2.models.card import ModelCard, read_card
from wsi_her2.models.preprocess import normalisation, to_input
from wsi_her2.outputs.atomic import ensure_dir, write_json, write_text
from wsi_her2.outputs.tile_table import write_csv_columns
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.training.config import DataConfig
from wsi_her2.training.datasets import BCI_LABEL_NOTE, LabelledImages, load_images
from wsi_her2.training.device import autocast, resolve_device, use_bf16
from wsi_her2.training.loader import EpochSampler, ImageDataset, make_loader
from wsi_her2.training.metrics import classification_report
from wsi_her2.training.plots import plot_confusion_matrix

STAIN_NAMES = {"ihc": "IHC", "he": "H&E"}


@dataclasses.dataclass
class Predictions:
    """Softmax outputs and true labels of one pass over a dataset.

    Attributes:
        probabilities: (N, classes) float32.
        labels: (N,) true class indices.
        loss: mean cross-entropy (no class weights, no label smoothing).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    loss: float

    @property
    def predicted(self) -> np.ndarray:
        """The most probable class of each image."""
        return self.probabilities.argmax(axis=1) if len(self.labels) else np.zeros(0, np.int64)


def eval_loader(dataset: ImageDataset, batch_size: int, workers: int, *, pin_memory: bool = False) -> DataLoader:
    """A loader over ``dataset`` in file order, without augmentation."""
    sampler = EpochSampler(dataset.labels, 0, shuffle=False)
    return make_loader(dataset, sampler, batch_size, workers, pin_memory=pin_memory)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    card: ModelCard,
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Predictions:
    """Run ``model`` (in eval mode) over a loader from :func:`eval_loader`.

    Args:
        model: the classifier (returns logits).
        loader: batches of (uint8 images, labels) in a fixed order.
        card: the model card (input size, mean, std).
        device: where the model is.
        bf16: bf16 autocast (CUDA).
        channels_last: channels-last input (CUDA).
        on_batch: called with the number of batches done.
    """
    model.eval()
    stats = normalisation(card, device)
    probabilities: list[torch.Tensor] = []
    labels_seen: list[torch.Tensor] = []
    loss_sum = torch.zeros((), device=device)
    for done, (images, labels) in enumerate(loader, start=1):
        x = to_input(images, card, device, channels_last=channels_last, non_blocking=True, stats=stats)
        y = labels.to(device, non_blocking=True)
        with autocast(device, bf16):
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        probabilities.append(torch.softmax(logits, dim=1).cpu())
        labels_seen.append(labels)
        if on_batch is not None:
            on_batch(done)
    if not probabilities:
        return Predictions(np.zeros((0, card.num_classes), np.float32), np.zeros(0, np.int64), float("nan"))
    probs = torch.cat(probabilities).numpy().astype(np.float32)
    truth = torch.cat(labels_seen).numpy().astype(np.int64)
    return Predictions(probs, truth, float(loss_sum.item()) / len(truth))


@dataclasses.dataclass
class EvaluationResult:
    """Everything ``wsi-her2 evaluate`` reports.

    Attributes:
        metrics: :func:`classification_report` plus loss, model and data description.
        predictions: per-image probabilities and labels.
        images: the evaluated images.
        card: the model card.
    """

    metrics: dict[str, Any]
    predictions: Predictions
    images: LabelledImages
    card: ModelCard


def check_stain(card: ModelCard, stain: str | None, allow_mismatch: bool) -> str:
    """The stain to evaluate on: the card's, or ``stain`` when it agrees (or mismatches are allowed).

    Raises:
        StainMismatchError: ``stain`` contradicts the card and ``allow_mismatch`` is False.
    """
    if stain is None or stain == card.stain:
        return card.stain
    if not allow_mismatch:
        raise StainMismatchError(
            f"the model was trained on {STAIN_NAMES[card.stain]} images but --stain {stain} was given",
            hint=f"evaluate on {STAIN_NAMES[card.stain]} images, or add --allow-stain-mismatch to measure it anyway",
        )
    return stain


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    data_cfg: DataConfig | None = None,
    *,
    stain: str | None = None,
    allow_stain_mismatch: bool = False,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    bf16: bool = True,
    channels_last: bool = True,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Evaluate a checkpoint (folder or weight file) on a dataset.

    Args:
        checkpoint: written by ``wsi-her2 train`` (or any wsi-her2 checkpoint).
        data_root: the dataset folder (BCI: its test split is used).
        data_cfg: layout, labels CSV, blank filter; its stain and classes are replaced by the
            card's (or by ``stain`` when allowed).
        stain: the stain of the data, when the user said it; must agree with the card.
        allow_stain_mismatch: evaluate even when ``stain`` contradicts the card.
        device: "auto", "cpu", "cuda" or "mps".
        batch_size: images per batch.
        workers: loader worker processes.
        bf16: bf16 autocast on CUDA.
        channels_last: channels-last on CUDA.
        progress: receives "evaluate" events.

    Raises:
        StainMismatchError: the data's stain contradicts the card's.
        ModelError, InputNotFoundError, DatasetError, DeviceError: as their names say.
    """
    from wsi_her2.models.loading import load_checkpoint

    card, _ = read_card(checkpoint, verify_hash=False)
    used_stain = check_stain(card, stain, allow_stain_mismatch)
    data_cfg = (data_cfg or DataConfig()).replace(
        stain=used_stain, num_classes=4 if card.num_classes == 4 else 3, input_size_px=card.input_size_px
    )
    images = load_images(data_root, data_cfg, "test", classes=card.classes, workers=workers, progress=progress)
    torch_device = resolve_device(device)
    model, card = load_checkpoint(checkpoint, torch_device)
    cuda = torch_device.type == "cuda"
    if cuda and channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = ImageDataset(images, card.input_size_px)
    total = -(-len(dataset) // batch_size)

    def on_batch(done: int) -> None:
        report(progress, ProgressEvent("evaluate", done, total, "batches"))

    loader = eval_loader(dataset, batch_size, workers, pin_memory=cuda)
    predictions = predict(
        model,
        loader,
        card,
        torch_device,
        bf16=use_bf16(torch_device, bf16),
        channels_last=cuda and channels_last,
        on_batch=on_batch,
    )
    metrics = classification_report(predictions.labels, predictions.predicted, card.classes)
    metrics["loss"] = predictions.loss
    metrics["model"] = {**card.identity(), "checkpoint": str(checkpoint)}
    metrics["data"] = images.describe()
    metrics["stain"] = used_stain
    if images.layout == "bci" or card.label_granularity == "slide":
        metrics["label_note"] = BCI_LABEL_NOTE
    return EvaluationResult(metrics, predictions, images, card)


def _markdown(metrics: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    lines = [
        f"# Evaluation of {metrics['model']['name'] or metrics['model']['architecture']}",
        "",
        f"Data: {metrics['data']['root']} ({metrics['data']['layout']}, split {metrics['data']['split']}, "
        f"{metrics['images']} images, stain {STAIN_NAMES.get(metrics['stain'], metrics['stain'])})",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {pct(metrics['accuracy'])} |",
        f"| majority-class baseline (always {metrics['majority_class']}) | "
        f"{pct(metrics['majority_baseline_accuracy'])} |",
    ]
    for kind in ("macro", "weighted"):
        for name in ("precision", "recall", "f1"):
            lines.append(f"| {kind} {name} | {pct(metrics[f'{kind}_{name}'])} |")
    lines += [f"| quadratic-weighted kappa | {metrics['quadratic_weighted_kappa']:.4f} |", ""]
    lines += ["| class | images | precision | recall | F1 |", "|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['support']} | {pct(row['precision'])} | {pct(row['recall'])} | {pct(row['f1'])} |"
        )
    if metrics.get("label_note"):
        lines += ["", f"Note: {metrics['label_note']}"]
    return "\n".join(lines) + "\n"


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, confusion_matrix.json/.png, predictions.csv and report.md into ``out_dir``."""
    out = ensure_dir(out_dir)
    metrics = result.metrics
    classes = list(result.card.classes)
    files = {
        "metrics": write_json(out / "metrics.json", metrics),
        "confusion_json": write_json(
            out / "confusion_matrix.json",
            {
                "rows": "true class",
                "columns": "predicted class",
                "classes": classes,
                "matrix": metrics["confusion_matrix"],
            },
        ),
        "confusion_png": plot_confusion_matrix(
            np.asarray(metrics["confusion_matrix"]),
            classes,
            out / "confusion_matrix.png",
            title=f"accuracy {100 * metrics['accuracy']:.2f}% "
            f"(majority baseline {100 * metrics['majority_baseline_accuracy']:.2f}%)",
        ),
    }
    pred = result.predictions
    root = result.images.root
    columns: dict[str, Any] = {
        "file": [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in result.images.paths],
        "true": [classes[i] for i in pred.labels],
        "predicted": [classes[i] for i in pred.predicted],
    }
    for c, name in enumerate(classes):
        columns[f"p_{name}"] = pred.probabilities[:, c]
    files["predictions"] = write_csv_columns(out / "predictions.csv", columns)
    files["report"] = write_text(out / "report.md", _markdown(metrics))
    return files
