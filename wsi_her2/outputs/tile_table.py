"""The per-tile table as CSV: one row per tile, level-0 pixel coordinates, units in column names."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from wsi_her2.outputs.atomic import write_text


def csv_cell(value: object) -> str:
    """A value as a CSV cell of every table wsi-her2 writes: true/false, 6 significant digits, empty for None/NaN."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if value != value:  # NaN: an empty cell, as spreadsheets and pandas expect
            return ""
        return f"{float(value):.6g}"
    return str(value)


def write_csv_columns(path: str | Path, columns: Mapping[str, np.ndarray | list]) -> Path:
    """Write equal-length columns as a CSV file atomically.

    Raises:
        ValueError: the columns have different lengths (a programming error).
    """
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    arrays = [columns[name] for name in names]
    for i in range(lengths.pop() if lengths else 0):
        writer.writerow([csv_cell(a[i]) for a in arrays])
    return write_text(path, buffer.getvalue())


def read_csv_columns(path: str | Path) -> dict[str, list[str]]:
    """Read a CSV written by :func:`write_csv_columns` back as columns of strings."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        columns: dict[str, list[str]] = {name: [] for name in header}
        for row in reader:
            for name, value in zip(header, row, strict=True):
                columns[name].append(value)
    return columns
