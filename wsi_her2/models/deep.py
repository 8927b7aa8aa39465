"""A trained classifier (checkpoint + card) behind the pipeline's model interface.

This module needs PyTorch: :func:`wsi_her2.models.load_scorer` imports it only after checking
that torch is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wsi_her2.config import GridConfig, InferenceConfig
from wsi_her2.device import resolve_device
from wsi_her2.errors import StainMismatchError
from wsi_her2.inference import TorchEngine
from wsi_her2.models.base import GRADCAM, BatchResult, SlideFinish, SlideTiles, apply_card_geometry, unchanged
from wsi_her2.models.card import TRAINED_KIND, checkpoint_fingerprint
from wsi_her2.models.dab.stain_check import check_stain as measure_stain
from wsi_her2.models.loading import load_checkpoint
from wsi_her2.outputs.schema import ScorerOutputs
from wsi_her2.slide.regions import best_level

if TYPE_CHECKING:
    from wsi_her2.results import PreparedSlide
    from wsi_her2.tiling.loader import TileBatch

KIND = TRAINED_KIND
CAVEAT = (
    "Models trained on BCI learn from patches labelled with their slide's score, not their own; "
    "tile-level maps show where the model sees evidence, not pathologist tile labels. "
    "Not validated for clinical use."
)

# On a GPU, tiles travel at their stored size (e.g. 256 px from the 4x level) and are resized there;
# but never more than this many times the network's input side, to bound the copy.
_MAX_TRANSFER_FACTOR = 1.5


class _Deferred:
    """A GPU result whose rows map back to the batch's kept tiles."""

    def __init__(self, pending: Any, n: int, n_classes: int) -> None:
        self.pending, self.n, self.n_classes = pending, n, n_classes

    def result(self) -> BatchResult:
        if self.pending is None:
            return BatchResult(np.zeros((0, self.n_classes), np.float32))
        return self.pending.result()


class DeepScorer:
    """A checkpoint written by ``wsi-her2 train`` (or any safetensors + card folder)."""

    kind = KIND
    needs_pixels = True
    max_in_flight = 1
    explanation = GRADCAM

    def __init__(self, checkpoint: str | Path, cfg: InferenceConfig) -> None:
        """Load the checkpoint (never unpickling) on the configured device.

        Raises:
            ModelError: the checkpoint is missing, unsafe or inconsistent.
            DeviceError: the device is unavailable.
        """
        self.cfg = cfg
        self.checkpoint = Path(checkpoint)
        self.device = resolve_device(cfg.device)
        self.model, self._card = load_checkpoint(checkpoint, "cpu")
        self.classes = self._card.classes
        self.stain = self._card.stain
        self.label_granularity: str | None = self._card.label_granularity
        self.engine: TorchEngine | None = None
        self.batch_size: int | None = cfg.batch_size or (256 if self.device.type == "cuda" else 32)

    @property
    def tile_device(self) -> str:
        """The engine takes tiles already on its device (decoded there) as they are."""
        return str(self.device)

    def grid_config(self, requested: GridConfig, user_set: frozenset[str]) -> GridConfig:
        """Cut tiles as the training patches were cut (the card's size and µm/px)."""
        return apply_card_geometry(requested, user_set, self._card.tile_size_px, self._card.tile_mpp)

    def output_size_px(self, prepared: PreparedSlide) -> int:
        """The card's input size on CPU; on a GPU the stored size of the level read (resized there)."""
        size = self._card.input_size_px
        if self.device.type != "cuda":
            return size
        tile = prepared.grid.tile_size_px
        level = best_level(prepared.info.levels, tile / size)
        native = round(tile / level.downsample)
        return native if native <= size * _MAX_TRANSFER_FACTOR else size

    def prepare(self, prepared: PreparedSlide, *, check_stain: bool) -> dict[str, Any]:
        """Check the slide's stain against the card's (H&E vs H-DAB IHC)."""
        mask = prepared.mask
        facts: dict[str, Any] = {}
        if mask.thumbnail is not None:
            verdict = measure_stain(mask.thumbnail, mask.mask)
            facts["stain_check"] = verdict.to_dict()
            if check_stain and verdict.stain in ("ihc", "he") and verdict.stain != self.stain:
                names = {"ihc": "HER2 IHC", "he": "H&E"}
                raise StainMismatchError(
                    f"{prepared.info.path}: the slide looks like {names[verdict.stain]} but the model was "
                    f"trained on {names[self.stain]} ({verdict.message.rstrip('.')})",
                    hint="use a model trained on this stain, or --no-stain-check if the check is wrong",
                )
        return facts

    def tile_function(self, prepared: PreparedSlide, output_size_px: int) -> None:
        """Classifiers run in the main process, on the device."""
        return None

    def _engine(self, tile_size_px: int) -> TorchEngine:
        if self.engine is None or self.engine.tile_size_px != tile_size_px:
            self.engine = TorchEngine(self.model, self._card, self.cfg, tile_size_px, self.batch_size)
        return self.engine

    def submit(self, batch: TileBatch) -> _Deferred:
        """Copy the kept tiles to the device and start the forward pass."""
        # Tiles decoded on the device (gpu_decode) arrive as a tensor there; others as host arrays.
        pixels = batch.device_images if batch.device_images is not None else batch.images
        if pixels is None:
            raise ValueError("the classifier needs tile pixels (return_images=True)")
        rows = np.flatnonzero(batch.kept)
        if len(rows) == 0:
            return _Deferred(None, 0, len(self.classes))
        engine = self._engine(pixels.shape[1])
        images = pixels if len(rows) == len(batch) else pixels[rows]
        return _Deferred(engine.submit(images), len(rows), len(self.classes))

    def finish(self, tiles: SlideTiles, prepared: PreparedSlide) -> SlideFinish:
        """Tiles are classified on their own: nothing to revise."""
        return unchanged(tiles)

    def outputs(self) -> ScorerOutputs:
        """Class probabilities per tile, ``p(class)``."""
        return ScorerOutputs("p", caveat=CAVEAT)

    def identity(self) -> dict[str, Any]:
        """The card's identity plus the kind."""
        return self._card.scorer_identity()

    def fingerprint(self) -> str:
        """The card and the weights' hash."""
        return checkpoint_fingerprint(self.checkpoint)

    def card(self) -> dict[str, Any]:
        """The full model card."""
        return self._card.to_dict()

    def runtime(self) -> dict[str, Any]:
        """Device and precision actually used."""
        return self.engine.describe() if self.engine is not None else {"device": str(self.device)}

    def set_cpu_threads(self, threads: int) -> None:
        """Share the cores with the other jobs, unless the user set the thread count."""
        if self.cfg.threads is None:
            torch.set_num_threads(threads)

    def close(self) -> None:
        """Free GPU memory."""
        self.engine = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
