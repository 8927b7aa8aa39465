"""Training: the paper's recipe by default, every epoch logged, the best epoch kept, resumable.

:func:`wsi_her2.training.plan.prepare_training` lists and splits the images and builds the card;
:func:`run_training` trains; :func:`train` does both.

Outputs in the output folder:

* ``model.safetensors`` + ``model_card.json``: the epoch with the best validation macro-F1 (the
  last epoch when there is no validation set), loadable by ``evaluate`` and ``score --model``;
* ``training_log.csv``: one row per epoch; ``training_curves.png``: accuracy and loss curves;
* ``train_config.json``: the resolved configuration (usable again with ``--config``);
* ``split.csv``: which image went to training and which to validation;
* ``resume/``: the state after the last finished epoch (``--resume``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_her2._version import __version__
from wsi_her2.models.card import ModelCard, read_card
from wsi_her2.models.loading import save_checkpoint
from wsi_her2.models.preprocess import normalisation, to_input
from wsi_her2.models.registry import Her2Classifier, create_model
from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.tile_table import read_csv_columns, write_csv_columns
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.training.augment import Augmentation
from wsi_her2.training.config import DataConfig, TrainConfig
from wsi_her2.training.device import autocast, use_bf16
from wsi_her2.training.evaluate import STAIN_NAMES, eval_loader, predict
from wsi_her2.training.loader import EpochSampler, ImageDataset, decode_all, make_loader
from wsi_her2.training.metrics import classification_report
from wsi_her2.training.plan import CONFIG_FILE, TrainingPlan, prepare_training
from wsi_her2.training.plots import plot_training_curves
from wsi_her2.training.resume import load_state, save_state

LOG_FILE = "training_log.csv"
CURVES_FILE = "training_curves.png"
SPLIT_FILE = "split.csv"
LOG_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "val_kappa",
    "seconds",
    "best",
)


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        out_dir: the checkpoint folder (also holding log, curves, config, split, resume state).
        card: the saved model card (of the best epoch).
        best_epoch: 1-based epoch of the saved weights.
        best_metrics: validation report of that epoch (empty without a validation set).
        log: the per-epoch log, column by column.
    """

    out_dir: Path
    card: ModelCard
    best_epoch: int
    best_metrics: dict[str, Any]
    log: dict[str, list[Any]]


