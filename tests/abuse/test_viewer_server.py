"""The viewer's server under hostile traffic, all of it to 127.0.0.1, bounded in count and time.

Traversal in every encoding, symlinks out of the result folder, foreign Host headers, very long
URLs, Deep Zoom coordinates out of range, 200 requests at once, and slow clients that hold
connections open: the server answers each with a 4xx or the right content, keeps serving everyone
else, closes idle connections, and never reads outside the result folder and its slide.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.viewer.conftest import HEIGHT, WIDTH, make_score_folder
from tests.viewer.test_server_http import raw_get

SECRET = b"TOP-SECRET-outside-the-result"
MAX_LEVEL = 12  # ceil(log2(4000)) for the 4000 x 3000 test slide


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A score folder with symlinks that point out of it, served with a 1-s idle timeout."""
    import numpy as np

    from wsi_her2.synthetic import write_synthetic_slide
    from wsi_her2.viewer.server import ViewerServer

    root = tmp_path_factory.mktemp("viewer-abuse")
    slide = root / "slide.svs"
    write_synthetic_slide(slide, width=WIDTH, height=HEIGHT, mpp=0.5, stain="ihc",
                          tissue_map=np.ones((8, 8), bool), downsamples=(1, 4), seed=3)  # fmt: skip
    result = make_score_folder(root / "result", slide).folder
    outside = root / "outside"
    outside.mkdir()
    for name in ("secret.json", "secret.png", "secret.csv", "secret.html"):
        (outside / name).write_bytes(SECRET)
    links = {"leak.json": outside / "secret.json", "leak.png": outside / "secret.png",
             "leak.csv": outside / "secret.csv", "leak.html": outside / "secret.html",
             "dir.json": outside, "passwd.txt": Path("/etc/passwd")}  # fmt: skip
    for name, target in links.items():
        os.symlink(target, result / name)
    os.symlink(result / "loop-b.json", result / "loop-a.json")
    os.symlink(result / "loop-a.json", result / "loop-b.json")
    os.symlink(outside, result / "sub")
    with ViewerServer(result, idle_timeout_s=1.0) as server:
        yield server, result


def _get(server: Any, path: str, **kwargs: Any) -> tuple[int, dict, bytes]:
    return raw_get(server.url, path, **kwargs)


TRAVERSALS = [
    "/s/0/files/leak.json", "/s/0/files/leak.png", "/s/0/files/leak.csv", "/s/0/files/leak.html",
    "/s/0/files/dir.json", "/s/0/files/passwd.txt", "/s/0/files/loop-a.json", "/s/0/files/sub",
    "/s/0/files/sub/secret.json", "/s/0/files/sub%2fsecret.json", "/files/leak.json",
    "/s/0/files/..%2f..%2foutside%2fsecret.json", "/s/0/files/%2e%2e/%2e%2e/outside/secret.json",
    "/s/0/files/%252e%252e%252f%252e%252e%252foutside%252fsecret.json",  # double-encoded
    "/s/0/files/%25252e%25252e%25252fsecret.json",  # triple-encoded
    "/s/0/files/..%5c..%5coutside%5csecret.json", "/s/0/files/..\\..\\outside\\secret.json",  # backslashes
    "/s/0/files/%c0%ae%c0%ae%c0%afsecret.json",  # overlong UTF-8 for ../
    "/s/0/files/%ef%bc%8e%ef%bc%8e%ef%bc%8fsecret.json",  # fullwidth ．．／
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e%2f%2e%2e%2fserver.py",
    "/static/vendor/%2e%2e/%2e%2e/%2e%2e/result.py", "/static/..;/..;/server.py",
    "/s/0/files/%2Fetc%2Fpasswd", "/s/0/files//etc/passwd", "/s/0/files/C:%5CWindows%5Cwin.ini",
    "/s/0/files/report.json%00.png", "/s/0/files/report.json/..", "/s/0/files/report.json/x",
    "/s/0/overlay/..%2f..%2fleak.png", "/s/0/thumb/..%2fleak.jpg", "/s/0/slide_files/..%2f..%2fleak.json",
    "http://127.0.0.1/s/0/files/../../outside/secret.json",  # absolute-form request targets
    "http://evil.example/s/0/files/report.json", "//evil.example/s/0/files/report.json",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/" + "../" * 20 + "etc/passwd",
]  # fmt: skip


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_in_any_encoding_never_leaves_the_folder(served: tuple[Any, Path], path: str) -> None:
    server, _ = served
    status, _, body = _get(server, path)
    assert 400 <= status < 500, (path, status)
    assert SECRET not in body and b"root:" not in body


