"""A small local web server that shows a ``score`` or ``batch`` result in the browser.

Standard library only (:class:`http.server.ThreadingHTTPServer`): the viewer serves a few kinds of
small responses to one local user, which needs no framework. It runs in a background thread;
the caller (the command line) owns the main loop and calls :meth:`ViewerServer.stop`.

URLs (``<i>`` is the slide's number; a score folder has only slide 0)::

    /                                   batch: the index of slides; score folder: redirect to /s/0/
    /s/<i>/                             the viewer page
    /s/<i>/api/info.json                everything the page shows (score, model card, layers, top tiles)
    /s/<i>/api/tile?col=C&row=R         readout of one grid position (tile table row + heatmap values)
    /s/<i>/slide.dzi                    Deep Zoom descriptor of the slide
    /s/<i>/slide_files/<L>/<C>_<R>.jpeg Deep Zoom tile
    /s/<i>/overlay/<channel>.png        one heatmap channel as a transparent image (one pixel per tile)
    /s/<i>/thumb/<tile_id>.jpg          a tile read from the slide (top tiles)
    /s/<i>/report.html                  the self-contained HTML report of the slide
    /s/<i>/files/<name>                 report.json, tiles.csv, predictions.geojson, overlay.png
    /files/<name>                       batch: summary.json, summary.csv
    /static/...                         the page's scripts, styles and the vendored OpenSeadragon

Nothing outside the result folder, its slide and the package's static folder is ever read: paths
are split into segments before decoding, and any segment that is empty, ``.``/``..``, hidden, or
holds a separator after decoding is refused; file names are resolved (symlinks too) and must stay
in their folder. Malformed requests get 400, unknown things 404, other methods 405, and a Host
header that is not this machine (DNS rebinding) 403 (two Host headers: 400). Each connection has
its own thread, up to :data:`MAX_CONNECTIONS` (more are answered 503 at once), and is closed when
its client sends nothing for :data:`IDLE_TIMEOUT_S`, so a slow or idle client never holds others up.
"""

from __future__ import annotations

import html
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from wsi_her2.errors import ConfigError
from wsi_her2.outputs.atomic import to_json
from wsi_her2.viewer.errors import RequestError, parse_int
from wsi_her2.viewer.result import BatchFolder, ScoreView, load_result, safe_child

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".map": "application/json",
    ".dzi": "application/xml",
}
# Everything the page loads comes from this server; images may also be data: URIs (OpenSeadragon).
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Slides of a batch kept open at once (a plain JPEG/PNG slide is held decoded in memory).
MAX_OPEN_SLIDES = 4
# Query fields of one request; the page sends two.
MAX_QUERY_FIELDS = 20
# Connections served at once (one thread each; a browser opens about six). Beyond: 503 at once.
MAX_CONNECTIONS = 256
# Seconds a connection may wait for the client (between requests, or within one) before it is closed.
IDLE_TIMEOUT_S = 30.0


def static_root() -> Path:
    """The package's static folder (scripts, styles, page template, vendored OpenSeadragon)."""
    return Path(str(resources.files("wsi_her2.viewer") / "static"))


class Response:
    """An HTTP response: status, body, content type and caching."""

    def __init__(
        self, body: bytes | str, content_type: str, *, status: int = 200, cache: str = "no-store", **headers: str
    ) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.content_type = content_type
        self.status = status
        self.headers = {"Cache-Control": cache, **headers}


def json_response(data: Any, status: int = 200) -> Response:
    """JSON (NaN as null)."""
    return Response(to_json(data), "application/json", status=status)


