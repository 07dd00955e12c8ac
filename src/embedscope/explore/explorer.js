(function () {
  "use strict";
  // The explorer's one editor, for explorer.html and for the JupyterLab panel (live.py's
  // anywidget): no framework, no network. init(root, D, host) builds it in ``root`` (the page's
  // document, or the widget's shadow root holding the same markup) from the page's data D;
  // ``host`` is what the panel adds: {mark: element for data-* marks, keys: element whose
  // keydown it reads, storage: false (no browser storage: Python keeps the decisions),
  // changed(csv): the complete decisions after each change, selected(rows), sheet(k): promise
  // of thumbnail sheet k's URL (fetched when first needed)}; the page passes {}. Sections, in
  // order: data, small DOM helpers, labels and decisions (with undo and browser storage),
  // selection, the box/lasso tool, the map (scatter.js draws it; legend and colour bar are
  // DOM), hover and pinned point, neighbours (inline or loaded on demand), gallery, review
  // queue, export, wiring.

  // ---- data --------------------------------------------------------------------------------
  // Per-point numbers travel as base64 little-endian typed arrays ({dtype, b64}) in the page,
  // as binary buffers ({dtype, buf: k}, ``parts[k]`` an ArrayBuffer) to the widget; decoded once.
  const TYPES = {f4: Float32Array, i1: Int8Array, i2: Int16Array, i4: Int32Array, u1: Uint8Array};
  function typed(v, parts) {
    if (v && parts && typeof v.buf === "number" && TYPES[v.dtype]) return new TYPES[v.dtype](parts[v.buf]);
    if (!v || typeof v.b64 !== "string" || !TYPES[v.dtype]) return v;
    const bin = atob(v.b64), bytes = new Uint8Array(bin.length);
    for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
    return new TYPES[v.dtype](bytes.buffer);
  }
  function decode(D, parts) {  // the data's arrays (and, from the widget, its paths) decoded
    ["x", "y", "z", "label", "thumb"].forEach((k) => { D[k] = typed(D[k], parts); });
    D.columns.forEach((c) => { c.values = typed(c.values, parts); c.codes = typed(c.codes, parts); });
    if (D.suggested) ["codes", "share", "offered"].forEach((k) => { D.suggested[k] = typed(D.suggested[k], parts); });
    if (D.neighbors && D.neighbors.inline) D.neighbors.inline = typed(D.neighbors.inline, parts);
    if (D.large) ["rows", "cells"].forEach((k) => { D.large[k] = typed(D.large[k], parts); });
    if (parts && D.path && typeof D.path.buf === "number")  // one UTF-8 buffer, NUL between paths
      D.path = D.count ? new TextDecoder().decode(parts[D.path.buf]).split("\0") : [];
    return D;
  }

  function init(root, D, host) {
  host = host || {};
  const mark = host.mark || document.body, timing = {selectMs: null, selections: 0, frameMs: null,
    frames: 0, firstFrameMs: null, hoverMs: null, hovers: 0};
  const N = D.path.length, is3d = D.is3d, $ = (id) => root.getElementById(id);
  const plot = $("plot"), stage = $("stage"), hover = $("hover"), detail = $("detail");
  const search = $("search"), colour = $("colour"), draw = $("draw");
  const HOVER_PX = 128, DETAIL_PX = 192, TILE_PX = 96, LIGHTBOX_PX = 384, PAGE = 48;
  const X = D.x, Y = D.y, Z = is3d ? D.z : null;
  const SUG = D.suggested;  // {names, codes, share, offered} when analyse suggested labels
  // The rules of decisions come from decisions.py (page_rules): constants and messages.
  const R = D.rules, M = R.messages, WS = "[" + R.whitespace + "]+";
  const strip = (s) => String(s).replace(new RegExp("^" + WS + "|" + WS + "$", "gu"), "");
  const OFFERED = new Set(SUG ? SUG.offered : []);  // suggestions that can be accepted
  const CLUSTER = D.columns.find((c) => c.name === "cluster");
  const num = (v) => Number.isFinite(v) ? Number(v.toPrecision(7)) : null;  // float32 as written

  // ---- small DOM helpers -------------------------------------------------------------------
  const el = (tag, cls, text) => { const e = document.createElement(tag);
    if (cls) e.className = cls; if (text !== undefined) e.textContent = String(text); return e; };
  const button = (text, onClick, title) => { const b = el("button", null, text);
    b.type = "button"; if (title) b.title = title; b.addEventListener("click", onClick); return b; };
  const fmt = (v) => v === null || v === undefined || Number.isNaN(v) ? "—"
    : typeof v === "number" ? String(Number(v.toPrecision(3))) : String(v);
  const pct = (v) => Number.isFinite(v) ? Math.round(v * 100) + "%" : "";
  const plural = (n, word) => n.toLocaleString() + " " + word + (n === 1 ? "" : "s");

  // Thumbnail sheets (D.sheets: data URIs, or URLs relative to the page) become one CSS class
  // each, so a thumbnail is a box showing one cell of its sheet as a background.
  const sheetCss = document.createElement("style");
  const cssString = (u) => '"' + u.replace(/["\\\n]/g, (c) => "\\" + c.charCodeAt(0).toString(16) + " ") + '"';
  const sheetRule = (k, u) => ".es-a" + k + "{background-image:url(" + cssString(u) + ")}\n";
  if (!host.sheet) sheetCss.textContent = D.sheets.map((u, k) => sheetRule(k, u)).join("");
  (root.head || root).appendChild(sheetCss);
  const sheetOf = (i) => D.thumb[i] < 0 ? -1 : Math.floor(D.thumb[i] / (D.cols * D.cols));
  const urls = new Map();  // sheet -> promise of its URL; the widget's arrive when first needed
  function sheetUrl(k) {
    if (!host.sheet) return Promise.resolve(D.sheets[k]);
    if (!urls.has(k)) urls.set(k, host.sheet(k).then((u) => { sheetCss.append(sheetRule(k, u)); return u; }));
    return urls.get(k);
  }
  // sheet -> promise of its picture decoded (the hover card waits for it); the 64 sheets used
  // last stay referenced, so hovering across a million points never holds thousands decoded
  const decoded = new Map();
  function sheetReady(k) {
    let ready = decoded.get(k);
    if (ready) decoded.delete(k);
    else ready = sheetUrl(k).then((u) => { const im = new Image(); im.src = u; return im.decode().then(() => im, () => null); });
    decoded.set(k, ready);
    if (decoded.size > 64) decoded.delete(decoded.keys().next().value);
    return ready;
  }
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
    if (host.sheet) sheetUrl(atlas);
    box.style.backgroundSize = (D.cols * px) + "px auto";
    box.style.backgroundPosition = (-(cell % D.cols) * px) + "px " + (-Math.floor(cell / D.cols) * px) + "px";
    return box;
  }

  // Flagged images also have a larger cell (D.large: its sheets follow the small ones in
  // D.sheets), sharp enough to judge blur and small details: the review queue and the
  // lightbox show it; every other view keeps the small cell.
  const LARGE = new Map();
  if (D.large) D.large.rows.forEach((r, k) => { if (D.large.cells[k] >= 0) LARGE.set(r, D.large.cells[k]); });
  function picture(i, px) {  // the largest cell point i has, shown at px
    if (!LARGE.has(i)) return thumb(i, px);
    const t = LARGE.get(i), box = el("div", "thumb"), cols = D.large.cols;
    const per = cols * cols, atlas = D.large.first + Math.floor(t / per), cell = t % per;
    box.style.width = box.style.height = px + "px";
    box.dataset.cell = t; box.dataset.large = D.large.cell;
    box.classList.add("es-a" + atlas);
    if (host.sheet) sheetUrl(atlas);
    box.style.backgroundSize = (cols * px) + "px auto";
    box.style.backgroundPosition = (-(cell % cols) * px) + "px " + (-Math.floor(cell / cols) * px) + "px";
    return box;
  }
  const pictureNote = (i) => LARGE.has(i)
    ? "A " + D.large.cell + "-px copy stored in this page for flagged images; the original stays in the dataset folder."
    : "Enlarged from the " + D.cell + "-px thumbnail stored in this page; the original stays in the dataset folder.";

  function pathLine(path) {  // text nodes with a line-break chance after each "/"
    const line = el("div", "path");
    path.split("/").forEach((part, k, all) => { line.append(document.createTextNode(part + (k < all.length - 1 ? "/" : "")));
      if (k < all.length - 1) line.append(document.createElement("wbr")); });
    return line;
  }

  // ---- labels and decisions ----------------------------------------------------------------
  // A decision is {label: new label or null, tags: [...]} per point; the tag "drop" means leave
  // the image out. Every change is one undo step; all of them are kept in the browser under the
  // report's key (title + digest of paths and labels, from page.py): in localStorage while
  // small, in IndexedDB when large (localStorage holds ~5 MB for every file:// page together,
  // a million decisions need more), with a small marker in localStorage saying so. The
  // rules are decisions.DecisionLog's (a test runs the same edits through both): a relabel to
  // the image's own label takes the decision back, "(unlabelled)" is never given, a tag with
  // the separator is refused, and each edit answers "" or the refusal's message.
  const decisions = new Map(), history = [];
  const STORE = "embedscope.decisions." + D.key;
  let names = D.classes.slice(), colours = D.colours.slice(), current = Int32Array.from(D.label);
  let storage = "";
  const labelOf = (i) => names[current[i]];
  const suggestionOf = (i) => OFFERED.has(i) ? SUG.names[SUG.codes[i]] : null;
  const tagsOf = (i) => (decisions.get(i) || {tags: []}).tags;
  const isDropped = (i) => tagsOf(i).includes(R.drop);
  // The dataset's kept decisions (earlier rounds, already applied; decisions.DecisionLog's
  // base) are where the page starts, as decisions no undo reaches. Images no longer on the map
  // (dropped) keep their rows (OFF) for the download; a kept decision taken back here goes
  // into it as a row with neither label nor tags, which takes it back in the next run.
  const SEEDED = new Set(D.seed.rows), OFF = D.seed.off;
  D.seed.rows.forEach((i, k) => { if (D.seed.labels[k] !== null || D.seed.tags[k].length)
    decisions.set(i, {label: D.seed.labels[k], tags: D.seed.tags[k].slice()}); });
  const takenBack = () => Array.from(SEEDED).filter((i) => !decisions.has(i));

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

  const SMALL = 1 << 20;  // characters of JSON kept in localStorage; more goes to IndexedDB
  const NOT_SAVED = "Not saved: this browser keeps no storage here. Download them.";
  function database() {  // one object store "decisions", keyed by the report's key
    return new Promise((resolve, reject) => {
      const open = indexedDB.open("embedscope", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("decisions");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }
  function idb(mode, act) {  // act(store) -> request; resolves with its result once committed
    return database().then((db) => new Promise((resolve, reject) => {
      const tx = db.transaction("decisions", mode), req = act(tx.objectStore("decisions"));
      tx.oncomplete = () => { db.close(); resolve(req.result); };
      tx.onerror = tx.onabort = () => { db.close(); reject(tx.error); };
    }));
  }
  let writing = Promise.resolve();
  function save() {
    if (host.storage === false) return;  // the panel: Python writes them to the dataset
    const out = {};
    decisions.forEach((d, i) => { out[D.path[i]] = d; });
    takenBack().forEach((i) => { out[D.path[i]] = {label: null, tags: []}; });
    const text = JSON.stringify(out);
    try {
      if (text === "{}") localStorage.removeItem(STORE);
      else if (text.length <= SMALL) localStorage.setItem(STORE, text);
      else {
        localStorage.setItem(STORE, JSON.stringify({"": "indexeddb", count: decisions.size}));
        writing = writing.then(() => idb("readwrite", (st) => st.put(text, STORE)))
          .catch(() => { storage = NOT_SAVED; showCounts(); });
      }
      storage = "Saved in this browser for this report.";
    } catch (err) {  // a sandboxed frame or a private window: keep working, say so
      storage = NOT_SAVED;
    }
  }
  function load() {  // a promise: decisions saved by this report (any earlier version of it)
    if (host.storage === false) return Promise.resolve();
    let saved = null;
    try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (err) { storage = NOT_SAVED; return Promise.resolve(); }
    storage = "Saved in this browser for this report.";
    const big = saved && saved[""] === "indexeddb";
    const got = big ? idb("readonly", (st) => st.get(STORE)).then((t) => JSON.parse(t || "null")).catch(() => null)
      : Promise.resolve(saved);
    return got.then((saved) => {
      if (!saved || typeof saved !== "object") return;
      const row = new Map(D.path.map((p, i) => [p, i]));
      Object.entries(saved).forEach(([path, d]) => {
        const ok = row.has(path) && d && (d.label === null || typeof d.label === "string") && Array.isArray(d.tags);
        if (ok && d.label === null && !d.tags.length) decisions.delete(row.get(path));  // a kept one taken back
        else if (ok) decisions.set(row.get(path), {label: d.label, tags: d.tags.map(String)});
      });
    });
  }

  function decisionCounts() {
    let relabelled = 0, dropped = 0, tagged = 0;
    decisions.forEach((d) => { if (d.label !== null) relabelled++;
      if (d.tags.includes(R.drop)) dropped++; if (d.tags.some((t) => t !== R.drop)) tagged++; });
    return {relabelled: relabelled, dropped: dropped, tagged: tagged};
  }
  function showCounts() {
    const c = decisionCounts(), box = $("decided"), total = decisions.size + OFF.length;
    OFF.forEach(([, label, text]) => { const t = text ? text.split(R.separator) : [];  // the download's rows
      if (label) c.relabelled++; if (t.includes(R.drop)) c.dropped++; if (t.some((x) => x !== R.drop)) c.tagged++; });
    box.textContent = total ? total + (total === 1 ? " decision: " : " decisions: ") + c.relabelled
      + " relabelled · " + c.dropped + " dropped · " + c.tagged + " tagged"
      + (OFF.length ? " (" + OFF.length + " of images not on the map)" : "") : "No decisions yet.";
    Object.entries(Object.assign(c, {decisions: total})).forEach(([k, v]) => { box.dataset[k] = v; });
    $("storage").textContent = decisions.size ? storage : "";
    $("undo").disabled = !history.length; $("clear-decisions").disabled = !decisions.size;
    $("download-decisions").disabled = !total && !takenBack().length;
  }
  function decisionsChanged() {
    save(); if (host.changed) host.changed(decisionsCsv());
    relabelCodes(); syncWhere(); showCounts(); redraw(); renderGallery(); renderReview();
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
    map.setChosen(chosen, chosenList).then(() => {  // highlighted on screen: mouse-up (or click) to here
      timing.selectMs = performance.now() - t0; timing.selections++;
      mark.dataset.selected = n;
      if (host.selected) host.selected(chosenList);
      setTimeout(renderGallery, 0);
    });
  }
  const selectWhere = (test, ev) => {
    const t0 = performance.now(), hits = [];
    for (let i = 0; i < N; i++) if (test(i)) hits.push(i);
    choose(hits, modeOf(ev), t0);
  };

  function lookAlike() {  // "A that look like B": labelled A, suggested B; biggest pairs first
    let at = new Map();
    const pair = (i) => { const a = names[current[i]], b = SUG.names[SUG.codes[i]];
      return a === undefined || b === undefined || a === b ? null : `${a} that look like ${b}`; };
    return {name: "class that looks like another", names: () => {
      const count = new Map();
      for (let i = 0; i < N; i++) { const p = pair(i); if (p !== null) count.set(p, (count.get(p) || 0) + 1); }
      const order = [...count.keys()].sort((x, y) => count.get(y) - count.get(x) || (x < y ? -1 : 1));
      at = new Map(order.map((p, k) => [p, k]));
      return order.map((p) => `${p} (${count.get(p)})`);
    }, code: (i) => { const p = pair(i); return p === null ? -1 : at.get(p); }};
  }
  function fields() {  // what "select where" can test: categories by value, numbers by threshold
    const out = [{name: "label", names: () => names, code: (i) => current[i]}];
    if (SUG) out.push({name: "suggested label", names: () => SUG.names, code: (i) => SUG.codes[i]},
      {name: "suggested share", value: (i) => SUG.share[i]}, lookAlike());
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

  // ---- the box/lasso tool -------------------------------------------------------------------
  // Shapes are tested against the positions of the last frame drawn (scatter.js keeps them):
  // a loop over two Float32Arrays, a few ms at a million points.
  function inside(poly, x, y) {  // even-odd rule
    let on = false;
    for (let a = 0, b = poly.length - 2; a < poly.length; b = a, a += 2) {
      const ya = poly[a + 1], yb = poly[b + 1];
      if ((ya > y) !== (yb > y) && x < (poly[b] - poly[a]) * (y - ya) / (yb - ya) + poly[a]) on = !on;
    }
    return on;
  }
  function hitsIn(shape) {  // drawn points under a box [x0, y0, x1, y1] or a lasso polygon
    const [SX, SY] = map.positions(), hits = [];
    const xs = shape.poly.filter((_, k) => k % 2 === 0), ys = shape.poly.filter((_, k) => k % 2 === 1);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    for (let i = 0; i < N; i++) {
      const x = SX[i], y = SY[i];  // NaN (not drawn) fails every comparison
      if (!(x >= x0 && x <= x1 && y >= y0 && y <= y1)) continue;
      if (shape.kind === "box" || inside(shape.poly, x, y)) hits.push(i);
    }
    return hits;
  }

  let tool = "view", drag = null;
  function setTool(name) {
    tool = name;
    root.querySelectorAll("#tool button").forEach((b) => b.classList.toggle("on", b.dataset.tool === name));
    draw.classList.toggle("active", name !== "view");
    hideHover();
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

  // ---- the map: colours, what is shown, legend and colour bar ---------------------------------
  // scatter.js draws; this section decides each point's colour (recomputed only when the
  // colouring, a decision or the legend changes) and which points are shown (the search and the
  // classes the legend hides). The legend and colour bar are DOM; a legend click hides a class.
  const S = window.EmbedScatter;
  const map = S.Scatter(plot, X, Y, Z, {overlay: overlay, hover: hoverFrom, click: clickFrom, frame: framed});
  let lower = null;  // lower-case paths, made on the first search
  function matches() {  // byte per point: matches the search box
    const q = search.value.trim().toLowerCase(), out = new Uint8Array(N);
    if (!q) return out.fill(1);
    if (!lower) lower = D.path.map((p) => p.toLowerCase());
    const hitName = names.map((c) => c.toLowerCase().includes(q));
    for (let i = 0; i < N; i++) out[i] = hitName[current[i]] || lower[i].includes(q) ? 1 : 0;
    return out;
  }
  function visible() { const m = matches(), out = []; for (let i = 0; i < N; i++) if (m[i]) out.push(i); return out; }
  function groups() {  // categorical colourings: names, colours and each point's code
    if (colour.value === "label") return {key: "label", names: names, colours: colours, codes: current};
    const c = D.columns[Number(colour.value)];
    if (c.kind !== "category") return null;
    return {key: "c" + colour.value, names: c.categories, codes: c.codes,
      colours: c.colours || c.categories.map((_, k) => D.palette[k % D.palette.length])};
  }
  const hiddenBy = new Map();  // colouring key -> names its legend hides (kept per colouring)
  const hiddenNames = (key) => { if (!hiddenBy.has(key)) hiddenBy.set(key, new Set()); return hiddenBy.get(key); };
  const NONE = "(no value)";
  const RINGS = [["relabelled", "#111827", "◇"], ["dropped", "#c0262d", "×"], ["tagged", "#6a3d9a", "□"]];
  let colouring = null;

  function numberScale(c) {  // a column's range: its values never change, so found once
    if (c.range) return c.range;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < N; i++) { const v = c.values[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    return (c.range = lo <= hi ? [lo, hi] : [0, 1]);
  }
  function recolour() {  // per-point colours and the shown mask, legend and colour bar with them
    const g = groups(), paint = new Uint32Array(N), show = matches(), missing = S.packHex(D.missingColour);
    let n = 0;  // matching the search, whatever the legend hides
    for (let i = 0; i < N; i++) n += show[i];
    if (g) {
      const hidden = hiddenNames(g.key), fill = g.colours.map(S.packHex);
      const off = g.names.map((n) => hidden.has(n)), noneOff = hidden.has(NONE);
      let none = 0;
      for (let i = 0; i < N; i++) {
        const k = g.codes[i];
        if (k < 0) { paint[i] = missing; none++; if (noneOff) show[i] = 0; } else { paint[i] = fill[k]; if (off[k]) show[i] = 0; }
      }
      colouring = {name: colour.options[colour.selectedIndex].textContent, scale: false};
      legend(g.names.map((n, k) => [n, g.colours[k]]).concat(none ? [[NONE, D.missingColour]] : []), hidden);
      $("colorbar").hidden = true;
    } else {
      const c = D.columns[Number(colour.value)], [lo, hi] = numberScale(c), span = hi - lo || 1;
      for (let i = 0; i < N; i++) { const v = c.values[i]; paint[i] = v === v ? S.viridis((v - lo) / span) : missing; }
      colouring = {name: c.name, scale: true, values: c.values, range: [lo, hi]};
      legend([], new Set());
      colourBar(c.name, lo, hi);
    }
    $("count").textContent = n.toLocaleString() + " of " + N.toLocaleString() + " points shown";
    map.setShown(show);
    return map.setColours(paint);
  }
  function legend(entries, hidden) {  // class entries, then the decision rings' entries
    const box = $("legend"), counts = decisionCounts();
    const rows = entries.map(([name, col]) => {
      const row = el("div", "entry"), sw = el("span", "swatch");
      sw.style.background = col;
      row.append(sw, el("span", "legendtext", name));
      row.dataset.name = name; row.classList.toggle("off", hidden.has(name));
      row.addEventListener("click", () => setClassShown(name, hidden.has(name)));
      return row;
    });
    RINGS.forEach(([kind, col, glyph]) => {
      if (!counts[kind]) return;
      const row = el("div", "entry ring " + kind), sw = el("span", "mark", glyph);
      sw.style.color = col;
      row.append(sw, el("span", "legendtext", kind + " · " + counts[kind]));
      rows.push(row);
    });
    const title = el("div", "legendtitle", colour.options[colour.selectedIndex].textContent);
    box.replaceChildren(title, ...rows);
    box.hidden = rows.length === 0;
  }
  function colourBar(name, lo, hi) {
    const bar = $("colorbar");
    bar.replaceChildren(el("div", "legendtitle", name), el("div", "max", fmt(hi)), el("div", "ramp"), el("div", "min", fmt(lo)));
    bar.querySelector(".ramp").style.background = "linear-gradient(to top, " + S.VIRIDIS.join(", ") + ")";
    bar.dataset.name = name; bar.hidden = false;
  }
  function setClassShown(name, show) {  // what a legend click does
    const g = groups();
    if (!g) return Promise.resolve();
    const hidden = hiddenNames(g.key);
    if (show) hidden.delete(name); else hidden.add(name);
    return recolour();
  }
  function overlay(ctx, at) {  // decision marks and the pinned point, on the overlay canvas
    const r = is3d ? 4 : 6, marks = RINGS.map(() => new Path2D());  // one path per kind: one stroke each
    decisions.forEach((d, i) => {
      const p = at(i);
      if (!p) return;
      const [x, y] = p;
      if (d.label !== null) { const m = marks[0];
        m.moveTo(x, y - r - 1); m.lineTo(x + r + 1, y); m.lineTo(x, y + r + 1); m.lineTo(x - r - 1, y); m.closePath(); }
      if (d.tags.includes(R.drop)) { const m = marks[1];
        m.moveTo(x - r, y - r); m.lineTo(x + r, y + r); m.moveTo(x + r, y - r); m.lineTo(x - r, y + r); }
      if (d.tags.some((t) => t !== R.drop)) marks[2].rect(x - r, y - r, 2 * r, 2 * r);
    });
    ctx.lineWidth = 1.5;
    marks.forEach((m, k) => { ctx.strokeStyle = RINGS[k][1]; ctx.stroke(m); });
    const p = pinned === null ? null : at(pinned);
    if (p) { ctx.strokeStyle = "#111827"; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(p[0], p[1], r + 4, 0, 2 * Math.PI); ctx.stroke(); }
  }
  function framed(st) {
    const t = timing;
    t.frameMs = st.frameMs; t.frames = st.frames; t.firstFrameMs = st.firstFrameMs;
    mark.dataset.drawn = st.drawn;
  }

  let pending = 0;
  function redraw() { return recolour(); }
  function later() { clearTimeout(pending); pending = setTimeout(redraw, 60); }

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
      D.columns.forEach((c) => kv.append(el("dt", null, c.name), el("dd", null, cardValue(c, i))));
      box.appendChild(kv);
    }
  }
  // A group number of -1 means "in no group" (HDBSCAN's noise, an image without near twins)
  const GROUPS = new Set(["cluster", "look_alike_group", "near_duplicate_group"]);
  function cardValue(c, i) {
    const v = c.kind === "number" ? c.values[i] : (c.codes[i] < 0 ? null : c.categories[c.codes[i]]);
    if (GROUPS.has(c.name) && v !== null && Number(v) < 0) return "none";
    return c.kind === "number" ? fmt(v) : (v === null ? "—" : v);
  }
  function tagList(i) {
    const box = el("div", "tags");
    tagsOf(i).forEach((t) => box.append(el("span", t === R.drop ? "tag drop" : "tag", t)));
    return box;
  }

  let mouse = [0, 0];
  stage.addEventListener("mousemove", (ev) => { mouse = [ev.clientX, ev.clientY]; if (!hover.hidden) place(); });
  stage.addEventListener("mouseleave", hideHover);
  function hideHover() { hover.hidden = true; delete hover.dataset.index; delete hover.dataset.shown; }
  function place() {
    const r = stage.getBoundingClientRect(), w = hover.offsetWidth, h = hover.offsetHeight;
    let x = mouse[0] - r.left + 18, y = mouse[1] - r.top + 18;
    if (x + w > r.width - 8) x = mouse[0] - r.left - w - 18;
    if (y + h > r.height - 8) y = Math.max(8, r.height - h - 8);
    hover.style.left = Math.max(8, x) + "px"; hover.style.top = Math.max(8, y) + "px";
  }
  // The card names the point at once (data-index); data-shown follows once its thumbnail sheet
  // is decoded, so what a user sees (and `timing.hoverMs`) includes the picture.
  function hoverFrom(i, t0) {  // the point under the mouse after a frame, from scatter.js
    if (i < 0 || tool !== "view" || !$("review").hidden) { if (!hover.hidden) hideHover(); return; }
    if (!hover.hidden && Number(hover.dataset.index) === i) return;
    delete hover.dataset.shown;
    describe(hover, i, HOVER_PX); hover.hidden = false; place();
    const k = sheetOf(i);
    (k < 0 ? Promise.resolve() : sheetReady(k)).then(() => {
      if (hover.hidden || Number(hover.dataset.index) !== i) return;
      hover.dataset.shown = i;
      const t = timing;
      t.hoverMs = performance.now() - t0; t.hovers++;
    });
  }
  function clickFrom(i) { if (i >= 0 && tool === "view") pin(i); }

  // ---- neighbours: inline for small reports, else <script> chunks loaded when first needed ----
  // (file:// forbids fetch; a chunk file calls embedscopeChunk("nbr", chunk, base64 int32 rows))
  const NB = D.neighbors, chunks = new Map(), waiters = new Map();
  window.embedscopeChunk = (kind, c, b64) => {
    if (kind !== "nbr") return;
    chunks.set(c, typed({dtype: "i4", b64: b64}));
    (waiters.get(c) || []).forEach((f) => f()); waiters.delete(c);
  };
  function rowOf(arr, row) { const out = [];
    for (let k = 0; k < NB.k; k++) { const j = arr[row * NB.k + k]; if (j >= 0) out.push(j); } return out; }
  function withNeighbours(i, then) {  // then(list) now when known, else once its chunk arrived
    if (!NB) return then([]);
    if (NB.inline) return then(rowOf(NB.inline, i));
    const c = Math.floor(i / NB.chunk), done = () => then(rowOf(chunks.get(c), i - c * NB.chunk));
    if (chunks.has(c)) return done();
    if (!waiters.has(c)) {
      waiters.set(c, []);
      const tag = document.createElement("script");
      tag.src = NB.prefix + c + ".js";
      tag.onerror = () => { waiters.delete(c); say("Neighbours not found: " + NB.prefix + c + ".js is missing beside the page."); };
      document.head.appendChild(tag);
    }
    waiters.get(c).push(done);
  }

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
    if (NB) acts.append(button("Select neighbours", (ev) => { const t0 = performance.now(), at = pinned, mode = modeOf(ev);
      withNeighbours(at, (list) => choose([at].concat(list), mode, t0)); },
      "This point and its nearest neighbours; Shift adds, Alt removes"));
    if (CLUSTER) acts.append(button("Select its cluster", (ev) => { const v = clusterOf(pinned);
      selectWhere((j) => clusterOf(j) === v, ev); }, "Every point in this point's cluster"));
    detail.append(head, card, acts, el("div", "section", "Decide for this point"), decisionBar(() => [pinned], "this point"));
    detail.dataset.index = i;
    if (NB) {
      detail.appendChild(el("div", "section", "Nearest neighbours"));
      const grid = el("div"); grid.id = "neighbors";
      detail.appendChild(grid);
      withNeighbours(i, (list) => { if (pinned === i) grid.replaceChildren(...list.map((j) => {
        const t = thumb(j, 60); t.title = labelOf(j) + " — " + D.path[j];
        t.style.boxShadow = "0 0 0 1px #e2e5ea, inset 0 -3px 0 " + colours[current[j]];
        t.dataset.index = j; t.addEventListener("click", () => pin(j)); return t; })); });
    }
    detail.hidden = false; $("hint").hidden = true;
    root.querySelectorAll("#grid .tile").forEach((t) => t.classList.toggle("focused", Number(t.dataset.index) === i));
    map.request();
  }
  const clusterOf = (i) => CLUSTER.kind === "number" ? CLUSTER.values[i] : CLUSTER.codes[i];
  function unpin() { pinned = null; detail.hidden = true; $("hint").hidden = false; map.request(); }

  function enlarge(i) {  // the atlas cell scaled up: the only picture an offline page carries
    const box = $("lightbox"), card = el("div", "card");
    card.append(picture(i, LIGHTBOX_PX), el("div", "label", labelOf(i)), pathLine(D.path[i]),
      el("div", "muted", pictureNote(i)));
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
  let inOrder = null;  // rows come sorted by path from ingest: then row order is path order
  function pathsInOrder() {
    if (inOrder === null) { inOrder = true; for (let i = 1; i < N && inOrder; i++) inOrder = !(D.path[i] < D.path[i - 1]); }
    return inOrder;
  }
  function ordered() {
    const s = SORTS[Number($("sort").value)], dir = $("sort-dir").dataset.dir === "desc" ? -1 : 1;
    const idx = Array.from(chosenList);
    if (s.name === "path" && pathsInOrder()) return dir > 0 ? idx : idx.reverse();  // no sort at 1M
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
  function beside(k) {  // decisions.ReviewQueue.beside: what is shown beside it, and t drops
    const cut = Q.sources[k];
    return review.issue === "leak" ? Q.others[k].slice(0, cut) : review.issue === "near_duplicate" ? Q.others[k].slice(cut) : Q.others[k];
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
    // decisions.ReviewQueue.progress: decided, or everything shown beside it decided (t)
    const done = list.filter((k) => { const b = beside(k); return decisions.has(Q.rows[k]) || (b.length > 0 && b.every((j) => decisions.has(j))); }).length;
    $("review-progress").textContent = fill(M.reviewed, {reviewed: done, total: list.length});
    $("review-position").textContent = empty ? "" : fill(M.position, {position: review.pos + 1, total: list.length});
    $("review-prev").disabled = review.pos <= 0; $("review-next").disabled = review.pos >= list.length - 1;
    rememberSpot();
    if (empty) return;
    const k = list[review.pos], i = Q.rows[k], card = $("review-card");
    $("review").dataset.index = i;
    const others = beside(k);  // a leak's train copy, a group's members
    $("review-picture").classList.toggle("paired", others.length > 0);
    $("review-picture").replaceChildren(others.length ? pairView(i, others) : picture(i, REVIEW_PX), el("div", "muted", pictureNote(i)));
    $("review-drop_other").hidden = !others.length;
    $("review-drop_other").textContent = others.length > 1 ? "Drop the " + others.length + " others (t)" : "Drop the other copy (t)";
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
    $("review-neighbors").replaceChildren();
    withNeighbours(i, (list) => { if (Number($("review").dataset.index) === i) $("review-neighbors").replaceChildren(...list.map((j) => {
      const t = thumb(j, 76); t.title = labelOf(j) + " — " + D.path[j];
      t.style.boxShadow = "0 0 0 1px #e2e5ea, inset 0 -3px 0 " + colours[current[j]]; return t; })); });
  }
  const SPLIT = D.columns.find((c) => c.name === "split" && c.kind === "category");
  function pairView(i, others) {  // the image and what it copies (or looks the same as), large
    const box = el("div", "review-pair"), px = others.length === 1 ? REVIEW_PX : D.large ? D.large.cell : REVIEW_PX / 2;
    [i].concat(others).forEach((j) => {
      const fig = el("figure", "review-copy"), split = SPLIT && SPLIT.codes[j] >= 0 ? SPLIT.categories[SPLIT.codes[j]] + " · " : "";
      fig.dataset.index = j;
      fig.append(picture(j, j === i ? REVIEW_PX : px), el("figcaption", null, (j === i ? "this image: " : "beside it: ") + split + labelOf(j)), pathLine(D.path[j]));
      box.append(fig);
    });
    return box;
  }
  function reviewMove(by) { say(""); review.pos += by; renderReview(); }
  function reviewAct(action, text) {  // decisions.ReviewQueue.decide, in the page
    const list = queue();
    if (!list.length) return say(Q.rows.length ? M.queue_done : M.no_findings);
    const k = list[review.pos], i = Q.rows[k], others = beside(k);
    const answer = say(action === "accept" ? acceptSuggestion([i])
      : action === "keep" ? keep(i, review.issue ? [review.issue] : Q.issues[k].map((c) => Q.types[c]))
      : action === "drop" ? drop([i]) : action === "drop_other" ? (others.length ? drop(others) : M.no_other)
      : action === "label" ? setLabel([i], text) : addTag([i], text));
    if (!answer && Object.values(R.keys).includes(action)) review.pos++;
    renderReview();
    return answer;
  }
  function openReview(open) {
    $("review").hidden = !open; hideHover();
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
    const rows = Array.from(decisions, ([i, d]) => [D.path[i], d.label === null ? "" : d.label, d.tags.join(R.separator)])
      .concat(takenBack().map((i) => [D.path[i], "", ""]), OFF.map((r) => r.slice()));  // the complete set
    rows.sort((a, b) => byCodePoint(a[0], b[0]));
    return csv([["path", "label", "tags"]].concat(rows));
  }
  function selectionCsv() {  // the selected rows: what they are, where they sit, their scores
    const head = ["path", "label"].concat(is3d ? ["x", "y", "z"] : ["x", "y"], D.columns.map((c) => c.name),
      SUG ? ["suggested_label", "suggested_share"] : [], ["new_label", "tags"]);
    const rows = Array.from(chosenList, (i) => [D.path[i], D.classes[D.label[i]], num(D.x[i]), num(D.y[i])]
      .concat(is3d ? [num(D.z[i])] : [], D.columns.map((c) => c.kind === "number" ? num(c.values[i])
        : c.codes[i] < 0 ? "" : c.categories[c.codes[i]]),
      SUG ? [SUG.codes[i] < 0 ? "" : SUG.names[SUG.codes[i]], num(SUG.share[i])] : [],
      [labelOf(i) === D.classes[D.label[i]] ? "" : labelOf(i), tagsOf(i).join(R.separator)]));
    return csv([head].concat(rows));
  }

  // ---- wiring -----------------------------------------------------------------------------------
  if (root === document) document.title = D.title;
  $("title").textContent = D.title;
  [["label", "label"]].concat(D.columns.map((c, k) => [String(k), c.name])).forEach(([v, t]) => {
    const o = el("option", null, t); o.value = v; colour.appendChild(o); });
  colour.value = D.colourBy || "label";  // clusters when the labels tell nothing apart
  if (is3d) root.querySelector("#tool [data-tool='view']").textContent = "Orbit";
  root.querySelectorAll("#tool button").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("select-none").addEventListener("click", () => choose([], "replace", performance.now()));
  $("select-search").addEventListener("click", (ev) => { const hits = visible(); choose(hits, modeOf(ev), performance.now()); });
  $("undo").addEventListener("click", undo);
  $("clear-decisions").addEventListener("click", clearDecisions);
  $("download-decisions").addEventListener("click", () => download("decisions.csv", decisionsCsv()));
  $("download-selection").addEventListener("click", () => download("selection.csv", selectionCsv()));
  whereControls(); galleryControls(); reviewControls();
  $("select-none").disabled = $("download-selection").disabled = true;
  load().then(() => {
    relabelCodes(); showCounts(); renderGallery();
    return recolour();
  }).then(() => { mark.dataset.ready = "1"; });
  search.addEventListener("input", later);
  colour.addEventListener("change", redraw);
  (host.keys || document).addEventListener("keydown", (e) => {
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
  // the renderer-neutral interface tests and `make bench` drive (PAGE_CONTRACT): view() and
  // setView() (a promise of the frame drawn), pointAt(x, y) and screenPositions() in CSS px of
  // #plot, setClassShown() as a legend click, colouring() (what "colour by" shows), timing
  return {data: D, pin: pin, redraw: redraw, choose: choose, edit: edit,
    screenPositions: (idx) => map.screenPositions(idx), view: () => map.view(), setView: (v) => map.setView(v),
    pointAt: (x, y) => map.pointAt(x, y), setClassShown: setClassShown, colouring: () => colouring,
    selected: () => Array.from(chosenList), decisionsCsv: decisionsCsv,
    timing: timing};
  }

  window.EmbedExplorer = {init: init, decode: decode};
})();
