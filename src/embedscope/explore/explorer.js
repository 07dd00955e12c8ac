(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("es-data").textContent);
  const N = D.path.length, is3d = D.is3d, $ = (id) => document.getElementById(id);
  const plot = $("plot"), stage = $("stage"), hover = $("hover"), detail = $("detail");
  const search = $("search"), colour = $("colour");
  const HOVER_PX = 128, DETAIL_PX = 192;  // thumbnails are scaled to these sizes on screen
  const el = (tag, cls, text) => { const e = document.createElement(tag);
    if (cls) e.className = cls; if (text !== undefined) e.textContent = String(text); return e; };
  // plotly renders a little HTML in legend names and titles: these travel entity-escaped
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = (v) => v === null || v === undefined ? "—"
    : typeof v === "number" ? String(Number(v.toPrecision(3))) : String(v);

  document.title = D.title;
  $("title").textContent = D.title;
  [["label", "label"]].concat(D.columns.map((c, k) => [String(k), c.name])).forEach(([v, t]) => {
    const o = el("option", null, t); o.value = v; colour.appendChild(o); });

  function thumb(i, px) {
    const t = D.thumb[i], box = el("div", "thumb");
    box.style.width = box.style.height = px + "px";
    box.dataset.cell = t;
    if (t < 0) {
      box.classList.add("none");
      box.textContent = t === -2 ? "image unreadable" : "no thumbnail";
      return box;
    }
    const per = D.cols * D.cols, atlas = Math.floor(t / per), cell = t % per;
    box.classList.add("es-a" + atlas);
    box.style.backgroundSize = (D.cols * px) + "px auto";
    box.style.backgroundPosition = (-(cell % D.cols) * px) + "px " + (-Math.floor(cell / D.cols) * px) + "px";
    return box;
  }

  function pathLine(path) {  // text nodes with a line-break chance after each "/"
    const line = el("div", "path");
    path.split("/").forEach((part, k, all) => { line.append(document.createTextNode(part + (k < all.length - 1 ? "/" : "")));
      if (k < all.length - 1) line.append(document.createElement("wbr")); });
    return line;
  }

  function describe(box, i, px) {
    box.replaceChildren();
    box.dataset.index = i;
    box.appendChild(thumb(i, px));
    const name = el("div", "label"), sw = el("span", "swatch");
    sw.style.background = D.colours[D.label[i]];
    name.append(sw, el("span", null, D.classes[D.label[i]]));
    box.append(name, pathLine(D.path[i]));
    if (D.columns.length) {
      const kv = el("dl", "kv");
      D.columns.forEach((c) => kv.append(el("dt", null, c.name), el("dd", null,
        c.kind === "number" ? fmt(c.values[i]) : (c.codes[i] < 0 ? "—" : c.categories[c.codes[i]]))));
      box.appendChild(kv);
    }
  }

  // ---- hover card, follows the mouse --------------------------------------------------
  let mouse = [0, 0];
  stage.addEventListener("mousemove", (ev) => { mouse = [ev.clientX, ev.clientY]; if (!hover.hidden) place(); });
  stage.addEventListener("mouseleave", () => { hover.hidden = true; });
  function place() {
    const r = stage.getBoundingClientRect(), w = hover.offsetWidth, h = hover.offsetHeight;
    let x = mouse[0] - r.left + 18, y = mouse[1] - r.top + 18;
    if (x + w > r.width - 8) x = mouse[0] - r.left - w - 18;
    if (y + h > r.height - 8) y = Math.max(8, r.height - h - 8);
    hover.style.left = Math.max(8, x) + "px"; hover.style.top = Math.max(8, y) + "px";
  }
  function showHover(i) { describe(hover, i, HOVER_PX); hover.hidden = false; place(); }

  // ---- pinned point with neighbours ------------------------------------------------------
  let selected = null;
  function select(i) {
    if (i === selected) return;  // 3D repeats its click while the button is held
    selected = i;
    detail.replaceChildren();
    const head = el("div", "head"), close = el("button", "close", "×");
    close.title = "Unpin"; close.addEventListener("click", unselect);
    head.append(el("div", "section", "Selected"), close);
    const card = el("div"); card.id = "detail-card";
    card.style.cssText = "display:flex;flex-direction:column;gap:6px";
    describe(card, i, DETAIL_PX);
    detail.append(head, card);
    detail.dataset.index = i;
    if (D.neighbors) {
      detail.appendChild(el("div", "section", "Nearest neighbours"));
      const grid = el("div"); grid.id = "neighbors";
      D.neighbors[i].forEach((j) => {
        const t = thumb(j, 60); t.title = D.classes[D.label[j]] + " — " + D.path[j];
        t.style.boxShadow = "0 0 0 1px #e2e5ea, inset 0 -3px 0 " + D.colours[D.label[j]];
        t.dataset.index = j; t.addEventListener("click", () => select(j)); grid.appendChild(t); });
      detail.appendChild(grid);
    }
    detail.hidden = false; $("hint").hidden = true;
    redraw();
  }
  function unselect() { selected = null; detail.hidden = true; $("hint").hidden = false; redraw(); }

  // ---- traces ----------------------------------------------------------------------------
  function visible() {
    const q = search.value.trim().toLowerCase(), idx = [];
    for (let i = 0; i < N; i++) {
      if (!q || D.classes[D.label[i]].toLowerCase().includes(q) || D.path[i].toLowerCase().includes(q)) idx.push(i);
    }
    return idx;
  }
  function groups() {  // categorical colourings: names, colours and each point's code
    if (colour.value === "label") return {key: "label", names: D.classes, colours: D.colours, code: (i) => D.label[i]};
    const c = D.columns[Number(colour.value)];
    if (c.kind !== "category") return null;
    return {key: "c" + colour.value, names: c.categories, code: (i) => c.codes[i],
      colours: c.categories.map((_, k) => D.palette[k % D.palette.length])};
  }
  const size = is3d ? 3 : 5;
  function points(idx, extra) {
    const t = {type: is3d ? "scatter3d" : "scattergl", mode: "markers", hoverinfo: "none",
      x: idx.map((i) => D.x[i]), y: idx.map((i) => D.y[i]), customdata: idx};
    if (is3d) t.z = idx.map((i) => D.z[i]);
    return Object.assign(t, extra);
  }
  function traces() {
    const idx = visible(), g = groups(), out = [];
    $("count").textContent = idx.length.toLocaleString() + " of " + N.toLocaleString() + " points shown";
    if (g) {
      const parts = g.names.map(() => []), none = [];
      idx.forEach((i) => { const k = g.code(i); (k < 0 ? none : parts[k]).push(i); });
      g.names.forEach((name, k) => out.push(points(parts[k], {name: esc(name), uid: g.key + "_" + k,
        marker: {size: size, opacity: 0.8, color: g.colours[k]}})));
      if (none.length) out.push(points(none, {name: "(no value)", uid: g.key + "_none",
        marker: {size: size, opacity: 0.6, color: D.missingColour}}));
    } else {
      const c = D.columns[Number(colour.value)];
      const lo = c.values.reduce((m, v) => v === null ? m : Math.min(m, v), Infinity);
      const hi = c.values.reduce((m, v) => v === null ? m : Math.max(m, v), -Infinity);
      const has = idx.filter((i) => c.values[i] !== null), none = idx.filter((i) => c.values[i] === null);
      out.push(points(has, {name: esc(c.name), uid: "n" + colour.value, showlegend: false,
        marker: {size: size, opacity: 0.8, color: has.map((i) => c.values[i]), colorscale: "Viridis",
          cmin: lo, cmax: hi, showscale: true,
          colorbar: {title: {text: esc(c.name), side: "right"}, thickness: 12, len: 0.6, outlinewidth: 0}}}));
      if (none.length) out.push(points(none, {name: "(no value)", uid: "n" + colour.value + "_none",
        marker: {size: size, opacity: 0.6, color: D.missingColour}}));
    }
    if (selected !== null) out.push(points([selected], {name: "selected", uid: "selected", showlegend: false,
      hoverinfo: "skip", marker: {size: is3d ? 10 : 16, symbol: "circle-open", color: "#111827",
        line: {color: "#111827", width: 2}}}));
    return out;
  }

  const axis = {showspikes: false, showticklabels: false, title: {text: ""}, gridcolor: "#eef0f3",
    zerolinecolor: "#dfe3e8", showbackground: true, backgroundcolor: "#fbfcfd", ticks: ""};
  function layout() {
    const legend = {x: 0.01, y: 0.99, xanchor: "left", yanchor: "top", itemsizing: "constant",
      bgcolor: "rgba(255,255,255,0.88)", bordercolor: "#e2e5ea", borderwidth: 1, font: {size: 12},
      title: {text: esc(colour.options[colour.selectedIndex].textContent)}};
    const l = {paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff", font: {color: "#1d2330"},
      margin: {l: 0, r: 0, t: 0, b: 0}, showlegend: true, legend: legend, uirevision: "keep",
      hovermode: "closest", dragmode: is3d ? "orbit" : "pan"};
    if (is3d) l.scene = {xaxis: axis, yaxis: axis, zaxis: axis, aspectmode: "data"};
    else { l.xaxis = Object.assign({}, axis, {zeroline: false}); l.yaxis = Object.assign({}, l.xaxis, {scaleanchor: "x"}); }
    return l;
  }

  let pending = 0;
  function redraw() { return Plotly.react(plot, traces(), layout()); }
  function later() { clearTimeout(pending); pending = setTimeout(redraw, 60); }
  Plotly.newPlot(plot, traces(), layout(), {responsive: true, displaylogo: false, scrollZoom: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"]}).then(() => {
    plot.on("plotly_hover", (e) => { const p = e.points && e.points[0];
      if (p && p.customdata !== undefined) showHover(Number(p.customdata)); });
    plot.on("plotly_unhover", () => { hover.hidden = true; });
    // 3D emits clicks from inside its render loop: redraw after it, not within it
    plot.on("plotly_click", (e) => { const p = e.points && e.points[0];
      if (p && p.customdata !== undefined) setTimeout(select, 0, Number(p.customdata)); });
    document.body.dataset.ready = "1";
  });
  search.addEventListener("input", later);
  colour.addEventListener("change", redraw);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && selected !== null) unselect(); });
  window.embedscope = {data: D, select: select, redraw: redraw};
})();
