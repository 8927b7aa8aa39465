"""Which slides a batch scores: a folder tree walked by extension, or a CSV list; then a shard of them.

Every slide gets a *name*: its path relative to the folder (or, for a list, to the folder all
listed slides share), with ``/`` separators. Names are unique by construction, so two
``slide1.svs`` in different subfolders never share an output folder; the outputs of
``caseA/slide1.svs`` go to ``OUT/caseA/slide1.svs/``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from pathlib import Path

from wsi_her2.errors import ConfigError, InputNotFoundError, WsiHer2Error
from wsi_her2.slide import SLIDE_SUFFIXES
from wsi_her2.slide.image_backend import IMAGE_SUFFIXES

DICOM_SUFFIX = ".dcm"
# Hamamatsu VMS/VMU slides are an index file beside JPEG tiles: those JPEGs are not slides.
_VMS_SUFFIXES = {".vms", ".vmu"}
SKIP_IMAGE_NO_MPP = "image without µm/px (give --mpp, or an mpp column in --list)"
SKIP_LISTED_TWICE = "listed twice"
SKIP_SAME_FILE = "the same file as {name} (reached through a link or another path): scored once"
# Column names of slide lists (batch --list, validate's case list), lower case.
PATH_HEADERS = ("path", "slide", "file", "filename", "slide_path", "slide_file")
MPP_HEADERS = ("mpp", "mpp_um", "um_per_px", "microns_per_pixel", "mpp_um_per_px")
ROI_HEADERS = ("roi", "roi_path", "roi_file", "annotations", "geojson")


@dataclasses.dataclass(frozen=True)
class SlideEntry:
    """One slide of a batch.

    Attributes:
        name: unique name, the relative path with ``/`` separators; also its output folder under OUT.
        path: the slide file, or the folder of a DICOM series.
        mpp: µm/px given for this slide (a --list column), or None.
        roi: regions of interest (GeoJSON) for this slide, or None.
    """

    name: str
    path: Path
    mpp: float | None = None
    roi: Path | None = None


@dataclasses.dataclass(frozen=True)
class SkippedEntry:
    """A file that looked like a slide but is not scored, and why."""

    name: str
    path: Path
    reason: str


@dataclasses.dataclass
class Discovery:
    """What a folder walk or list gave.

    Attributes:
        slides: the slides to score, sorted by name.
        skipped: slide-like files that will not be scored (with a summary row saying why).
        ignored: count of other files looked at (not slides), by kind, e.g. {"other files": 12}.
        source: the folder or list read.
    """

    slides: list[SlideEntry]
    skipped: list[SkippedEntry]
    ignored: dict[str, int]
    source: Path

    def skip_reasons(self) -> dict[str, int]:
        """Skipped and ignored files counted by reason."""
        counts = Counter(s.reason for s in self.skipped)
        counts.update(self.ignored)
        return dict(counts)


def is_image(path: Path) -> bool:
    """A plain image (JPEG, PNG, ...), which has no µm/px of its own."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_slide_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in SLIDE_SUFFIXES and suffix != DICOM_SUFFIX


