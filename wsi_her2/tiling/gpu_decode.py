"""Tiles decoded where the scorer runs: stored JPEG bytes in, checked uint8 tile batches on the device out.

On a CUDA device the CPU loader (decode + resize + pixel check in worker processes) limits a fast
classifier or the DAB scorer's batched torch measurement; here the host only reads compressed
stored tiles (:mod:`stored_tiles`, ~3 µs a tile: cheaper in this process than shipping bytes back
from worker processes), and the device decodes a whole batch at once
(``torchvision.io.decode_jpeg`` on a list: nvJPEG, with the hardware JPEG engines where the GPU has
them), assembles each delivered tile from the stored tiles it covers, resizes it and runs the pixel
check (:mod:`device_pixels`, which gives the CPU loader's numbers). Decoding runs on its own CUDA
stream one batch ahead of the scorer, so copies and decoding overlap the previous batch's forward
pass or cell measurement. On a CPU device the same code runs with torchvision's libjpeg-turbo
decoder (tests compare it with the CPU loader pixel for pixel).

Whether a slide can be decoded so is decided per slide (:func:`choose_decode`, called by
:func:`wsi_her2.tiling.source.scored_tile_batches`): TIFF-family JPEG levels can; JPEG 2000, other
codecs and OpenSlide-read formats are read by the CPU loader.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_her2.config import LoaderConfig
from wsi_her2.errors import DeviceError, MalformedSlideError, WsiHer2Error
from wsi_her2.slide.base import SlideInfo
from wsi_her2.tiling.grid import TileGrid
from wsi_her2.tiling.loader import TileBatch
from wsi_her2.tiling.stored_tiles import StoredLevel, covering_tiles, plan_tile, read_stored, stored_jpeg_level
from wsi_her2.tissue import TissueThresholds

# The first stored tile of each slide is decoded both here and by libjpeg-turbo: a decoder that
# got the colour space wrong differs by tens of grey levels, one that merely rounds or upsamples
# chroma differently by about one.
_SELF_CHECK_MEAN_GREY = 3.0


@dataclass(frozen=True)
class DecodeChoice:
    """Where a slide's tiles are decoded, and why.

    Attributes:
        on_device: decoded on the scorer's device (else by the CPU loader).
        reason: why, in words.
        level: the stored level read, when on the device.
        device: the device, when on the device.
    """

    on_device: bool
    reason: str
    level: StoredLevel | None = None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """For the report."""
        out: dict[str, Any] = {"decode": "device" if self.on_device else "cpu", "reason": self.reason}
        if self.on_device and self.level is not None:
            out.update({"device": self.device, "level": self.level.index, "decoder": "torchvision.io.decode_jpeg"})
        return out


def choose_decode(
    requested: str,
    device: Any,
    info: SlideInfo,
    tile_size_px: int,
    output_size_px: int,
    *,
    needs_workers: bool = False,
) -> DecodeChoice:
    """Decide where to decode: ``requested`` is "auto", "cpu" or "gpu" (``LoaderConfig.decode``).

    Args:
        requested: the user's choice.
        device: the torch device (or its name) on which the scorer takes tiles as tensors, or None
            for a scorer that takes host arrays only (``TileScorer.tile_device``).
        info: the slide.
        tile_size_px: grid tile side, level-0 pixels.
        output_size_px: delivered tile side.
        needs_workers: the scorer runs a function on each tile in the loader's workers.

    Raises:
        DeviceError: "gpu" was asked for and this slide or scorer cannot be decoded so.
    """
    if requested == "cpu":
        return DecodeChoice(False, "--decode cpu")
    kind = None if device is None else str(device).split(":")[0]
    if needs_workers or kind is None:
        return _refuse(requested, info, "this scorer works on the CPU, in the loader's worker processes")
    if requested == "auto" and kind != "cuda":
        return DecodeChoice(False, f"the scorer runs on {kind}")
    level = stored_jpeg_level(info, tile_size_px, output_size_px)
    if isinstance(level, str):
        return _refuse(requested, info, level)
    try:
        _self_check(level, str(device))
    except Exception as exc:  # a decoder that fails or gets colours wrong: the CPU reads the slide
        return _refuse(requested, info, f"decoding on {device} failed its check ({exc})")
    return DecodeChoice(True, f"stored JPEG tiles of level {level.index} decoded on {device}", level, str(device))


def _refuse(requested: str, info: SlideInfo, reason: str) -> DecodeChoice:
    if requested == "gpu":
        raise DeviceError(
            f"--decode gpu: {info.path}: {reason}",
            hint="use --decode auto (the slide is then decoded on the CPU) or --decode cpu",
        )
    return DecodeChoice(False, reason)


def _first_tiles(level: StoredLevel, count: int) -> list[int]:
    """A few present stored tiles, the largest (most detailed) first."""
    order = np.argsort(-level.bytecounts, kind="stable")
    return [int(i) for i in order[:count] if level.bytecounts[i] > 0]


def _mode(level: StoredLevel, device: str) -> Any:
    from torchvision.io import ImageReadMode

    # RGB-coded tiles: the components as stored (the Adobe marker tells libjpeg; nvJPEG's
    # "unchanged" output is the raw components); YCbCr: converted by the decoder.
    if level.rgb_coded and device.startswith("cuda"):
        return ImageReadMode.UNCHANGED
    return ImageReadMode.RGB


def _self_check(level: StoredLevel, device: str) -> None:
    """Decode a stored tile on the device and with libjpeg-turbo; raise when they disagree."""
    import imagecodecs
    import torch
    from torchvision.io import decode_jpeg

    if level.rgb_coded and device.startswith("cuda"):
        _require_full_chroma(level)
    fd = os.open(level.path, os.O_RDONLY)
    try:
        for index in _first_tiles(level, 1):
            stream = read_stored(fd, level, index)
            assert stream is not None
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
                data = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
                ours = decode_jpeg(data, mode=_mode(level, device), device=device)
            reference = imagecodecs.jpeg8_decode(stream, outcolorspace="RGB")
            difference = np.abs(ours.permute(1, 2, 0).cpu().numpy().astype(np.int16) - reference).mean()
            if difference > _SELF_CHECK_MEAN_GREY:
                raise ValueError(f"mean difference {difference:.1f} grey levels from libjpeg-turbo")
    finally:
        os.close(fd)


def _require_full_chroma(level: StoredLevel) -> None:
    """Refuse RGB-coded tiles with subsampled components: nvJPEG returns their raw planes only unsubsampled."""
    fd = os.open(level.path, os.O_RDONLY)
    try:
        stream = read_stored(fd, level, _first_tiles(level, 1)[0]) or b""
    finally:
        os.close(fd)
    found = [i for i in (stream.find(b"\xff\xc0"), stream.find(b"\xff\xc1")) if i >= 0]
    start = min(found, default=-1)
    if start < 0:
        raise ValueError("not a baseline JPEG")
    components = stream[start + 9]
    factors = {stream[start + 11 + 3 * c] for c in range(components)}
    if factors != {0x11}:
        raise ValueError("RGB-coded JPEG with subsampled components")


@dataclass
class _InFlight:
    indices: np.ndarray
    tiles: Any  # (n, 3, s, s) uint8 on the device
    checks: Any  # (2, n) float64 on the host (pinned on CUDA)
    event: Any


class DeviceTileDecoder:
    """Decodes, assembles, resizes and checks batches of tiles of one slide on one device."""

    def __init__(self, level: StoredLevel, device: str, cfg: LoaderConfig, thresholds: TissueThresholds) -> None:
        """Prepare for ``level`` of a slide, delivering ``cfg.output_size_px`` tiles on ``device``."""
        import torch

        self.torch = torch
        self.level, self.cfg, self.thresholds = level, cfg, thresholds
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.mode = _mode(level, device)
        self.fd = os.open(level.path, os.O_RDONLY)
        tw, th = level.tile_width, level.tile_height
        self.white = torch.full((3, th, tw), 255, dtype=torch.uint8, device=self.device)

    def close(self) -> None:
        """Close the slide file."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None  # type: ignore[assignment]

    def _decode(self, indices: list[int]) -> dict[int, Any]:
        from torchvision.io import decode_jpeg

        streams = {i: read_stored(self.fd, self.level, i) for i in indices}
        present = [i for i, s in streams.items() if s is not None]
        tensors = [self.torch.frombuffer(bytearray(streams[i]), dtype=self.torch.uint8) for i in present]  # type: ignore[arg-type]
        try:
            with warnings.catch_warnings():
                # torchvision >= 0.29 flags its image codecs as moving to TorchCodec; they still work.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
                decoded = decode_jpeg(tensors, mode=self.mode, device=self.device) if tensors else []
        except RuntimeError as exc:
            raise WsiHer2Error(
                f"{self.level.path}: a stored tile of level {self.level.index} could not be decoded on "
                f"{self.device} ({exc})",
                hint="the file may be corrupt; --decode cpu reads it with libjpeg-turbo",
            ) from exc
        out = {i: self._fit(i, tile) for i, tile in zip(present, decoded, strict=True)}
        return {i: out.get(i, self.white) for i in indices}

    def _fit(self, index: int, tile: Any) -> Any:
        """A decoded tile at its declared size, as the CPU reader fits it (``tiff_backend._fit_tile``).

        Raises:
            MalformedSlideError: it lacks pixels the level needs, or is larger than its tile.
        """
        level = self.level
        th, tw = int(tile.shape[-2]), int(tile.shape[-1])
        if tile.shape[0] == 3 and (th, tw) == (level.tile_height, level.tile_width):
            return tile
        row, col = divmod(index, level.columns)
        need_h = min(level.tile_height, level.height - row * level.tile_height)
        need_w = min(level.tile_width, level.width - col * level.tile_width)
        if tile.shape[0] != 3 or th < need_h or tw < need_w or th > level.tile_height or tw > level.tile_width:
            raise MalformedSlideError(
                f"{level.path}: tile {index} of level {level.index} decodes to {tw} x {th} pixels "
                f"({tile.shape[0]} components), not the {level.tile_width} x {level.tile_height} RGB the file declares",
                hint="the file is damaged or was not written by a scanner; copy or export the slide again",
            )
        full = self.white.clone()
        full[:, :th, :tw] = tile
        return full

    def _assemble(self, plans: list[Any]) -> Any:
        """(n, 3, h, w) uint8: each tile's box of the level, white outside the slide."""
        torch, level = self.torch, self.level
        covers = [covering_tiles(level, plan) for plan in plans]
        tiles = self._decode(sorted({i for cover in covers for i in cover}))
        if all(plan.single for plan in plans):
            return torch.stack([tiles[cover[0]] for cover in covers])
        size = plans[0].width
        out = torch.full((len(plans), 3, size, size), 255, dtype=torch.uint8, device=self.device)
        tw, th = level.tile_width, level.tile_height
        for k, (plan, cover) in enumerate(zip(plans, covers, strict=True)):
            for index in cover:
                row, col = divmod(index, level.columns)
                # The part of stored tile (col, row) inside both the box and the level.
                x0, y0 = max(plan.x, col * tw), max(plan.y, row * th)
                x1 = min(plan.x + plan.width, (col + 1) * tw, level.width)
                y1 = min(plan.y + plan.height, (row + 1) * th, level.height)
                out[k, :, y0 - plan.y : y1 - plan.y, x0 - plan.x : x1 - plan.x] = tiles[index][
                    :, y0 - row * th : y1 - row * th, x0 - col * tw : x1 - col * tw
                ]
        return out

    def start(self, indices: np.ndarray, plans: list[Any]) -> _InFlight:
        """Read a batch's stored tiles and queue its decoding and checks on the device."""
        from wsi_her2.tiling.device_pixels import pixel_check_tiles, resize_tiles

        torch = self.torch
        with torch.cuda.stream(self.stream) if self.cuda else _nothing():
            tiles = resize_tiles(self._assemble(plans), self.cfg.output_size_px)
            if self.cfg.pixel_check:
                fractions, blur = pixel_check_tiles(tiles, self.thresholds)
                checks = torch.stack([fractions, blur])
            else:
                checks = torch.stack([torch.ones(len(plans)), torch.zeros(len(plans))]).double()
            host = torch.empty(checks.shape, dtype=torch.float64, pin_memory=self.cuda)
            host.copy_(checks, non_blocking=self.cuda)
            event = None
            if self.cuda:
                event = torch.cuda.Event()
                event.record(self.stream)
        return _InFlight(indices, tiles, host, event)

    def finish(self, flight: _InFlight) -> TileBatch:
        """Wait for a queued batch's checks; its pixels become usable on the current stream."""
        if flight.event is not None:
            flight.event.synchronize()
            stream = self.torch.cuda.current_stream(self.device)
            stream.wait_event(flight.event)
            flight.tiles.record_stream(stream)  # allocated on the decode stream, used on this one
        fractions, blur = flight.checks.numpy()
        cfg = self.cfg
        kept = (fractions >= cfg.min_pixel_tissue_fraction) & (blur >= cfg.min_blur_score)
        if not cfg.pixel_check:
            kept[:] = True
        return TileBatch(
            indices=flight.indices,
            images=None,
            kept=kept,
            pixel_tissue_fraction=fractions.astype(np.float32),
            blur_score=blur.astype(np.float32),
            device_images=flight.tiles.permute(0, 2, 3, 1),  # (n, s, s, 3), as the CPU loader's images
        )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def iter_device_tile_batches(
    choice: DecodeChoice, grid: TileGrid, cfg: LoaderConfig, *, thresholds: TissueThresholds | None = None
) -> Iterator[TileBatch]:
    """The grid's tiles in batches, in grid order, decoded on ``choice.device``; one batch queued ahead.

    Yields:
        :class:`~wsi_her2.tiling.loader.TileBatch` objects with ``device_images`` (a tensor view
        (n, size, size, 3) uint8 on the device) instead of ``images``.
    """
    if not choice.on_device or choice.level is None or choice.device is None:
        raise ValueError("iter_device_tile_batches needs a decision to decode on the device")
    level = choice.level
    plans = [plan_tile(level, int(x), int(y), grid.tile_size_px) for x, y in zip(grid.x, grid.y, strict=True)]
    decoder = DeviceTileDecoder(level, choice.device, cfg, thresholds or TissueThresholds())
    try:
        ahead: _InFlight | None = None
        for start in range(0, len(grid), cfg.batch_size):
            stop = min(start + cfg.batch_size, len(grid))
            flight = decoder.start(np.arange(start, stop), plans[start:stop])
            if ahead is not None:
                yield decoder.finish(ahead)
            ahead = flight
        if ahead is not None:
            yield decoder.finish(ahead)
    finally:
        decoder.close()
