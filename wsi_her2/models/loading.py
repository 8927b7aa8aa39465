"""Saving and loading checkpoints with torch: safetensors only, card checked against the weights."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import torch

from wsi_her2.errors import ConfigError, ModelError
from wsi_her2.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard, file_sha256, read_card
from wsi_her2.models.registry import Her2Classifier, create_model
from wsi_her2.outputs.atomic import ensure_dir, write_bytes, write_json


def save_checkpoint(model: Her2Classifier, card: ModelCard, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``model_card.json`` (with the weights' hash) atomically.

    Returns:
        The checkpoint folder.
    """
    folder = ensure_dir(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "wsi-her2", "architecture": card.architecture, "num_classes": str(card.num_classes)}
    write_safetensors(folder / WEIGHTS_FILE, state, metadata)
    created = card.created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    card = dataclasses.replace(card, weights_sha256=file_sha256(folder / WEIGHTS_FILE), created=created)
    write_json(folder / CARD_FILE, card.to_dict())
    return folder


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write tensors as a safetensors file, atomically.

    Serialised in memory first, then written by :func:`~wsi_her2.outputs.atomic.write_bytes`:
    safetensors' own file writer reports a full disk as a ``SafetensorError``, not an ``OSError``,
    so the one-line "disk full while writing PATH" (exit 10) would be lost.

    Raises:
        OutputError: the file cannot be written (disk full, permissions).
    """
    from safetensors.torch import save

    return write_bytes(path, save(tensors, metadata=metadata))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Her2Classifier, ModelCard]:
    """Load a checkpoint folder (or its weight file) into a model in eval mode.

    Raises:
        InputNotFoundError: the path does not exist.
        ModelError: not a safetensors checkpoint, the card does not match the weights, or the
            weights do not fit the architecture and classes the card names.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card, weights = read_card(path)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc})") from exc
    try:
        model = create_model(card.architecture, card.num_classes, hidden=card.head_hidden, dropout=card.head_dropout)
    except ConfigError as exc:  # an architecture this version does not have: the checkpoint's problem
        raise ModelError(f"the model card of {weights.parent} names {exc.message}", hint=exc.hint) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape or key mismatch"
        raise ModelError(
            f"the weights in {weights.name} do not fit a {card.architecture} with {card.num_classes} classes "
            f"as the model card says ({first})",
            hint="the card and weights come from different models",
        ) from exc
    return model.to(device).eval(), card
