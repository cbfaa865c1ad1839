// The continuous-zoom viewer's page: plain JS, no build step, no library.
//
// A view maps input pixels u to canvas (device) pixels x = u * s - o. While the user zooms, s is
// any number and the page shows a preview: the input and the tiles it already has, scaled by the
// browser. When the zoom stops, s is snapped to an output grid (H, W) = (round(z h), round(z w)),
// o to whole pixels, and the canvas shows tiles of that grid 1:1: canvas pixel (x, y) is output
// pixel (y + oy, x + ox) of the upscale to (H, W). Tiles (tile x tile px of the grid, 128 by default) are asked for
// nearest the pointer first, two at a time; each zoom starts a new view number (gen) that makes
// the server drop what it was doing for the old one. Panning keeps the grid, so only tiles not yet
// seen are asked for. A grid's tiles are fitted to the view it was first settled in: sized th x tw
// (at most the server's tile side) so that whole tiles span the canvas, and shifted by shiftY, shiftX
// px so that one starts at its top-left corner; the first view of a zoom renders little beyond it.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $('view');
  const ctx = canvas.getContext('2d', { alpha: false });
  const client = (Math.random().toString(36).slice(2, 10) + Date.now().toString(36)).replace(/[^a-z0-9]/g, '');
  const MAX_BITMAPS = 600;             // ~150 MB of decoded tiles at most
  const LIMIT = { liif: 2, bicubic: 4 }; // requests in flight per kind
  const SETTLE_MS = 150;                // a zoom has stopped after this long without wheel / key / pinch

  let info = null;
  let input = null;                     // the input image, for the preview
  const view = { sx: 1, sy: 1, ox: 0, oy: 0 };
  let grid = null;                      // {H, W, th, tw, shiftY, shiftX} of the settled view (null below x1)
  let prevGrid = null;                  // the grid shown before the last zoom: part of the preview
  let settled = false;
  let gen = 0;
  let pointer = null;                   // canvas pixel of the pointer, for tile order and zoom anchor
  let compare = false;
  let split = 0.5;
  let settleTimer = null;
  let drawQueued = false;
  let timing = { start: 0, first: null, all: null };
  let errorText = '';
  let shownExact = false;               // the last drawn frame was the settled grid's tiles, all of them
  const cache = new Map();              // key -> ImageBitmap, oldest first
  const inflight = new Map();           // key -> AbortController
  const failed = new Set();
  const layouts = new Map();            // 'HxW' -> {th, tw, shiftY, shiftX}: a grid's tiles, kept for its later views

  const dpr = () => window.devicePixelRatio || 1;
  const key = (kind, g, i, j) => `${kind}/${g.H}x${g.W}/${g.th}x${g.tw}+${g.shiftY},${g.shiftX}/${i},${j}`;
  const mod = (a, n) => ((a % n) + n) % n;

  function cacheGet(k) {
    const b = cache.get(k);
    if (b) { cache.delete(k); cache.set(k, b); }
    return b;
  }

  function cachePut(k, b) {
    cache.set(k, b);
    while (cache.size > MAX_BITMAPS) {
      const [oldest, bitmap] = cache.entries().next().value;
      cache.delete(oldest);
      bitmap.close();
    }
  }

  function resize() {
    const r = canvas.getBoundingClientRect();
    const w = Math.max(1, Math.round(r.width * dpr())), h = Math.max(1, Math.round(r.height * dpr()));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; return true; }
    return false;
  }

  function fitZoom() { return Math.min(canvas.width / info.width, canvas.height / info.height); }
  function minZoom() { return Math.min(fitZoom(), 1) / 2; }
  function anchor() { return pointer || { x: canvas.width / 2, y: canvas.height / 2 }; }

  // --- view changes ---------------------------------------------------------------------------
  function postView() {
    fetch(`api/view?client=${client}&gen=${gen}`, { method: 'POST' }).catch(() => {});
  }

  function newView() {
    gen += 1;
    for (const ctl of inflight.values()) ctl.abort();
    inflight.clear();
    postView();
  }

  function clampPan() {
    const cw = canvas.width, ch = canvas.height;
    view.ox = Math.min(Math.max(view.ox, -cw / 2), info.width * view.sx - cw / 2);
    view.oy = Math.min(Math.max(view.oy, -ch / 2), info.height * view.sy - ch / 2);
  }

  function zoomTo(z, px, py) {
    z = Math.min(Math.max(z, minZoom()), info.max_zoom);
    const ux = (px + view.ox) / view.sx, uy = (py + view.oy) / view.sy;
    view.sx = view.sy = z;
    view.ox = ux * z - px;
    view.oy = uy * z - py;
    clampPan();
    if (settled) newView();         // the server stops the old view's work now
    settled = false;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => settle(px, py), SETTLE_MS);
    queueDraw();
  }

  function zoomBy(f, px, py) { zoomTo(view.sx * f, px, py); }

  function fit() {
    const z = fitZoom();
    view.sx = view.sy = z;
    view.ox = (info.width * z - canvas.width) / 2;
    view.oy = (info.height * z - canvas.height) / 2;
    settled = false;
    settle(canvas.width / 2, canvas.height / 2);
  }

  // snap the zoom to an output grid and the offset to whole pixels, then ask for the visible tiles
  function settle(px, py) {
    const z = view.sx;
    const ux = (px + view.ox) / view.sx, uy = (py + view.oy) / view.sy;
    let next = null;
    if (z >= 1) {
      next = { H: Math.round(z * info.height), W: Math.round(z * info.width) };
      view.sx = next.W / info.width;
      view.sy = next.H / info.height;
    }
    view.ox = Math.round(ux * view.sx - px);
    view.oy = Math.round(uy * view.sy - py);
    clampPan();
    view.ox = Math.round(view.ox);
    view.oy = Math.round(view.oy);
    if (next) {
      const id = `${next.H}x${next.W}`;
      if (!layouts.has(id)) layouts.set(id, fitTiles());
      Object.assign(next, layouts.get(id));
    }
    if (!sameGrid(next, grid)) {
      if (grid) prevGrid = grid;
      grid = next;
      if (grid && !$('save-size').matches(':focus')) $('save-size').value = `${grid.W} x ${grid.H}`;
    }
    newView();
    settled = true;
    failed.clear();
    timing = { start: performance.now(), first: null, all: null };
    pump();
    queueDraw();
  }

  // tiles for the settled view: as few rows / columns as span the canvas, each at most info.tile px,
  // the first starting at the canvas's top-left corner (tile (i, j) starts at row i * th - shiftY);
  // a grid smaller than the canvas along a side keeps whole tiles from its edge there
  function fitTiles() {
    const t = info.tile;
    const side = (n) => Math.min(t, Math.max(Math.ceil(n / Math.ceil(n / t)), info.min_tile));
    const th = view.oy >= 0 ? side(canvas.height) : t, tw = view.ox >= 0 ? side(canvas.width) : t;
    return { th, tw, shiftY: view.oy > 0 ? mod(-view.oy, th) : 0, shiftX: view.ox > 0 ? mod(-view.ox, tw) : 0 };
  }

  function sameGrid(a, b) { return a === b || (a && b && a.H === b.H && a.W === b.W); }

  function pan(dx, dy) {
    view.ox -= dx;
    view.oy -= dy;
    clampPan();
    if (settled) {
      view.ox = Math.round(view.ox);
      view.oy = Math.round(view.oy);
      pump();
    }
    queueDraw();
  }

  // --- tiles ------------------------------------------------------------------------------------
  // tiles of grid g that meet the canvas: [i0, i1) x [j0, j1)
  function visibleTiles(g) {
    const fx = view.sx * info.width / g.W, fy = view.sy * info.height / g.H;
    const c0 = Math.max(0, view.ox / fx), c1 = Math.min(g.W, (canvas.width + view.ox) / fx);
    const r0 = Math.max(0, view.oy / fy), r1 = Math.min(g.H, (canvas.height + view.oy) / fy);
    if (c0 >= c1 || r0 >= r1) return { i0: 0, i1: 0, j0: 0, j1: 0 };
    return {
      i0: Math.floor((r0 + g.shiftY) / g.th), i1: Math.ceil((r1 + g.shiftY) / g.th),
      j0: Math.floor((c0 + g.shiftX) / g.tw), j1: Math.ceil((c1 + g.shiftX) / g.tw),
    };
  }

  function kindsShown() { return compare ? ['bicubic', 'liif'] : ['liif']; }

  // the missing visible tiles of the settled grid, nearest the pointer first
  function missing(kind) {
    if (!grid || !settled) return [];
    const v = visibleTiles(grid), a = anchor(), out = [];
    for (let i = v.i0; i < v.i1; i++) {
      for (let j = v.j0; j < v.j1; j++) {
        const k = key(kind, grid, i, j);
        if (cache.has(k) || inflight.has(k) || failed.has(k)) continue;
        const cx = (j + 0.5) * grid.tw - grid.shiftX - view.ox, cy = (i + 0.5) * grid.th - grid.shiftY - view.oy;
        out.push({ kind, i, j, k, d: (cx - a.x) ** 2 + (cy - a.y) ** 2 });
      }
    }
    return out.sort((p, q) => p.d - q.d);
  }

  function pump() {
    for (const kind of kindsShown()) {
      let busy = [...inflight.keys()].filter((k) => k.startsWith(kind + '/')).length;
      for (const t of missing(kind)) {
        if (busy >= LIMIT[kind]) break;
        fetchTile(t);
        busy += 1;
      }
    }
  }

  async function fetchTile(t) {
    const ctl = new AbortController();
    const g = grid;
    inflight.set(t.k, ctl);
    const url = `api/tile?kind=${t.kind}&height=${g.H}&width=${g.W}&i=${t.i}&j=${t.j}`
      + `&th=${g.th}&tw=${g.tw}&sy=${g.shiftY}&sx=${g.shiftX}&client=${client}&gen=${gen}`;
    try {
      const r = await fetch(url, { signal: ctl.signal });
      if (r.ok) {
        const bitmap = await createImageBitmap(await r.blob(),
          { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
        cachePut(t.k, bitmap);
        if (t.kind === 'liif' && sameGrid(g, grid) && timing.first === null) timing.first = performance.now();
        tileArrived(t.kind, g, t.i, t.j, bitmap);
      } else if (r.status !== 409) {       // 409: superseded by a newer view, nothing to say
        failed.add(t.k);
        showError((await r.json().catch(() => ({}))).error || `tile: HTTP ${r.status}`);
      }
    } catch (e) {
      if (e.name !== 'AbortError') { failed.add(t.k); showError(`tile: ${e.message}`); }
    } finally {
      if (inflight.get(t.k) === ctl) inflight.delete(t.k);
      pump();
    }
  }

  // counts of the settled grid's visible tiles: {done, total} for the model's kind
  function progress() {
    if (!grid) return { done: 0, total: 0 };
    const v = visibleTiles(grid);
    let done = 0;
    for (let i = v.i0; i < v.i1; i++) for (let j = v.j0; j < v.j1; j++) done += cache.has(key('liif', grid, i, j));
    return { done, total: (v.i1 - v.i0) * (v.j1 - v.j0) };
  }

  // --- drawing ------------------------------------------------------------------------------------
  function queueDraw() {
    if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
  }

  function drawGrid(kind, g) {
    const v = visibleTiles(g);
    for (let i = v.i0; i < v.i1; i++) {
      for (let j = v.j0; j < v.j1; j++) {
        const b = cache.get(key(kind, g, i, j));
        if (b) drawTile(g, i, j, b);
      }
    }
  }

  function drawTile(g, i, j, b) {
    const fx = view.sx * info.width / g.W, fy = view.sy * info.height / g.H;
    const exact = fx === 1 && fy === 1;
    ctx.imageSmoothingEnabled = !exact;
    const x0 = Math.max(0, j * g.tw - g.shiftX), y0 = Math.max(0, i * g.th - g.shiftY);  // its first pixel in the grid
    if (exact) ctx.drawImage(b, x0 - view.ox, y0 - view.oy);
    else ctx.drawImage(b, x0 * fx - view.ox, y0 * fy - view.oy, b.width * fx, b.height * fy);
  }

  // the part of the canvas each kind is drawn in: [kind, x0, x1]
  function panes() {
    const cut = compare ? Math.round(split * canvas.width) : 0;
    return [['bicubic', 0, cut], ['liif', cut, canvas.width]].filter(([, x0, x1]) => x1 > x0);
  }

  // what a whole redraw depends on; while it is unchanged, an arriving tile is drawn alone (a whole
  // redraw per tile scales the preview under it again, CPU the server needs on a small machine)
  const drawnAs = () => `${view.sx},${view.sy},${view.ox},${view.oy},${canvas.width},${canvas.height},${compare},${split}`;
  let drawn = '';

  function tileArrived(kind, g, i, j, b) {
    const pane = panes().find(([k]) => k === kind);
    if (drawQueued || g !== grid || !settled || drawn !== drawnAs() || !pane) { queueDraw(); return; }
    ctx.save();
    ctx.beginPath();
    ctx.rect(pane[1], 0, pane[2] - pane[1], canvas.height);
    ctx.clip();
    drawTile(g, i, j, b);
    ctx.restore();
    status();
  }

  function drawLayers(kind) {
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(input, -view.ox, -view.oy, info.width * view.sx, info.height * view.sy);
    if (prevGrid) drawGrid(kind, prevGrid);
    if (grid) drawGrid(kind, grid);
  }

  function draw() {
    drawQueued = false;
    if (resize() && info) { queueDraw(); pump(); }
    ctx.fillStyle = '#1e1e1e';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!info) return;
    const cut = compare ? Math.round(split * canvas.width) : 0;
    for (const [kind, x0, x1] of panes()) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(x0, 0, x1 - x0, canvas.height);
      ctx.clip();
      drawLayers(kind);
      ctx.restore();
    }
    $('split').hidden = !compare;
    $('split').style.left = `${(cut / canvas.width) * 100}%`;
    drawn = drawnAs();
    status();
  }

  function status() {
    const p = progress();
    shownExact = settled && grid !== null && p.done === p.total;
    if (shownExact && timing.all === null) timing.all = performance.now();
    let text = `x${(view.sx / dpr()).toFixed(2)}`;
    if (!settled) text += ' · preview';
    else if (!grid) text += ' · below x1: the input scaled by the browser';
    else {
      text += ` · ${grid.W}x${grid.H} · ${p.done}/${p.total} tiles`;
      if (timing.first !== null) text += ` · first ${((timing.first - timing.start) / 1000).toFixed(2)} s`;
      if (timing.all !== null) text += ` · exact in ${((timing.all - timing.start) / 1000).toFixed(2)} s`;
    }
    text += ` · ${info.model}, ${info.precision} on ${info.device}`;
    const el = $('status');
    el.textContent = errorText || text;
    el.className = errorText ? 'error' : '';
  }

  function showError(message) {
    errorText = message;
    queueDraw();
    setTimeout(() => { if (errorText === message) { errorText = ''; queueDraw(); } }, 6000);
  }

  // --- input --------------------------------------------------------------------------------------
  function canvasPoint(e) {
    const r = canvas.getBoundingClientRect();
    return { x: (e.clientX - r.left) * dpr(), y: (e.clientY - r.top) * dpr() };
  }

  const pointers = new Map();
  let pinchDistance = null;

  function bindInput() {
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      pointer = canvasPoint(e);
      const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
      // a trackpad pinch arrives as a wheel event with ctrlKey: finer steps
      zoomBy(Math.exp(-e.deltaY * unit * (e.ctrlKey ? 0.01 : 0.0015)), pointer.x, pointer.y);
    }, { passive: false });
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, canvasPoint(e));
      canvas.classList.add('dragging');
    });
    canvas.addEventListener('pointermove', (e) => {
      const p = canvasPoint(e);
      pointer = p;
      const last = pointers.get(e.pointerId);
      if (!last) return;
      pointers.set(e.pointerId, p);
      if (pointers.size === 2) {       // pinch: the distance between the fingers sets the zoom
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a.x - b.x, a.y - b.y);
        if (pinchDistance) zoomBy(d / pinchDistance, (a.x + b.x) / 2, (a.y + b.y) / 2);
        pinchDistance = d;
      } else if (pointers.size === 1) {
        pan(p.x - last.x, p.y - last.y);
      }
    });
    const up = (e) => {
      pointers.delete(e.pointerId);
      if (pointers.size < 2) pinchDistance = null;
      if (!pointers.size) canvas.classList.remove('dragging');
    };
    canvas.addEventListener('pointerup', up);
    canvas.addEventListener('pointercancel', up);
    canvas.addEventListener('pointerleave', () => { if (!pointers.size) pointer = null; });
    window.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement) return;
      const a = anchor();
      if (e.key === '+' || e.key === '=') zoomBy(1.25, a.x, a.y);
      else if (e.key === '-' || e.key === '_') zoomBy(0.8, a.x, a.y);
      else if (e.key === '0') fit();
    });
    $('zoom-in').onclick = () => zoomBy(1.25, canvas.width / 2, canvas.height / 2);
    $('zoom-out').onclick = () => zoomBy(0.8, canvas.width / 2, canvas.height / 2);
    $('fit').onclick = fit;
    $('compare').onchange = (e) => { compare = e.target.checked; pump(); queueDraw(); };
    $('split-handle').addEventListener('pointerdown', (e) => {
      e.stopPropagation();
      $('split-handle').setPointerCapture(e.pointerId);
    });
    $('split-handle').addEventListener('pointermove', (e) => {
      if (!$('split-handle').hasPointerCapture(e.pointerId)) return;
      split = Math.min(Math.max(canvasPoint(e).x / canvas.width, 0), 1);
      pump();
      queueDraw();
    });
    $('save').onclick = save;
    window.addEventListener('resize', () => { queueDraw(); });
  }

  // --- save ---------------------------------------------------------------------------------------
  async function save() {
    const m = /^\s*(\d+)\s*[x×,*]\s*(\d+)\s*$/i.exec($('save-size').value);
    if (!m) { showError('save: type the size as W x H, e.g. 1920 x 1280'); return; }
    const r = await fetch('api/save', { method: 'POST', body: JSON.stringify({ width: +m[1], height: +m[2] }) });
    const job = await r.json();
    if (!r.ok) { showError(`save: ${job.error}`); return; }
    $('save').disabled = true;
    const poll = async () => {
      const s = await (await fetch('api/save')).json();
      if (s.state === 'running') { $('save').textContent = `saving ${m[1]}x${m[2]}…`; setTimeout(poll, 1000); return; }
      $('save').disabled = false;
      $('save').textContent = 'save';
      if (s.state === 'error') showError(s.message);
      else { $('save').title = s.message; showError(`${s.message} in ${s.seconds.toFixed(1)} s`); }
    };
    poll();
  }

  // --- start --------------------------------------------------------------------------------------
  async function start() {
    info = await (await fetch('api/info')).json();
    const blob = await (await fetch('api/input.png')).blob();
    input = await createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
    document.title = `${info.name} · LIIF viewer`;
    $('name').textContent = info.name;
    resize();
    bindInput();
    fit();
  }

  // for tests and the console: the view as the canvas shows it, and a zoom to z (CSS px per input px)
  window.viewer = {
    zoomTo: (z, x, y) => zoomTo(z * dpr(), x * dpr(), y * dpr()),
    state: () => {
      const p = progress();
      return {
        ready: info !== null, settled, grid, ox: view.ox, oy: view.oy, sx: view.sx, sy: view.sy, dpr: dpr(),
        width: canvas.width, height: canvas.height, done: p.done, total: p.total, inflight: inflight.size,
        exact: shownExact,
        firstTileMs: timing.first === null ? null : timing.first - timing.start,
        viewMs: timing.all === null ? null : timing.all - timing.start,
      };
    },
    setCompare: (on, at) => { compare = on; split = at; $('compare').checked = on; pump(); queueDraw(); },
  };
  start().catch((e) => showError(`cannot start: ${e.message}`));
})();
