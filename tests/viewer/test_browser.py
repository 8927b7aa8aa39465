"""The viewer in headless Chromium: it loads cleanly, draws the slide and the heatmap where the heatmap says,
and its controls (opacity, layer switch, hover readout, top tiles) work. Skips without chromium/chromedriver."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.viewer.conftest import CLASSES, TILE, FakeResult, no_tissue_report

pytestmark = pytest.mark.browser


def wait_for(driver: Any, script: str, timeout_s: float = 30.0) -> Any:
    """Poll a JS expression until it is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {script}")


def settle(driver: Any) -> None:
    """Wait until every layer is fully loaded, nothing animates, and two frames have been drawn."""
    wait_for(driver, "window.wsiViewer && window.wsiViewer.settled()")
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.wsiViewer.viewer.forceRedraw();"
        "requestAnimationFrame(() => requestAnimationFrame(() => requestAnimationFrame(() => done(true))));"
    )
    wait_for(driver, "window.wsiViewer.settled()")


def open_viewer(driver: Any, url: str) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    settle(driver)


def console_errors(driver: Any) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def screen_xy(driver: Any, x: float, y: float) -> tuple[float, float]:
    """Page (CSS = screenshot, at device scale 1) position of level-0 point (x, y)."""
    return tuple(
        driver.execute_script(
            "const v = window.wsiViewer.viewer; const item = v.world.getItemAt(0);"
            "const p = v.viewport.pixelFromPoint(item.imageToViewportCoordinates(arguments[0], arguments[1]), true);"
            "const r = v.container.getBoundingClientRect(); return [r.left + p.x, r.top + p.y];",
            x,
            y,
        )
    )