def test_a_link_that_stays_inside_is_served_and_the_folder_still_works(served: tuple[Any, Path]) -> None:
    server, _ = served
    assert _get(server, "/s/0/files/report.json")[0] == 200
    assert _get(server, "/s/0/api/info.json")[0] == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example", "127.0.0.1@evil.example",
     "evil.example#127.0.0.1", "127.0.0.2", "0.0.0.0", "[::2]", "", "127.0.0.1, evil.example", "localhost\tevil"],
)  # fmt: skip
def test_foreign_host_headers_are_refused(served: tuple[Any, Path], host: str) -> None:
    server, _ = served
    status, _, body = _get(server, "/s/0/api/info.json", headers={"Host": host})
    assert status in (400, 403), (host, status)
    assert b"score" not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "LOCALHOST", "localhost.", "[::1]", "127.0.0.1:{port}"])
def test_loopback_host_headers_are_served(served: tuple[Any, Path], host: str) -> None:
    server, _ = served
    host = host.format(port=urlsplit(server.url).port)
    assert _get(server, "/s/0/slide.dzi", headers={"Host": host})[0] == 200, host


def _send_raw(server: Any, data: bytes, *, timeout: float = 10) -> bytes:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                break
        return b"".join(chunks)


def test_no_host_and_two_host_headers_are_refused(served: tuple[Any, Path]) -> None:
    server, _ = served
    assert _send_raw(server, b"GET /s/0/slide.dzi HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 403")
    two = b"GET /s/0/slide.dzi HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert _send_raw(server, two).startswith(b"HTTP/1.1 400")


def test_very_long_urls_are_refused_quickly(served: tuple[Any, Path]) -> None:
    server, _ = served
    t0 = time.perf_counter()
    assert _get(server, "/s/0/files/" + "a" * 8000 + ".json")[0] == 404
    assert _get(server, "/s/0/" + "x/" * 30000)[0] == 404
    long_line = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert _send_raw(server, long_line).startswith(b"HTTP/1.1 414")
    # Many query fields: refused as a bad request, not an internal error.
    assert _get(server, "/s/0/api/tile?" + "&".join(f"k{i}=1" for i in range(500)))[0] == 400
    assert _get(server, "/s/0/api/tile?col=" + "9" * 5000 + "&row=1")[0] == 400
    many_headers = b"GET /s/0/slide.dzi HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"
    assert _send_raw(server, many_headers).startswith(b"HTTP/1.1 431")
    assert time.perf_counter() - t0 < 10
    assert _get(server, "/s/0/slide.dzi")[0] == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/s/0/slide_files/{MAX_LEVEL + 1}/0_0.jpeg", 404),
        ("/s/0/slide_files/999999999/0_0.jpeg", 404),
        ("/s/0/slide_files/9999999999/0_0.jpeg", 400),
        (f"/s/0/slide_files/{MAX_LEVEL}/16_0.jpeg", 404),  # one past the last column (16 x 12 tiles)
        (f"/s/0/slide_files/{MAX_LEVEL}/0_12.jpeg", 404),  # one past the last row
        (f"/s/0/slide_files/{MAX_LEVEL}/999999999_999999999.jpeg", 404),
        ("/s/0/slide_files/0/1_0.jpeg", 404),  # level 0 is one tile
        ("/s/0/slide_files/-1/0_0.jpeg", 400),
        ("/s/0/slide_files/+1/0_0.jpeg", 400),
        ("/s/0/slide_files/%d9%a1/0_0.jpeg", 400),  # an Arabic-Indic digit one
        ("/s/0/slide_files/1e3/0_0.jpeg", 400),
        (f"/s/0/slide_files/{MAX_LEVEL}/0_0_0.jpeg", 400),
        (f"/s/0/slide_files/{MAX_LEVEL}/0_0.jpeg.jpeg", 400),
        ("/s/0/api/tile?col=999999999&row=999999999", 404),
        ("/s/0/api/tile?col=-1&row=0", 400),
        ("/s/0/thumb/999999999.jpg", 404),
        ("/s/999999999/", 404),
    ],
)
def test_deep_zoom_and_grid_coordinates_out_of_range(served: tuple[Any, Path], path: str, status: int) -> None:
    server, _ = served
    assert _get(server, path)[0] == status, path


