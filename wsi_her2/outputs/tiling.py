"""The outputs of ``wsi-her2 tile``: tile table, tissue GeoJSON, overview PNG, manifest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2._version import __version__
from wsi_her2.outputs import schema
from wsi_her2.outputs.atomic import ensure_dir, write_json
from wsi_her2.outputs.geojson import write_tissue_geojson
from wsi_her2.outputs.images import draw_tiling_overview, write_image
from wsi_her2.outputs.tile_table import write_csv_columns
from wsi_her2.results import TilingResult


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_tiling_outputs(
    result: TilingResult, out_dir: str | Path, config: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write the tiling outputs; the manifest is written last, so its presence means complete.

    Args:
        result: what the tiler found.
        out_dir: the output folder (created if needed).
        config: the resolved configuration of every stage, recorded in the manifest (default: the result's).

    Returns:
        The written files by role.
    """
    out = ensure_dir(out_dir)
    prepared = result.slide
    grid = prepared.grid
    files: dict[str, Path] = {}
    files["tiles"] = write_csv_columns(
        out / schema.TILES,
        {
            **schema.grid_columns(grid),
            schema.PIXEL_FRACTION: result.pixel_tissue_fraction,
            schema.BLUR_SCORE: result.blur_score,
            schema.KEPT: result.kept,
            schema.DROP_REASON: result.drop_reason,
        },
    )
    files["tissue"] = write_tissue_geojson(out / schema.TISSUE_GEOJSON, prepared.mask.polygons, prepared.info.mpp)
    mask = prepared.mask
    if prepared.overview is not None:
        image, sx, sy = prepared.overview
        overview = draw_tiling_overview(image, mask.mask, sx, sy, grid.x, grid.y, grid.tile_size_px, result.kept)
        files["thumbnail"] = write_image(out / schema.THUMBNAIL, overview)
    reasons = np.asarray(result.drop_reason)
    manifest = {
        "wsi_her2_version": __version__,
        "command": "tile",
        "created": now_iso(),
        "coordinate_space": schema.COORDINATE_SPACE,
        "slide": prepared.summary(),
        "tissue": mask.summary(),
        "grid": grid.summary(),
        "counts": {
            "grid_positions": grid.n_cols * grid.n_rows,
            "positions_on_tissue": grid.positions_on_tissue,
            "tiles_over_tissue_threshold": len(grid),
            "tiles_kept": int(result.kept.sum()),
            "dropped_background": int((reasons == "background").sum()),
            "dropped_blur": int((reasons == "blur").sum()),
        },
        "config": result.config if config is None else config,
        "timings_s": {k: round(v, 4) for k, v in prepared.timings_s.items()},
        "files": {role: path.name for role, path in files.items()},
    }
    files["manifest"] = write_json(out / schema.TILING_MANIFEST, manifest)
    return files
