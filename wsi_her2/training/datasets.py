"""Labelled image sets for training and evaluation: BCI, tile folders and class folders.

Three layouts are read (``DataConfig.layout``; "auto" detects them in this order):

* ``tiles``: a folder written by ``wsi-her2 tile --save-tiles``: images plus ``tiles.csv``
  (``file, slide, ..., label``) with the ``label`` column filled in, or a separate CSV of
  ``file, label[, slide]`` given as ``labels_csv``. Rows with an empty label are skipped.
* ``bci``: ``ROOT/{HE,IHC}/{train,test}/NNNNN_{train,test}_{0,1+,2+,3+}.png``, the BCI dataset. Its
  README says the label is the HER2 score of the *slide* a patch came from, not of the patch.
* ``folders``: ``ROOT/<class>/*.png`` with class folders named 0, 1+, 2+, 3+ (or negative,
  equivocal, positive for 3 classes).

Everything here is torch-free; :mod:`wsi_her2.training.loader` turns a :class:`LabelledImages`
into batches.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsi_her2.errors import DatasetError, InputNotFoundError
from wsi_her2.her2 import CLINICAL_GROUP_OF_SCORE, SCORES_3, SCORES_4
from wsi_her2.progress import ProgressCallback, ProgressEvent, report
from wsi_her2.training.config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
BCI_NAME = re.compile(r"^(\d+)_(train|test)_([0-3]\+?)\.(png|jpe?g|tiff?)$", re.IGNORECASE)
# ``wsi-her2 tile --save-tiles`` names tiles <slide>_x<X>_y<Y>.<ext>: the slide is the prefix.
TILE_NAME = re.compile(r"^(.+)_x\d+_y\d+\.[A-Za-z]+$")
BCI_LICENCE = "BCI dataset: non-commercial use only (see its README); cite Liu et al., CVPR Workshops 2022"
BCI_LABEL_NOTE = (
    "BCI labels are the HER2 score of the slide each patch came from, not of the patch itself "
    "(dataset README); patch-level accuracy measures agreement with the slide's score."
)


def class_names(num_classes: int) -> tuple[str, ...]:
    """The class names in output order: 0, 1+, 2+, 3+ or negative, equivocal, positive."""
    return SCORES_4 if num_classes == 4 else SCORES_3


def parse_label(text: str, classes: Sequence[str]) -> int | None:
    """The class index of a label as written in a file name, folder name or CSV cell.

    Four-class scores may be written with or without "+" ("2" is 2+); a 3-class set also accepts
    the 4-class scores (0 and 1+ are negative). Returns None when ``text`` is no class.
    """
    value = text.strip().lower()
    if value in ("1", "2", "3"):
        value += "+"
    if tuple(classes) == SCORES_3 and value in SCORES_4:
        value = CLINICAL_GROUP_OF_SCORE[value]
    lowered = [c.lower() for c in classes]
    return lowered.index(value) if value in lowered else None


@dataclasses.dataclass
class LabelledImages:
    """Image files with their class and, where known, the slide (or patient) they come from.

    Attributes:
        root: the dataset folder.
        layout: "bci", "tiles" or "folders".
        split: "train" or "test" for BCI; "all" for the other layouts.
        classes: class names in output order.
        paths: one image file per sample.
        labels: class index per sample (int64).
        groups: slide or patient id per sample, "" where unknown (then splits are per image).
        native_size_px: side of the images as stored (BCI: 1024), None when not read.
        tile_size_level0_px: the tiles' side in level-0 pixels, from ``tiles.csv``, when known.
        skipped_unlabelled: rows of a tile table without a label.
        dropped_blank: images dropped by the empty-tile check.
    """

    root: Path
    layout: str
    split: str
    classes: tuple[str, ...]
    paths: list[Path]
    labels: np.ndarray
    groups: list[str]
    native_size_px: int | None = None
    tile_size_level0_px: int | None = None
    skipped_unlabelled: int = 0
    dropped_blank: int = 0

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        per = np.bincount(self.labels, minlength=len(self.classes)) if len(self) else np.zeros(len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, per)}

    def subset(self, indices: np.ndarray | Sequence[int]) -> LabelledImages:
        """The samples at ``indices`` (same root, layout and classes)."""
        idx = [int(i) for i in indices]
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx] if idx else np.zeros(0, np.int64),
            groups=[self.groups[i] for i in idx],
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the model card and reports."""
        out: dict[str, Any] = {
            "root": str(self.root),
            "layout": self.layout,
            "split": self.split,
            "images": len(self),
            "class_counts": self.counts(),
            "slides": len({g for g in self.groups if g}) or None,
        }
        if self.skipped_unlabelled:
            out["skipped_unlabelled"] = self.skipped_unlabelled
        if self.dropped_blank:
            out["dropped_blank"] = self.dropped_blank
        if self.layout == "bci":
            out["dataset"] = "BCI (Breast Cancer Immunohistochemical), Liu et al. 2022"
            out["licence"] = BCI_LICENCE
            out["label_note"] = BCI_LABEL_NOTE
        return out


