"""Scoring models: the weight-free DAB scorer (default) and trained classifiers (checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_her2.errors import ModelError

if TYPE_CHECKING:
    from wsi_her2.models.base import TileScorer

DEFAULT_MODEL = "dab"


def load_scorer(model: str | Path = DEFAULT_MODEL, *, inference: Any = None, dab: Any = None) -> TileScorer:
    """The scorer a ``--model`` value names: "dab" or a checkpoint folder / weight file.

    Args:
        model: "dab" (the default, no weights) or a checkpoint path.
        inference: :class:`~wsi_her2.inference.InferenceConfig` for trained models.
        dab: :class:`~wsi_her2.models.dab.DabConfig` for the DAB scorer.

    Raises:
        ModelError: the checkpoint cannot be used, or torch is not installed.
        InputNotFoundError: the checkpoint does not exist.
    """
    if str(model) == DEFAULT_MODEL:
        from wsi_her2.models.dab.scorer import DabScorer

        return DabScorer(dab)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            "trained models need PyTorch, which is not installed",
            hint="pip install 'wsi-her2[models]' (the DAB scorer, --model dab, needs no PyTorch)",
        ) from exc
    from wsi_her2.config import InferenceConfig
    from wsi_her2.models.deep import DeepScorer

    return DeepScorer(model, inference or InferenceConfig())
