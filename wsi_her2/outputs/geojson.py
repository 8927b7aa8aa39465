"""GeoJSON that QuPath imports (File > Import objects): tissue annotations, scored tiles.

Coordinates are level-0 pixels with the origin at the image's top-left, QuPath's own convention.
Classifications carry a name and an RGB colour; measurements are a name -> number mapping
(QuPath 0.4 and later).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import MultiPolygon, mapping

from wsi_her2.outputs.atomic import write_json


def _feature(
    geometry: dict[str, Any],
    object_type: str,
    name: str | None,
    color: Sequence[int] | None,
    measurements: Mapping[str, float] | None = None,
    *,
    key: str,
) -> dict[str, Any]:
    properties: dict[str, Any] = {"objectType": object_type, "isLocked": False}
    if name is not None:
        properties["classification"] = {"name": name, "color": [int(c) for c in (color or (128, 128, 128))]}
    if measurements:
        properties["measurements"] = {
            k: (None if v != v else float(v))
            for k, v in measurements.items()  # NaN is not JSON
        }
    # Ids derive from the object (not random), so scoring a slide again writes the same file.
    feature_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"wsi-her2:{key}"))
    return {"type": "Feature", "id": feature_id, "geometry": geometry, "properties": properties}


def write_tissue_geojson(path: str | Path, polygons: MultiPolygon, mpp: float | None) -> Path:
    """Write the tissue outline as QuPath annotations named "Tissue"."""
    features = []
    for i, polygon in enumerate(polygons.geoms):
        area_um2 = float(polygon.area) * mpp * mpp if mpp else None
        measurements = {"Area µm^2": area_um2} if area_um2 is not None else None
        key = f"tissue:{i}:{polygon.bounds}"
        features.append(_feature(mapping(polygon), "annotation", "Tissue", (0, 160, 0), measurements, key=key))
    return write_json(path, {"type": "FeatureCollection", "features": features})


def write_tiles_geojson(
    path: str | Path,
    xs: np.ndarray,
    ys: np.ndarray,
    size_px: int,
    class_names: Sequence[str | None],
    colors: Mapping[str, Sequence[int]],
    measurements: Mapping[str, np.ndarray],
    *,
    object_type: str = "tile",
) -> Path:
    """Write tiles as square QuPath objects with a class and per-tile measurements.

    Args:
        path: output file.
        xs: level-0 left edges.
        ys: level-0 top edges.
        size_px: tile side in level-0 pixels.
        class_names: the class of each tile (None leaves it unclassified).
        colors: RGB colour of each class name.
        measurements: per-tile values by measurement name.
        object_type: QuPath object type ("tile", "detection" or "annotation").
    """
    features = []
    for i in range(len(xs)):
        x0, y0 = float(xs[i]), float(ys[i])
        x1, y1 = x0 + size_px, y0 + size_px
        geometry = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
        name = class_names[i]
        features.append(
            _feature(
                geometry,
                object_type,
                name,
                colors.get(name) if name is not None else None,
                {key: float(values[i]) for key, values in measurements.items()},
                key=f"{object_type}:{x0:g}:{y0:g}:{size_px}",
            )
        )
    return write_json(path, {"type": "FeatureCollection", "features": features})
