"""Where a scored slide's tiles come from: the CPU loader, or decoded on the scorer's device.

One decision per slide. Tiles are decoded where the scorer runs when the scorer takes tiles as
device tensors (its ``tile_device``), runs nothing in the loader's workers, and the slide's stored
tiles allow it (:func:`~wsi_her2.tiling.gpu_decode.choose_decode`, steered by
``LoaderConfig.decode``); otherwise the CPU loader reads them. The decision and its reason go into
the report (``runtime.tile_decode``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from wsi_her2.config import LoaderConfig
from wsi_her2.tiling.gpu_decode import choose_decode, iter_device_tile_batches
from wsi_her2.tiling.loader import TileBatch, TileFunction, iter_tile_batches

if TYPE_CHECKING:
    from wsi_her2.results import PreparedSlide


def scored_tile_batches(
    prepared: PreparedSlide,
    loader: LoaderConfig,
    *,
    tile_device: str | None,
    tile_function: TileFunction | None,
) -> tuple[Iterator[TileBatch], dict[str, Any]]:
    """The batches a scorer gets for this slide, and where they were decoded.

    Args:
        prepared: the slide with its grid.
        loader: the loader settings as the scorer set them (``decode``: "auto", "cpu" or "gpu").
        tile_device: the torch device on which the scorer takes tiles as tensors, or None.
        tile_function: the scorer's function run on each tile in the loader's workers, or None.

    Returns:
        (batches in grid order, ``{"decode": "device" | "cpu", "reason": ..., ...}`` for the report).

    Raises:
        DeviceError: ``loader.decode`` is "gpu" and this slide or scorer cannot be decoded so.
    """
    choice = choose_decode(
        loader.decode, tile_device, prepared.info, prepared.grid.tile_size_px, loader.output_size_px,
        needs_workers=tile_function is not None,
    )  # fmt: skip
    if choice.on_device:
        batches = iter_device_tile_batches(choice, prepared.grid, loader, thresholds=prepared.mask.thresholds)
    else:
        batches = iter_tile_batches(
            prepared.source, prepared.grid, loader, thresholds=prepared.mask.thresholds, tile_function=tile_function,
            roi=prepared.roi,
        )  # fmt: skip
    return batches, choice.to_dict()
