"""Scoring models: the weight-free DAB scorer (default) and trained classifiers (checkpoints).

The choice between them (``--model dab`` or a checkpoint) is made here and nowhere else: the rest
of the library asks the scorer (:class:`~wsi_her2.models.base.TileScorer`) what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_her2.extras import require_torch
from wsi_her2.models.base import EVIDENCE, GRADCAM

if TYPE_CHECKING:
    from wsi_her2.models.base import TileScorer

DEFAULT_MODEL = "dab"


def _is_dab(model: str | Path) -> bool:
    return str(model) == DEFAULT_MODEL


def load_scorer(model: str | Path = DEFAULT_MODEL, *, inference: Any = None, dab: Any = None) -> TileScorer:
    """The scorer a ``--model`` value names: "dab" or a checkpoint folder / weight file.

    Args:
        model: "dab" (the default, no weights) or a checkpoint path.
        inference: :class:`~wsi_her2.config.InferenceConfig`: device, batch size, precision of trained
            models; its device also places the DAB scorer (CPU workers, or the GPU).
        dab: :class:`~wsi_her2.models.dab.DabConfig` for the DAB scorer.

    Raises:
        InputNotFoundError: the checkpoint does not exist (said before anything else is checked).
        ModelError: the checkpoint cannot be used, or torch is not installed.
    """
    if _is_dab(model):
        from wsi_her2.models.dab.scorer import DabScorer

        return DabScorer(dab, device=getattr(inference, "device", "cpu"))
    from wsi_her2.models.card import resolve_checkpoint

    resolve_checkpoint(model)  # a missing checkpoint is exit 3 on every install, with or without torch
    require_torch("trained models need")
    from wsi_her2.config import InferenceConfig
    from wsi_her2.models.deep import DeepScorer

    return DeepScorer(model, inference or InferenceConfig())


def model_fingerprint(model: str | Path, *, dab: Any = None) -> str:
    """The scorer's :meth:`~wsi_her2.models.base.TileScorer.fingerprint` without loading it (no torch, no GPU).

    Raises:
        ModelError, InputNotFoundError: the checkpoint is missing, unreadable or does not match its card.
    """
    if _is_dab(model):
        from wsi_her2.models.dab.config import DabConfig
        from wsi_her2.models.dab.scorer import dab_fingerprint

        return dab_fingerprint(dab or DabConfig())
    from wsi_her2.models.card import checkpoint_fingerprint

    return checkpoint_fingerprint(model)


def explanation_of(model: str | Path) -> str:
    """How ``explain`` shows the evidence of this model: :data:`~wsi_her2.models.base.GRADCAM` or ``EVIDENCE``."""
    return EVIDENCE if _is_dab(model) else GRADCAM


def takes_dab_settings(model: str | Path) -> bool:
    """True when this model is tuned by the ``[dab]`` settings (and so by a ``--dab-config`` calibration)."""
    return _is_dab(model)


def tile_geometry(model: str | Path) -> tuple[int, float | None]:
    """(tile side in pixels, µm/px of those pixels or None) of the tiles this model scores, without loading it.

    Raises:
        ModelError, InputNotFoundError: the checkpoint's card cannot be read.
    """
    if _is_dab(model):
        from wsi_her2.models.dab.config import DabConfig
        from wsi_her2.models.dab.scorer import DAB_TILE_SIZE_UM

        work_mpp = DabConfig().work_mpp
        return round(DAB_TILE_SIZE_UM / work_mpp), work_mpp
    from wsi_her2.models.card import read_card

    card, _ = read_card(model, verify_hash=False)
    return card.tile_size_px, card.tile_mpp


def same_kind(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two scorer identities are of the same kind of scorer (both DAB, or both trained)."""
    return a.get("kind") == b.get("kind")


def describe_identity(identity: dict[str, Any], *, definite: bool = True) -> str:
    """A scorer identity in words, for messages: "the DAB scorer", "the trained model 'x'"."""
    from wsi_her2.models.dab.scorer import KIND

    if identity.get("kind") == KIND:
        return "the DAB scorer"
    if not definite:
        return "a trained model"
    name = identity.get("name") or identity.get("architecture") or identity.get("kind")
    return f"the trained model {name!r}"


__all__ = [
    "DEFAULT_MODEL",
    "EVIDENCE",
    "GRADCAM",
    "describe_identity",
    "explanation_of",
    "load_scorer",
    "model_fingerprint",
    "same_kind",
    "takes_dab_settings",
    "tile_geometry",
]
