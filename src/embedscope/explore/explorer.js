(function () {
  "use strict";
  // explorer.html's own code: no framework, no network. Sections, in order: data, small DOM
  // helpers, labels and decisions (with undo and local storage), selection, screen projection
  // and the box/lasso tool, plot traces, the selection's highlight (a canvas veil), hover and
  // pinned point, gallery, export, wiring.

  // ---- data --------------------------------------------------------------------------------
  const D = JSON.parse(document.getElementById("es-data").textContent);
  const N = D.path.length, is3d = D.is3d, $ = (id) => document.getElementById(id);
  const plot = $("plot"), stage = $("stage"), hover = $("hover"), detail = $("detail");
  const search = $("search"), colour = $("colour"), draw = $("draw");
  const HOVER_PX = 128, DETAIL_PX = 192, TILE_PX = 96, LIGHTBOX_PX = 384, PAGE = 48;
  const DIM = 0.4;  // how much of the map shows through the veil outside a selection
  const floats = (a) => { const f = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) f[i] = a[i] === null ? NaN : a[i]; return f; };
  const X = floats(D.x), Y = floats(D.y), Z = is3d ? floats(D.z) : null;
  const SUG = D.suggested;  // {names, codes, share, offered} when analyse suggested labels
  // The rules of decisions come from decisions.py (page_rules): constants and messages.
  const R = D.rules, M = R.messages, WS = "[" + R.whitespace + "]+";
  const strip = (s) => String(s).replace(new RegExp("^" + WS + "|" + WS + "$", "gu"), "");
  const OFFERED = new Set(SUG ? SUG.offered : []);  // suggestions that can be accepted
  const CLUSTER = D.columns.find((c) => c.name === "cluster");

  // ---- small DOM helpers -------------------------------------------------------------------
  const el = (tag, cls, text) => { const e = document.createElement(tag);
    if (cls) e.className = cls; if (text !== undefined) e.textContent = String(text); return e; };
  const button = (text, onClick, title) => { const b = el("button", null, text);
    b.type = "button"; if (title) b.title = title; b.addEventListener("click", onClick); return b; };
  // plotly renders a little HTML in legend names and titles: these travel entity-escaped
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = (v) => v === null || v === undefined ? "—"
    : typeof v === "number" ? String(Number(v.toPrecision(3))) : String(v);
  const pct = (v) => v === null || v === undefined ? "" : Math.round(v * 100) + "%";
  const plural = (n, word) => n.toLocaleString() + " " + word + (n === 1 ? "" : "s");

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

  // ---- labels and decisions ----------------------------------------------------------------
  // A decision is {label: new label or null, tags: [...]} per point; the tag "drop" means leave
  // the image out. Every change is one undo step; all of them are kept in the browser's local
  // storage under the report's key (title + digest of paths and labels, from page.py). The
  // rules are decisions.DecisionLog's (a test runs the same edits through both): a relabel to
  // the image's own label takes the decision back, "(unlabelled)" is never given, a tag with
  // the separator is refused, and each edit answers "" or the refusal's message.
  const decisions = new Map(), history = [];
  const STORE = "embedscope.decisions." + D.key;
  let names = D.classes.slice(), colours = D.colours.slice(), current = Int32Array.from(D.label);
  let decided = 0, storage = "";  // decided: bumps on every change (cache key)
  const labelOf = (i) => names[current[i]];
  const suggestionOf = (i) => OFFERED.has(i) ? SUG.names[SUG.codes[i]] : null;
  const tagsOf = (i) => (decisions.get(i) || {tags: []}).tags;
  const isDropped = (i) => tagsOf(i).includes(R.drop);

  function relabelCodes() {  // new labels get the next palette colours, after the classes
    names = D.classes.slice(); colours = D.colours.slice(); current = Int32Array.from(D.label);
    const code = new Map(names.map((c, k) => [c, k]));
    decisions.forEach((d, i) => {
      if (d.label === null) return;
      if (!code.has(d.label)) { code.set(d.label, names.length);
        colours.push(D.palette[names.length % D.palette.length]); names.push(d.label); }
      current[i] = code.get(d.label);
    });
    const list = $("es-labels"); list.replaceChildren();
    names.forEach((c) => { const o = el("option"); o.value = c; list.appendChild(o); });
  }

  function change(indices, edit) {  // edit(i, copy of the decision) returns the new decision
    const before = new Map();
    indices.forEach((i) => {
      const old = decisions.get(i);
      before.set(i, old);
      const next = edit(i, old ? {label: old.label, tags: old.tags.slice()} : {label: null, tags: []});
      if (next.label === D.classes[D.label[i]]) next.label = null;  // back to where it was
      if (next.label === null && !next.tags.length) decisions.delete(i); else decisions.set(i, next);
    });
    if (!before.size) return;
    history.push(before);
    decisionsChanged();
  }
  function setLabel(indices, text) {
    const label = strip(text);
    if (!label) return M.empty_label;
    if (label === R.unlabelled) return M.placeholder_label;
    if (!indices.length) return M.nothing_selected;
    change(indices, (i, d) => Object.assign(d, {label: label}));
    return "";
  }
  function acceptSuggestion(indices) {
    const take = indices.filter((i) => suggestionOf(i) !== null);
    if (!take.length) return M.no_suggestion;
    change(take, (i, d) => Object.assign(d, {label: suggestionOf(i)}));
    return "";
  }
  const checkTag = (text) => { const t = strip(text); return t && !t.includes(R.separator) ? t : null; };
  function addTags(indices, tags) {  // tags already checked
    if (!indices.length) return M.nothing_selected;
    change(indices, (i, d) => { tags.forEach((t) => { if (!d.tags.includes(t)) d.tags.push(t); }); return d; });
    return "";
  }
  const addTag = (indices, text) => { const t = checkTag(text); return t === null ? M.bad_tag : addTags(indices, [t]); };
  const drop = (indices) => addTags(indices, [R.drop]);
  function keep(i, issues) {  // keep:<issue> for each issue: not flagged again for it
    const tags = Array.from(new Set(issues.map((x) => checkTag(R.keepPrefix + strip(x)))));
    if (tags.includes(null)) return M.bad_tag;
    return tags.length ? addTags([i], tags) : M.queue_done;
  }
  function say(text) { $("message").textContent = $("review-message").textContent = text; return text; }
  const clearDecisions = () => change(Array.from(decisions.keys()), () => ({label: null, tags: []}));
  function undo() {
    const before = history.pop();
    if (!before) return;
    before.forEach((d, i) => { if (d) decisions.set(i, d); else decisions.delete(i); });
    decisionsChanged();
  }

  function save() {
    const out = {};
    decisions.forEach((d, i) => { out[D.path[i]] = d; });
    try {
      if (decisions.size) localStorage.setItem(STORE, JSON.stringify(out)); else localStorage.removeItem(STORE);
      storage = "Saved in this browser for this report.";
    } catch (err) {  // a sandboxed frame or a private window: keep working, say so
      storage = "Not saved: this browser keeps no storage here. Download them.";
    }
  }
  function load() {
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (err) { return; }
    if (!saved || typeof saved !== "object") return;
    const row = new Map(D.path.map((p, i) => [p, i]));
    Object.entries(saved).forEach(([path, d]) => {
      const ok = row.has(path) && d && (d.label === null || typeof d.label === "string") && Array.isArray(d.tags);
      if (ok) decisions.set(row.get(path), {label: d.label, tags: d.tags.map(String)});
    });
  }

  function decisionCounts() {
    let relabelled = 0, dropped = 0, tagged = 0;
    decisions.forEach((d) => { if (d.label !== null) relabelled++;
      if (d.tags.includes(R.drop)) dropped++; if (d.tags.some((t) => t !== R.drop)) tagged++; });
    return {relabelled: relabelled, dropped: dropped, tagged: tagged};
  }
  function showCounts() {
    const c = decisionCounts(), box = $("decided");
    box.textContent = decisions.size ? c.relabelled + " relabelled · " + c.dropped + " dropped · "
      + c.tagged + " tagged" : "No decisions yet.";
    Object.entries(c).forEach(([k, v]) => { box.dataset[k] = v; });
    $("storage").textContent = decisions.size ? storage : "";
    $("undo").disabled = !history.length; $("clear-decisions").disabled = !decisions.size;
    $("download-decisions").disabled = !decisions.size;
  }
  function decisionsChanged() {
    decided++;
    save(); relabelCodes(); syncWhere(); showCounts(); redraw(); renderGallery(); renderReview();
    if (pinned !== null) describe($("detail-card"), pinned, DETAIL_PX);
  }

  const onEnter = (input, act) => input.addEventListener("keydown", (e) => { if (e.key === "Enter") act(); });
  function decisionBar(targets, what) {  // label / suggestion / tag / drop for targets()
    const bar = el("div", "decide"), label = el("input"), tag = el("input");
    label.setAttribute("list", "es-labels"); label.placeholder = "label (existing or new)";
    tag.placeholder = "tag"; label.className = "new-label"; tag.className = "new-tag";
    const relabel = () => { if (!say(setLabel(targets(), label.value))) label.value = ""; };
    const tagIt = () => { if (!say(addTag(targets(), tag.value))) tag.value = ""; };
    onEnter(label, relabel); onEnter(tag, tagIt);
    bar.append(label, button("Set label", relabel, "Give " + what + " this label"));
    if (SUG) bar.append(button("Accept suggestion", () => say(acceptSuggestion(targets())),
      "Give " + what + " the label its neighbours suggest"));
    bar.append(tag, button("Add tag", tagIt, "One tag of free text (without '" + R.separator + "')"),
      button("Drop", () => say(drop(targets())), "Leave " + what + " out of the next run"));
    return bar;
  }

  // ---- selection ---------------------------------------------------------------------------
  // A byte per point; every way of selecting ends in choose(): Shift adds, Alt removes.
  const chosen = new Uint8Array(N);
  let nChosen = 0, chosenList = new Int32Array(0);
  const modeOf = (ev) => ev && ev.altKey ? "remove" : ev && ev.shiftKey ? "add" : "replace";

  function choose(hits, mode, t0) {
    if (mode === "replace") chosen.fill(0);
    const v = mode === "remove" ? 0 : 1;
    for (let k = 0; k < hits.length; k++) chosen[hits[k]] = v;
    let n = 0;
    for (let i = 0; i < N; i++) n += chosen[i];
    chosenList = new Int32Array(n); nChosen = n;
    for (let i = 0, k = 0; i < N; i++) if (chosen[i]) chosenList[k++] = i;
    galleryPage = 0;
    $("selcount").textContent = plural(n, "point") + " selected";
    $("select-none").disabled = !n; $("download-selection").disabled = !n;
    paintVeil();
    requestAnimationFrame(() => {  // highlighted on screen: mouse-up (or click) to here, for `make bench`
      const timing = window.embedscope.timing;
      timing.selectMs = performance.now() - t0; timing.selections++;
      document.body.dataset.selected = n;
      setTimeout(renderGallery, 0);
    });
  }
  const selectWhere = (test, ev) => {
    const t0 = performance.now(), hits = [];
    for (let i = 0; i < N; i++) if (test(i)) hits.push(i);
    choose(hits, modeOf(ev), t0);
  };

  function fields() {  // what "select where" can test: categories by value, numbers by threshold
    const out = [{name: "label", names: () => names, code: (i) => current[i]}];
    if (SUG) out.push({name: "suggested label", names: () => SUG.names, code: (i) => SUG.codes[i]},
      {name: "suggested share", value: (i) => SUG.share[i]});
    D.columns.forEach((c) => out.push(c.kind === "category"
      ? {name: c.name, names: () => c.categories, code: (i) => c.codes[i]}
      : {name: c.name, value: (i) => c.values[i]}));
    return out;
  }
  const FIELDS = fields();
  function syncWhere() {  // value list of the chosen field (labels grow with decisions)
    const f = FIELDS[Number($("where-field").value)], isNum = !f.names, cat = $("where-cat"), keep = cat.value;
    $("where-op").hidden = $("where-num").hidden = !isNum; cat.hidden = isNum;
    if (isNum) return;
    cat.replaceChildren(...f.names().map((c, k) => { const o = el("option", null, c); o.value = k; return o; }));
    if (keep && Number(keep) < cat.options.length) cat.value = keep;
  }
  function whereControls() {
    const field = $("where-field"), op = $("where-op"), cat = $("where-cat"), num = $("where-num");
    FIELDS.forEach((f, k) => { const o = el("option", null, f.name); o.value = k; field.appendChild(o); });
    field.addEventListener("change", () => { cat.value = ""; syncWhere(); }); syncWhere();
    $("where-go").addEventListener("click", (ev) => {
      const f = FIELDS[Number(field.value)];
      if (f.names) { const k = Number(cat.value); selectWhere((i) => f.code(i) === k, ev); return; }
      const t = Number(num.value), o = op.value;
      if (num.value.trim() === "" || !Number.isFinite(t)) { num.focus(); return; }
      selectWhere((i) => { const v = f.value(i);
        return v !== null && (o === ">=" ? v >= t : o === "<=" ? v <= t : v === t); }, ev);
    });
  }

  // ---- screen projection and the box/lasso tool ---------------------------------------------
  // Points are projected to the plot's pixels exactly as plotly draws them: in 2D through the
  // axes' linear maps, in 3D through the scene's current camera (projection x view x model of
  // the WebGL scene, data scaled by the scene's dataScale), then tested against the shape.
  function mat4mul(a, b) {  // column-major, as WebGL
    const o = new Float64Array(16);
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) {
      let s = 0; for (let k = 0; k < 4; k++) s += a[4 * k + r] * b[4 * c + k]; o[4 * c + r] = s; }
    return o;
  }
  function view() {  // the current data-to-pixel map; .sig changes whenever the picture moves
    const L = plot._fullLayout, size = L._size;
    if (!is3d) {
      const xa = L.xaxis, ya = L.yaxis, v = [xa._offset + xa.l2p(0), xa.l2p(1) - xa.l2p(0),
        ya._offset + ya.l2p(0), ya.l2p(1) - ya.l2p(0)];
      return {v: v, sig: v.join(",")};
    }
    const sc = L.scene, scene = sc._scene, cam = scene.glplot.cameraParams, s = scene.dataScale;
    const m = mat4mul(cam.projection, mat4mul(cam.view, cam.model));
    const ox = size.l + sc.domain.x[0] * size.w, w = size.w * (sc.domain.x[1] - sc.domain.x[0]);
    const oy = size.t + (1 - sc.domain.y[1]) * size.h, h = size.h * (sc.domain.y[1] - sc.domain.y[0]);
    return {m: m, s: s, box: [ox, w, oy, h], sig: Array.from(m).concat(s, ox, w, oy, h).join(",")};
  }
  // [x0, y0, x1, y1, ...] in plot pixels for the points idx (every point without idx)
  function screenPositions(idx) {
    const V = view(), n = idx ? idx.length : N, out = new Float64Array(2 * n).fill(NaN);
    for (let k = 0; k < n; k++) {
      const i = idx ? idx[k] : k;
      if (!is3d) { out[2 * k] = V.v[0] + V.v[1] * X[i]; out[2 * k + 1] = V.v[2] + V.v[3] * Y[i]; continue; }
      const m = V.m, x = X[i] * V.s[0], y = Y[i] * V.s[1], z = Z[i] * V.s[2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (!(cw > 0)) continue;  // behind the camera (or no coordinates)
      out[2 * k] = V.box[0] + 0.5 * (1 + (m[0] * x + m[4] * y + m[8] * z + m[12]) / cw) * V.box[1];
      out[2 * k + 1] = V.box[2] + 0.5 * (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw) * V.box[3];
    }
    return out;
  }
  function inside(poly, x, y) {  // even-odd rule
    let on = false;
    for (let a = 0, b = poly.length - 2; a < poly.length; b = a, a += 2) {
      const ya = poly[a + 1], yb = poly[b + 1];
      if ((ya > y) !== (yb > y) && x < (poly[b] - poly[a]) * (y - ya) / (yb - ya) + poly[a]) on = !on;
    }
    return on;
  }
  function hitsIn(shape) {  // shown points under a box [x0, y0, x1, y1] or a lasso polygon
    const p = screenPositions(), show = shownMask(), hits = [];
    const xs = shape.poly.filter((_, k) => k % 2 === 0), ys = shape.poly.filter((_, k) => k % 2 === 1);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    for (let i = 0; i < N; i++) {
      const x = p[2 * i], y = p[2 * i + 1];
      if (!show[i] || !(x >= x0 && x <= x1 && y >= y0 && y <= y1)) continue;
      if (shape.kind === "box" || inside(shape.poly, x, y)) hits.push(i);
    }
    return hits;
  }

  let tool = "view", drag = null;
  function setTool(name) {
    tool = name;
    document.querySelectorAll("#tool button").forEach((b) => b.classList.toggle("on", b.dataset.tool === name));
    draw.classList.toggle("active", name !== "view");
    hover.hidden = true;
  }
  function drawShape() {
    const path = draw.querySelector("path") || draw.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "path"));
    const q = drag.poly, pts = [];
    for (let k = 0; k < q.length; k += 2) pts.push(q[k].toFixed(1) + "," + q[k + 1].toFixed(1));
    path.setAttribute("d", "M" + pts.join("L") + "Z");
  }
  function toPlot(ev) { const r = plot.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  draw.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    draw.setPointerCapture(ev.pointerId);
    const [x, y] = toPlot(ev);
    drag = {kind: tool, start: [x, y], poly: tool === "box" ? [x, y, x, y, x, y, x, y] : [x, y], mode: modeOf(ev)};
    drawShape();
  });
  draw.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const [x, y] = toPlot(ev), [sx, sy] = drag.start;
    if (drag.kind === "box") drag.poly = [sx, sy, x, sy, x, y, sx, y];
    else { const n = drag.poly.length;  // lasso: keep points at least 2 px apart
      if (Math.hypot(x - drag.poly[n - 2], y - drag.poly[n - 1]) >= 2) drag.poly.push(x, y); }
    drawShape();
  });
  draw.addEventListener("pointerup", (ev) => {
    if (!drag) return;
    const t0 = performance.now(), shape = drag, mode = ev.altKey || ev.shiftKey ? modeOf(ev) : shape.mode;
    drag = null; draw.replaceChildren();
    choose(hitsIn(shape), mode, t0);
  });

  // ---- plot traces ---------------------------------------------------------------------------
  // Base traces (one per class, or one coloured by a number) are rebuilt only when the search,
  // the colouring or a decision changes; a new selection only re-styles them (dimmed) and adds
  // one trace of the selected points, so selecting stays fast at 100,000 points.
  const gather = (a, idx) => { const o = new Float64Array(idx.length);
    for (let k = 0; k < idx.length; k++) o[k] = a[idx[k]]; return o; };
  function visible() {
    const q = search.value.trim().toLowerCase(), idx = [];
    for (let i = 0; i < N; i++) {
      if (!q || labelOf(i).toLowerCase().includes(q) || D.path[i].toLowerCase().includes(q)) idx.push(i);
    }
    return idx;
  }
  function groups() {  // categorical colourings: names, colours and each point's code
    if (colour.value === "label") return {key: "label", names: names, colours: colours, code: (i) => current[i]};
    const c = D.columns[Number(colour.value)];
    if (c.kind !== "category") return null;
    return {key: "c" + colour.value, names: c.categories, code: (i) => c.codes[i],
      colours: c.categories.map((_, k) => D.palette[k % D.palette.length])};
  }
  const size = is3d ? 3 : 5;
  function points(idx, extra) {
    const t = {type: is3d ? "scatter3d" : "scattergl", mode: "markers", hoverinfo: "none",
      x: gather(X, idx), y: gather(Y, idx), _idx: Int32Array.from(idx)};
    if (is3d) t.z = gather(Z, idx);
    return Object.assign(t, extra);
  }
  function numberScale(c) {
    let lo = Infinity, hi = -Infinity;
    c.values.forEach((v) => { if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    return {colorscale: "Viridis", cmin: lo, cmax: hi};
  }
  function baseTraces() {
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
      const has = idx.filter((i) => c.values[i] !== null), none = idx.filter((i) => c.values[i] === null);
      out.push(points(has, {name: esc(c.name), uid: "n" + colour.value, showlegend: false,
        marker: Object.assign({size: size, opacity: 0.8, color: has.map((i) => c.values[i]), showscale: true,
          colorbar: {title: {text: esc(c.name), side: "right"}, thickness: 12, len: 0.6, outlinewidth: 0}},
        numberScale(c))}));
      if (none.length) out.push(points(none, {name: "(no value)", uid: "n" + colour.value + "_none",
        marker: {size: size, opacity: 0.6, color: D.missingColour}}));
    }
    return out;
  }
  let base = {key: null, traces: []};
  function shownMask() {  // points drawn now: matching the search, in classes the legend shows
    const show = new Uint8Array(N), full = plot._fullData || [];
    base.traces.forEach((t, k) => { if (full[k] && full[k].visible === true) t._idx.forEach((i) => { show[i] = 1; }); });
    return show;
  }
  function overlays() {
    const out = [], ring = (idx, name, marker, legend) => idx.length && out.push(points(idx, {name: name,
      uid: "ov_" + name.split(" ")[0], hoverinfo: "skip", showlegend: legend !== false, marker: marker}));
    const relabelled = [], dropped = [], tagged = [];
    decisions.forEach((d, i) => { if (d.label !== null) relabelled.push(i);  // as decisionCounts()
      if (d.tags.includes(R.drop)) dropped.push(i); if (d.tags.some((t) => t !== R.drop)) tagged.push(i); });
    ring(relabelled, "relabelled · " + relabelled.length, {size: is3d ? 7 : 12, symbol: "diamond-open", color: "#111827"});
    ring(dropped, "dropped · " + dropped.length, {size: is3d ? 6 : 10, symbol: "x", color: "#c0262d"});
    ring(tagged, "tagged · " + tagged.length, {size: is3d ? 7 : 12, symbol: "square-open", color: "#6a3d9a"});
    if (pinned !== null) ring([pinned], "pinned", {size: is3d ? 10 : 16, symbol: "circle-open",
      color: "#111827", line: {color: "#111827", width: 2}}, false);
    return out;
  }
  function traces() {
    const key = [search.value.trim().toLowerCase(), colour.value, decided].join("\u0000");
    if (base.key !== key) base = {key: key, traces: baseTraces()};
    return base.traces.concat(overlays());
  }

  // ---- selection highlight: a canvas veil over the map ---------------------------------------
  // Selecting never redraws the WebGL plot (at 100,000 points one 3D frame alone can take
  // seconds without a GPU): the veil dims everything but the legend and paints the selected
  // points on top from the same projection, again whenever the camera or the axes move.
  const veil = $("veil"), ctx = veil.getContext("2d");
  let veilSig = null;
  const rgba = (hex, a) => { const v = parseInt(hex.slice(1, 7), 16);  // little-endian pixel
    return ((a << 24) | ((v & 255) << 16) | (v & 0xff00) | (v >> 16)) >>> 0; };
  function stamp(radius) {  // pixel offsets of a dot: [dx, dy, inner?] for a filled ring
    const out = [];
    for (let dy = -radius - 1; dy <= radius + 1; dy++) for (let dx = -radius - 1; dx <= radius + 1; dx++) {
      const d = Math.hypot(dx, dy);
      if (d <= radius + 0.5) out.push(dx, dy, d <= radius - 0.7 ? 1 : 0); }
    return out;
  }
  function paintVeil() {  // pixels written directly: a software-rendered canvas stays fast
    const w = plot.clientWidth, h = plot.clientHeight, dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(w * dpr)), H = Math.max(1, Math.round(h * dpr));
    if (veil.width !== W || veil.height !== H) { veil.width = W; veil.height = H; }
    veilSig = plot._fullLayout ? view().sig + "," + w + "," + h : null;
    if (!nChosen || veilSig === null) { ctx.clearRect(0, 0, W, H); return; }
    const img = ctx.createImageData(W, H), px = new Uint32Array(img.data.buffer);
    px.fill(rgba("#ffffff", Math.round(255 * (1 - DIM))));
    const legend = plot.querySelector(".legend"), r = plot.getBoundingClientRect();
    if (legend) {  // the legend stays readable
      const b = legend.getBoundingClientRect(), x0 = Math.max(0, Math.floor((b.left - r.left) * dpr));
      const x1 = Math.min(W, Math.ceil((b.right - r.left) * dpr)), y1 = Math.min(H, Math.ceil((b.bottom - r.top) * dpr));
      for (let y = Math.max(0, Math.floor((b.top - r.top) * dpr)); y < y1; y++) px.fill(0, y * W + x0, y * W + Math.max(x0, x1));
    }
    const show = shownMask(), g = groups(), p = screenPositions(chosenList), dot = stamp(Math.round((is3d ? 3 : 4) * dpr));
    const ring = rgba("#111827", 255), fills = new Map();
    const fillOf = (c) => { if (!fills.has(c)) fills.set(c, rgba(c, 255)); return fills.get(c); };
    chosenList.forEach((i, k) => {
      const x = Math.round(p[2 * k] * dpr), y = Math.round(p[2 * k + 1] * dpr);
      if (!show[i] || !(x > -9 && y > -9 && x < W + 9 && y < H + 9)) return;
      const fill = fillOf(g ? (g.code(i) < 0 ? D.missingColour : g.colours[g.code(i)]) : "#f28e2b");
      for (let q = 0; q < dot.length; q += 3) {
        const xx = x + dot[q], yy = y + dot[q + 1];
        if (xx >= 0 && yy >= 0 && xx < W && yy < H) px[yy * W + xx] = dot[q + 2] ? fill : ring;
      }
    });
    ctx.putImageData(img, 0, 0);
  }
  function followView() {  // repaint when an orbit, zoom, pan or resize moved the points
    if (nChosen && plot._fullLayout && view().sig + "," + plot.clientWidth + "," + plot.clientHeight !== veilSig) paintVeil();
    requestAnimationFrame(followView);
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
  function redraw() { return Plotly.react(plot, traces(), layout()).then(paintVeil); }
  function later() { clearTimeout(pending); pending = setTimeout(redraw, 60); }
  const pointOf = (e) => { const p = e.points && e.points[0], t = p && plot.data[p.curveNumber];
    return t && t._idx && p.pointNumber !== undefined ? t._idx[p.pointNumber] : null; };

  // ---- hover card and pinned point -----------------------------------------------------------
  function describe(box, i, px) {
    box.replaceChildren();
    box.dataset.index = i;
    box.appendChild(thumb(i, px));
    const name = el("div", "label"), sw = el("span", "swatch");
    sw.style.background = colours[current[i]];
    name.append(sw, el("span", null, labelOf(i)));
    box.append(name);
    const was = D.classes[D.label[i]];
    if (was !== labelOf(i)) box.append(el("div", "was", "was " + was));
    if (suggestionOf(i) !== null) box.append(el("div", "suggested", "suggested: " + suggestionOf(i) + " · " + pct(SUG.share[i])));
    if (tagsOf(i).length) box.append(tagList(i));
    box.append(pathLine(D.path[i]));
    if (D.columns.length) {
      const kv = el("dl", "kv");
      D.columns.forEach((c) => kv.append(el("dt", null, c.name), el("dd", null,
        c.kind === "number" ? fmt(c.values[i]) : (c.codes[i] < 0 ? "—" : c.categories[c.codes[i]]))));
      box.appendChild(kv);
    }
  }
  function tagList(i) {
    const box = el("div", "tags");
    tagsOf(i).forEach((t) => box.append(el("span", t === R.drop ? "tag drop" : "tag", t)));
    return box;
  }

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
  function showHover(i) { if (tool !== "view") return; describe(hover, i, HOVER_PX); hover.hidden = false; place(); }

  let pinned = null;
  function pin(i) {
    if (i === pinned) return;  // 3D repeats its click while the button is held
    pinned = i;
    detail.replaceChildren();
    const head = el("div", "head"), close = el("button", "close", "×");
    close.title = "Unpin"; close.addEventListener("click", unpin);
    head.append(el("div", "section", "Pinned"), close);
    const card = el("div"); card.id = "detail-card";
    card.addEventListener("click", (ev) => { if (ev.target.classList.contains("thumb")) enlarge(pinned); });
    describe(card, i, DETAIL_PX);
    const acts = el("div", "actions");
    acts.append(button("Enlarge", () => enlarge(pinned)));
    if (D.neighbors) acts.append(button("Select neighbours", (ev) => choose([pinned].concat(D.neighbors[pinned]),
      modeOf(ev), performance.now()), "This point and its nearest neighbours; Shift adds, Alt removes"));
    if (CLUSTER) acts.append(button("Select its cluster", (ev) => { const v = clusterOf(pinned);
      selectWhere((j) => clusterOf(j) === v, ev); }, "Every point in this point's cluster"));
    detail.append(head, card, acts, el("div", "section", "Decide for this point"), decisionBar(() => [pinned], "this point"));
    detail.dataset.index = i;
    if (D.neighbors) {
      detail.appendChild(el("div", "section", "Nearest neighbours"));
      const grid = el("div"); grid.id = "neighbors";
      D.neighbors[i].forEach((j) => {
        const t = thumb(j, 60); t.title = labelOf(j) + " — " + D.path[j];
        t.style.boxShadow = "0 0 0 1px #e2e5ea, inset 0 -3px 0 " + colours[current[j]];
        t.dataset.index = j; t.addEventListener("click", () => pin(j)); grid.appendChild(t); });
      detail.appendChild(grid);
    }
    detail.hidden = false; $("hint").hidden = true;
    document.querySelectorAll("#grid .tile").forEach((t) => t.classList.toggle("focused", Number(t.dataset.index) === i));
    redraw();
  }
  const clusterOf = (i) => CLUSTER.kind === "number" ? CLUSTER.values[i] : CLUSTER.codes[i];
  function unpin() { pinned = null; detail.hidden = true; $("hint").hidden = false; redraw(); }

  function enlarge(i) {  // the atlas cell scaled up: the only picture an offline page carries
    const box = $("lightbox"), card = el("div", "card");
    card.append(thumb(i, LIGHTBOX_PX), el("div", "label", labelOf(i)), pathLine(D.path[i]),
      el("div", "muted", "Enlarged from the " + D.cell + "-px thumbnail stored in this page; "
        + "the original image stays in the dataset folder at the path above."));
    box.replaceChildren(card); box.dataset.index = i; box.hidden = false;
  }
  $("lightbox").addEventListener("click", () => { $("lightbox").hidden = true; });

  // ---- gallery of the selection ----------------------------------------------------------------
  let galleryPage = 0;
  function sortKeys() {  // "label", "path", "suggested share" and every number column
    const out = [{name: "path", text: (i) => D.path[i]}, {name: "label", text: labelOf}];
    if (SUG) out.push({name: "suggested share", value: (i) => SUG.share[i]});
    D.columns.forEach((c) => { if (c.kind === "number") out.push({name: c.name, value: (i) => c.values[i]}); });
    return out;
  }
  const SORTS = sortKeys();
  function ordered() {
    const s = SORTS[Number($("sort").value)], dir = $("sort-dir").dataset.dir === "desc" ? -1 : 1;
    const idx = Array.from(chosenList);
    if (s.text) return idx.map((i) => [s.text(i), i])
      .sort((a, b) => dir * (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1])).map((p) => p[1]);
    const v = (i) => { const x = s.value(i); return x === null ? NaN : x; };
    return idx.sort((a, b) => { const x = v(a), y = v(b);  // missing values last either way
      if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);
      return dir * (x - y) || a - b; });
  }
  function tile(i, s) {
    const t = el("div", "tile");
    t.dataset.index = i;
    if (i === pinned) t.classList.add("focused");
    if (isDropped(i)) t.classList.add("dropped");
    const name = el("div", "label"), sw = el("span", "swatch");
    sw.style.background = colours[current[i]];
    name.append(sw, el("span", null, labelOf(i)));
    t.append(thumb(i, TILE_PX), name);
    if (D.classes[D.label[i]] !== labelOf(i)) t.append(el("div", "was", "was " + D.classes[D.label[i]]));
    if (suggestionOf(i) !== null) t.append(el("div", "suggested", "suggested: " + suggestionOf(i) + " · " + pct(SUG.share[i])));
    if (s.value) t.append(el("div", "score", s.name + " " + fmt(s.value(i))));
    if (tagsOf(i).length) t.append(tagList(i));
    t.append(pathLine(D.path[i]));
    t.addEventListener("click", () => pin(i));
    return t;
  }
  function renderGallery() {
    const grid = $("grid"), pages = Math.max(1, Math.ceil(nChosen / PAGE));
    galleryPage = Math.min(galleryPage, pages - 1);
    $("gallery-count").textContent = nChosen ? plural(nChosen, "image") : "";
    $("gallery-empty").hidden = nChosen > 0; $("gallery-body").hidden = $("gallery-pager").hidden = !nChosen;
    $("gallery").classList.toggle("open", nChosen > 0);
    $("page").textContent = "page " + (galleryPage + 1) + " of " + pages;
    $("prev").disabled = galleryPage === 0; $("next").disabled = galleryPage >= pages - 1;
    const s = SORTS[Number($("sort").value)];
    grid.replaceChildren(...ordered().slice(galleryPage * PAGE, (galleryPage + 1) * PAGE).map((i) => tile(i, s)));
  }
  function galleryControls() {
    SORTS.forEach((s, k) => { const o = el("option", null, s.name); o.value = k; $("sort").appendChild(o); });
    $("sort").addEventListener("change", () => { galleryPage = 0; renderGallery(); });
    $("sort-dir").addEventListener("click", () => { const d = $("sort-dir");
      d.dataset.dir = d.dataset.dir === "desc" ? "asc" : "desc"; d.textContent = d.dataset.dir === "desc" ? "↓" : "↑";
      galleryPage = 0; renderGallery(); });
    $("prev").addEventListener("click", () => { galleryPage--; renderGallery(); });
    $("next").addEventListener("click", () => { galleryPage++; renderGallery(); });
    $("gallery-decide").append(decisionBar(() => Array.from(chosenList), "the selection"));
  }


  // ---- review queue ----------------------------------------------------------------------------
  // The flagged images one at a time, in decisions.ReviewQueue's order (descending
  // review_priority), filtered by issue type; a, k, d decide and move on, arrows move. The
  // filter and the image shown are kept in the browser beside the decisions.
  const Q = D.review, SPOT = "embedscope.review." + D.key, REVIEW_PX = 320;
  const fill = (template, v) => template.replace(/\{(\w+)\}/g, (_, k) => String(v[k]));
  let review = {issue: "", pos: 0};
  const reviewOpen = () => !$("review").hidden;
  function queue() {  // positions into Q.rows under the filter
    const code = Q.types.indexOf(review.issue), out = [];
    Q.rows.forEach((_, k) => { if (code < 0 || Q.issues[k].includes(code)) out.push(k); });
    return out;
  }
  function rememberSpot() {
    const list = queue(), at = list.length ? D.path[Q.rows[list[review.pos]]] : null;
    try { localStorage.setItem(SPOT, JSON.stringify({issue: review.issue, path: at})); } catch (err) { /* no storage */ }
  }
  function recallSpot() {
    let spot = null;
    try { spot = JSON.parse(localStorage.getItem(SPOT) || "null"); } catch (err) { return; }
    if (!spot || typeof spot !== "object") return;
    if (typeof spot.issue === "string" && (spot.issue === "" || Q.types.includes(spot.issue))) review.issue = spot.issue;
    const list = queue(), at = list.findIndex((k) => D.path[Q.rows[k]] === spot.path);
    review.pos = Math.max(0, at);
  }
  function renderReview() {
    if (!reviewOpen()) return;
    const list = queue(), empty = !list.length;
    review.pos = Math.max(0, Math.min(review.pos, list.length - 1));
    $("review-issue").value = review.issue;
    $("review-empty").hidden = !empty; $("review-body").hidden = empty;
    $("review-empty").textContent = Q.rows.length ? M.queue_done : M.no_findings;
    const done = list.filter((k) => decisions.has(Q.rows[k])).length;
    $("review-progress").textContent = fill(M.reviewed, {reviewed: done, total: list.length});
    $("review-position").textContent = empty ? "" : fill(M.position, {position: review.pos + 1, total: list.length});
    $("review-prev").disabled = review.pos <= 0; $("review-next").disabled = review.pos >= list.length - 1;
    rememberSpot();
    if (empty) return;
    const k = list[review.pos], i = Q.rows[k], card = $("review-card");
    $("review").dataset.index = i;
    $("review-picture").replaceChildren(thumb(i, REVIEW_PX), el("div", "muted", "Enlarged from the "
      + D.cell + "-px thumbnail stored in this page; the original stays in the dataset folder."));
    card.replaceChildren();
    const name = el("div", "label"), sw = el("span", "swatch");
    sw.style.background = colours[current[i]];
    name.append(sw, el("span", null, labelOf(i)));
    card.append(name);
    if (D.classes[D.label[i]] !== labelOf(i)) card.append(el("div", "was", "was " + D.classes[D.label[i]]));
    if (suggestionOf(i) !== null) card.append(el("div", "suggested", "suggested: " + suggestionOf(i) + " · " + pct(SUG.share[i])));
    const issues = el("div", "issues");
    Q.issues[k].forEach((c) => issues.append(el("span", "issue", Q.types[c])));
    card.append(issues, el("div", "reason", Q.reason[k]));
    if (tagsOf(i).length) card.append(tagList(i));
    card.append(pathLine(D.path[i]));
    $("review-neighbors").replaceChildren(...(D.neighbors ? D.neighbors[i] : []).map((j) => {
      const t = thumb(j, 76); t.title = labelOf(j) + " — " + D.path[j];
      t.style.boxShadow = "0 0 0 1px #e2e5ea, inset 0 -3px 0 " + colours[current[j]]; return t; }));
  }
  function reviewMove(by) { say(""); review.pos += by; renderReview(); }
  function reviewAct(action, text) {  // decisions.ReviewQueue.decide, in the page
    const list = queue();
    if (!list.length) return say(Q.rows.length ? M.queue_done : M.no_findings);
    const k = list[review.pos], i = Q.rows[k];
    const answer = say(action === "accept" ? acceptSuggestion([i])
      : action === "keep" ? keep(i, review.issue ? [review.issue] : Q.issues[k].map((c) => Q.types[c]))
      : action === "drop" ? drop([i]) : action === "label" ? setLabel([i], text) : addTag([i], text));
    if (!answer && Object.values(R.keys).includes(action)) review.pos++;
    renderReview();
    return answer;
  }
  function openReview(open) {
    $("review").hidden = !open; hover.hidden = true;
    if (open) { renderReview(); $("review").focus(); }
  }
  function reviewControls() {
    $("review").tabIndex = -1;
    Q.options.forEach(([text, value]) => { const o = el("option", null, text); o.value = value; $("review-issue").appendChild(o); });
    $("review-open").textContent = "Review queue (" + Q.rows.length.toLocaleString() + ")";
    $("review-open").addEventListener("click", () => openReview(true));
    $("review-close").addEventListener("click", () => openReview(false));
    $("review-issue").addEventListener("change", () => {  // the image shown stays if it has the issue
      const list = queue(), at = list.length ? Q.rows[list[review.pos]] : -1;
      review.issue = $("review-issue").value;
      review.pos = Math.max(0, queue().findIndex((k) => Q.rows[k] === at));
      renderReview(); $("review").focus(); });
    $("review-prev").addEventListener("click", () => reviewMove(-1));
    $("review-next").addEventListener("click", () => reviewMove(1));
    Object.values(R.keys).forEach((a) => $("review-" + a).addEventListener("click", () => reviewAct(a)));
    if (!SUG) $("review-accept").remove();  // nothing to accept (the key still says why)
    const typed = (input, action) => () => { if (!reviewAct(action, $(input).value)) $(input).value = ""; };
    $("review-relabel").addEventListener("click", typed("review-label", "label"));
    $("review-add-tag").addEventListener("click", typed("review-tag", "tag"));
    onEnter($("review-label"), typed("review-label", "label")); onEnter($("review-tag"), typed("review-tag", "tag"));
    recallSpot();
  }
  function reviewKey(e) {  // true when the review queue took the key
    if (!reviewOpen()) return false;
    if (e.key === "Escape") openReview(false);
    else if (e.key === "ArrowLeft" || e.key === "ArrowRight") reviewMove(e.key === "ArrowLeft" ? -1 : 1);
    else if (R.keys[e.key] && !e.ctrlKey && !e.metaKey && !e.altKey) reviewAct(R.keys[e.key]);
    else return false;
    e.preventDefault();
    return true;
  }

  // ---- export ----------------------------------------------------------------------------------
  // CSV as RFC 4180 quotes it, offered as a download from a Blob: works from file:// offline.
  const csvField = (v) => { const s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
  const csv = (rows) => rows.map((r) => r.map(csvField).join(",")).join("\n") + "\n";
  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], {type: "text/csv;charset=utf-8"}));
    const a = el("a"); a.href = url; a.download = name; a.hidden = true;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  // code point order, as Python sorts text (JavaScript's < compares UTF-16 code units, which
  // puts an emoji before U+E000..U+FFFF): surrogates move above the rest of the BMP
  const unit = (c) => c >= 0xE000 ? c - 0x800 : c >= 0xD800 ? c + 0x2000 : c;
  function byCodePoint(a, b) {
    for (let k = 0; k < Math.min(a.length, b.length); k++) {
      const x = a.charCodeAt(k), y = b.charCodeAt(k);
      if (x !== y) return unit(x) - unit(y);
    }
    return a.length - b.length;
  }
  function decisionsCsv() {  // path,label,tags sorted by path: decisions.DecisionLog.table's file
    const rows = Array.from(decisions, ([i, d]) => [D.path[i], d.label === null ? "" : d.label, d.tags.join(R.separator)]);
    rows.sort((a, b) => byCodePoint(a[0], b[0]));
    return csv([["path", "label", "tags"]].concat(rows));
  }
  function selectionCsv() {  // the selected rows: what they are, where they sit, their scores
    const head = ["path", "label"].concat(is3d ? ["x", "y", "z"] : ["x", "y"], D.columns.map((c) => c.name),
      SUG ? ["suggested_label", "suggested_share"] : [], ["new_label", "tags"]);
    const rows = Array.from(chosenList, (i) => [D.path[i], D.classes[D.label[i]], D.x[i], D.y[i]]
      .concat(is3d ? [D.z[i]] : [], D.columns.map((c) => c.kind === "number" ? c.values[i]
        : c.codes[i] < 0 ? "" : c.categories[c.codes[i]]),
      SUG ? [SUG.codes[i] < 0 ? "" : SUG.names[SUG.codes[i]], SUG.share[i]] : [],
      [labelOf(i) === D.classes[D.label[i]] ? "" : labelOf(i), tagsOf(i).join(R.separator)]));
    return csv([head].concat(rows));
  }

  // ---- wiring -----------------------------------------------------------------------------------
  document.title = D.title;
  $("title").textContent = D.title;
  [["label", "label"]].concat(D.columns.map((c, k) => [String(k), c.name])).forEach(([v, t]) => {
    const o = el("option", null, t); o.value = v; colour.appendChild(o); });
  if (is3d) document.querySelector("#tool [data-tool='view']").textContent = "Orbit";
  document.querySelectorAll("#tool button").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("select-none").addEventListener("click", () => choose([], "replace", performance.now()));
  $("select-search").addEventListener("click", (ev) => { const hits = visible(); choose(hits, modeOf(ev), performance.now()); });
  $("undo").addEventListener("click", undo);
  $("clear-decisions").addEventListener("click", clearDecisions);
  $("download-decisions").addEventListener("click", () => download("decisions.csv", decisionsCsv()));
  $("download-selection").addEventListener("click", () => download("selection.csv", selectionCsv()));
  whereControls(); galleryControls(); reviewControls(); load(); save(); relabelCodes(); showCounts();
  $("select-none").disabled = $("download-selection").disabled = true;
  renderGallery();
  new ResizeObserver(() => { if (plot._fullLayout) Plotly.Plots.resize(plot); }).observe(stage);

  Plotly.newPlot(plot, traces(), layout(), {responsive: true, displaylogo: false, scrollZoom: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"]}).then(() => {
    plot.on("plotly_hover", (e) => { const i = pointOf(e); if (i !== null) showHover(i); });
    plot.on("plotly_unhover", () => { hover.hidden = true; });
    // 3D emits clicks from inside its render loop: redraw after it, not within it
    plot.on("plotly_click", (e) => { const i = pointOf(e); if (i !== null) setTimeout(pin, 0, i); });
    plot.on("plotly_restyle", paintVeil);  // a legend click hid or showed a class
    requestAnimationFrame(followView);
    document.body.dataset.ready = "1";
  });
  search.addEventListener("input", later);
  colour.addEventListener("change", redraw);
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) || reviewKey(e)) return;
    if (e.key === "Escape") { if (!$("lightbox").hidden) $("lightbox").hidden = true; else if (pinned !== null) unpin(); else setTool("view"); }
    if (e.key === "b" || e.key === "l") setTool(e.key === "b" ? "box" : "lasso");
    if ((e.ctrlKey || e.metaKey) && e.key === "z") undo();
  });
  // edit(op): one edit as decisions.DecisionLog names it, through the functions the buttons
  // call ({op: "label"|"tag"|"drop"|"accept"|"keep"|"undo", rows, value}): "" or the refusal
  const edit = (op) => op.op === "undo" ? (undo(), "") : say(op.op === "label" ? setLabel(op.rows, op.value)
    : op.op === "tag" ? addTag(op.rows, op.value) : op.op === "drop" ? drop(op.rows)
    : op.op === "accept" ? acceptSuggestion(op.rows) : keep(op.rows[0], op.value));
  window.embedscope = {data: D, pin: pin, redraw: redraw, choose: choose, screenPositions: screenPositions,
    selected: () => Array.from(chosenList), decisionsCsv: decisionsCsv, edit: edit,
    timing: {selectMs: null, selections: 0}};
})();