def _build(
    plan: TrainingPlan,
) -> tuple[Her2Classifier, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    cfg = plan.train
    torch.manual_seed(cfg.seed)
    pretrained: bool | str = False
    if not plan.resume:
        pretrained = cfg.pretrained_weights or cfg.pretrained
    model = create_model(
        cfg.architecture,
        len(plan.card.classes),
        pretrained=pretrained,
        hidden=cfg.head_hidden,
        dropout=cfg.head_dropout,
    ).to(plan.device)
    if plan.device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optim_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = optim_class(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = cfg.lr_step_epochs if cfg.lr_step_epochs > 0 else 10**9
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=cfg.lr_gamma)
    return model, optimizer, scheduler


def _class_weights(plan: TrainingPlan) -> torch.Tensor | None:
    if plan.train.class_weighting != "balanced":
        return None
    counts = np.bincount(plan.train_images.labels, minlength=len(plan.card.classes)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32, device=plan.device)


def _read_log(out_dir: Path, epochs_done: int) -> dict[str, list[Any]]:
    log: dict[str, list[Any]] = {name: [] for name in LOG_COLUMNS}
    path = out_dir / LOG_FILE
    if not path.is_file():
        return log
    old = read_csv_columns(path)
    for i in range(min(epochs_done, len(old.get("epoch", [])))):  # rows past the saved state are redone
        for name in LOG_COLUMNS:
            text = old.get(name, [""] * (i + 1))[i]
            log[name].append(text == "true" if name == "best" else int(text) if name == "epoch" else _num(text))
    return log


def _num(text: str) -> float:
    return float(text) if text else math.nan


class _Run:
    """The objects of one training run and its two passes per epoch."""

    def __init__(self, plan: TrainingPlan, progress: ProgressCallback | None) -> None:
        cfg, device = plan.train, plan.device
        self.plan, self.cfg, self.device, self.progress = plan, cfg, device, progress
        self.cuda = device.type == "cuda"
        self.bf16 = use_bf16(device, cfg.bf16)
        self.channels_last = self.cuda and cfg.channels_last
        self.model, self.optimizer, self.scheduler = _build(plan)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(plan), label_smoothing=cfg.label_smoothing)
        augmentation = Augmentation(cfg.hflip, cfg.vflip, cfg.shift_fraction, cfg.hed_jitter)
        size = plan.card.input_size_px
        threads = max(1, cfg.workers)
        train_cache = decode_all(plan.train_images, size, threads) if cfg.cache_images else None
        val_cache = decode_all(plan.val_images, size, threads) if cfg.cache_images else None
        self.train_set = ImageDataset(plan.train_images, size, augmentation, cfg.seed, cache=train_cache)
        self.val_set = ImageDataset(plan.val_images, size, cache=val_cache)
        self.sampler = EpochSampler(self.train_set.labels, cfg.seed, shuffle=True, balanced=cfg.balanced_sampler)
        self.train_loader = make_loader(self.train_set, self.sampler, cfg.batch_size, cfg.workers, pin_memory=self.cuda)
        self.val_loader = eval_loader(self.val_set, cfg.batch_size, cfg.workers, pin_memory=self.cuda)
        self.stats = normalisation(plan.card, device)
        self.n_train_batches = -(-len(self.train_set) // cfg.batch_size)
        self.n_batches = self.n_train_batches + -(-len(self.val_set) // cfg.batch_size)
        self.message = ""

    def _report(self, stage: str, done: int, message: str) -> None:
        report(self.progress, ProgressEvent(stage, done, self.n_batches, "batches", message))

    def train_epoch(self, epoch: int, stage: str) -> tuple[float, float]:
        """One pass over the training images; returns (mean loss, accuracy)."""
        device, model = self.device, self.model
        self.sampler.epoch = epoch
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        report_every = max(1, self.n_train_batches // 20)  # ~20 updates (and GPU syncs) per epoch
        for step, (images, labels) in enumerate(self.train_loader, start=1):
            x = to_input(
                images,
                self.plan.card,
                device,
                channels_last=self.channels_last,
                non_blocking=True,
                stats=self.stats,
            )
            y = labels.to(device, non_blocking=True)
            with autocast(device, self.bf16):
                logits = model(x)
            loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % report_every == 0 or step == self.n_train_batches:
                self.message = f"loss {loss_sum.item() / seen:.4f} acc {100 * correct.item() / seen:.1f}%"
                self._report(stage, step, self.message)
        return loss_sum.item() / max(1, seen), correct.item() / max(1, seen)

    def validate(self, stage: str) -> dict[str, Any]:
        """Metrics on the validation images (empty without a validation set)."""
        if not len(self.val_set):
            return {}
        preds = predict(
            self.model,
            self.val_loader,
            self.plan.card,
            self.device,
            bf16=self.bf16,
            channels_last=self.channels_last,
            on_batch=lambda done: self._report(stage, self.n_train_batches + done, self.message),
        )
        metrics = classification_report(preds.labels, preds.predicted, self.plan.card.classes)
        metrics["loss"] = preds.loss
        return metrics


def _write_run_files(plan: TrainingPlan, out: Path) -> None:
    write_json(
        out / CONFIG_FILE,
        {
            "data": plan.data.to_dict(),
            "train": plan.train.to_dict(),
            "run": {"data_root": str(plan.data_root), "wsi_her2_version": __version__},
        },
    )
    labels = np.concatenate([plan.train_images.labels, plan.val_images.labels])
    write_csv_columns(
        out / SPLIT_FILE,
        {
            "file": [str(p) for p in plan.train_images.paths + plan.val_images.paths],
            "label": [plan.card.classes[i] for i in labels],
            "split": ["train"] * len(plan.train_images) + ["val"] * len(plan.val_images),
        },
    )


def _epoch_summary(train_loss: float, train_acc: float, val: dict[str, Any], improved: bool) -> str:
    text = f"loss {train_loss:.4f} acc {100 * train_acc:.1f}%"
    if val:
        text += f" | val loss {val['loss']:.4f} acc {100 * val['accuracy']:.1f}% F1 {100 * val['macro_f1']:.1f}%" + (
            " *" if improved else ""
        )
    return text


def run_training(plan: TrainingPlan, *, progress: ProgressCallback | None = None) -> TrainResult:
    """Train as planned, logging every epoch and keeping the best one; see the module doc for outputs."""
    cfg, out = plan.train, ensure_dir(plan.out_dir)
    run = _Run(plan, progress)
    _write_run_files(plan, out)
    start, best_metric, best_epoch = 0, -math.inf, 0
    if plan.resume:
        info = load_state(out, run.model, run.optimizer, run.scheduler)
        start, best_metric, best_epoch = (
            int(info["epochs_done"]),
            float(info["best_metric"]),
            int(info["best_epoch"]),
        )
    log = _read_log(out, start)
    title = f"{cfg.architecture}, {STAIN_NAMES[plan.data.stain]}, {len(plan.card.classes)} classes"
    for epoch in range(start, cfg.epochs):
        stage = f"epoch {epoch + 1}/{cfg.epochs}"
        started = time.perf_counter()
        lr = run.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = run.train_epoch(epoch, stage)
        val = run.validate(stage)
        run.scheduler.step()
        # Keep the best validation macro-F1; without a validation set, the last epoch.
        monitor = val["macro_f1"] if val else float(epoch)
        improved = monitor > best_metric
        if improved:
            best_metric, best_epoch = monitor, epoch + 1
            metrics = {
                "best_epoch": best_epoch,
                "monitor": "validation macro F1" if val else "last epoch",
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "validation": val,
            }
            save_checkpoint(run.model, dataclasses.replace(plan.card, metrics=metrics), out)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val.get("loss", math.nan),
            "val_accuracy": val.get("accuracy", math.nan),
            "val_macro_f1": val.get("macro_f1", math.nan),
            "val_kappa": val.get("quadratic_weighted_kappa", math.nan),
            "seconds": time.perf_counter() - started,
            "best": improved,
        }
        for name in LOG_COLUMNS:
            log[name].append(row[name])
        write_csv_columns(out / LOG_FILE, log)
        plot_training_curves(log, out / CURVES_FILE, title)
        save_state(
            out,
            run.model,
            run.optimizer,
            run.scheduler,
            epochs_done=epoch + 1,
            best_metric=best_metric,
            best_epoch=best_epoch,
        )
        summary = _epoch_summary(train_loss, train_acc, val, improved)
        report(progress, ProgressEvent(stage, run.n_batches, run.n_batches, "batches", summary))
    final_card = read_card(out)[0]  # the best epoch's, possibly saved before a resume
    return TrainResult(out, final_card, best_epoch, final_card.metrics.get("validation", {}), log)


def train(
    data_root: str | Path,
    out_dir: str | Path,
    data: DataConfig | None = None,
    train_cfg: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train a classifier on a dataset folder and write the checkpoint and logs into ``out_dir``.

    Args:
        data_root: BCI folder, tile folder or class folders.
        out_dir: output folder (the checkpoint folder).
        data: data settings (default: auto layout, IHC, 4 classes, 10% validation).
        train_cfg: the recipe (default: the paper's).
        resume: continue the run in ``out_dir`` from its last finished epoch.
        progress: receives per-epoch progress events.
    """
    plan = prepare_training(
        data_root, out_dir, data or DataConfig(), train_cfg or TrainConfig(), resume=resume, progress=progress
    )
    return run_training(plan, progress=progress)