def _child(folder: Path, name: str) -> Path | None:
    """A subfolder of ``folder`` named ``name`` in any letter case."""
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def detect_layout(root: Path, labels_csv: str | None = None) -> str:
    """Tell which layout a dataset folder has: "tiles", "bci" or "folders".

    Raises:
        InputNotFoundError: ``root`` does not exist.
        DatasetError: it is not a folder, or no layout fits.
    """
    root = _check_root(root)
    if labels_csv or (root / "tiles.csv").is_file():
        return "tiles"
    for stain in ("ihc", "he"):
        stain_dir = _child(root, stain)
        if stain_dir is not None and (_child(stain_dir, "train") or _child(stain_dir, "test")):
            return "bci"
    if any(entry.is_dir() and not entry.name.startswith(".") for entry in root.iterdir()):
        return "folders"
    raise DatasetError(
        f"cannot tell the layout of {root}: no tiles.csv, no IHC/ or HE/ train/test folders, no class folders",
        hint="give a BCI folder, a tile folder with a labelled tiles.csv, or ROOT/<class>/*.png "
        "(or name the layout with --layout)",
    )


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"dataset folder not found: {root}", hint="check the DATA path")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder", hint="DATA must be a dataset folder")
    return root


def load_images(
    root: str | Path,
    cfg: DataConfig,
    split: str = "train",
    *,
    classes: Sequence[str] | None = None,
    workers: int = 0,
    progress: ProgressCallback | None = None,
) -> LabelledImages:
    """List the labelled images of a dataset folder.

    Args:
        root: the dataset folder.
        cfg: layout, stain, classes, labels CSV and blank filter.
        split: "train" or "test" (BCI's official splits); ignored by the other layouts, whose
            whole folder is used (training carves validation out of it).
        classes: the class names (a model card's); default from ``cfg.num_classes``.
        workers: threads for the blank check.
        progress: receives "blank check" events when ``cfg.drop_blank``.

    Raises:
        InputNotFoundError: the folder or a listed file does not exist.
        DatasetError: unknown layout, no images, labels that are not classes, unreadable images.
    """
    root = _check_root(Path(root))
    layout = detect_layout(root, cfg.labels_csv) if cfg.layout == "auto" else cfg.layout
    classes = tuple(classes) if classes is not None else class_names(cfg.num_classes)
    if layout == "bci":
        images = _load_bci(root, cfg.stain, split, classes)
    elif layout == "tiles":
        images = _load_tiles(root, cfg.labels_csv, classes)
    elif layout == "folders":
        images = _load_folders(root, classes)
    else:
        raise DatasetError(f"unknown layout {layout!r}", hint="use bci, tiles or folders")
    if not len(images):
        raise DatasetError(
            f"no labelled images found in {root} ({layout} layout, split {images.split})",
            hint="check the folder, the --layout and, for tile sets, that the label column is filled in",
        )
    images.native_size_px = _image_side(images.paths[0])
    if cfg.drop_blank:
        keep = blank_mask(images.paths, cfg.min_tissue_fraction, workers=workers, progress=progress)
        dropped = int(np.count_nonzero(~keep))
        images = images.subset(np.flatnonzero(keep))
        images.dropped_blank = dropped
        if not len(images):
            raise DatasetError(
                f"every image in {root} was dropped as blank",
                hint="lower --min-tissue or leave out --drop-blank",
            )
    return images


def _bad_label(where: Path, label: str, classes: Sequence[str]) -> DatasetError:
    return DatasetError(
        f"label {label!r} of {where} is not a class",
        hint=f"labels must be one of {', '.join(classes)}"
        + (" (or a 4-class score)" if tuple(classes) == SCORES_3 else ""),
    )


def _load_bci(root: Path, stain: str, split: str, classes: tuple[str, ...]) -> LabelledImages:
    stain_dir = _child(root, stain)
    if stain_dir is None:
        raise DatasetError(
            f"no {stain.upper()} folder in {root}",
            hint="a BCI folder holds HE/ and IHC/, each with train/ and test/",
        )
    split_dir = _child(stain_dir, split)
    if split_dir is None:
        raise DatasetError(f"no {split} folder in {stain_dir}", hint="a BCI stain folder holds train/ and test/")
    paths: list[Path] = []
    labels: list[int] = []
    for path in _images_in(split_dir):
        match = BCI_NAME.match(path.name)
        if match is None:
            raise DatasetError(
                f"{path.name} in {split_dir} is not named like a BCI image",
                hint="BCI names are NNNNN_train_2+.png (number, split, HER2 score); use --layout folders "
                "or tiles for other data",
            )
        label = parse_label(match.group(3), classes)
        if label is None:
            raise _bad_label(path, match.group(3), classes)
        paths.append(path)
        labels.append(label)
    # BCI's file numbers carry no patient or slide id: the validation split is per image.
    return LabelledImages(root, "bci", split, classes, paths, np.asarray(labels, np.int64), [""] * len(paths))


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    if rows and ("file" not in rows[0] or "label" not in rows[0]):
        raise DatasetError(f"{path} needs the columns file and label", hint="write a header line: file,label")
    return rows


