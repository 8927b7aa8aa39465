"""The viewer's server over plain HTTP (no browser): every endpoint, and every malformed request gets a 4xx."""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest

from tests.viewer.conftest import CLASSES, HEIGHT, TILE, WIDTH, FakeResult, no_tissue_report


def raw_get(
    url: str, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    """Send ``path`` exactly as written (no client-side normalisation of ``..`` or ``%2e``)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=headers is not None and "Host" in headers)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(url: str, path: str) -> Any:
    status, headers, body = raw_get(url, path)
    assert status == 200, (path, status, body[:300])
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def decode(body: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), flags)
    assert image is not None
    return image


# -- pages and data ------------------------------------------------------------------------------
def test_root_redirects_to_the_viewer_and_the_page_loads_local_scripts(deep_server: Any) -> None:
    status, headers, _ = raw_get(deep_server.url, "/")
    assert status == 302 and headers["Location"] == "/s/0/"
    with urllib.request.urlopen(deep_server.url) as response:  # follows the redirect
        page = response.read().decode()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "/static/vendor/openseadragon/openseadragon.min.js" in page
    assert "http://" not in page and "https://" not in page


def test_info_has_summary_layers_and_top_tiles(deep_server: Any, deep_result: FakeResult) -> None:
    info = get_json(deep_server.url, "/s/0/api/info.json")
    assert info["summary"]["score"] == "3+" and info["summary"]["clinical_group"] == "positive"
    assert info["summary"]["model_card"]["intended_use"] == "tests only"
    assert info["slide"] == {"width": WIDTH, "height": HEIGHT, "available": True, "message": None, "dzi": "slide.dzi"}
    overlay = info["overlay"]
    assert overlay["default"] == "predicted_class"
    assert [c["name"] for c in overlay["channels"]] == ["predicted_class", "p(0)", "p(1+)", "p(2+)", "p(3+)",
                                                        "tissue_fraction"]  # fmt: skip
    assert overlay["stride"] == TILE and overlay["cols"] == 8 and overlay["rows"] == 6
    # Cut at the slide's edges: edge tiles run past them.
    assert overlay["placement"]["x"] == 0 and WIDTH <= overlay["placement"]["width"] < WIDTH + TILE / 8
    legend = overlay["channels"][0]["legend"]
    assert [c["name"] for c in legend["classes"]] == list(CLASSES)
    top = info["top_tiles"]
    assert set(top) == set(CLASSES)
    for cls, tiles in top.items():
        assert 0 < len(tiles) <= 6
        for tile in tiles:
            col, row = tile["x"] // TILE, tile["y"] // TILE
            assert CLASSES[deep_result.class_map[row, col]] == cls
            assert tile["thumb"] == f"thumb/{tile['tile_id']}.jpg"


def test_dzi_and_tiles(deep_server: Any, viewer_slide: Path) -> None:
    status, headers, body = raw_get(deep_server.url, "/s/0/slide.dzi")
    assert status == 200 and b'Width="4000" Height="3000"' in body and b'TileSize="254"' in body
    max_level = 12  # ceil(log2(4000))
    status, headers, body = raw_get(deep_server.url, f"/s/0/slide_files/{max_level}/0_0.jpeg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    tile = decode(body, cv2.IMREAD_COLOR)
    assert tile.shape == (255, 255, 3)  # 254 + 1 overlap on the inner sides only
    from wsi_her2.slide import open_slide

    with open_slide(viewer_slide) as reader:
        truth = reader.read_region(0, 0, 255, 255, 0)
    diff = np.abs(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB).astype(int) - truth.astype(int))
    assert diff.mean() < 6  # one JPEG re-encoding
    # Last tile of the full-resolution level, and the 1x1 top of the pyramid.
    assert raw_get(deep_server.url, f"/s/0/slide_files/{max_level}/15_11.jpeg")[0] == 200
    assert decode(raw_get(deep_server.url, "/s/0/slide_files/0/0_0.jpeg")[2]).shape[:2] == (1, 1)
    assert decode(raw_get(deep_server.url, "/s/0/slide_files/8/0_0.jpeg")[2]).shape[:2] == (188, 250)


def test_overlay_png_colours_the_known_classes(deep_server: Any, deep_result: FakeResult) -> None:
    from wsi_her2.her2 import CLASS_COLORS_RGB

    info = get_json(deep_server.url, "/s/0/api/info.json")
    status, headers, body = raw_get(deep_server.url, "/s/0/overlay/predicted_class.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = decode(body)
    assert image.shape[2] == 4
    k = image.shape[1] * TILE / info["overlay"]["placement"]["width"]  # image px per level-0 tile
    for cls in CLASSES:
        col, row = deep_result.tile_at(cls)
        b, g, r, a = image[int((row + 0.5) * k), int((col + 0.5) * k)]
        assert (r, g, b, a) == (*CLASS_COLORS_RGB[cls], 255)
    assert image[int(0.5 * k), int(0.5 * k), 3] == 0  # no tile: transparent
    assert image[int(0.5 * k), int(1.5 * k), 3] == 0  # dropped tile: no class
    # Probability channels are a colour map; the name is URL-encoded by the page.
    status, _, body = raw_get(deep_server.url, "/s/0/overlay/p%283%2B%29.png")
    assert status == 200 and decode(body).shape == image.shape


def test_tile_readout(deep_server: Any, deep_result: FakeResult) -> None:
    col, row = deep_result.tile_at("2+")
    data = get_json(deep_server.url, f"/s/0/api/tile?col={col}&row={row}")
    assert data["tile"]["predicted_class"] == "2+"
    assert data["tile"]["p(2+)"] == pytest.approx(0.85)
    assert data["values"]["predicted_class"] == 2
    assert data["tile"]["x_level0_px"] == col * TILE
    assert get_json(deep_server.url, "/s/0/api/tile?col=0&row=0")["tile"] is None  # background: no tile
    dropped = get_json(deep_server.url, "/s/0/api/tile?col=1&row=0")
    assert dropped["tile"]["scored"] is False and dropped["tile"]["drop_reason"] == "blur"


def test_dab_readout_has_cell_counts(dab_server: Any, dab_result: FakeResult) -> None:
    col, row = dab_result.tile_at("3+")
    data = get_json(dab_server.url, f"/s/0/api/tile?col={col}&row={row}")
    assert data["tile"]["n_cells_3plus"] == 85 and data["tile"]["fraction_cells(3+)"] == pytest.approx(0.85)
    assert data["value_columns"]["n_cells"] == "cells detected"
    info = get_json(dab_server.url, "/s/0/api/info.json")
    names = [c["name"] for c in info["overlay"]["channels"]]
    assert "mean_membrane_dab_od" in names and "n_cells" in names and "fraction_cells(1+)" in names


def test_thumbnail_report_and_files(deep_server: Any) -> None:
    status, headers, body = raw_get(deep_server.url, "/s/0/thumb/3.jpg")
    assert status == 200 and decode(body).shape[:2] == (192, 192)
    status, headers, body = raw_get(deep_server.url, "/s/0/report.html")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"HER2 3+" in body
    report = get_json(deep_server.url, "/s/0/files/report.json")
    assert report["result"]["score"] == "3+"
    status, headers, body = raw_get(deep_server.url, "/s/0/files/tiles.csv")
    assert status == 200 and body.startswith(b"tile_id,")
    vendor = "/static/vendor/openseadragon/"
    for path in ("/static/viewer.js", "/static/viewer.css", vendor + "openseadragon.min.js",
                 vendor + "images/zoomin_rest.png", vendor + "LICENSE.txt"):  # fmt: skip
        assert raw_get(deep_server.url, path)[0] == 200, path
    assert raw_get(deep_server.url, "/favicon.ico")[0] == 204


def test_head_is_answered_without_a_body(deep_server: Any) -> None:
    status, headers, body = raw_get(deep_server.url, "/s/0/slide.dzi", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) > 0 and body == b""


# -- 4xx -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/static/../report.json",
        "/static/..%2f..%2freport.json",
        "/static/%2e%2e/%2e%2e/report.json",
        "/static/%2E%2E/viewer.js",
        "/static/vendor/../../result.py",
        "/s/0/files/../report.json",
        "/s/0/files/%2e%2e%2freport.json",
        "/s/0/files/..%5creport.json",
        "/s/0/files//etc/passwd",
        "/s/0/files/%2fetc%2fpasswd",
        "/files/%2fetc%2fpasswd",
        "//etc/passwd",
        "/etc/passwd",
        "/static//etc/passwd",
        "/static/%00viewer.js",
        "/s/0/files/.zattrs",
        "/s/0/files/heatmap.zarr",
        "/s/0/files/C:%5cwindows",
        "/s/0/files/report.json%00.png",
    ],
)
def test_traversal_is_404(deep_server: Any, path: str) -> None:
    status, _, body = raw_get(deep_server.url, path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b'"status"' not in body


def test_symlinks_out_of_the_folder_are_not_followed(
    tmp_path: Path, deep_result: FakeResult, viewer_slide: Path
) -> None:
    import shutil

    from tests.viewer.conftest import make_score_folder
    from wsi_her2.viewer.server import ViewerServer

    result = make_score_folder(tmp_path / "out", viewer_slide)
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    os.symlink(secret, result.folder / "leak.json")
    os.symlink(deep_result.folder / "report.json", result.folder / "other.json")  # another folder: refused too
    inside = result.folder / "inside.json"
    shutil.copy(result.folder / "report.json", inside)
    os.symlink(inside, result.folder / "alias.json")  # a link that stays inside is fine
    with ViewerServer(result.folder) as server:
        assert raw_get(server.url, "/s/0/files/leak.json")[0] == 404
        assert raw_get(server.url, "/s/0/files/other.json")[0] == 404
        assert raw_get(server.url, "/s/0/files/alias.json")[0] == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/s/0/slide_files/99/0_0.jpeg", 404),  # no such level
        ("/s/0/slide_files/12/999_0.jpeg", 404),  # no such tile
        ("/s/0/slide_files/x/0_0.jpeg", 400),
        ("/s/0/slide_files/12/a_b.jpeg", 400),
        ("/s/0/slide_files/12/-1_0.jpeg", 400),
        ("/s/0/slide_files/12/0_0.png", 400),
        ("/s/0/slide_files/12/00.jpeg", 400),
        ("/s/0/slide_files/12/99999999999999999999_0.jpeg", 400),
        ("/s/0/overlay/nope.png", 404),  # unknown channel
        ("/s/0/overlay/predicted_class.jpg", 404),
        ("/s/0/api/tile?col=1", 400),
        ("/s/0/api/tile?col=a&row=1", 400),
        ("/s/0/api/tile?col=1.5&row=1", 400),
        ("/s/0/api/tile?col=1&row=1&row=2", 400),
        ("/s/0/api/tile?col=99&row=0", 404),
        ("/s/0/api/nothing", 404),
        ("/s/0/thumb/abc.jpg", 400),
        ("/s/0/thumb/99999.jpg", 404),
        ("/s/1/", 404),  # a score folder has one slide
        ("/s/x/", 400),
        ("/s/%ff/", 400),
        ("/nothing", 404),
        ("/static/", 404),
        ("/static/nothing.js", 404),
    ],
)
def test_malformed_requests_get_4xx(deep_server: Any, path: str, status: int) -> None:
    got, _, body = raw_get(deep_server.url, path)
    assert got == status, (path, got, body[:200])
    if "/api/" in path:
        assert "error" in json.loads(body)


def test_other_methods_and_foreign_hosts_are_refused(deep_server: Any) -> None:
    assert raw_get(deep_server.url, "/s/0/api/info.json", method="POST")[0] == 405
    assert raw_get(deep_server.url, "/s/0/", method="DELETE")[0] == 405
    port = urlsplit(deep_server.url).port
    assert raw_get(deep_server.url, "/s/0/", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert raw_get(deep_server.url, "/s/0/", headers={"Host": f"localhost:{port}"})[0] == 200


def test_garbage_request_line_does_not_kill_the_server(deep_server: Any) -> None:
    parts = urlsplit(deep_server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        assert b"400" in sock.recv(1000)  # Bad request (in HTTP/0.9 style: no status line)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"BREW /s/0/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 405")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET /s/0/ HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 431")  # over-long header line: refused, not a crash
    assert raw_get(deep_server.url, "/s/0/slide.dzi")[0] == 200


# -- batch and missing slides ----------------------------------------------------------------------
def test_batch_index_lists_slides_and_links_viewers(batch_server: Any) -> None:
    status, _, body = raw_get(batch_server.url, "/")
    page = body.decode()
    assert status == 200 and "alpha.svs" in page and "cases/beta.svs" in page and "failed" in page
    assert "0 25.0%, 3+ 75.0%" in page  # the summary's own columns win over the report's
    assert 'href="/s/0/"' in page and 'href="/s/1/"' in page
    assert "unreadable slide &lt;x&gt;" in page  # escaped
    assert 'href="/s/2/"' not in page  # the failed slide has no viewer
    assert get_json(batch_server.url, "/s/1/api/info.json")["summary"]["model"]["kind"] == "dab"
    info = get_json(batch_server.url, "/s/0/api/info.json")
    assert info["links"]["index"] == "/" and info["links"]["next"] == "/s/1/" and info["links"]["previous"] is None
    assert raw_get(batch_server.url, "/s/2/")[0] == 404
    assert raw_get(batch_server.url, "/files/summary.json")[0] == 200


def test_batch_slides_are_closed_and_reopened(batch_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import wsi_her2.viewer.server as server_module

    monkeypatch.setattr(server_module, "MAX_OPEN_SLIDES", 1)
    app = batch_server.app
    for number in (0, 1, 0):
        assert raw_get(batch_server.url, f"/s/{number}/slide_files/12/1_1.jpeg")[0] == 200
        assert raw_get(batch_server.url, f"/s/{number}/thumb/3.jpg")[0] == 200
        other = app.slides[1 - number]
        assert other is None or other._reader is None


def test_no_tissue_folder(tmp_path: Path, viewer_slide: Path) -> None:
    from wsi_her2.viewer.server import ViewerServer

    folder = tmp_path / "glass"
    folder.mkdir()
    report = no_tissue_report(str(viewer_slide), width=WIDTH, height=HEIGHT, mpp_used=0.5)
    (folder / "report.json").write_text(json.dumps(report))
    with ViewerServer(folder) as server:
        info = get_json(server.url, "/s/0/api/info.json")
        assert info["summary"]["status"] == "no_tissue" and info["overlay"] is None
        assert all(not tiles for tiles in info["top_tiles"].values())
        assert raw_get(server.url, "/s/0/overlay/predicted_class.png")[0] == 404
        assert raw_get(server.url, "/s/0/api/tile?col=0&row=0")[0] == 404
        assert raw_get(server.url, "/s/0/slide_files/12/0_0.jpeg")[0] == 200
        assert b"No score (no_tissue)" in raw_get(server.url, "/s/0/report.html")[2]


def test_missing_slide_still_shows_the_heatmap(tmp_path: Path, viewer_slide: Path) -> None:
    import shutil

    from tests.viewer.conftest import make_score_folder
    from wsi_her2.viewer.server import ViewerServer

    moved = tmp_path / "moved.svs"
    shutil.copy(viewer_slide, moved)
    result = make_score_folder(tmp_path / "out", moved)
    moved.unlink()
    with ViewerServer(result.folder) as server:
        info = get_json(server.url, "/s/0/api/info.json")
        assert info["slide"]["available"] is False and "not found" in info["slide"]["message"]
        assert all(t["thumb"] is None for tiles in info["top_tiles"].values() for t in tiles)
        assert raw_get(server.url, "/s/0/slide_files/12/0_0.jpeg")[0] == 200  # blank tiles
        assert raw_get(server.url, "/s/0/overlay/predicted_class.png")[0] == 200
        assert raw_get(server.url, "/s/0/thumb/3.jpg")[0] == 404
    with ViewerServer(result.folder, slide=viewer_slide) as server:  # --slide
        assert get_json(server.url, "/s/0/api/info.json")["slide"]["available"] is True


def test_real_score_folder(real_result: Path) -> None:
    from wsi_her2.viewer.server import ViewerServer

    with ViewerServer(real_result) as server:
        info = get_json(server.url, "/s/0/api/info.json")
        assert info["summary"]["score"] in CLASSES and info["slide"]["available"]
        names = [c["name"] for c in info["overlay"]["channels"]]
        for name in names:
            assert raw_get(server.url, "/s/0/overlay/" + urllib.request.quote(name, safe="") + ".png")[0] == 200
        some = next(t for tiles in info["top_tiles"].values() for t in tiles)
        assert raw_get(server.url, "/s/0/" + some["thumb"])[0] == 200
        rows = info["overlay"]["rows"]
        for row in range(rows):
            data = get_json(server.url, f"/s/0/api/tile?col=2&row={row}")
            assert data["tile"] is None or "n_cells" in data["tile"]


def test_port_in_use_is_a_config_error(deep_result: FakeResult) -> None:
    from wsi_her2.errors import ConfigError, InputNotFoundError
    from wsi_her2.viewer.server import ViewerServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            ViewerServer(deep_result.folder, port=port)
    with pytest.raises(InputNotFoundError):
        ViewerServer(deep_result.folder / "nope")
    with pytest.raises(InputNotFoundError, match=r"report\.json"):
        ViewerServer(deep_result.folder / "heatmap.zarr")