def screenshot(driver: Any) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(driver.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def pixel(image: np.ndarray, xy: tuple[float, float], radius: int = 3) -> np.ndarray:
    """Median colour of a small square around a page position."""
    x, y = round(xy[0]), round(xy[1])
    patch = image[y - radius : y + radius + 1, x - radius : x + radius + 1].reshape(-1, 3)
    return np.median(patch, axis=0)


def set_opacity(driver: Any, percent: int) -> None:
    """Move the slider as a user would (its value, then the input event the page listens to)."""
    driver.execute_script(
        "const s = document.getElementById('opacity'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        percent,
    )
    settle(driver)


def test_page_loads_clean_and_draws_both_layers(browser: Any, deep_server: Any, deep_result: FakeResult) -> None:
    from wsi_her2.her2 import CLASS_COLORS_RGB

    open_viewer(browser, deep_server.url)
    assert browser.execute_script("return window.wsiViewer.viewer.world.getItemCount()") == 2
    assert "HER2 3+" in browser.find_element("id", "score-value").text
    assert [e.text for e in browser.find_elements("css selector", "#legend .item")] == list(CLASSES)

    set_opacity(browser, 100)
    image = screenshot(browser)
    for cls in CLASSES:
        col, row = deep_result.tile_at(cls)
        got = pixel(image, screen_xy(browser, *deep_result.centre(col, row)))
        assert np.abs(got - CLASS_COLORS_RGB[cls]).max() <= 3, (cls, got)
    # Background (no tile) and the dropped tile show the slide, not a class colour.
    for col, row in ((0, 0), (1, 0)):
        got = pixel(image, screen_xy(browser, *deep_result.centre(col, row)))
        assert min(np.abs(got - c).max() for c in (CLASS_COLORS_RGB[k] for k in CLASSES)) > 20, got

    set_opacity(browser, 0)
    image = screenshot(browser)
    col, row = deep_result.tile_at("3+")
    sx, sy = screen_xy(browser, *deep_result.centre(col, row))
    patch = image[round(sy) - 20 : round(sy) + 20, round(sx) - 20 : round(sx) + 20].astype(float)
    assert patch.std() > 4  # tissue texture: the slide layer is drawn
    from wsi_her2.slide import open_slide

    with open_slide(deep_result.slide) as reader:
        truth = reader.read_region(col * TILE, row * TILE, TILE // 4, TILE // 4, 1)
    assert np.abs(patch.reshape(-1, 3).mean(axis=0) - truth.reshape(-1, 3).mean(axis=0)).max() < 20
    slide_only = pixel(image, (sx, sy))

    set_opacity(browser, 50)
    half = pixel(screenshot(browser), (sx, sy))
    expected = (slide_only + np.array(CLASS_COLORS_RGB["3+"])) / 2
    assert np.abs(half - expected).max() <= 12, (half, expected)
    assert browser.find_element("id", "opacity-value").text == "50%"
    assert console_errors(browser) == []


def test_layer_switch_shows_a_probability_map(browser: Any, deep_server: Any, deep_result: FakeResult) -> None:
    from selenium.webdriver.support.ui import Select

    from wsi_her2.viewer.layers import viridis_lut

    open_viewer(browser, deep_server.url)
    Select(browser.find_element("id", "channel")).select_by_value("p(3+)")
    wait_for(browser, "window.wsiViewer.channel === 'p(3+)' && window.wsiViewer.overlay !== null")
    assert browser.execute_script("return window.wsiViewer.viewer.world.getItemCount()") == 2  # replaced, not added
    set_opacity(browser, 100)
    image = screenshot(browser)
    lut = viridis_lut()
    for cls in ("3+", "0"):
        col, row = deep_result.tile_at(cls)
        got = pixel(image, screen_xy(browser, *deep_result.centre(col, row)))
        want = lut[round(deep_result.probability(col, row, "3+") * 255)]
        assert np.abs(got - want).max() <= 3, (cls, got, want)
    assert "probability of 3+" in browser.find_element("id", "legend").text
    assert console_errors(browser) == []


def hover(driver: Any, xy: tuple[float, float]) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(round(xy[0]), round(xy[1]))
    builder.perform()


def test_hover_readout(browser: Any, dab_server: Any, dab_result: FakeResult) -> None:
    open_viewer(browser, dab_server.url)
    col, row = dab_result.tile_at("2+")
    hover(browser, screen_xy(browser, *dab_result.centre(col, row)))
    wait_for(browser, "document.getElementById('readout-class') && "
                      "document.getElementById('readout-class').textContent === 'class 2+'")  # fmt: skip
    text = browser.find_element("id", "readout").text
    assert f"col {col}, row {row}" in text
    assert "fraction_cells(2+)" in text and "85.0%" in text
    assert "tissue fraction" in text and "90.0%" in text
    assert "cells 2+" in text and "mean membrane DAB OD" in text
    hover(browser, screen_xy(browser, *dab_result.centre(0, 0)))
    wait_for(browser, "document.querySelector('#readout [data-empty]') !== null")
    hover(browser, screen_xy(browser, *dab_result.centre(1, 0)))
    wait_for(browser, "(document.getElementById('readout-class') || {}).textContent === 'not scored: blur'")
    assert console_errors(browser) == []


def test_top_tile_thumbnail_jumps_to_the_tile(browser: Any, deep_server: Any, deep_result: FakeResult) -> None:
    open_viewer(browser, deep_server.url)
    wait_for(
        browser, "Array.from(document.querySelectorAll('.thumb img')).every(i => i.complete && i.naturalWidth > 0)"
    )
    home_zoom = browser.execute_script("return window.wsiViewer.viewer.viewport.getZoom(true)")
    button = browser.find_elements("css selector", "button.thumb")[0]
    tile_id = int(button.get_attribute("data-tile"))
    browser.execute_script("arguments[0].scrollIntoView()", button)
    button.click()
    settle(browser)
    assert browser.execute_script("return window.wsiViewer.viewer.viewport.getZoom(true)") > 2 * home_zoom
    assert browser.find_element("id", "tile-highlight").is_displayed()
    assert f"tile #{tile_id}" in browser.find_element("id", "readout").text
    # The tile is now in the middle of the view.
    centre = browser.execute_script(
        "const v = window.wsiViewer.viewer; const c = v.viewport.getCenter(true);"
        "const p = v.world.getItemAt(0).viewportToImageCoordinates(c); return [p.x, p.y];"
    )
    rows = browser.execute_script("return window.wsiViewer.info.top_tiles")
    tile = next(t for tiles in rows.values() for t in tiles if t["tile_id"] == tile_id)
    assert abs(centre[0] - (tile["x"] + TILE / 2)) < TILE / 4 and abs(centre[1] - (tile["y"] + TILE / 2)) < TILE / 4
    assert console_errors(browser) == []


def test_missing_slide_and_no_tissue_pages_load_clean(browser: Any, tmp_path: Path, viewer_slide: Path) -> None:
    import json
    import shutil

    from tests.viewer.conftest import HEIGHT, WIDTH, make_score_folder
    from wsi_her2.viewer.server import ViewerServer

    moved = tmp_path / "moved.svs"
    shutil.copy(viewer_slide, moved)
    result = make_score_folder(tmp_path / "out", moved)
    moved.unlink()
    with ViewerServer(result.folder) as server:
        open_viewer(browser, server.url)
        assert "slide file not found" in browser.find_element("id", "banner").text
        assert browser.execute_script("return window.wsiViewer.viewer.world.getItemCount()") == 2
        assert console_errors(browser) == []
    glass = tmp_path / "glass"
    glass.mkdir()
    report = no_tissue_report(str(viewer_slide), width=WIDTH, height=HEIGHT, mpp_used=0.5)
    (glass / "report.json").write_text(json.dumps(report))
    with ViewerServer(glass) as server:
        open_viewer(browser, server.url)
        assert "no tissue found" in browser.find_element("id", "score").text
        hover(browser, (300, 300))
        wait_for(browser, "document.getElementById('readout').textContent === 'this result has no tiles'")
        assert console_errors(browser) == []


def test_traversal_url_is_404_in_the_browser(browser: Any, deep_server: Any) -> None:
    browser.get(deep_server.url + "s/0/files/..%2freport.json")
    assert "404" in browser.title
    browser.get(deep_server.url + "static/%2e%2e/%2e%2e/report.json")  # the browser folds %2e%2e itself
    assert "404" in browser.title
    browser.get_log("browser")


def test_batch_index_links_to_each_viewer(browser: Any, batch_server: Any) -> None:
    browser.get_log("browser")
    browser.get(batch_server.url)
    links = browser.find_elements("css selector", "a[href^='/s/']")
    assert [link.get_attribute("href").split("/s/")[1] for link in links] == ["0/", "1/"]
    assert "failed" in browser.find_element("css selector", "table").text
    links[1].click()
    settle(browser)
    assert browser.find_element("link text", "all slides").get_attribute("href").endswith("/")
    assert browser.find_element("link text", "← previous").is_displayed()
    assert console_errors(browser) == []


def test_static_report_opens_offline_with_its_images(browser: Any, deep_result: FakeResult, tmp_path: Path) -> None:
    from wsi_her2.viewer.report_html import write_report

    path = write_report(deep_result.folder, tmp_path / "report.html")
    browser.get_log("browser")
    browser.get(path.as_uri())
    assert "HER2 3+" in browser.find_element("tag name", "body").text
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.src.slice(0, 5)])"
    )
    assert len(images) >= 5 and all(ok and width > 0 and src == "data:" for ok, width, src in images)
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []  # nothing fetched: self-contained
    assert console_errors(browser) == []