def discover_slides(root: str | Path, *, exclude: list[str | Path] | None = None, images: bool = True) -> Discovery:
    """Walk ``root`` recursively and find every slide by extension.

    Slides are the whole-slide formats (SVS, NDPI, MRXS, SCN, TIFF, BIF, VMS, ...), one slide per
    folder of ``.dcm`` files (a DICOM series), and plain images (JPEG, PNG), which need a µm/px.
    Hidden files and folders (names starting with ".") are ignored, as are MRXS data folders and the
    JPEG pieces of VMS slides. ``root`` may also be a single slide file.

    Args:
        root: the folder (or one slide file).
        exclude: folders not to walk into (the batch's own output folder).
        images: treat plain images as slides (the caller decides whether their µm/px is known).

    Returns:
        The slides found and the files skipped.

    Raises:
        InputNotFoundError: ``root`` does not exist or cannot be listed.
    """
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"slide folder not found: {root}", hint="check the path")
    if root.is_file():
        return Discovery([SlideEntry(root.name, root)], [], {}, root)
    excluded = {os.path.realpath(p) for p in exclude or []}
    slides: list[SlideEntry] = []
    ignored: Counter[str] = Counter()
    seen_dirs: set[str] = set()

    def name_of(path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        return root.name if rel == "." else rel

    def on_error(exc: OSError) -> None:
        raise InputNotFoundError(f"cannot list {exc.filename}: {exc.strerror}", hint="check its permissions")

    walker = os.walk(root, onerror=on_error, followlinks=True)
    for folder, dirs, files in walker:
        real = os.path.realpath(folder)
        if real in seen_dirs or real in excluded:  # a symlink loop, or our own outputs
            dirs[:] = []
            continue
        seen_dirs.add(real)
        here = Path(folder)
        lower = {f.lower() for f in files}
        mrxs_data = {Path(f).stem for f in files if f.lower().endswith(".mrxs")}
        has_vms = any(Path(f).suffix.lower() in _VMS_SUFFIXES for f in lower)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in mrxs_data)
        if any(f.endswith(DICOM_SUFFIX) for f in lower):
            slides.append(SlideEntry(name_of(here), here))
        for file in sorted(files):
            path = here / file
            if file.startswith("."):
                ignored["hidden files"] += 1
            elif file.lower().endswith(DICOM_SUFFIX):
                continue
            elif _is_slide_file(path) or (is_image(path) and images and not has_vms):
                slides.append(SlideEntry(name_of(path), path))
            else:
                ignored["other files (not slides)"] += 1
    slides.sort(key=lambda s: s.name)
    slides, same = _one_per_file(slides)
    return Discovery(slides, same, dict(ignored), root)


def _one_per_file(slides: list[SlideEntry]) -> tuple[list[SlideEntry], list[SkippedEntry]]:
    """Keep one of the entries that are one file, reached by links or two paths.

    The kept one is the first by name that is not a symbolic link (the file itself), else the
    first by name. Scoring one file under two names would do the work twice and, with ``--jobs``,
    at once. Entries that cannot be looked at (dangling links, missing files) stay: scoring them
    gives the clear error.
    """
    first: dict[tuple[int, int], str] = {}
    keep: list[SlideEntry] = []
    same: list[SkippedEntry] = []
    for entry in sorted(slides, key=lambda s: (os.path.islink(s.path), s.name)):
        try:
            stat = os.stat(entry.path)  # follows links
        except OSError:
            keep.append(entry)
            continue
        identity = (stat.st_dev, stat.st_ino)
        if identity in first:
            same.append(SkippedEntry(entry.name, entry.path, SKIP_SAME_FILE.format(name=first[identity])))
            continue
        first[identity] = entry.name
        keep.append(entry)
    return sorted(keep, key=lambda s: s.name), sorted(same, key=lambda s: s.name)


