"""The self-contained HTML report of a ``score`` or ``batch`` folder, and the viewer's batch index page.

A report is one HTML file: styles inline, every image a ``data:`` URI, no scripts and no external
request, so it can be mailed or archived and opened anywhere. It shows the slide score and the facts
behind it, the overlay (``overlay.png``, or the heatmap over the slide when that is missing), the top
tiles of each class read from the slide, and the model card.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsi_her2._version import __version__
from wsi_her2.her2 import CLASS_COLORS_RGB
from wsi_her2.outputs import schema
from wsi_her2.outputs.atomic import ensure_dir, write_text
from wsi_her2.viewer.result import OVERLAY, BatchEntry, BatchFolder, ScoreView, load_result

REPORT_HTML = "report.html"
GROUP_COLORS = {"negative": "#3b6fb6", "equivocal": "#c77c1e", "positive": "#b83232"}

STYLE = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d9dee3; --bg: #ffffff; --panel: #f5f7f9; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; }
table.list th { background: var(--panel); padding-left: 6px; } table.list td { padding-left: 6px; }
.score { display: inline-block; font-size: 30px; font-weight: 700; padding: 2px 14px; border-radius: 6px;
         color: #fff; margin-right: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; }
.bar { display: flex; height: 18px; width: 100%; max-width: 520px; border: 1px solid var(--line);
       border-radius: 3px; overflow: hidden; }
.bar span { display: block; height: 100%; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px;
          margin-right: 4px; border: 1px solid rgba(0,0,0,.2); }
.overlay img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; }
.tiles figure { margin: 0; width: 150px; font-size: 11px; color: var(--muted); }
.tiles img { width: 150px; height: 150px; object-fit: cover; border: 3px solid; display: block; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 8px 0; }
.warn { background: #fdecea; border-left: 4px solid #b83232; padding: 6px 10px; margin: 8px 0; }
pre { background: var(--panel); padding: 8px; overflow: auto; font-size: 12px; max-height: 420px; }
section.slide { border-top: 2px solid var(--line); margin-top: 28px; }
a { color: #1f5fa8; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _hex(cls: str) -> str:
    return "#" + "".join(f"{v:02x}" for v in CLASS_COLORS_RGB.get(cls, (128, 128, 128)))


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, (int, float)) else "–"


def data_uri(data: bytes, mime: str) -> str:
    """A ``data:`` URI of bytes."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{_e(title)}</title><style>{STYLE}</style></head>\n'
        f'<body>\n{body}\n<p class="muted small">Made by wsi-her2 {_e(__version__)}. '
        "Coordinates are level-0 pixels. Not validated for clinical use.</p>\n</body></html>\n"
    )


def _fraction_bar(fractions: Mapping[str, Any]) -> str:
    spans = "".join(
        f'<span style="width:{max(0.0, float(v)) * 100:.2f}%;background:{_hex(c)}" title="{_e(c)}: {_pct(v)}"></span>'
        for c, v in fractions.items()
        if isinstance(v, (int, float))
    )
    return f'<div class="bar">{spans}</div>'


def _summary_html(summary: Mapping[str, Any]) -> str:
    status = summary.get("status")
    if status != "done":
        message = summary.get("message") or "no score"
        return f'<p class="warn">No score ({_e(status)}): {_e(message)}</p>'
    score = summary.get("score")
    group = summary.get("clinical_group")
    colour = _hex(str(score)) if str(score) in CLASS_COLORS_RGB else GROUP_COLORS.get(str(group), "#555")
    rows = [
        ("clinical group", f'<span class="badge" style="background:{GROUP_COLORS.get(str(group), "#555")}">'
         f"{_e(group)}</span> {_e(summary.get('clinical_action'))}"),
        ("rule", _e(summary.get("rule"))),
    ]  # fmt: skip
    others = {k: v for k, v in (summary.get("rules") or {}).items() if k != summary.get("rule")}
    if others:
        rows.append(("other rules", ", ".join(f"{_e(k)}: {_e(v)}" for k, v in others.items())))
    if summary.get("her2_low") is not None:
        rows.append(("HER2-low", "yes (1+, or 2+ with negative ISH)" if summary["her2_low"] else "no"))
    if summary.get("ultralow_like") is not None:
        rows.append(("ultralow-like", "yes (0 with faint staining)" if summary["ultralow_like"] else "no"))
    if summary.get("confidence") is not None:
        rows.append(("confidence", f"{_pct(summary['confidence'])} of bootstrap resamples agree"))
    fractions = summary.get("class_fractions") or {}
    basis = "cells" if summary.get("rule") == "cells" else "tissue"
    rows.append((f"class fractions ({basis})", _fraction_bar(fractions) + " ".join(
        f'<span class="swatch" style="background:{_hex(c)}"></span>{_e(c)}: {_pct(v)}&ensp;'
        for c, v in fractions.items()
    )))  # fmt: skip
    counts = summary.get("cell_counts") or {}
    if counts:
        rows.append(("cells", ", ".join(f"{_e(c)}: {int(n):,}" for c, n in counts.items())))
    dropped = summary.get("n_tiles_dropped") or {}
    rows.append(
        (
            "tiles",
            f"{_e(summary.get('n_tiles_scored'))} scored"
            + (", dropped: " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in dropped.items()) if dropped else ""),
        )
    )
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in summary.get("notes") or [])
    return (
        f'<p><span class="score" style="background:{colour}">HER2 {_e(score)}</span>'
        f"<strong>{_e(summary.get('clinical_action'))}</strong></p><table>{table}</table>{notes}"
    )


