"""The inference engine: batches of uint8 tiles in, class probabilities out, on CPU, CUDA or MPS.

On CUDA: pinned host buffers and non-blocking copies, resize and normalisation on the GPU,
channels_last, bf16 autocast, optional ``torch.compile``; results are collected one batch late, so
the host prepares batch k+1 while the GPU computes batch k (the loader's workers decode further
ahead still). Out of memory halves the batch and goes on. On CPU the same code runs synchronously
and deterministically. No file I/O here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from wsi_her2.config import InferenceConfig
from wsi_her2.device import resolve_device
from wsi_her2.errors import DeviceError
from wsi_her2.models.base import BatchResult
from wsi_her2.models.card import ModelCard
from wsi_her2.models.preprocess import normalisation, to_input

log = logging.getLogger(__name__)


class _Pending:
    """One batch in flight: its probabilities land in a pinned host tensor; an event marks it done."""

    def __init__(self, host: torch.Tensor, n: int, event: Any, slot: int) -> None:
        self.host, self.n, self.event, self.slot = host, n, event, slot

    def result(self) -> BatchResult:
        if self.event is not None:
            self.event.synchronize()
        return BatchResult(self.host[: self.n].numpy().copy())


class TorchEngine:
    """Runs a classifier on uint8 tile batches.

    Args:
        model: the network (logits out).
        card: its model card (input size, mean, std).
        cfg: device, batch size, precision.
        tile_size_px: side of the delivered tiles (may differ from the card's input size: the
            engine resizes on the device).
        batch_size: largest batch ``submit`` accepts (default: the config's, else by device).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        cfg: InferenceConfig,
        tile_size_px: int,
        batch_size: int | None = None,
    ) -> None:
        self.card = card
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.cuda = self.device.type == "cuda"
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.batch_size = batch_size or cfg.batch_size or (256 if self.cuda else 32)
        precision = cfg.precision if cfg.precision != "auto" else ("bf16" if self.cuda else "fp32")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.precision = precision
        self.channels_last = cfg.channels_last and self.cuda
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        self.model = model
        self.tile_size_px = tile_size_px
        self.stats = normalisation(card, self.device)
        self.notes: list[str] = []
        # Two pinned staging buffers: the host fills one while the GPU copies from the other.
        self.slots = 2 if self.cuda else 1
        shape = (self.batch_size, tile_size_px, tile_size_px, 3)
        self.staging = [torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda) for _ in range(self.slots)]
        self.outputs = [
            torch.empty((self.batch_size, card.num_classes), dtype=torch.float32, pin_memory=self.cuda)
            for _ in range(self.slots)
        ]
        self.events: list[Any] = [None] * self.slots
        self.next_slot = 0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            return torch.softmax(logits.float(), dim=1)

    def _probabilities(self, staged: torch.Tensor) -> torch.Tensor:
        """Forward in chunks, halving the chunk after an out-of-memory error."""
        chunk = staged.shape[0]
        while True:
            try:
                parts = []
                for start in range(0, staged.shape[0], chunk):
                    x = to_input(
                        staged[start : start + chunk], self.card, self.device,
                        channels_last=self.channels_last, non_blocking=self.cuda, stats=self.stats,
                    )  # fmt: skip
                    parts.append(self._forward(x))
                return torch.cat(parts) if len(parts) > 1 else parts[0]
            except torch.OutOfMemoryError as exc:
                if chunk == 1:
                    raise DeviceError(
                        f"out of memory on {self.device} even for one tile", hint="use --device cpu"
                    ) from exc
                chunk = max(1, chunk // 2)
                if self.cuda:
                    torch.cuda.empty_cache()
                note = f"out of memory on {self.device}: batches are now split into {chunk} tiles"
                if note not in self.notes:
                    self.notes.append(note)
                    log.warning(note)

    def submit(self, images: np.ndarray | torch.Tensor) -> _Pending:
        """Start scoring ``images`` (n, S, S, 3) uint8; they may be overwritten once this returns.

        A tensor already on the engine's device (tiles decoded there) is used in place.
        """
        n = images.shape[0]
        if n > self.batch_size:
            raise ValueError(f"batch of {n} tiles exceeds the engine's batch size {self.batch_size}")
        slot = self.next_slot
        self.next_slot = (self.next_slot + 1) % self.slots
        if self.events[slot] is not None:
            self.events[slot].synchronize()  # the staging buffer's previous copy must be done
        # A compiled model wants one shape: pad the last, short batch.
        count = self.batch_size if self.cfg.compile else n
        if isinstance(images, torch.Tensor) and images.device.type == self.device.type:
            staged = images if count == n else torch.cat([images, images.new_zeros((count - n, *images.shape[1:]))])
        else:
            staged = self.staging[slot][:count]
            staged[:n].copy_(torch.as_tensor(np.ascontiguousarray(images)))
            if count > n:
                staged[n:count].zero_()
        probabilities = self._probabilities(staged)[:n]
        out = self.outputs[slot]
        out[:n].copy_(probabilities, non_blocking=self.cuda)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self.events[slot] = event
        return _Pending(out, n, event, slot)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Synchronous convenience: probabilities of any number of tiles."""
        results = []
        for start in range(0, images.shape[0], self.batch_size):
            results.append(self.submit(images[start : start + self.batch_size]).result().probabilities)
        return np.concatenate(results) if results else np.zeros((0, self.card.num_classes), np.float32)

    def describe(self) -> dict[str, Any]:
        """Device and settings actually used, for the report."""
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.cuda else "cpu",
            "batch_size": self.batch_size,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.cfg.compile,
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "notes": list(self.notes),
        }
