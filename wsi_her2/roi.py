"""Regions of interest from GeoJSON (as QuPath exports annotations), and rasterising polygons.

QuPath writes level-0 pixel coordinates with the origin at the top-left of the full-resolution
image, which is wsi-her2's coordinate space too, so no transform is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from wsi_her2.errors import ConfigError, InputNotFoundError


def _features(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, list):  # QuPath's "export as array"
        return [f for f in data if isinstance(f, dict)]
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            return list(data.get("features") or [])
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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON/GeoJSON: {exc}") from exc
    polygons: list[Polygon] = []
    for feature in _features(data):
        props = feature.get("properties") or {}
        if classes:
            name = (props.get("classification") or {}).get("name")
            if name not in classes:
                continue
        geometry = feature.get("geometry")
        if not geometry:
            continue
        try:
            geom = shapely.make_valid(shape(geometry))
        except Exception as exc:
            raise ConfigError(f"{path}: invalid geometry in a feature ({exc})") from exc
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