def parse_mpp(text: str, where: str, error: type[WsiHer2Error] = ConfigError) -> float | None:
    """A list's µm/px cell: None when blank, else a positive number.

    Raises:
        ``error``: the cell is not a positive number (``where`` names the file and line).
    """
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise error(f"{where}: µm/px {text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise error(f"{where}: µm/px must be a positive number, got {text!r}")
    return value


def listed_path(text: str, base: Path) -> Path:
    """A path as a list gives it: ``~`` expanded, relative paths relative to the list's folder."""
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else base / path


def read_slide_list(list_path: str | Path) -> Discovery:
    """Read a CSV list of slides: a path column, optional µm/px and ROI columns.

    With a header row, the columns are found by name (``path``/``slide``/``file``,
    ``mpp``/``um_per_px``, ``roi``/``geojson``; case-insensitive); without one, they are
    path, mpp, roi in that order. Relative paths are relative to the list's folder. Empty lines and
    lines starting with ``#`` are ignored. A slide listed twice is scored once.

    Raises:
        InputNotFoundError: the list does not exist.
        ConfigError: a malformed row (no path, a µm/px that is not a positive number).
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise InputNotFoundError(f"slide list not found: {list_path}", hint="check the path given to --list")
    base = list_path.parent
    with open(list_path, newline="", encoding="utf-8-sig") as fh:
        rows = [(i + 1, r) for i, r in enumerate(csv.reader(fh)) if r and any(c.strip() for c in r)]
    rows = [(n, r) for n, r in rows if not r[0].lstrip().startswith("#")]
    columns = {"path": 0, "mpp": 1, "roi": 2}
    if rows and rows[0][1][0].strip().lower() in PATH_HEADERS:
        header = [c.strip().lower() for c in rows[0][1]]
        columns = {"path": next(i for i, c in enumerate(header) if c in PATH_HEADERS)}
        for key, names in (("mpp", MPP_HEADERS), ("roi", ROI_HEADERS)):
            found = [i for i, c in enumerate(header) if c in names]
            if found:
                columns[key] = found[0]
        unknown = [c for c in header if c and c not in PATH_HEADERS + MPP_HEADERS + ROI_HEADERS]
        if unknown:
            raise ConfigError(
                f"{list_path}: unknown column(s) {', '.join(unknown)}",
                hint="columns are path, mpp and roi",
            )
        rows = rows[1:]

    def cell(row: list[str], key: str) -> str:
        index = columns.get(key)
        return row[index].strip() if index is not None and index < len(row) else ""

    listed: list[tuple[Path, float | None, Path | None]] = []
    for line, row in rows:
        where = f"{list_path}, line {line}"
        text = cell(row, "path")
        if not text:
            raise ConfigError(f"{where}: no slide path")
        roi_text = cell(row, "roi")
        listed.append(
            (
                listed_path(text, base),
                parse_mpp(cell(row, "mpp"), where),
                listed_path(roi_text, base) if roi_text else None,
            )
        )
    common = _common_folder([p for p, _, _ in listed])
    slides: dict[str, SlideEntry] = {}
    twice = 0
    for path, mpp, roi in listed:
        name = _relative_name(path, common)
        if name in slides:  # it would share the first listing's output folder and summary row
            twice += 1
            continue
        slides[name] = SlideEntry(name, path, mpp, roi)
    ordered, same = _one_per_file(sorted(slides.values(), key=lambda s: s.name))
    return Discovery(ordered, same, {SKIP_LISTED_TWICE: twice} if twice else {}, list_path)


def _common_folder(paths: list[Path]) -> Path:
    if not paths:
        return Path(".")
    parents = [os.path.abspath(p.parent) for p in paths]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:  # different drives (Windows): keep absolute names
        return Path("/")


def _relative_name(path: Path, common: Path) -> str:
    rel = Path(os.path.abspath(path)).relative_to(common) if common != Path("/") else Path(os.path.abspath(path))
    return rel.as_posix().lstrip("/") or path.name


def split_images_without_mpp(discovery: Discovery, mpp: float | None) -> Discovery:
    """Move plain images that have no µm/px (no --mpp, no list value) to the skipped entries."""
    if mpp is not None:
        return discovery
    keep = [s for s in discovery.slides if not (is_image(s.path) and s.mpp is None)]
    skipped = [SkippedEntry(s.name, s.path, SKIP_IMAGE_NO_MPP) for s in discovery.slides if s not in keep]
    return Discovery(
        keep, sorted(discovery.skipped + skipped, key=lambda s: s.name), discovery.ignored, discovery.source
    )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) as (I, N); None stays None.

    Raises:
        ConfigError: not of the form I/N with 1 <= I <= N.
    """
    if text is None:
        return None
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 3/10), got {text!r}") from None
    if not 1 <= index <= count:
        raise ConfigError(
            f"--shard {text}: I must be between 1 and N",
            hint="SLURM array ids that start at 0 need $((SLURM_ARRAY_TASK_ID + 1))",
        )
    return index, count


def take_shard(discovery: Discovery, shard: tuple[int, int] | None) -> Discovery:
    """The I-th of N disjoint parts: all entries (slides and skipped) sorted by name, every N-th from the I-th.

    Round-robin over the sorted names spreads big and small slides (often grouped by folder)
    evenly; every entry lands in exactly one shard, whatever N.
    """
    if shard is None:
        return discovery
    index, count = shard
    names = sorted([s.name for s in discovery.slides] + [s.name for s in discovery.skipped])
    mine = {name for i, name in enumerate(names) if i % count == index - 1}
    return Discovery(
        [s for s in discovery.slides if s.name in mine],
        [s for s in discovery.skipped if s.name in mine],
        discovery.ignored,
        discovery.source,
    )