def test_the_last_tiles_of_the_pyramid_exist(served: tuple[Any, Path]) -> None:
    server, _ = served
    assert _get(server, f"/s/0/slide_files/{MAX_LEVEL}/15_11.jpeg")[0] == 200
    assert _get(server, "/s/0/slide_files/0/0_0.jpeg")[0] == 200


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


@pytest.mark.slow
def test_200_requests_at_once_are_all_answered(served: tuple[Any, Path]) -> None:
    """200 connections opened together, each asking for a different Deep Zoom tile, all answered 200."""
    server, _ = served
    parts = urlsplit(server.url)
    tiles = [(MAX_LEVEL - k % 3, c, r) for k, (c, r) in enumerate((c, r) for r in range(12) for c in range(16))]
    paths = [f"/s/0/slide_files/{lv}/{c // 2 ** (MAX_LEVEL - lv)}_{r // 2 ** (MAX_LEVEL - lv)}.jpeg"
             for lv, c, r in tiles] + ["/s/0/api/info.json"] * 8  # fmt: skip
    assert len(paths) == 200
    barrier = threading.Barrier(len(paths), timeout=30)

    def one(path: str) -> bytes:
        with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
            barrier.wait()
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            return _read_response(sock)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(paths)) as pool:
        heads = list(pool.map(one, paths))
    elapsed = time.perf_counter() - t0
    assert [h.split(b"\r\n")[0] for h in heads] == [b"HTTP/1.1 200 OK"] * len(paths)
    assert elapsed < 60
    assert _get(server, "/s/0/slide.dzi")[0] == 200


def test_a_slow_client_does_not_stop_the_others_and_is_cut_off_when_idle(served: tuple[Any, Path]) -> None:
    server, _ = served
    parts = urlsplit(server.url)
    slow = socket.create_connection((parts.hostname, parts.port), timeout=10)
    idle = socket.create_connection((parts.hostname, parts.port), timeout=10)
    try:
        slow.sendall(b"GET /s/0/slide.dzi HTTP/1.1\r\nHost: 12")  # and nothing more
        idle.sendall(b"GET /s/0/slide.dzi HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(idle).startswith(b"HTTP/1.1 200")  # kept alive, then left idle
        t0 = time.perf_counter()
        for k in range(20):
            assert _get(server, f"/s/0/slide_files/{MAX_LEVEL}/{k % 16}_0.jpeg")[0] == 200
        assert time.perf_counter() - t0 < 10
        # The idle timeout (1 s here) closes both: recv returns end-of-stream, not a hang.
        t0 = time.perf_counter()
        assert slow.recv(1000) == b""
        assert idle.recv(1000) == b""
        assert time.perf_counter() - t0 < 5
    finally:
        slow.close()
        idle.close()


def test_many_slow_clients_beyond_the_connection_limit_get_503_and_others_are_still_served(
    tmp_path: Path, served: tuple[Any, Path]
) -> None:
    from wsi_her2.viewer.server import ViewerServer

    _, result = served
    with ViewerServer(result, idle_timeout_s=30, max_connections=8) as server:
        parts = urlsplit(server.url)
        held = [socket.create_connection((parts.hostname, parts.port), timeout=10) for _ in range(8)]
        try:
            for sock in held:
                sock.sendall(b"GET / HTTP/1.1\r\n")  # incomplete: each holds a handler
            time.sleep(0.3)
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as extra:
                extra.sendall(b"GET /s/0/slide.dzi HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert extra.recv(100).startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert _get(server, "/s/0/slide.dzi")[0] == 200  # handlers freed: served again