class ViewerApp:
    """The routes over one result folder (no sockets: testable by calling :meth:`handle`).

    Attributes:
        result: the score or batch folder.
        slides: the score folders by number.
    """

    def __init__(self, result: ScoreView | BatchFolder) -> None:
        self.result = result
        self.static = static_root().resolve()
        self.slides: list[ScoreView | None] = []
        if isinstance(result, ScoreView):
            self.slides = [result]
        else:
            self.slides = [None] * len(result.entries)
        self._recent: list[int] = []  # batch slides by last use, most recent last
        self._lock = threading.Lock()

    def slide(self, number: int) -> ScoreView:
        """Score folder ``number``, opened on first use.

        Raises:
            RequestError: no such slide (or its folder is unreadable).
        """
        if not 0 <= number < len(self.slides):
            raise RequestError(f"no slide {number}")
        with self._lock:
            folder = self.slides[number]
            if folder is None and isinstance(self.result, BatchFolder):
                entry = self.result.entries[number]
                if entry.folder is None:
                    raise RequestError(f"slide {entry.name} has no result folder ({entry.status})")
                try:
                    folder = ScoreView(entry.folder)
                except Exception as exc:  # a damaged folder in a batch is that slide's problem only
                    raise RequestError(f"cannot read the result of {entry.name}: {exc}") from exc
                self.slides[number] = folder
            assert folder is not None
            if isinstance(self.result, BatchFolder):
                self._touch(number)
            return folder

    def _touch(self, number: int) -> None:
        """Mark a batch slide used; close the slide files of the least recently used beyond the limit."""
        if number in self._recent:
            self._recent.remove(number)
        self._recent.append(number)
        while len(self._recent) > MAX_OPEN_SLIDES:
            old = self.slides[self._recent.pop(0)]
            if old is not None:
                old.close()  # its slide reopens on its next request

    def close(self) -> None:
        """Close every opened slide."""
        for folder in self.slides:
            if folder is not None:
                folder.close()

    # -- routing ---------------------------------------------------------------------------------
    def handle(self, raw_path: str) -> Response:
        """Answer a GET for ``raw_path`` (path and query as sent).

        Raises:
            RequestError: 4xx.
        """
        # Not urlsplit: "//host/x" would become a path "/x", and an absolute-form target
        # ("http://host/x") names another server; this one is no proxy, so both are refused.
        path, _, raw_query = raw_path.partition("?")
        segments = split_path(path)
        try:
            query = parse_qs(raw_query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError as exc:  # more fields than any page sends
            raise RequestError(f"bad query: {exc}", status=400) from exc
        if not segments:
            return self.index()
        head, rest = segments[0], segments[1:]
        if head == "static":
            return self.static_file(rest)
        if head == "favicon.ico" and not rest:
            return Response(b"", "image/x-icon", status=204, cache="max-age=86400")
        if head == "files" and len(rest) == 1:
            return self.result_file(self.result.path, rest[0])
        if head == "s" and rest:
            number = parse_int(rest[0], "slide number")
            folder = self.slide(number)
            return self.slide_route(folder, number, rest[1:], query)
        raise RequestError(f"no such page: {path}")

    def slide_route(self, folder: ScoreView, number: int, rest: list[str], query: dict[str, list[str]]) -> Response:
        """Routes under ``/s/<i>/``."""
        if not rest:
            return self.viewer_page()
        name = rest[0]
        if len(rest) == 1:
            simple: dict[str, Callable[[], Response]] = {
                "slide.dzi": lambda: Response(folder.tiler().dzi(), CONTENT_TYPES[".dzi"]),
                "report.html": lambda: self.report_page(folder),
            }
            if name in simple:
                return simple[name]()
        if name == "api" and len(rest) == 2:
            if rest[1] == "info.json":
                return json_response(self.info(folder, number))
            if rest[1] == "tile":
                col = parse_int(_one(query, "col"), "col")
                row = parse_int(_one(query, "row"), "row")
                return json_response(folder.tile_readout(col, row))
        if name == "slide_files" and len(rest) == 3:
            level = parse_int(rest[1], "level")
            stem, dot, suffix = rest[2].partition(".")
            col_text, sep, row_text = stem.partition("_")
            if suffix not in ("jpeg", "jpg") or not dot or not sep:
                raise RequestError(f"bad tile name {rest[2]!r} (expected COL_ROW.jpeg)", status=400)
            data = folder.tiler().tile_jpeg(level, parse_int(col_text, "col"), parse_int(row_text, "row"))
            return Response(data, "image/jpeg", cache="private, max-age=3600")
        if name == "overlay" and len(rest) == 2 and rest[1].endswith(".png"):
            layers = folder.layers()
            if layers is None:
                raise RequestError("this result has no heatmap")
            return Response(layers.png(rest[1][: -len(".png")]), "image/png", cache="private, max-age=3600")
        if name == "thumb" and len(rest) == 2 and rest[1].endswith(".jpg"):
            tile_id = parse_int(rest[1][: -len(".jpg")], "tile id")
            return Response(folder.tile_thumbnail(tile_id), "image/jpeg", cache="private, max-age=3600")
        if name == "files" and len(rest) == 2:
            return self.result_file(folder.path, rest[1])
        raise RequestError(f"no such page: /s/{number}/{'/'.join(rest)}")

    # -- pages -----------------------------------------------------------------------------------
    def index(self) -> Response:
        """The batch index page, or a redirect to the one slide's viewer."""
        if isinstance(self.result, ScoreView):
            return Response(b"", "text/plain", status=302, Location="/s/0/")
        from wsi_her2.viewer.report_html import batch_index_html

        return Response(batch_index_html(self.result), CONTENT_TYPES[".html"])

    def viewer_page(self) -> Response:
        """The viewer page (a static template; it fetches ``api/info.json``)."""
        return Response((self.static / "viewer.html").read_bytes(), CONTENT_TYPES[".html"])

    def report_page(self, folder: ScoreView) -> Response:
        """The slide's self-contained report, rendered on request."""
        from wsi_her2.viewer.report_html import render_report

        return Response(render_report(folder), CONTENT_TYPES[".html"])

    def info(self, folder: ScoreView, number: int) -> dict[str, Any]:
        """What the viewer page needs, as JSON."""
        tiler = folder.tiler()  # opens the slide, so slide_message is final
        layers = folder.layers()
        overlay = None
        if layers is not None:
            rows, cols = layers.grid_shape
            overlay = {
                "placement": layers.placement(),
                "stride": layers.stride,
                "tile_size": layers.tile_size,
                "rows": rows,
                "cols": cols,
                "channels": layers.describe(),
                "default": layers.channels[0],
            }
        top = folder.top_tiles()
        for tiles in top.values():
            for tile in tiles:
                tile["thumb"] = f"thumb/{tile['tile_id']}.jpg" if folder.slide_path is not None else None
        batch = isinstance(self.result, BatchFolder)
        previous, following = self._neighbours(number)
        return {
            "number": number,
            "summary": folder.summary(),
            "classes": list(folder.classes),
            "class_colors": _class_colors(folder.classes),
            "slide": {
                "width": tiler.width,
                "height": tiler.height,
                "available": tiler.reader is not None,
                "message": folder.slide_message,
                "dzi": "slide.dzi",
            },
            "overlay": overlay,
            "top_tiles": top,
            "links": {
                "report_html": "report.html",
                "report_json": "files/report.json",
                "tiles_csv": "files/tiles.csv" if (folder.path / "tiles.csv").is_file() else None,
                "index": "/" if batch else None,
                "previous": None if previous is None else f"/s/{previous}/",
                "next": None if following is None else f"/s/{following}/",
            },
        }

    def _neighbours(self, number: int) -> tuple[int | None, int | None]:
        """The previous and next slides of a batch that have a result folder."""
        if not isinstance(self.result, BatchFolder):
            return None, None
        viewable = [i for i, e in enumerate(self.result.entries) if e.folder is not None]
        before = [i for i in viewable if i < number]
        after = [i for i in viewable if i > number]
        return (before[-1] if before else None), (after[0] if after else None)

    def static_file(self, segments: list[str]) -> Response:
        """A file of the package's static folder."""
        if not segments:
            raise RequestError("no such file")
        target = self.static.joinpath(*segments)
        try:
            resolved = target.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise RequestError(f"no such file: /static/{'/'.join(segments)}") from exc
        if not resolved.is_relative_to(self.static) or not resolved.is_file():
            raise RequestError(f"no such file: /static/{'/'.join(segments)}")
        content_type = CONTENT_TYPES.get(resolved.suffix.lower(), "application/octet-stream")
        return Response(resolved.read_bytes(), content_type, cache="max-age=300")

    def result_file(self, folder: Path, name: str) -> Response:
        """A file directly in a result folder (of the served types only)."""
        path = safe_child(folder, name)
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return Response(path.read_bytes(), content_type)


def _class_colors(classes: tuple[str, ...]) -> dict[str, str]:
    from wsi_her2.her2 import CLASS_COLORS_RGB

    return {c: "#" + "".join(f"{v:02x}" for v in CLASS_COLORS_RGB.get(c, (128, 128, 128))) for c in classes}


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values or len(values) != 1:
        return None
    return values[0]


def split_path(path: str) -> list[str]:
    """URL path segments, each percent-decoded, refusing anything that could leave a folder.

    The path is split on ``/`` before decoding, so ``%2F`` cannot add a level; after decoding, a
    segment that is empty (``//``), ``.`` or ``..``, starts with a dot, or holds ``/``, ``\\``,
    ``:`` or NUL is refused. A trailing ``/`` is allowed.

    Raises:
        RequestError: 404 for such a path, 400 when it is not a path at all.
    """
    if not path.startswith("/"):
        raise RequestError(f"not a path: {path!r}", status=400)
    raw = path[1:]
    if raw.endswith("/"):
        raw = raw[:-1]
    if not raw:
        return []
    segments = []
    for part in raw.split("/"):
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError as exc:
            raise RequestError(f"not a path: {path!r}", status=400) from exc
        if not segment or segment.startswith(".") or any(ch in segment for ch in "/\\:\x00"):
            raise RequestError(f"no such page: {path}")
        segments.append(segment)
    return segments


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "wsi-her2-viewer"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _not_allowed(self) -> None:
        self._send(Response("method not allowed\n", "text/plain; charset=utf-8", status=405, Allow="GET, HEAD"))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers unknown methods with 501; for this server they are a client error.
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed"
        super().send_error(code, message, explain)

    def _answer(self, head: bool) -> None:
        try:
            if len(self.headers.get_all("Host") or []) > 1:
                response = Response("more than one Host header\n", "text/plain; charset=utf-8", status=400)
            elif not self._host_allowed():
                response = Response("forbidden host\n", "text/plain; charset=utf-8", status=403)
            else:
                response = self.server.app.handle(self.path)
        except RequestError as exc:
            response = self._error(exc.status, exc.message)
        except Exception:  # a bug or an unreadable file must not kill the server
            log.exception("error answering %s", self.path)
            response = self._error(500, "internal error (see the log)")
        self._send(response, head=head)

    def setup(self) -> None:
        super().setup()
        # Every read and write waits at most this long: an idle or stalled client is cut off.
        self.connection.settimeout(self.server.idle_timeout_s)

    def _host_allowed(self) -> bool:
        if not self.server.check_host:
            return True
        host = self.headers.get("Host", "").strip().lower()
        name = host if host.endswith("]") or host.count(":") > 1 else host.rsplit(":", 1)[0]
        if name.startswith("[") and "]" in name:
            name = name[: name.index("]") + 1]
        name = name.removesuffix(".")  # "localhost." is the same name, fully qualified
        return name in LOOPBACK_NAMES or name == self.server.host_name

    def _error(self, status: int, message: str) -> Response:
        if "/api/" in self.path.split("?")[0]:
            return json_response({"error": message}, status=status)
        phrase = HTTPStatus(status).phrase
        page = (
            f"<!doctype html><title>{status} {phrase}</title><h1>{status} {phrase}</h1><p>{html.escape(message)}</p>\n"
        )
        return Response(page, CONTENT_TYPES[".html"], status=status)

    def _send(self, response: Response, head: bool = False) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", CSP)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(response.body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):  # the browser went away
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Connections the kernel queues before accept (the default 5 makes a burst wait seconds for SYN retries).
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: ViewerApp,
        check_host: bool,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.check_host = check_host
        self.host_name = address[0].lower()
        self.idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve a connection in its own thread, or answer 503 at once when all slots are taken."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nserver busy\n"
)