def _slide_of(name: str) -> str:
    match = TILE_NAME.match(Path(name).name)
    return match.group(1) if match else ""


def _load_tiles(root: Path, labels_csv: str | None, classes: tuple[str, ...]) -> LabelledImages:
    table_path = root / "tiles.csv"
    index: dict[str, dict[str, str]] = {}
    if table_path.is_file():
        index = {row["file"]: row for row in _read_csv(table_path) if row.get("file")}
    if labels_csv is not None:
        label_path = Path(labels_csv)
        if not label_path.is_file():
            raise InputNotFoundError(f"labels CSV not found: {label_path}", hint="check --labels")
        rows = _read_csv(label_path)
    elif index:
        rows, label_path = list(index.values()), table_path
    else:
        raise DatasetError(f"no tiles.csv in {root}", hint="tile with --save-tiles, or give --labels CSV")
    paths: list[Path] = []
    labels: list[int] = []
    groups: list[str] = []
    skipped = 0
    sizes: Counter[int] = Counter()
    for row in rows:
        name, text = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if not name:
            continue
        if not text:
            skipped += 1
            continue
        label = parse_label(text, classes)
        if label is None:
            raise _bad_label(label_path, text, classes)
        path = Path(name) if Path(name).is_absolute() else root / name
        if not path.is_file():
            raise InputNotFoundError(f"tile {name} listed in {label_path.name} not found in {root}")
        info = index.get(name, {})
        slide = (row.get("slide") or info.get("slide") or _slide_of(name)).strip()
        size = (row.get("size_level0_px") or info.get("size_level0_px") or "").strip()
        if size.isdigit():
            sizes[int(size)] += 1
        paths.append(path)
        labels.append(label)
        groups.append(slide)
    if not paths and skipped:
        raise DatasetError(
            f"none of the {skipped} tiles in {label_path} has a label",
            hint=f"fill in the label column with {', '.join(classes)}",
        )
    tile_size = sizes.most_common(1)[0][0] if sizes else None
    images = LabelledImages(root, "tiles", "all", classes, paths, np.asarray(labels, np.int64), groups)
    images.tile_size_level0_px = tile_size
    images.skipped_unlabelled = skipped
    return images


def _load_folders(root: Path, classes: tuple[str, ...]) -> LabelledImages:
    paths: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = parse_label(folder.name, classes)
        if label is None:
            raise DatasetError(
                f"folder {folder.name!r} in {root} is not a class",
                hint=f"class folders must be named {', '.join(classes)}",
            )
        for path in _images_in(folder):
            paths.append(path)
            labels.append(label)
    groups = [_slide_of(p.name) for p in paths]
    return LabelledImages(root, "folders", "all", classes, paths, np.asarray(labels, np.int64), groups)


def read_rgb(path: Path, size_px: int | None = None) -> np.ndarray:
    """An image file as RGB uint8, resized to ``size_px`` square when given.

    Shrinking uses area averaging, as the tile loader does when ``score`` cuts slide tiles, so a
    model sees the same kind of pixels in training and scoring.

    Raises:
        DatasetError: the file cannot be decoded.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot read image {path}", hint="the file is damaged or not an image; remove it")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if size_px is not None and rgb.shape[:2] != (size_px, size_px):
        shrink = min(rgb.shape[:2]) > size_px
        rgb = cv2.resize(rgb, (size_px, size_px), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return rgb


def _image_side(path: Path) -> int:
    rgb = read_rgb(path)
    return int(max(rgb.shape[:2]))


def blank_mask(
    paths: Sequence[Path],
    min_tissue_fraction: float,
    *,
    workers: int = 0,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """True for images with at least ``min_tissue_fraction`` tissue pixels (the tiler's empty-tile check)."""
    from concurrent.futures import ThreadPoolExecutor

    from wsi_her2.tiling.loader import pixel_check
    from wsi_her2.tissue import TissueThresholds

    thresholds = TissueThresholds()

    def fraction(path: Path) -> float:
        return pixel_check(read_rgb(path, 256), thresholds)[0]

    keep = np.zeros(len(paths), bool)
    # OpenCV releases the GIL while decoding, so threads give real parallelism here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, value in enumerate(pool.map(fraction, paths)):
            keep[i] = value >= min_tissue_fraction
            if i % 64 == 0 or i == len(paths) - 1:
                report(progress, ProgressEvent("blank check", i + 1, len(paths), "images"))
    return keep
