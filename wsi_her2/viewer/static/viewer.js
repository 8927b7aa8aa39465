/* wsi-her2 viewer: the slide (Deep Zoom) with the HER2 heatmap over it, a readout and the score.
 * Everything it loads comes from the local server (api/info.json, slide.dzi, overlay/*.png, thumb/*.jpg).
 * DOM is built with textContent only: names and values from result files are never parsed as HTML.
 * window.wsiViewer exposes the state (viewer, overlay, settled()) for tests and the curious. */
(function () {
  "use strict";

  const state = {
    info: null,
    viewer: null,
    overlay: null,
    channel: null,
    opacity: 0.5,
    pinned: false,
    readoutKey: null,
    lastReadout: null,
    animating: false,
    cache: new Map(),
    highlight: null,
    overlayToken: 0,
    settled: function () {
      const v = state.viewer;
      if (!v || !v.world || v.world.getItemCount() === 0 || state.animating) return false;
      if (state.info && state.info.overlay && !state.overlay) return false;
      for (let i = 0; i < v.world.getItemCount(); i++) {
        if (!v.world.getItemAt(i).getFullyLoaded()) return false;
      }
      return true;
    },
  };
  window.wsiViewer = state;

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined) continue;
        if (key === "text") node.textContent = value;
        else if (key === "style") node.style.cssText = value;
        else if (key === "class") node.className = value;
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value);
      }
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function pct(v) {
    return typeof v === "number" ? (100 * v).toFixed(1) + "%" : "–";
  }

  function num(v) {
    if (typeof v !== "number") return v === null || v === undefined ? "–" : String(v);
    return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(3);
  }

  function banner(message, isError) {
    const node = document.getElementById("banner");
    node.textContent = message;
    node.hidden = false;
    node.classList.toggle("error", !!isError);
  }

  function colorOf(cls) {
    return (state.info && state.info.class_colors[cls]) || "#888";
  }

  const GROUP_COLORS = { negative: "#3b6fb6", equivocal: "#c77c1e", positive: "#b83232" };

  function kvTable(rows) {
    return el("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) =>
      el("tr", null, [el("th", null, [k]), el("td", null, [v])])));
  }

  function fractionBar(fractions) {
    return el("div", { class: "bar" }, Object.entries(fractions || {}).map(([c, v]) =>
      el("span", { style: "width:" + Math.max(0, 100 * v).toFixed(2) + "%;background:" + colorOf(c),
                   title: c + ": " + pct(v) })));
  }

  // -- side panel ------------------------------------------------------------------------------
  function renderSummary(info) {
    const s = info.summary;
    const box = document.getElementById("score");
    box.replaceChildren();
    box.append(el("h2", { text: s.name }));
    if (s.status !== "done") {
      box.append(el("p", { class: "note", text: "No score (" + s.status + "): " + (s.message || "") }));
      return;
    }
    box.append(el("p", null, [
      el("span", { class: "score-badge", id: "score-value", style: "background:" + colorOf(s.score), text: "HER2 " + s.score }),
      el("span", { class: "group", style: "background:" + (GROUP_COLORS[s.clinical_group] || "#777"), text: s.clinical_group }),
    ]));
    const others = Object.entries(s.rules || {}).filter(([k]) => k !== s.rule).map(([k, v]) => k + ": " + v).join(", ");
    const dropped = Object.entries(s.n_tiles_dropped || {}).map(([k, v]) => k + " " + v).join(", ");
    const basis = s.rule === "cells" ? "cells" : "tissue";
    box.append(kvTable([
      ["clinical group", s.clinical_action],
      ["rule", s.rule],
      others ? ["other rules", others] : null,
      s.her2_low !== null && s.her2_low !== undefined ? ["HER2-low", s.her2_low ? "yes (1+, or 2+ with negative ISH)" : "no"] : null,
      s.ultralow_like !== null && s.ultralow_like !== undefined ? ["ultralow-like", s.ultralow_like ? "yes" : "no"] : null,
      s.confidence !== null && s.confidence !== undefined ? ["confidence", pct(s.confidence) + " of bootstrap resamples agree"] : null,
      ["tiles", num(s.n_tiles_scored) + " scored" + (dropped ? ", dropped: " + dropped : "")],
    ]));
    box.append(el("h2", { text: "Class fractions (" + basis + ")" }), fractionBar(s.class_fractions));
    box.append(kvTable(Object.entries(s.class_fractions || {}).map(([c, v]) => [
      el("span", null, [el("span", { class: "swatch", style: "background:" + colorOf(c) }), c]),
      pct(v) + (s.cell_counts && s.cell_counts[c] !== undefined ? " (" + num(s.cell_counts[c]) + " cells)" : ""),
    ])));
    for (const note of s.notes || []) box.append(el("p", { class: "note", text: note }));
  }

  function renderModel(info) {
    const s = info.summary;
    const card = s.model_card || {};
    const model = s.model || {};
    const box = document.getElementById("model");
    box.replaceChildren(el("h2", { text: "Model" }));
    const keys = ["name", "kind", "architecture", "classes", "stain", "tile_size_um", "work_mpp", "weights_sha256"];
    box.append(kvTable(keys.map((k) => {
      const v = card[k] !== undefined ? card[k] : model[k];
      if (v === undefined || v === null || v === "") return null;
      return [k.replace(/_/g, " "), Array.isArray(v) ? v.join(", ") : String(v)];
    })));
    box.append(el("details", null, [el("summary", { text: "full model card" }), el("pre", { text: JSON.stringify(card, null, 2) })]));
    for (const caveat of s.caveats || []) box.append(el("p", { class: "note", text: caveat }));
    const slide = s.slide || {};
    box.append(el("h2", { text: "Slide" }), kvTable([
      ["file", slide.path || "–"],
      ["size", num(slide.width) + " × " + num(slide.height) + " px"],
      ["µm/px", num(slide.mpp)],
      ["tile", num((s.grid || {}).tile_size_level0_px) + " level-0 px (" + num((s.grid || {}).tile_size_um) + " µm)"],
    ]));
  }

  function renderLinks(info) {
    const nav = document.getElementById("links");
    const links = info.links;
    const items = [
      links.index ? ["all slides", links.index] : null,
      links.previous ? ["← previous", links.previous] : null,
      links.next ? ["next →", links.next] : null,
      ["HTML report", links.report_html],
      ["report.json", links.report_json],
      links.tiles_csv ? ["tiles.csv", links.tiles_csv] : null,
    ].filter(Boolean);
    nav.replaceChildren(...items.map(([text, href]) => el("a", { href: href, text: text })));
    document.getElementById("title").textContent = info.summary.name;
    document.title = "HER2 " + (info.summary.score || info.summary.status) + " · " + info.summary.name;
  }

  function renderTopTiles(info) {
    const box = document.getElementById("top-tiles");
    box.replaceChildren(el("h2", { text: "Top tiles per class" }));
    if (info.summary.status !== "done") return;
    for (const [cls, tiles] of Object.entries(info.top_tiles || {})) {
      const row = el("div", { class: "thumbs" });
      for (const tile of tiles) {
        const label = "tile " + tile.tile_id + ": " + tile.column + " = " + num(tile.value);
        const content = tile.thumb ? el("img", { src: tile.thumb, alt: label, loading: "lazy" })
                                   : el("span", { class: "novalue", text: "#" + tile.tile_id });
        row.append(el("button", { type: "button", title: label, class: "thumb", "data-tile": tile.tile_id,
                                  style: "border-color:" + colorOf(cls), onclick: () => goToTile(tile) }, [content]));
      }
      if (!tiles.length) row.append(el("span", { class: "muted", text: "none predicted " + cls }));
      box.append(el("div", null, [el("span", { class: "swatch", style: "background:" + colorOf(cls) }), cls]), row);
    }
  }

  function renderLegend(name) {
    const box = document.getElementById("legend");
    const channel = state.info.overlay.channels.find((c) => c.name === name);
    box.replaceChildren();
    if (!channel) return;
    const legend = channel.legend;
    if (legend.kind === "classes") {
      box.append(el("div", { class: "legend-classes" }, legend.classes.map((c) =>
        el("span", { class: "item" }, [el("span", { class: "swatch", style: "background:" + c.color }), c.name]))));
    } else {
      box.append(
        el("div", { class: "colorbar", style: "background:linear-gradient(to right," + legend.colors.join(",") + ")" }),
        el("div", { class: "colorbar-labels" }, [el("span", { text: num(legend.min) }), el("span", { text: channel.label }),
                                                 el("span", { text: num(legend.max) })]));
    }
  }

  // -- layers ----------------------------------------------------------------------------------
  function setChannel(name) {
    const info = state.info;
    const viewer = state.viewer;
    const place = info.overlay.placement;
    const width = info.slide.width;
    const token = ++state.overlayToken;
    const old = state.overlay;
    state.overlay = null;
    state.channel = name;
    viewer.addTiledImage({
      tileSource: { type: "image", url: "overlay/" + encodeURIComponent(name) + ".png", buildPyramid: false },
      x: place.x / width,
      y: place.y / width,
      width: place.width / width,
      opacity: state.opacity,
      success: function (event) {
        if (token !== state.overlayToken) {
          viewer.world.removeItem(event.item);
          return;
        }
        if (old) viewer.world.removeItem(old);
        state.overlay = event.item;
      },
      error: function (event) {
        console.error("overlay " + name + " could not be loaded: " + (event.message || ""));
      },
    });
    document.getElementById("channel").value = name;
    renderLegend(name);
  }

  function setOpacity(value) {
    state.opacity = Math.max(0, Math.min(1, value));
    document.getElementById("opacity-value").textContent = Math.round(100 * state.opacity) + "%";
    if (state.overlay) state.overlay.setOpacity(state.opacity);
  }

  function setupLayerControls(info) {
    document.getElementById("layer").hidden = false;
    const select = document.getElementById("channel");
    select.replaceChildren(...info.overlay.channels.map((c) => el("option", { value: c.name, text: c.label })));
    select.addEventListener("change", () => setChannel(select.value));
    const slider = document.getElementById("opacity");
    slider.addEventListener("input", () => setOpacity(slider.value / 100));
    setOpacity(slider.value / 100);
  }

  // -- readout ---------------------------------------------------------------------------------
  function imagePointOf(pixel) {
    const item = state.viewer.world.getItemAt(0);
    return item.viewportToImageCoordinates(state.viewer.viewport.pointFromPixel(pixel));
  }

  function gridCellOf(point) {
    const overlay = state.info.overlay;
    if (!overlay) return undefined;
    const col = Math.floor((point.x - overlay.placement.x) / overlay.stride);
    const row = Math.floor((point.y - overlay.placement.y) / overlay.stride);
    if (col < 0 || row < 0 || col >= overlay.cols || row >= overlay.rows) return null;
    return { col: col, row: row };
  }

  function showReadoutAt(cell) {
    const box = document.getElementById("readout");
    if (cell === undefined) {
      box.replaceChildren(el("span", { class: "muted", text: "this result has no tiles" }));
      return;
    }
    if (!cell) {
      state.readoutKey = null;
      box.replaceChildren(el("span", { class: "muted", text: "outside the tile grid" }));
      return;
    }
    const key = cell.col + "_" + cell.row;
    if (key === state.readoutKey) return;
    state.readoutKey = key;
    const cached = state.cache.get(key);
    if (cached) {
      renderReadout(cached);
      return;
    }
    fetch("api/tile?col=" + cell.col + "&row=" + cell.row)
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
      .then((data) => {
        state.cache.set(key, data);
        if (state.readoutKey === key) renderReadout(data);
      })
      .catch((err) => console.error("tile readout failed: " + err.message));
  }

  function renderReadout(data) {
    state.lastReadout = data;
    const box = document.getElementById("readout");
    box.classList.remove("muted");
    const where = "col " + data.col + ", row " + data.row;
    if (!data.tile && !data.values) {
      box.replaceChildren(el("div", { class: "muted", "data-empty": "1", text: where + ": no tile here (background)" }));
      return;
    }
    const tile = data.tile || {};
    const values = data.values || {};
    const predicted = tile.predicted_class || (values.predicted_class !== null && values.predicted_class !== undefined
      ? data.classes[Math.round(values.predicted_class)] : null);
    const header = el("div", { id: "readout-header" }, [
      predicted ? el("span", { class: "swatch", style: "background:" + colorOf(predicted) }) : null,
      el("strong", { id: "readout-class", text: predicted ? "class " + predicted : "not scored" + (tile.drop_reason ? ": " + tile.drop_reason : "") }),
      " · " + where + (tile.tile_id !== undefined ? " · tile #" + tile.tile_id : ""),
    ]);
    const rows = [];
    if (tile.x_level0_px !== undefined) rows.push(["level-0 x, y", num(tile.x_level0_px) + ", " + num(tile.y_level0_px)]);
    for (const cls of data.classes) {
      const column = data.probability_columns[cls];
      const v = tile[column] !== undefined && tile[column] !== null ? tile[column] : values[column];
      if (v === undefined || v === null) continue;
      rows.push([column, el("span", null, [pct(v), el("span", { class: "valuebar", style: "width:" + Math.round(80 * v) + "px;background:" + colorOf(cls) })])]);
    }
    const tissue = tile.tissue_fraction !== undefined && tile.tissue_fraction !== null ? tile.tissue_fraction : values.tissue_fraction;
    rows.push(["tissue fraction", pct(tissue)]);
    for (const [column, label] of Object.entries(data.value_columns || {})) {
      const v = tile[column] !== undefined ? tile[column] : values[column];
      if (v !== undefined && v !== null) rows.push([label, num(v)]);
    }
    if (tile.scored === false) rows.push(["dropped", tile.drop_reason || "yes"]);
    box.replaceChildren(header, kvTable(rows));
  }

  function setupTracker() {
    const viewer = state.viewer;
    new OpenSeadragon.MouseTracker({
      element: viewer.canvas,
      moveHandler: function (event) {
        if (state.pinned) return;
        showReadoutAt(gridCellOf(imagePointOf(event.position)));
      },
    });
    viewer.addHandler("canvas-click", function (event) {
      if (!event.quick) return;
      state.pinned = !state.pinned;
      state.readoutKey = null;
      showReadoutAt(gridCellOf(imagePointOf(event.position)));
    });
  }

  function goToTile(tile) {
    const viewer = state.viewer;
    const item = viewer.world.getItemAt(0);
    const w = tile.width || state.info.overlay.tile_size;
    const h = tile.height || w;
    const rect = item.imageToViewportRectangle(tile.x, tile.y, w, h);
    viewer.viewport.fitBounds(new OpenSeadragon.Rect(rect.x - rect.width, rect.y - rect.height, rect.width * 3, rect.height * 3));
    if (state.highlight) viewer.removeOverlay(state.highlight);
    state.highlight = el("div", { class: "highlight", id: "tile-highlight" });
    viewer.addOverlay({ element: state.highlight, location: rect });
    state.pinned = true;
    state.readoutKey = null;
    showReadoutAt(gridCellOf({ x: tile.x + w / 2, y: tile.y + h / 2 }));
  }

  // -- start -----------------------------------------------------------------------------------
  function init(info) {
    state.info = info;
    renderLinks(info);
    renderSummary(info);
    renderModel(info);
    renderTopTiles(info);
    if (info.slide.message) banner(info.slide.message, false);
    const viewer = OpenSeadragon({
      element: document.getElementById("viewer"),
      prefixUrl: "/static/vendor/openseadragon/images/",
      tileSources: info.slide.dzi,
      drawer: "canvas",
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      showRotationControl: false,
      maxZoomPixelRatio: 2,
      visibilityRatio: 0.5,
      gestureSettingsMouse: { clickToZoom: false },
    });
    state.viewer = viewer;
    viewer.addHandler("animation-start", () => { state.animating = true; });
    viewer.addHandler("animation-finish", () => { state.animating = false; });
    viewer.addHandler("open-failed", (event) => banner("The slide could not be opened: " + (event.message || ""), true));
    viewer.addHandler("open", function () {
      if (info.overlay) {
        setupLayerControls(info);
        setChannel(info.overlay.default);
      }
      setupTracker();
    });
  }

  fetch("api/info.json")
    .then((r) => (r.ok ? r.json() : r.json().then((e) => Promise.reject(new Error(e.error || "HTTP " + r.status)))))
    .then(init)
    .catch((err) => {
      banner("Cannot show this result: " + err.message, true);
      console.error(err);
    });
})();