class ViewerServer:
    """The viewer of a result folder, served from a background thread.

    Use as a context manager, or :meth:`start` then :meth:`stop`::

        with ViewerServer("out") as server:
            print(server.url)
    """

    def __init__(
        self,
        result: str | Path | ScoreView | BatchFolder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        slide: str | Path | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """Open the result and bind the socket (nothing is served until :meth:`start`).

        Args:
            result: a ``score`` or ``batch`` output folder (or one already loaded).
            host: the address to listen on; 127.0.0.1 (this machine only) by default.
            port: the TCP port; 0 picks a free one.
            slide: the slide file of a score folder, when it moved since scoring.
            idle_timeout_s: a connection whose client sends nothing for this long is closed.
            max_connections: connections served at once; more are answered 503 at once.

        Raises:
            InputNotFoundError: not a result folder.
            ConfigError: the address cannot be bound (port in use, bad host).
        """
        if isinstance(result, (ScoreView, BatchFolder)):
            loaded = result
        else:
            loaded = load_result(result, slide=slide)
        self.app = ViewerApp(loaded)
        if not 0 <= port <= 65535:
            self.app.close()
            raise ConfigError(f"--port must be 0-65535, got {port}")
        if not (idle_timeout_s > 0 and max_connections >= 1):
            self.app.close()
            raise ConfigError("the idle timeout and the connection limit must be positive")
        try:
            self._server = _Server(
                (host, port),
                self.app,
                check_host=_is_loopback(host),
                idle_timeout_s=idle_timeout_s,
                max_connections=max_connections,
            )
        except (OSError, OverflowError) as exc:
            self.app.close()
            raise ConfigError(
                f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
                hint="choose another --port, or --port 0 for a free one",
            ) from exc
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        """Serve in a daemon thread; returns :attr:`url`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="wsi-her2-viewer", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving, close the socket and the slides."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self.app.close()

    def __enter__(self) -> ViewerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
