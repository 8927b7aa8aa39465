"""`wsi-her2 view` and `wsi-her2 report` from the command line."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.viewer.conftest import make_score_folder


@pytest.fixture(scope="module")
def score_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wsi_her2.synthetic import write_synthetic_slide

    root = tmp_path_factory.mktemp("cli-view")
    slide = root / "s.svs"
    write_synthetic_slide(slide, width=2048, height=1536, mpp=0.5, stain="ihc", tissue_map=np.ones((4, 4), bool),
                          downsamples=(1, 4))  # fmt: skip
    return make_score_folder(root / "out", slide, width=2048, height=1536).folder


def test_report_writes_the_html_and_prints_its_path(
    run_cli: Callable[..., Any], score_folder: Path, tmp_path: Path
) -> None:
    result = run_cli("report", score_folder, "-o", tmp_path / "r.html", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "HER2 3+" in text and text.count('alt="tile ') == 4


def test_report_errors_have_exit_codes(run_cli: Callable[..., Any], tmp_path: Path, score_folder: Path) -> None:
    missing = run_cli("report", tmp_path / "nope")
    assert missing.exit_code == 3 and "not found" in missing.stderr
    assert run_cli("report", tmp_path).exit_code == 3  # a folder without report.json
    assert run_cli("report", score_folder, "--slide", tmp_path / "gone.svs").exit_code == 3
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert run_cli("report", score_folder, "-o", blocked / "r.html").exit_code == 10  # cannot write


def test_view_prints_the_url_serves_and_stops(
    run_cli: Callable[..., Any], score_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_her2_cli.view as view_module

    seen: dict[str, Any] = {}
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)

    def wait(server: Any) -> None:  # a user looks, then presses Ctrl-C
        with urllib.request.urlopen(server.url + "s/0/api/info.json") as response:
            seen["info"] = json.loads(response.read())
        seen["url"] = server.url
        raise KeyboardInterrupt

    monkeypatch.setattr(view_module, "_wait_for_interrupt", wait)
    result = run_cli("view", score_folder, "--no-browser")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == seen["url"] and seen["url"].startswith("http://127.0.0.1:")
    assert seen["info"]["summary"]["score"] == "3+"
    assert "Ctrl-C" in result.stderr and "viewer stopped" in result.stderr
    assert opened == []
    with pytest.raises(OSError):  # stopped: nothing listens any more
        urllib.request.urlopen(seen["url"], timeout=2)
    result = run_cli("view", score_folder, "-q")  # without --no-browser: the browser is opened on the URL
    assert result.exit_code == 0 and result.stderr == ""
    assert opened == [seen["url"]] == [result.stdout.strip()]


def test_view_errors(run_cli: Callable[..., Any], score_folder: Path, tmp_path: Path) -> None:
    assert run_cli("view", tmp_path / "nope", "--no-browser").exit_code == 3
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        busy = run_cli("view", score_folder, "--no-browser", "--port", sock.getsockname()[1])
    assert busy.exit_code == 2 and "--port 0" in busy.stderr
    assert run_cli("view", score_folder, "--port", "70000").exit_code == 2


def test_report_and_view_of_a_real_batch(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    """The batch command's own output folder (nested slide folders, a failed slide) read by report and view."""
    from wsi_her2.synthetic import write_synthetic_slide
    from wsi_her2.viewer.result import BatchFolder
    from wsi_her2.viewer.server import ViewerServer

    slides = tmp_path / "slides"
    (slides / "caseA").mkdir(parents=True)
    write_synthetic_slide(slides / "caseA" / "ihc.svs", width=2048, height=2048, mpp=0.25, stain="ihc",
                          tissue_fraction=0.6, seed=5)  # fmt: skip
    (slides / "broken.svs").write_text("not a slide")
    out = tmp_path / "out"
    result = run_cli("batch", slides, "-o", out, "--workers", "0")
    assert result.exit_code == 12, result.stderr  # the broken slide failed; the batch says so
    batch = BatchFolder(out)
    by_name = {e.name: e for e in batch.entries}
    assert by_name["caseA/ihc.svs"].status == "done" and by_name["caseA/ihc.svs"].folder == (out / "caseA/ihc.svs")
    assert by_name["broken.svs"].status == "failed" and by_name["broken.svs"].folder is None
    report = run_cli("report", out)
    assert report.exit_code == 0, report.stderr
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "caseA/ihc.svs" in text and "not a slide format" in text and text.count("HER2 report: ") == 1
    with ViewerServer(out) as server, urllib.request.urlopen(server.url) as response:
        page = response.read().decode()
    number = [e.name for e in batch.entries].index("caseA/ihc.svs")
    assert f'href="/s/{number}/"' in page
