"""Regions of interest from GeoJSON (as QuPath exports annotations), and rasterising polygons.

QuPath writes level-0 pixel coordinates with the origin at the top-left of the full-resolution
image, which is wsi-her2's coordinate space too, so no transform is needed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from wsi_her2.errors import ConfigError, InputNotFoundError

# Level-0 coordinates beyond this are no slide's (2,000 times the widest): a corrupt or foreign file.
MAX_COORDINATE_PX = float(2**31)


def _check_coordinates(path: Path, geometry: Any) -> None:
    """Refuse NaN, infinite or absurd coordinates (they would rasterise to garbage, not fail)."""
    coords = shapely.get_coordinates(geometry)
    if not np.isfinite(coords).all():
        raise ConfigError(f"{path}: a geometry has coordinates that are not finite numbers (NaN or infinity)")
    if len(coords) and float(np.abs(coords).max()) > MAX_COORDINATE_PX:
        raise ConfigError(
            f"{path}: coordinates up to {float(np.abs(coords).max()):.3g} px are not level-0 pixels of any slide",
            hint="export the annotations of this slide from QuPath (File > Export objects as GeoJSON)",
        )


def _features(data: Any) -> list[Any]:
    if isinstance(data, list):  # QuPath's "export as array"
        return [f for f in data if isinstance(f, dict)]
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            features = data.get("features") or []
            return list(features) if isinstance(features, list) else [features]
        if data.get("type") == "Feature":
            return [data]
        if "coordinates" in data:  # a bare geometry
            return [{"type": "Feature", "geometry": data, "properties": {}}]
    return []


def load_roi(path: str | Path, *, classes: tuple[str, ...] = ()) -> MultiPolygon:
    """Polygons of a GeoJSON file (FeatureCollection, Feature list, Feature or geometry).

    Args:
        path: the GeoJSON file.
        classes: keep only features whose QuPath classification name is one of these (all when empty).

    Returns:
        The union of the polygon features, level-0 pixel coordinates.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the file is not GeoJSON or holds no polygon.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"ROI file not found: {path}", hint="check the --roi path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors; nesting too deep
        raise ConfigError(f"{path} is not valid JSON/GeoJSON: {' '.join(str(exc).split())[:200]}") from exc
    except OSError as exc:
        raise InputNotFoundError(f"cannot read ROI file {path}: {exc.strerror or exc}") from exc
    polygons: list[Polygon] = []
    for feature in _features(data):
        if not isinstance(feature, dict):
            raise ConfigError(f"{path}: a feature is {type(feature).__name__}, not a GeoJSON object")
        props = feature.get("properties") or {}
        if classes:
            classification = props.get("classification") if isinstance(props, dict) else None
            name = classification.get("name") if isinstance(classification, dict) else None
            if name not in classes:
                continue
        geometry = feature.get("geometry")
        if not geometry:
            continue
        try:
            with warnings.catch_warnings():  # NaN coordinates warn here; they are refused just below
                warnings.simplefilter("ignore", RuntimeWarning)
                raw = shape(geometry)
        except Exception as exc:
            raise ConfigError(f"{path}: invalid geometry in a feature ({' '.join(str(exc).split())[:200]})") from exc
        _check_coordinates(path, raw)
        geom = shapely.make_valid(raw)
        for part in getattr(geom, "geoms", [geom]):
            if isinstance(part, Polygon) and part.area > 0:
                polygons.append(part)
            elif isinstance(part, MultiPolygon):
                polygons.extend(p for p in part.geoms if p.area > 0)
    if not polygons:
        wanted = f" of class {', '.join(classes)}" if classes else ""
        raise ConfigError(
            f"{path} holds no polygon{wanted}",
            hint="export the annotations from QuPath as GeoJSON (File > Export objects as GeoJSON)",
        )
    union = shapely.union_all(polygons)
    return union if isinstance(union, MultiPolygon) else MultiPolygon([union])


def rasterize(
    polygons: MultiPolygon,
    shape_hw: tuple[int, int],
    scale_x: float,
    scale_y: float,
    offset_xy: tuple[float, float] = (0, 0),
) -> np.ndarray:
    """Paint polygons (level-0 coordinates) into a bool mask.

    Args:
        polygons: what to paint.
        shape_hw: (height, width) of the mask.
        scale_x: level-0 pixels per mask pixel along x.
        scale_y: level-0 pixels per mask pixel along y.
        offset_xy: level-0 coordinates of the mask's top-left corner.
    """
    out = np.zeros(shape_hw, np.uint8)
    ox, oy = offset_xy
    height, width = shape_hw
    # Draw only what falls on the mask (one pixel of margin): coordinates far outside it would
    # overflow the 32-bit points OpenCV draws with and wrap around into it.
    box = (ox - scale_x, oy - scale_y, ox + (width + 1) * scale_x, oy + (height + 1) * scale_y)
    min_x, min_y, max_x, max_y = polygons.bounds if not polygons.is_empty else box
    if min_x < box[0] or min_y < box[1] or max_x > box[2] or max_y > box[3]:
        clipped = shapely.clip_by_rect(polygons, *box)
        parts = [p for g in getattr(clipped, "geoms", [clipped]) for p in getattr(g, "geoms", [g])]
        polygons = MultiPolygon([p for p in parts if isinstance(p, Polygon) and not p.is_empty])

    def ring(coords: Any) -> np.ndarray:
        arr = np.asarray(coords, dtype=np.float64)[:, :2]
        # Subtract half a pixel: polygon coordinates are pixel edges, cv2 draws pixel centres.
        pts = np.stack([(arr[:, 0] - ox) / scale_x - 0.5, (arr[:, 1] - oy) / scale_y - 0.5], axis=1)
        return np.round(pts * 16).astype(np.int32)  # 4 fractional bits for sub-pixel accuracy

    for polygon in polygons.geoms:
        cv2.fillPoly(out, [ring(polygon.exterior.coords)], 1, lineType=cv2.LINE_8, shift=4)
        for hole in polygon.interiors:
            cv2.fillPoly(out, [ring(hole.coords)], 0, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)
