"""What a TIFF-family file says about itself: vendor, µm/px and magnification (Aperio, OME-XML, resolution tags).

Every number is read with :func:`~wsi_her2.slide.base.finite_float`: a description that says
``MPP = abc`` or ``AppMag = inf`` leaves the value unknown instead of failing or reaching a report.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import tifffile

from wsi_her2.slide.base import finite_float


def read_tiff_metadata(
    tif: tifffile.TiffFile, base: tifffile.TiffPage, vendor: str | None
) -> tuple[str, dict[str, str], tuple[float, float] | None, float | None]:
    """(vendor, properties, µm/px along x and y or None, objective magnification or None) of a TIFF."""
    description = base.description or ""
    properties: dict[str, str] = {}
    metadata_mpp: tuple[float, float] | None = None
    objective: float | None = None
    if description.startswith("Aperio"):
        vendor = vendor or "aperio"
        properties.update({f"aperio.{k}": v for k, v in _parse_aperio(description).items()})
        value = finite_float(properties.get("aperio.MPP"))
        if value is not None:
            metadata_mpp = (value, value)
        objective = finite_float(properties.get("aperio.AppMag"))
    elif tif.is_ome and tif.ome_metadata:
        vendor = vendor or "ome-tiff"
        ome = _parse_ome(tif.ome_metadata)
        properties.update({f"ome.{k}": v for k, v in ome.items()})
        size_x = finite_float(ome.get("PhysicalSizeX"))
        size_y = finite_float(ome.get("PhysicalSizeY", ome.get("PhysicalSizeX")))
        if size_x is not None and size_y is not None:
            scale_x = _UNIT_TO_UM.get(ome.get("PhysicalSizeXUnit", "µm"), 1.0)
            scale_y = _UNIT_TO_UM.get(ome.get("PhysicalSizeYUnit", "µm"), 1.0)
            metadata_mpp = (size_x * scale_x, size_y * scale_y)
        objective = finite_float(ome.get("NominalMagnification"))
    else:
        vendor = vendor or "tiff"
    if metadata_mpp is None:
        metadata_mpp = _resolution_mpp(base)
    return vendor, properties, metadata_mpp, objective


def _parse_aperio(description: str) -> dict[str, str]:
    """Key/value pairs of an Aperio ImageDescription ("...|MPP = 0.499|AppMag = 20|...")."""
    out: dict[str, str] = {}
    for part in description.split("|")[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _parse_ome(xml: str) -> dict[str, str]:
    """Physical pixel size and objective magnification from OME-XML."""
    out: dict[str, str] = {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return out
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and "PhysicalSizeX" not in out:
            for key in ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeXUnit", "PhysicalSizeYUnit"):
                if key in element.attrib:
                    out[key] = element.attrib[key]
        elif tag == "Objective" and "NominalMagnification" in element.attrib:
            out.setdefault("NominalMagnification", element.attrib["NominalMagnification"])
    return out


_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def _resolution_mpp(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """µm/px from the TIFF resolution tags (only with a real unit: inch or centimetre)."""
    unit_tag = page.tags.get("ResolutionUnit")
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit_tag is None or xres is None or yres is None:
        return None
    per_unit_um = {2: 25400.0, 3: 10000.0}.get(int(unit_tag.value))
    if per_unit_um is None:
        return None
    values = []
    for tag in (xres, yres):
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num or not den:
            return None
        values.append(per_unit_um / (num / den))
    return (values[0], values[1]) if all(math.isfinite(v) for v in values) else None
