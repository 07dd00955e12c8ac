(function () {
  "use strict";
  // scatter.js: the explorer's point renderer, a small software rasteriser. A file:// page
  // without a GPU must still orbit a million points, and pictures from local files taint
  // canvases anyway, so nothing here needs WebGL: each frame projects every shown point into a
  // Uint32 pixel buffer with a depth buffer (nearest wins) and an id buffer (which point owns
  // each pixel), then puts the pixels on a canvas once. The id buffer answers "which point is
  // under the mouse" in O(1); the projected positions of the last frame make box and lasso a
  // loop over typed arrays. A second canvas on top carries the few things drawn with Canvas2D
  // (decision rings, the pinned point, the 3D box). Colours are 0xAABBGGRR (ImageData order).

  const FOV = Math.PI / 4;  // vertical field of view of the 3D camera
  const F = 1 / Math.tan(FOV / 2);
  const WHITE = 0xffffffff;
  const VIRIDIS = ["#440154", "#48186a", "#472d7b", "#424086", "#3b528b", "#33638d", "#2c728e",
    "#26828e", "#21918c", "#1fa088", "#28ae80", "#3fbc73", "#5ec962", "#84d44b", "#addc30",
    "#d8e219", "#fde725"];

  const rgb = (hex) => { const v = parseInt(hex.slice(1, 7), 16); return [v >> 16, (v >> 8) & 255, v & 255]; };
  const pack = (r, g, b) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  const packHex = (hex) => { const c = rgb(hex); return pack(c[0], c[1], c[2]); };
  const VIR = VIRIDIS.map(rgb);
  function viridis(t) {  // t in [0, 1] -> packed colour, linear between the 17 stops
    const u = Math.min(1, Math.max(0, t)) * (VIR.length - 1), k = Math.min(VIR.length - 2, Math.floor(u)), f = u - k;
    const a = VIR[k], b = VIR[k + 1];
    return pack(Math.round(a[0] + f * (b[0] - a[0])), Math.round(a[1] + f * (b[1] - a[1])), Math.round(a[2] + f * (b[2] - a[2])));
  }
  function fade(c, keep) {  // a packed colour blended toward white, keeping `keep` of it
    const w = 255 * (1 - keep);
    return pack(Math.round((c & 255) * keep + w), Math.round(((c >> 8) & 255) * keep + w), Math.round(((c >> 16) & 255) * keep + w));
  }

  // host: the element the canvases fill; X, Y, Z: Float32Array coordinates (Z null: a 2D map,
  // NaN: a point without coordinates, never drawn). hooks: {overlay(ctx, toScreen), hover(i, t0),
  // click(i, ev), frame(stats)}.
  function Scatter(host, X, Y, Z, hooks) {
    const N = X.length, is3d = !!Z;
    const canvas = document.createElement("canvas"), over = document.createElement("canvas");
    canvas.className = "es-points"; over.className = "es-overlay";
    host.append(canvas, over);
    const ctx = canvas.getContext("2d"), octx = over.getContext("2d");

    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < N; i++) {
      const x = X[i], y = Y[i], z = is3d ? Z[i] : 0;
      if (!(x === x && y === y && z === z)) continue;  // NaN
      if (x < lo[0]) lo[0] = x; if (x > hi[0]) hi[0] = x; if (y < lo[1]) lo[1] = y; if (y > hi[1]) hi[1] = y;
      if (z < lo[2]) lo[2] = z; if (z > hi[2]) hi[2] = z;
    }
    for (let a = 0; a < 3; a++) if (!(lo[a] <= hi[a])) { lo[a] = -1; hi[a] = 1; }
    const centre = lo.map((v, a) => (v + hi[a]) / 2);
    const radius = Math.max(1e-9, Math.hypot(hi[0] - lo[0], hi[1] - lo[1], is3d ? hi[2] - lo[2] : 0) / 2);

    // camera: 3D orbits `target` (yaw about z, pitch above the xy plane, distance in data
    // units); 2D keeps equal units on both axes: centre and pixels per unit
    let cam = null, auto = true;  // auto: the view still fits the data (refit on resize)
    const paint = new Uint32Array(N).fill(WHITE), faded = new Uint32Array(N);
    let fadedStale = true;  // the faded colours follow the colours, made when a frame needs them
    let shown = new Uint8Array(N).fill(1), chosen = null, chosenList = null;
    const SX = new Float32Array(N).fill(NaN), SY = new Float32Array(N).fill(NaN);
    let W = 0, H = 0, cssW = 0, cssH = 0, dpr = 1, img = null, px = null, depth = null, ids = null;
    let queued = false, dirty = true, waiting = [], drawn = 0, frames = 0, frameMs = null, firstFrameMs = null;
    const side = () => N > 200000 ? 2 : N > 20000 ? 3 : 5;  // point size in CSS px

    function fit() {  // the view that shows every point
      if (is3d) {
        const half = Math.atan(Math.tan(FOV / 2) * Math.min(1, cssW / Math.max(1, cssH)));
        return {yaw: Math.PI / 4, pitch: 0.6155, distance: 1.1 * radius / Math.sin(half), target: centre.slice()};
      }
      const dx = Math.max(hi[0] - lo[0], 1e-9), dy = Math.max(hi[1] - lo[1], 1e-9);
      return {cx: centre[0], cy: centre[1], scale: 0.9 * Math.min(cssW / dx, cssH / dy)};
    }
    function basis() {  // eye and camera axes (right, up, forward) of the 3D camera
      const cp = Math.cos(cam.pitch), dir = [cp * Math.cos(cam.yaw), cp * Math.sin(cam.yaw), Math.sin(cam.pitch)];
      const eye = cam.target.map((t, a) => t + cam.distance * dir[a]), f = dir.map((v) => -v);
      let r = [f[1], -f[0], 0];  // forward x (0, 0, 1)
      const rn = Math.hypot(r[0], r[1]) || 1; r = [r[0] / rn, r[1] / rn, 0];
      const u = [r[1] * f[2] - r[2] * f[1], r[2] * f[0] - r[0] * f[2], r[0] * f[1] - r[1] * f[0]];
      return {eye: eye, r: r, u: u, f: f};
    }
    function toScreen(x, y, z) {  // one data point to CSS px of the host, null when not in front
      if (!is3d) return [cssW / 2 + (x - cam.cx) * cam.scale, cssH / 2 - (y - cam.cy) * cam.scale];
      const b = basis(), d = [x - b.eye[0], y - b.eye[1], z - b.eye[2]];
      const ez = d[0] * b.f[0] + d[1] * b.f[1] + d[2] * b.f[2];
      if (!(ez > cam.distance * 1e-3)) return null;
      const k = F * cssH / 2 / ez;
      return [cssW / 2 + k * (d[0] * b.r[0] + d[1] * b.r[1] + d[2] * b.r[2]), cssH / 2 - k * (d[0] * b.u[0] + d[1] * b.u[1] + d[2] * b.u[2])];
    }

    function resize() {
      dpr = window.devicePixelRatio || 1; cssW = host.clientWidth; cssH = host.clientHeight;
      const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
      if (w === W && h === H && img) return;
      W = w; H = h;
      if (auto && cssW > 0 && cssH > 0) cam = fit();
      for (const c of [canvas, over]) { c.width = W; c.height = H; }
      img = ctx.createImageData(W, H); px = new Uint32Array(img.data.buffer);
      depth = new Float32Array(W * H); ids = new Int32Array(W * H);
    }

    function render() {
      const t0 = performance.now();
      resize();
      if (!cam) cam = fit();
      px.fill(WHITE); depth.fill(Infinity); ids.fill(-1);
      const s = Math.max(1, Math.round(side() * dpr)), off = (s - 1) >> 1, Wm = W - s, Hm = H - s;
      // one affine map per axis (2D) or one 3x4 matrix (3D) from data to device pixels
      let b = null, ax = 0, ay = 0, bx = 0, by = 0;
      if (is3d) b = basis();
      else { ax = cam.scale * dpr; bx = W / 2 - cam.cx * ax; ay = -cam.scale * dpr; by = H / 2 - cam.cy * ay; }
      const k = F * H / 2, near = cam.distance * 1e-3, dimmed = chosen !== null;
      const r0 = b ? b.r : null, u0 = b ? b.u : null, f0 = b ? b.f : null;
      const ex = b ? b.eye[0] : 0, ey = b ? b.eye[1] : 0, ez = b ? b.eye[2] : 0;
      if (dimmed && fadedStale) { for (let i = 0; i < N; i++) faded[i] = fade(paint[i], 0.4); fadedStale = false; }
      const colour = dimmed ? faded : paint, inv = 1 / dpr;
      let n = 0, dz = 0;
      const plot = (i, c, owned, skip) => {  // the square of point i at SX/SY, depth-tested
        const qx = Math.round(SX[i] * dpr) - off, qy = Math.round(SY[i] * dpr) - off;
        if (qx < 0 || qy < 0 || qx > Wm || qy > Hm) return false;
        if (skip) return true;  // on screen, drawn in the second pass
        const d = dz;
        for (let yy = 0; yy < s; yy++) {
          let p = (qy + yy) * W + qx;
          for (let xx = 0; xx < s; xx++, p++) {
            if (d < depth[p] || (owned && !chosen[ids[p]])) { depth[p] = d; ids[p] = i; px[p] = c; }
          }
        }
        return true;
      };
      for (let i = 0; i < N; i++) {
        if (!shown[i]) { SX[i] = SY[i] = NaN; continue; }
        let sx, sy;
        if (is3d) {
          const x = X[i] - ex, y = Y[i] - ey, z = Z[i] - ez;
          dz = x * f0[0] + y * f0[1] + z * f0[2];
          if (!(dz > near)) { SX[i] = SY[i] = NaN; continue; }
          const q = k / dz;
          sx = W / 2 + q * (x * r0[0] + y * r0[1] + z * r0[2]);
          sy = H / 2 - q * (x * u0[0] + y * u0[1] + z * u0[2]);
        } else {
          sx = bx + ax * X[i]; sy = by + ay * Y[i]; dz = 0;
          if (sx !== sx || sy !== sy) { SX[i] = SY[i] = NaN; continue; }
        }
        SX[i] = sx * inv; SY[i] = sy * inv;
        if (plot(i, colour[i], false, dimmed && chosen[i])) n++;
        else SX[i] = SY[i] = NaN;  // off the canvas: not drawn
      }
      if (dimmed) {  // the selection on top of the faded map, nearest first among itself
        for (let j = 0; j < chosenList.length; j++) {
          const i = chosenList[j];
          if (SX[i] !== SX[i]) continue;
          dz = is3d ? (X[i] - ex) * f0[0] + (Y[i] - ey) * f0[1] + (Z[i] - ez) * f0[2] : 0;
          plot(i, paint[i], true, false);
        }
      }
      ctx.putImageData(img, 0, 0);
      octx.setTransform(1, 0, 0, 1, 0, 0); octx.clearRect(0, 0, W, H); octx.setTransform(dpr, 0, 0, dpr, 0, 0);
      if (is3d) wireframe();
      if (hooks.overlay) hooks.overlay(octx, (i) => SX[i] === SX[i] ? [SX[i], SY[i]] : null);
      drawn = n; frames++; frameMs = performance.now() - t0;
      if (firstFrameMs === null) firstFrameMs = performance.now();
    }
    function wireframe() {  // the data's bounding box, for orientation while orbiting
      const c = [];
      for (let m = 0; m < 8; m++) c.push(toScreen(m & 1 ? hi[0] : lo[0], m & 2 ? hi[1] : lo[1], m & 4 ? hi[2] : lo[2]));
      octx.strokeStyle = "rgba(29,35,48,0.18)"; octx.lineWidth = 1; octx.beginPath();
      for (let a = 0; a < 8; a++) for (const bit of [1, 2, 4]) {
        const e = a | bit;
        if (e === a || !c[a] || !c[e]) continue;
        octx.moveTo(c[a][0], c[a][1]); octx.lineTo(c[e][0], c[e][1]);
      }
      octx.stroke();
    }

    let hoverAt = null;  // [x, y, t0] of the last pointer move not yet answered
    let late = 0;
    function tick() {
      if (!queued) return;
      queued = false; clearTimeout(late);
      const sized = host.clientWidth > 0 && host.clientHeight > 0;
      if (sized && !dirty && (Math.round(host.clientWidth * (window.devicePixelRatio || 1)) !== W
        || Math.round(host.clientHeight * (window.devicePixelRatio || 1)) !== H)) dirty = true;
      if (sized && dirty) {
        dirty = false;
        render();
        if (hooks.frame) hooks.frame({drawn: drawn, frames: frames, frameMs: frameMs, firstFrameMs: firstFrameMs});
      }
      const done = waiting; waiting = [];
      done.forEach((f) => f());
      if (hoverAt && hooks.hover) { const h = hoverAt; hoverAt = null; hooks.hover(pointAt(h[0], h[1]), h[2]); }
    }
    function request(redraw) {  // at most one frame per animation frame, whatever asks for it
      if (redraw !== false) dirty = true;
      // a frame of the browser's, or a timer where it gives none (a frame scrolled out of view)
      if (!queued) { queued = true; requestAnimationFrame(tick); late = setTimeout(tick, 250); }
      return new Promise((resolve) => waiting.push(resolve));
    }

    // offsets of a disc of device pixels, nearest first: pointAt looks at them in this order
    let ring = null, ringFor = 0;
    function pointAt(x, y) {  // the point drawn under CSS px (x, y) of the host, or -1
      if (!ids) return -1;
      const R = Math.ceil(4 * dpr);
      if (ringFor !== R) {
        ring = [];
        for (let dy = -R; dy <= R; dy++) for (let dx = -R; dx <= R; dx++) if (dx * dx + dy * dy <= R * R) ring.push([dx * dx + dy * dy, dx, dy]);
        ring.sort((a, b) => a[0] - b[0]); ringFor = R;
      }
      const cx = Math.floor(x * dpr), cy = Math.floor(y * dpr);
      for (const [, dx, dy] of ring) {
        const qx = cx + dx, qy = cy + dy;
        if (qx >= 0 && qy >= 0 && qx < W && qy < H && ids[qy * W + qx] >= 0) return ids[qy * W + qx];
      }
      return -1;
    }

    // ---- camera from the mouse: drag orbits (3D) or pans (2D); right or Shift drag pans;
    // the wheel zooms. Moves only ask for a frame; the frame draws the latest camera.
    let drag = null;
    host.addEventListener("contextmenu", (ev) => ev.preventDefault());
    host.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0 && ev.button !== 2) return;
      host.setPointerCapture(ev.pointerId);
      drag = {x: ev.clientX, y: ev.clientY, moved: false, pan: !is3d || ev.button === 2 || ev.shiftKey};
    });
    host.addEventListener("pointermove", (ev) => {
      const r = host.getBoundingClientRect();
      if (!drag) { hoverAt = [ev.clientX - r.left, ev.clientY - r.top, ev.timeStamp]; request(false); return; }
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 3) return;
      drag.moved = true; drag.x = ev.clientX; drag.y = ev.clientY; auto = false;
      if (!is3d) { cam.cx -= dx / cam.scale; cam.cy += dy / cam.scale; }
      else if (drag.pan) {
        const b = basis(), per = cam.distance / (F * cssH / 2);
        cam.target = cam.target.map((t, a) => t - (dx * b.r[a] - dy * b.u[a]) * per);
      } else {
        cam.yaw -= dx * 0.008;
        cam.pitch = Math.max(-1.55, Math.min(1.55, cam.pitch + dy * 0.008));
      }
      request();
    });
    const release = (ev) => {
      if (!drag) return;
      const was = drag; drag = null;
      if (!was.moved && ev.type === "pointerup" && ev.button === 0 && hooks.click) {
        const r = host.getBoundingClientRect();
        hooks.click(pointAt(ev.clientX - r.left, ev.clientY - r.top), ev);
      }
    };
    host.addEventListener("pointerup", release);
    host.addEventListener("pointercancel", release);
    host.addEventListener("wheel", (ev) => {
      ev.preventDefault(); auto = false;
      const z = Math.exp(Math.max(-1, Math.min(1, ev.deltaY * 0.0015)));
      if (is3d) cam.distance *= z;
      else {  // keep the data point under the cursor where it is
        const r = host.getBoundingClientRect(), mx = ev.clientX - r.left - cssW / 2, my = ev.clientY - r.top - cssH / 2;
        const x = cam.cx + mx / cam.scale, y = cam.cy - my / cam.scale;
        cam.scale /= z; cam.cx = x - mx / cam.scale; cam.cy = y + my / cam.scale;
      }
      request();
    }, {passive: false});
    new ResizeObserver(() => request()).observe(host);  // (a frame with no change draws nothing)

    return {
      N: N, is3d: is3d, request: request, pointAt: pointAt,
      // what the page shows: colours per point, which points are shown, the selection
      setColours(c) { paint.set(c); fadedStale = true; return request(); },
      setShown(mask) { shown = mask; return request(); },
      setChosen(mask, list) { chosen = list && list.length ? mask : null; chosenList = list; return request(); },
      view() {
        if (!cam) { resize(); cam = fit(); }
        const size = {width: cssW, height: cssH};
        if (is3d) return Object.assign({kind: "3d", yaw: cam.yaw, pitch: cam.pitch, distance: cam.distance, target: cam.target.slice(), fov: FOV}, size);
        const hx = cssW / 2 / cam.scale, hy = cssH / 2 / cam.scale;
        return Object.assign({kind: "2d", x: [cam.cx - hx, cam.cx + hx], y: [cam.cy - hy, cam.cy + hy]}, size);
      },
      setView(v) {
        if (!cam) { resize(); cam = fit(); }
        auto = !!v.fit || (auto && !Object.keys(v).length);
        if (is3d) ["yaw", "pitch", "distance"].forEach((k) => { if (typeof v[k] === "number") cam[k] = v[k]; });
        if (is3d && v.target) cam.target = v.target.map(Number);
        if (!is3d && v.x) { cam.cx = (v.x[0] + v.x[1]) / 2; cam.scale = cssW / Math.abs(v.x[1] - v.x[0]); }
        if (!is3d && v.y) { cam.cy = (v.y[0] + v.y[1]) / 2;
          const s = cssH / Math.abs(v.y[1] - v.y[0]); cam.scale = v.x ? Math.min(cam.scale, s) : s; }
        if (v.fit) cam = fit();
        return request();
      },
      // CSS px of the last frame (NaN: not drawn: hidden, behind the camera or off the canvas),
      // for points idx or every point
      screenPositions(idx) {
        const n = idx ? idx.length : N, out = new Float64Array(2 * n);
        for (let k = 0; k < n; k++) { const i = idx ? idx[k] : k; out[2 * k] = SX[i]; out[2 * k + 1] = SY[i]; }
        return out;
      },
      positions: () => [SX, SY],  // the last frame's own arrays, read-only by convention
      stats: () => ({drawn: drawn, frames: frames, frameMs: frameMs, firstFrameMs: firstFrameMs}),
    };
  }
  window.EmbedScatter = {Scatter: Scatter, viridis: viridis, packHex: packHex, VIRIDIS: VIRIDIS};
})();