def _slide_facts_html(summary: Mapping[str, Any], folder: ScoreView) -> str:
    slide = summary.get("slide") or {}
    grid = summary.get("grid") or {}
    rows = [
        ("file", _e(slide.get("path"))),
        ("size", f"{_e(slide.get('width'))} × {_e(slide.get('height'))} px"),
        ("µm/px", _e(slide.get("mpp"))),
        ("format", _e(slide.get("vendor"))),
        ("tile", f"{_e(grid.get('tile_size_level0_px'))} level-0 px ({_e(grid.get('tile_size_um'))} µm)"),
        ("scored", _e(summary.get("created"))),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    warn = f'<p class="warn">{_e(folder.slide_message)}</p>' if folder.slide_message else ""
    return f"<table>{table}</table>{warn}"


def _model_html(summary: Mapping[str, Any]) -> str:
    model = summary.get("model") or {}
    card = summary.get("model_card") or {}
    keys = ("name", "kind", "architecture", "classes", "stain", "tile_size_um", "work_mpp", "weights_sha256")
    rows = []
    for key in keys:
        value = card.get(key, model.get(key))
        if value not in (None, "", []):
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            rows.append(f"<tr><th>{_e(key)}</th><td>{_e(shown)}</td></tr>")
    for key in ("intended_use", "training_data", "limitations", "metrics"):
        if card.get(key):
            value = card[key]
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            rows.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{_e(shown)}</td></tr>")
    full = json.dumps(card, indent=2, ensure_ascii=False, default=str)
    return f"<table>{''.join(rows)}</table><details><summary>full model card</summary><pre>{_e(full)}</pre></details>"


def _encode_jpeg(rgb: np.ndarray, max_side_px: int, quality: int = 85) -> bytes:
    from wsi_her2.outputs.images import encode_image, fit_width

    small, _ = fit_width(rgb, max_side_px)
    return encode_image(small, ".jpg", quality)


def overlay_image(folder: ScoreView, max_side_px: int = 1600) -> bytes | None:
    """The overlay as JPEG: ``overlay.png`` shrunk, or the heatmap blended over the slide's overview."""
    import cv2

    path = folder.path / OVERLAY
    if path.is_file():
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            return _encode_jpeg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_side_px)
    layers = folder.layers()
    if layers is None or "predicted_class" not in layers.channels:
        return None
    image, sx, sy = folder.tiler().overview()
    rgba = layers.rgba("predicted_class")
    place = layers.placement()
    # Paint each heatmap pixel's box (level-0) onto the overview, then blend.
    h, w = image.shape[:2]
    x0, y0 = place["x"] / sx, place["y"] / sy
    fx, fy = layers.stride / sx, layers.stride / sy
    matrix = np.array([[1 / fx, 0, -x0 / fx], [0, 1 / fy, -y0 / fy]], np.float64)
    painted = cv2.warpAffine(rgba, matrix, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    alpha = painted[..., 3:4].astype(np.float32) / 255.0 * 0.45
    blended = (image.astype(np.float32) * (1 - alpha) + painted[..., :3].astype(np.float32) * alpha).astype(np.uint8)
    return _encode_jpeg(blended, max_side_px)


def _top_tiles_html(folder: ScoreView, per_class: int, thumb_px: int) -> str:
    top = folder.top_tiles(per_class)
    reader = folder.reader()
    parts = []
    for cls, tiles in top.items():
        if not tiles:
            parts.append(f"<h3>{_e(cls)}</h3><p class='muted'>no tile predicted {_e(cls)}</p>")
            continue
        figures = []
        for tile in tiles:
            value = tile["value"]
            shown = f"{value:.2f}" if isinstance(value, float) else value
            caption = (
                f"#{_e(tile['tile_id'])} · x {_e(tile['x'])}, y {_e(tile['y'])}<br>{_e(tile['column'])} = {_e(shown)}"
            )
            if reader is not None:
                jpeg = folder.tile_thumbnail(int(tile["tile_id"]), thumb_px)
                uri = data_uri(jpeg, "image/jpeg")
                img = f'<img src="{uri}" alt="tile {_e(tile["tile_id"])}" style="border-color:{_hex(cls)}">'
            else:
                img = ""
            figures.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
        parts.append(f'<h3><span class="swatch" style="background:{_hex(cls)}"></span>{_e(cls)}</h3>')
        parts.append(f'<div class="tiles">{"".join(figures)}</div>')
    if reader is None:
        parts.insert(0, f'<p class="warn">Tile pictures left out: {_e(folder.slide_message)}</p>')
    return "".join(parts)


def slide_section(folder: ScoreView, *, top_per_class: int = 4, image_px: int = 1600, thumb_px: int = 192) -> str:
    """The report body of one slide (HTML, no page around it)."""
    summary = folder.summary()
    parts = [
        f"<h1>HER2 report: {_e(folder.name)}</h1>",
        _summary_html(summary),
        "<h2>Slide</h2>",
        _slide_facts_html(summary, folder),
    ]
    overlay = (
        overlay_image(folder, image_px)
        if summary.get("status") == "done" or (folder.path / OVERLAY).is_file()
        else None
    )
    if overlay is not None:
        legend = " ".join(
            f'<span class="swatch" style="background:{_hex(c)}"></span>{_e(c)}&ensp;' for c in folder.classes
        )
        parts += [
            "<h2>Overlay</h2>",
            f"<p class='small'>Predicted class of each tile: {legend}</p>",
            f'<div class="overlay"><img src="{data_uri(overlay, "image/jpeg")}" '
            f'alt="overlay of {_e(folder.name)}"></div>',
        ]
    if summary.get("status") == "done":
        parts += ["<h2>Top tiles per class</h2><p class='muted small'>Tiles predicted as each class, highest "
                  "value of that class first.</p>", _top_tiles_html(folder, top_per_class, thumb_px)]  # fmt: skip
    parts += ["<h2>Model</h2>", _model_html(summary)]
    caveats = summary.get("caveats") or []
    if caveats:
        parts += ["<h2>Caveats</h2>", "".join(f'<p class="note">{_e(c)}</p>' for c in caveats)]
    return "\n".join(parts)


def render_report(folder: ScoreView, *, top_per_class: int = 4, image_px: int = 1600) -> str:
    """The self-contained HTML report of one score folder."""
    return _page(f"HER2 report: {folder.name}", slide_section(folder, top_per_class=top_per_class, image_px=image_px))


# -- batch ---------------------------------------------------------------------------------------
def batch_row(entry: BatchEntry, folder: ScoreView | None = None) -> dict[str, Any]:
    """One slide's row of the batch table, from its summary row (empty fields filled from its report)."""
    row = entry.row
    out: dict[str, Any] = {name: row.get(name) for name in ("score", "clinical_group", "seconds", "message")}
    out["tiles"] = row.get("n_tiles_scored")
    fractions = row.get(schema.ROW_FRACTIONS) or None
    if folder is not None:
        summary = folder.summary()
        out["score"] = out["score"] or summary.get("score")
        out["clinical_group"] = out["clinical_group"] or summary.get("clinical_group")
        out["tiles"] = out["tiles"] if out["tiles"] is not None else summary.get("n_tiles_scored")
        fractions = fractions or summary.get("class_fractions")
    out.update(name=entry.name, status=entry.status, fractions=fractions or {})
    return out


def _batch_table(batch: BatchFolder, links: Iterable[str | None], folders: list[ScoreView | None]) -> str:
    head = "<tr><th>slide</th><th>status</th><th>score</th><th>clinical group</th><th>class fractions</th>" \
           "<th>tiles scored</th><th>seconds</th><th>message</th></tr>"  # fmt: skip
    body = []
    for entry, link, folder in zip(batch.entries, links, folders, strict=True):
        row = batch_row(entry, folder)
        name = f'<a href="{_e(link)}">{_e(row["name"])}</a>' if link else _e(row["name"])
        group = row["clinical_group"]
        badge = (
            f'<span class="badge" style="background:{GROUP_COLORS.get(str(group), "#777")}">{_e(group)}</span>'
            if group
            else ""
        )
        fractions = ", ".join(f"{_e(c)} {_pct(v)}" for c, v in row["fractions"].items())
        seconds = f"{float(row['seconds']):.1f}" if isinstance(row["seconds"], (int, float)) else _e(row["seconds"])
        body.append(
            f"<tr><td>{name}</td><td>{_e(row['status'])}</td><td><strong>{_e(row['score'])}</strong></td>"
            f"<td>{badge}</td><td class='small'>{fractions}</td><td>{_e(row['tiles'])}</td>"
            f"<td>{seconds}</td><td class='small'>{_e(row['message'])}</td></tr>"
        )
    counts = ", ".join(f"{n} {_e(s)}" for s, n in batch.counts().items())
    return f"<p>{len(batch.entries)} slides: {counts}</p><table class='list'>{head}{''.join(body)}</table>"


def _open_folders(batch: BatchFolder) -> list[ScoreView | None]:
    folders: list[ScoreView | None] = []
    for entry in batch.entries:
        try:
            folders.append(ScoreView(entry.folder) if entry.folder is not None else None)
        except Exception:  # a damaged folder shows as a row without details, not a failed report
            folders.append(None)
    return folders


def batch_index_html(batch: BatchFolder) -> str:
    """The viewer's index page of a batch: the slide table, each name linking to its viewer."""
    folders = _open_folders(batch)
    links = [f"/s/{i}/" if f is not None else None for i, f in enumerate(folders)]
    files = " · ".join(
        f'<a href="/files/{name}">{name}</a>'
        for name in ("summary.json", "summary.csv")
        if (batch.path / name).is_file()
    )
    body = f"<h1>HER2 batch: {_e(batch.path.name)}</h1><p class='muted'>{_e(batch.path)} {files}</p>"
    return _page(f"HER2 batch: {batch.path.name}", body + _batch_table(batch, links, folders))


def render_batch_report(batch: BatchFolder, *, top_per_class: int = 2, image_px: int = 1000) -> str:
    """The self-contained HTML report of a batch: the slide table, then one section per scored slide."""
    folders = _open_folders(batch)
    links = [f"#slide-{i}" if f is not None else None for i, f in enumerate(folders)]
    sections = []
    for i, folder in enumerate(folders):
        if folder is None:
            continue
        try:
            body = slide_section(folder, top_per_class=top_per_class, image_px=image_px)
        finally:
            folder.close()
        sections.append(
            f'<section class="slide" id="slide-{i}">{body}<p><a href="#top">back to the table</a></p></section>'
        )
    head = f'<h1 id="top">HER2 batch report: {_e(batch.path.name)}</h1><p class="muted">{_e(batch.path)}</p>'
    return _page(
        f"HER2 batch report: {batch.path.name}", head + _batch_table(batch, links, folders) + "".join(sections)
    )


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    slide: str | Path | None = None,
    top_per_class: int | None = None,
) -> Path:
    """Write the self-contained HTML report of a score or batch folder (atomically).

    Args:
        path: the result folder.
        out: the HTML file; ``report.html`` in the folder by default.
        slide: the slide file of a score folder, when it moved since scoring.
        top_per_class: top tiles shown per class (default 4 for a slide, 2 per slide of a batch).

    Returns:
        The written file.

    Raises:
        InputNotFoundError: not a result folder.
        OutputError: the file cannot be written.
    """
    result = load_result(path, slide=slide)
    target = Path(out) if out is not None else result.path / REPORT_HTML
    ensure_dir(target.parent)  # before the work: creates it, or a clear OutputError when it is a file
    if isinstance(result, BatchFolder):
        text = render_batch_report(result, top_per_class=2 if top_per_class is None else top_per_class)
    else:
        try:
            text = render_report(result, top_per_class=4 if top_per_class is None else top_per_class)
        finally:
            result.close()
    return write_text(target, text)
