"""The self-contained HTML report: one file, every image embedded, nothing fetched, the score in it."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.viewer.conftest import CLASSES, TILE, FakeResult, make_score_folder, no_tissue_report


class Links(HTMLParser):
    """Every URL-bearing attribute and every <img> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "data", "srcset") and value is not None:
                self.urls.append((tag, name, value))
        if tag == "img":
            self.images.append(dict(attrs))


def parse(text: str) -> Links:
    parser = Links()
    parser.feed(text)
    parser.close()
    return parser


def assert_self_contained(text: str) -> Links:
    links = parse(text)
    for tag, name, value in links.urls:
        assert not re.match(r"^\s*(https?:|//|ftp:|file:)", value, re.I), (tag, name, value)
        if tag == "img" or (tag == "link" and name == "href"):
            assert value.startswith("data:"), (tag, value[:40])
        if tag == "a":
            assert value.startswith("#"), value
    assert "script" not in links.tags and "iframe" not in links.tags
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", text, re.I)  # no CSS fetches
    assert "@import" not in text
    return links


def image_of(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_single_report_is_self_contained_and_has_the_score(deep_result: FakeResult) -> None:
    from wsi_her2.viewer.report_html import write_report

    path = write_report(deep_result.folder)
    assert path == deep_result.folder / "report.html"
    assert not [p for p in deep_result.folder.iterdir() if p.name.startswith(".tmp-")]  # written atomically
    text = path.read_text(encoding="utf-8")
    links = assert_self_contained(text)
    assert "HER2 3+" in text and "HER2 positive" in text
    assert "tests only" in text  # the model card
    assert "a test note &lt;b&gt;not bold&lt;/b&gt;" in text  # result text is escaped, never markup
    overlay = [i for i in links.images if (i.get("alt") or "").startswith("overlay")]
    tiles = [i for i in links.images if (i.get("alt") or "").startswith("tile")]
    assert len(overlay) == 1 and len(tiles) == 4 * len(CLASSES)


def test_overlay_is_drawn_from_the_heatmap_when_overlay_png_is_missing(deep_result: FakeResult) -> None:
    from wsi_her2.her2 import CLASS_COLORS_RGB
    from wsi_her2.viewer.report_html import overlay_image
    from wsi_her2.viewer.result import ScoreView

    folder = ScoreView(deep_result.folder)
    assert not (deep_result.folder / "overlay.png").exists()
    data = overlay_image(folder, max_side_px=800)
    assert data is not None
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = image.shape[1] / 4000
    no_tile = image[int(0.5 * TILE * scale), int(0.5 * TILE * scale)].astype(float)
    for cls in ("0", "3+"):
        col, row = deep_result.tile_at(cls)
        x, y = deep_result.centre(col, row)
        got = image[int(y * scale) - 2 : int(y * scale) + 3, int(x * scale) - 2 : int(x * scale) + 3].reshape(-1, 3)
        # Blended: nearer the class colour than the unpainted slide is.
        colour = np.array(CLASS_COLORS_RGB[cls], float)
        assert np.abs(got.mean(axis=0) - colour).sum() < np.abs(no_tile - colour).sum()
    folder.close()


def test_real_report_uses_overlay_png(real_result: Path, tmp_path: Path) -> None:
    from wsi_her2.viewer.report_html import write_report

    report = json.loads((real_result / "report.json").read_text())
    path = write_report(real_result, tmp_path / "sub" / "r.html", top_per_class=1)
    text = path.read_text(encoding="utf-8")
    links = assert_self_contained(text)
    assert f"HER2 {report['result']['score']}" in text
    overlay = next(i for i in links.images if (i.get("alt") or "").startswith("overlay"))
    picture = image_of(str(overlay["src"]))
    assert max(picture.shape[:2]) <= 1600
    assert path.stat().st_size < 3_000_000


def test_report_without_the_slide_says_why_tiles_are_missing(tmp_path: Path, viewer_slide: Path) -> None:
    import shutil

    from wsi_her2.viewer.report_html import write_report

    moved = tmp_path / "gone.svs"
    shutil.copy(viewer_slide, moved)
    result = make_score_folder(tmp_path / "out", moved)
    moved.unlink()
    text = write_report(result.folder).read_text(encoding="utf-8")
    assert "Tile pictures left out" in text and "slide file not found" in text
    assert_self_contained(text)


def test_no_tissue_report(tmp_path: Path) -> None:
    from wsi_her2.viewer.report_html import write_report

    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(no_tissue_report("/x/glass.svs")))
    text = write_report(folder).read_text(encoding="utf-8")
    assert "No score (no_tissue)" in text and "glass.svs" in text
    assert_self_contained(text)


