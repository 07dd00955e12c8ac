// live.py's glue (after scatter.js, explorer.js and the CSS and MARKUP constants): the page's
// explorer in a shadow root of the widget, its data received in binary chunks, its decisions
// and selection handed to Python, its keys kept inside the widget.
const bytesOf = (b) => b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

function render({model, el}) {
  el.classList.add("embedscope-live");
  el.setAttribute("data-lm-suppress-shortcuts", "true");  // JupyterLab's shortcuts skip it
  // every key typed in the panel stays in it: JupyterLab's notebook commands never see it
  const stop = (e) => e.stopPropagation();
  ["keydown", "keyup", "keypress"].forEach((t) => el.addEventListener(t, stop));
  const shadow = el.attachShadow({mode: "open"});
  shadow.innerHTML = "<style>" + CSS + ":host{display:block;height:" + Number(model.get("height"))
    + "px;border:1px solid #e2e5ea;border-radius:8px;overflow:hidden}#app{outline:none}</style>" + MARKUP;
  const app = shadow.getElementById("app");
  app.tabIndex = 0;  // a click on the map focuses the panel, so its keys arrive here
  app.addEventListener("pointerdown", () => { if (!shadow.activeElement) app.focus({preventScroll: true}); });
  const status = () => { const s = shadow.getElementById("storage"); if (s) s.textContent = model.get("saved"); };
  model.on("change:saved", status);

  const sheets = new Map();  // sheet -> resolve of its URL
  let meta = null, parts = [], need = 0, got = 0, api = null;
  function start() {
    const D = EmbedExplorer.decode(meta.data, parts.map((p) => p.buffer));
    api = EmbedExplorer.init(shadow, D, {
      mark: el, keys: app, storage: false,
      changed: (csv) => { model.set("decisions_csv", csv); model.save_changes(); },
      selected: (rows) => model.send({kind: "selected"}, undefined, [rows.slice().buffer]),
      sheet: (k) => new Promise((resolve) => { sheets.set(k, resolve); model.send({kind: "sheet", k: k}); }),
    });
    el.embedscope = api;  // the page's test interface, for the JupyterLab tests
  }
  function onMessage(msg, buffers) {
    if (msg.kind === "data") {
      meta = msg; parts = msg.sizes.map((n) => new Uint8Array(n)); need = msg.sizes.reduce((a, b) => a + b, 0); got = 0;
      if (got === need) start();
    } else if (msg.kind === "chunk" && meta) {
      const b = bytesOf(buffers[0]);
      parts[msg.part].set(b, msg.offset); got += b.length;
      if (got === need) start();
    } else if (msg.kind === "sheet" && sheets.has(msg.k)) {
      const body = buffers[0] ? bytesOf(buffers[0]) : new Uint8Array(0);  // empty: its file was gone
      sheets.get(msg.k)(URL.createObjectURL(new Blob([body], {type: msg.mime})));
      sheets.delete(msg.k);
    } else if (msg.kind === "select" && api) {
      api.choose(new Int32Array(bytesOf(buffers[0]).slice().buffer), "replace", performance.now());
    }
  }
  model.on("msg:custom", onMessage);
  model.send({kind: "hello"});
  return () => { model.off("msg:custom", onMessage); model.off("change:saved", status); };
}

export default {render};