def test_batch_report(batch_dir: Path, tmp_path: Path) -> None:
    from wsi_her2.viewer.report_html import write_report

    path = write_report(batch_dir, tmp_path / "batch.html")
    text = path.read_text(encoding="utf-8")
    links = assert_self_contained(text)
    anchors = [v for tag, name, v in links.urls if tag == "a"]
    assert {"#slide-0", "#slide-1", "#top"} <= set(anchors)
    assert 'id="slide-0"' in text and 'id="slide-1"' in text and 'id="slide-2"' not in text
    assert "gamma.svs" in text and "unreadable slide &lt;x&gt;" in text and "failed" in text
    assert text.count("HER2 report: ") == 2
    assert "3 slides: 2 done, 1 failed" in text


def test_batch_rows_are_read_by_the_schema_and_empty_fields_come_from_the_report(
    tmp_path: Path, viewer_slide: Path
) -> None:
    from wsi_her2.viewer.report_html import batch_row, render_batch_report
    from wsi_her2.viewer.result import BatchFolder, ScoreView

    root = tmp_path / "b"
    make_score_folder(root / "one.svs", viewer_slide)
    rows = [
        {"slide": "one.svs", "status": "done", "score": None, "class_fractions": {}, "seconds": 3.5,
         "output": "one.svs"},
        {"slide": "two.svs", "status": "skipped", "message": "not a slide", "output": "two.svs"},
    ]  # fmt: skip
    (root / "summary.json").write_text(json.dumps({"command": "batch", "slides": rows}))
    (root / "summary.csv").write_text("slide,status\nother.svs,done\n")  # the CSV is for people: not read
    batch = BatchFolder(root)
    assert [(e.name, e.status, e.folder is not None) for e in batch.entries] == [
        ("one.svs", "done", True),
        ("two.svs", "skipped", False),
    ]
    one = batch_row(batch.entries[0], ScoreView(root / "one.svs"))
    assert one["score"] == "3+" and one["fractions"]["3+"] == pytest.approx(0.25, abs=0.05)  # from the report
    text = render_batch_report(batch)
    assert "3.5" in text and "skipped" in text and "not a slide" in text and "other.svs" not in text


def test_a_summary_csv_alone_is_not_a_batch_folder(tmp_path: Path) -> None:
    from wsi_her2.errors import InputNotFoundError
    from wsi_her2.viewer.result import load_result

    (tmp_path / "summary.csv").write_text("slide,status\none.svs,done\n")
    with pytest.raises(InputNotFoundError, match=r"report\.json"):
        load_result(tmp_path)


def test_not_a_result_folder(tmp_path: Path) -> None:
    from wsi_her2.errors import InputNotFoundError
    from wsi_her2.viewer.report_html import write_report

    with pytest.raises(InputNotFoundError, match=r"report\.json"):
        write_report(tmp_path)
    with pytest.raises(InputNotFoundError, match="not found"):
        write_report(tmp_path / "nope")
    (tmp_path / "report.json").write_text("{broken")
    with pytest.raises(InputNotFoundError, match="not readable JSON"):
        write_report(tmp_path)
