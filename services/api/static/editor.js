// The label editor of the image page: the image under a semi-transparent colour rendering of its labels,
// tools to paint a new nucleus, erase pixels and delete a nucleus, undo, zoom and pan, and save as a
// new label of the image. The ids stay a full-resolution Uint32Array; the canvas is only a view of it.
(function () {
  "use strict";
  var root = document.getElementById("editor");
  var canvas = document.getElementById("label-editor");
  if (!root || !canvas) { return; }

  var W = parseInt(root.dataset.width, 10);
  var H = parseInt(root.dataset.height, 10);
  var ctx = canvas.getContext("2d");
  var status = document.getElementById("editor-status");
  var brushInput = document.getElementById("editor-brush");
  var brushValue = document.getElementById("editor-brush-value");
  var showLabels = document.getElementById("editor-show-labels");
  var keepOthers = document.getElementById("editor-keep-others");

  var FILL_ALPHA = 110;  // of 255: the image stays visible under the labels
  var UNDO_STEPS = 50;
  var MAX_ZOOM = 32;     // canvas pixels per image pixel at most

  var labels = null;     // Uint32Array(W * H), row by row
  var maxId = 0;
  var picture = null;    // the image, drawn under the labels
  var overlay = document.createElement("canvas");  // the labels' colours at full resolution
  var overlayCtx = null;
  var overlayData = null;
  var overlayPixels = null;  // Uint32Array view of overlayData (RGBA bytes, little-endian words)

  var tool = "paint";
  var activeId = 0;      // the nucleus that paint adds to; 0 = choose at the next stroke
  var undoStack = [];
  var stroke = null;     // {kind, changed: Map(index -> old id), last: [x, y], box}
  var pan = null;        // {x, y} of the pointer at the last move
  var hover = null;      // image coordinates under the pointer, for the brush outline
  var dirty = false;     // edits since the last save
  var view = {scale: 1, fit: 1, x: 0, y: 0};  // canvas pixels per image pixel; image point at the top left

  function say(text, state) {
    status.textContent = text;
    if (state) { root.dataset.state = state; }
  }

  // --- colours ---------------------------------------------------------------------------------
  function colourOf(id) {
    if (id === 0) { return 0; }
    var h = Math.imul(id, 2654435761) >>> 0;
    var r = 70 + (h & 0xff) % 186, g = 70 + ((h >>> 8) & 0xff) % 186, b = 70 + ((h >>> 16) & 0xff) % 186;
    return ((FILL_ALPHA << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }

  function repaintOverlay(x0, y0, x1, y1) {  // inclusive box, image pixels
    x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(W - 1, x1); y1 = Math.min(H - 1, y1);
    if (x1 < x0 || y1 < y0) { return; }
    var last = -1, colour = 0;
    for (var y = y0; y <= y1; y++) {
      for (var i = y * W + x0, end = y * W + x1; i <= end; i++) {
        var id = labels[i];
        if (id !== last) { last = id; colour = colourOf(id); }
        overlayPixels[i] = colour;
      }
    }
    overlayCtx.putImageData(overlayData, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }

  // --- view --------------------------------------------------------------------------------------
  function sizeCanvas() {
    // One uniform scale for the whole image: the canvas box keeps the image's aspect ratio.
    var box = canvas.parentElement;
    var maxWidth = Math.max(200, box.clientWidth || 800);
    var maxHeight = Math.max(300, Math.round(window.innerHeight * 0.8));
    var fit = Math.min(maxWidth / W, maxHeight / H);
    var width = Math.max(1, Math.round(W * fit)), height = Math.max(1, Math.round(H * fit));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    var zoom = view.scale / view.fit;
    view.fit = width / W;
    view.scale = Math.max(view.fit, (zoom || 1) * view.fit);
    clampView();
  }

  function clampView() {
    var spanX = canvas.width / view.scale, spanY = canvas.height / view.scale;
    view.x = Math.min(Math.max(0, view.x), Math.max(0, W - spanX));
    view.y = Math.min(Math.max(0, view.y), Math.max(0, H - spanY));
  }

  function zoomAt(factor, cx, cy) {  // cx, cy: canvas pixels that stay over the same image point
    var scale = Math.min(Math.max(view.fit, view.scale * factor), Math.max(MAX_ZOOM, view.fit));
    var ix = view.x + cx / view.scale, iy = view.y + cy / view.scale;
    view.scale = scale;
    view.x = ix - cx / scale;
    view.y = iy - cy / scale;
    clampView();
    render();
  }

  var pending = false;
  function render() {
    if (pending) { return; }
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      draw();
    });
  }

  function draw() {
    var sw = canvas.width / view.scale, sh = canvas.height / view.scale;
    // the view, for anyone mapping a screen point to an image pixel: canvas pixels per image pixel, top left
    canvas.dataset.scale = view.scale;
    canvas.dataset.viewX = view.x;
    canvas.dataset.viewY = view.y;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (picture) {
      ctx.imageSmoothingEnabled = view.scale < 1;
      ctx.drawImage(picture, view.x, view.y, sw, sh, 0, 0, canvas.width, canvas.height);
    }
    if (labels && showLabels.checked) {
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(overlay, view.x, view.y, sw, sh, 0, 0, canvas.width, canvas.height);
    }
    if (hover && (tool === "paint" || tool === "erase")) {
      var radius = (brush() + 0.5) * view.scale;
      ctx.beginPath();
      ctx.arc((Math.floor(hover[0]) + 0.5 - view.x) * view.scale, (Math.floor(hover[1]) + 0.5 - view.y) * view.scale,
              Math.max(radius, 2), 0, 2 * Math.PI);
      ctx.strokeStyle = tool === "erase" ? "rgba(255,255,255,0.9)" : "rgba(255,220,0,0.9)";
      ctx.lineWidth = 1;
      ctx.stroke();
    }
  }

  // Screen → image: the exact image coordinates under the pointer (floor gives the pixel).
  function toImage(event) {
    var rect = canvas.getBoundingClientRect();
    var cx = (event.clientX - rect.left) * canvas.width / rect.width;
    var cy = (event.clientY - rect.top) * canvas.height / rect.height;
    return [view.x + cx / view.scale, view.y + cy / view.scale];
  }

  function toCanvas(event) {
    var rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * canvas.width / rect.width, (event.clientY - rect.top) * canvas.height / rect.height];
  }

  // --- editing -----------------------------------------------------------------------------------
  function brush() { return parseInt(brushInput.value, 10) || 0; }

  function stamp(fx, fy, value) {
    var cx = Math.floor(fx), cy = Math.floor(fy), r = brush(), box = stroke.box;
    var spare = value !== 0 && keepOthers.checked;  // paint only background and the nucleus itself
    var x0 = Math.max(0, cx - r), x1 = Math.min(W - 1, cx + r), y0 = Math.max(0, cy - r), y1 = Math.min(H - 1, cy + r);
    for (var y = y0; y <= y1; y++) {
      var dy = y - cy;
      for (var x = x0; x <= x1; x++) {
        var dx = x - cx;
        if (dx * dx + dy * dy > r * r) { continue; }
        var i = y * W + x;
        if (labels[i] === value || (spare && labels[i] !== 0)) { continue; }
        if (!stroke.changed.has(i)) { stroke.changed.set(i, labels[i]); }
        labels[i] = value;
      }
    }
    box[0] = Math.min(box[0], x0); box[1] = Math.min(box[1], y0); box[2] = Math.max(box[2], x1); box[3] = Math.max(box[3], y1);
  }

  function strokeTo(point) {
    var value = stroke.kind === "erase" ? 0 : activeId;
    var from = stroke.last, dx = point[0] - from[0], dy = point[1] - from[1];
    var steps = Math.max(1, Math.ceil(Math.hypot(dx, dy)));  // at most one image pixel apart: no gaps
    var box = stroke.box = [W, H, -1, -1];
    for (var s = 1; s <= steps; s++) {
      stamp(from[0] + dx * s / steps, from[1] + dy * s / steps, value);
    }
    stroke.last = point;
    repaintOverlay(box[0], box[1], box[2], box[3]);
    stroke.extent = stroke.extent ? unionBox(stroke.extent, box) : box.slice();
    render();
  }

  function unionBox(a, b) {
    return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
  }

  function inside(point) {
    return point[0] >= 0 && point[1] >= 0 && point[0] < W && point[1] < H;
  }

  function startStroke(point) {
    if (tool === "paint" && activeId === 0) {
      var under = labels[Math.floor(point[1]) * W + Math.floor(point[0])];
      activeId = under || ++maxId;  // a press on a nucleus extends it; on background starts a new one
    }
    stroke = {kind: tool, changed: new Map(), last: point, box: null, extent: null};
    var box = stroke.box = [W, H, -1, -1];
    stamp(point[0], point[1], tool === "erase" ? 0 : activeId);
    stroke.extent = box.slice();
    repaintOverlay(box[0], box[1], box[2], box[3]);
    render();
  }

  function endStroke() {
    if (stroke && stroke.changed.size) {
      remember(stroke.changed, stroke.extent);
    }
    stroke = null;
  }

  function deleteAt(point) {
    var id = labels[Math.floor(point[1]) * W + Math.floor(point[0])];
    if (!id) { say("Click inside a nucleus to delete it."); return; }
    var changed = new Map(), box = [W, H, -1, -1];
    for (var i = 0; i < labels.length; i++) {
      if (labels[i] !== id) { continue; }
      changed.set(i, id);
      labels[i] = 0;
      var x = i % W, y = (i - x) / W;
      if (x < box[0]) { box[0] = x; } if (x > box[2]) { box[2] = x; }
      if (y < box[1]) { box[1] = y; } if (y > box[3]) { box[3] = y; }
    }
    if (id === activeId) { activeId = 0; }
    repaintOverlay(box[0], box[1], box[2], box[3]);
    remember(changed, box);
    say("Nucleus deleted (" + changed.size + " pixels).");
    render();
  }

  function remember(changed, box) {
    undoStack.push({changed: changed, box: box});
    if (undoStack.length > UNDO_STEPS) { undoStack.shift(); }
    dirty = true;
    root.dataset.state = "edited";
  }

  function undo() {
    var step = undoStack.pop();
    if (!step) { say("Nothing to undo."); return; }
    step.changed.forEach(function (old, i) { labels[i] = old; });
    repaintOverlay(step.box[0], step.box[1], step.box[2], step.box[3]);
    dirty = true;
    say("Undone; " + undoStack.length + " step(s) left to undo.");
    render();
  }

  function choose(name) {
    if (name === "new") {
      if (!labels) { say("Still loading…"); return; }  // ids above the loaded ones are not known yet
      activeId = ++maxId;
      name = "paint";
      say("New nucleus " + activeId + ": paint it.");
    } else if (name === "paint") {
      say(activeId ? "Painting nucleus " + activeId + "." : "Paint: a press on a nucleus extends it, on background starts a new one.");
    }
    tool = name;
    root.querySelectorAll("button[data-tool]").forEach(function (button) {
      var active = button.dataset.tool === tool;
      button.classList.toggle("active", active);
      button.setAttribute("aria-pressed", active ? "true" : "false");
    });
    canvas.dataset.tool = tool;
    render();
  }

  // --- saving --------------------------------------------------------------------------------------
  var CRC_TABLE = (function () {
    var table = new Uint32Array(256);
    for (var n = 0; n < 256; n++) {
      var c = n;
      for (var k = 0; k < 8; k++) { c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; }
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    var c = 0xffffffff;
    for (var i = 0; i < bytes.length; i++) { c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8); }
    return (c ^ 0xffffffff) >>> 0;
  }

  function chunk(type, body) {
    var out = new Uint8Array(12 + body.length), dv = new DataView(out.buffer);
    dv.setUint32(0, body.length);
    for (var i = 0; i < 4; i++) { out[4 + i] = type.charCodeAt(i); }
    out.set(body, 8);
    dv.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
    return out;
  }

  function deflate(bytes) {  // zlib format, as PNG's IDAT wants it
    var stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
  }

  // The ids as a 16-bit grey PNG, the format the labels API takes; ids above 65535 are renumbered first.
  function labelPng() {
    var ids = labels, top = 0;
    for (var i = 0; i < ids.length; i++) { if (ids[i] > top) { top = ids[i]; } }
    if (top === 0) { return Promise.reject(new Error("the labels hold no nucleus; paint one first")); }
    if (top > 65535) {
      var numbers = new Map(), next = 0;
      ids = new Uint32Array(labels.length);
      for (var j = 0; j < labels.length; j++) {
        var id = labels[j];
        if (id && !numbers.has(id)) { numbers.set(id, ++next); }
        ids[j] = id ? numbers.get(id) : 0;
      }
      if (next > 65535) {
        return Promise.reject(new Error(next + " nuclei are more than a 16-bit label image holds; upload a 32-bit TIFF instead"));
      }
    }
    var rows = new Uint8Array(H * (1 + 2 * W)), p = 0;
    for (var y = 0; y < H; y++) {
      rows[p++] = 0;  // filter: none
      for (var x = 0, i0 = y * W; x < W; x++) {
        var v = ids[i0 + x];
        rows[p++] = v >>> 8;
        rows[p++] = v & 0xff;
      }
    }
    var header = new Uint8Array(13), dv = new DataView(header.buffer);
    dv.setUint32(0, W); dv.setUint32(4, H);
    header[8] = 16; header[9] = 0;  // 16-bit grey; compression, filter and interlace 0
    return deflate(rows).then(function (idat) {
      var signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
      return new Blob([signature, chunk("IHDR", header), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))],
                      {type: "image/png"});
    });
  }

  function save() {
    if (!labels) { return; }
    if (root.dataset.maySave !== "yes") { say("Saving labels needs the uploader role.", "error"); return; }
    say("Saving…", "saving");
    labelPng().then(function (png) {
      var form = new FormData();
      form.append("file", png, "edited-labels.png");
      return fetch(root.dataset.saveUrl, {
        method: "POST", body: form, credentials: "same-origin",
        headers: {"X-CSRF-Token": root.dataset.csrf, "Accept": "application/json"},
      });
    }).then(function (response) {
      var json = (response.headers.get("Content-Type") || "").indexOf("application/json") === 0;
      if (response.redirected || !json) { throw new Error("you are signed out: sign in again in another tab, then save"); }
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.error ? body.error.message : "status " + response.status); }
        return body;
      });
    }).then(function (body) {
      dirty = false;
      root.dataset.savedLabel = body.id;
      say((body.duplicate ? "These labels were already stored" : "Saved") + ": " + body.count + " nuclei (label " + body.id + ").",
          "saved");
    }).catch(function (error) {
      say("Not saved: " + error.message, "error");
    });
  }

  // --- events --------------------------------------------------------------------------------------
  canvas.addEventListener("pointerdown", function (event) {
    if (!labels) { return; }
    var point = toImage(event);
    if (event.button === 1 || tool === "pan") {
      pan = toCanvas(event);
    } else if (event.button !== 0 || !inside(point)) {
      return;
    } else if (tool === "delete") {
      deleteAt(point);
    } else if (tool === "paint" || tool === "erase") {
      startStroke(point);
    }
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  });

  canvas.addEventListener("pointermove", function (event) {
    if (!labels) { return; }
    var point = toImage(event);
    hover = inside(point) ? point : null;
    if (pan) {
      var now = toCanvas(event);
      view.x -= (now[0] - pan[0]) / view.scale;
      view.y -= (now[1] - pan[1]) / view.scale;
      pan = now;
      clampView();
    } else if (stroke) {
      strokeTo([Math.min(Math.max(point[0], 0), W - 1e-6), Math.min(Math.max(point[1], 0), H - 1e-6)]);
      return;
    }
    render();
  });

  function release(event) {
    pan = null;
    endStroke();
    if (canvas.hasPointerCapture(event.pointerId)) { canvas.releasePointerCapture(event.pointerId); }
  }
  canvas.addEventListener("pointerup", release);
  canvas.addEventListener("pointercancel", release);
  canvas.addEventListener("pointerleave", function () { hover = null; render(); });
  canvas.addEventListener("contextmenu", function (event) { event.preventDefault(); });

  canvas.addEventListener("wheel", function (event) {
    if (!labels) { return; }
    event.preventDefault();
    var at = toCanvas(event);
    zoomAt(event.deltaY < 0 ? 1.25 : 0.8, at[0], at[1]);
  }, {passive: false});

  root.querySelectorAll("button[data-tool]").forEach(function (button) {
    button.addEventListener("click", function () {
      if (button.dataset.tool === "save") { save(); } else { choose(button.dataset.tool); }
    });
  });
  root.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var action = button.dataset.action;
      if (action === "undo") { undo(); return; }
      if (action === "fit") { view.scale = view.fit; view.x = 0; view.y = 0; render(); return; }
      zoomAt(action === "zoom-in" ? 1.5 : 1 / 1.5, canvas.width / 2, canvas.height / 2);
    });
  });
  brushInput.addEventListener("input", function () { brushValue.textContent = brushInput.value; render(); });
  showLabels.addEventListener("change", render);

  document.addEventListener("keydown", function (event) {
    if (!labels || event.target.closest("input, textarea, select")) { return; }
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); undo(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var keys = {n: "new", p: "paint", e: "erase", d: "delete"};
    if (keys[event.key]) { choose(keys[event.key]); return; }
    if (event.key === "[" || event.key === "]") {
      brushInput.value = brush() + (event.key === "]" ? 1 : -1);
      brushInput.dispatchEvent(new Event("input"));
    }
  });

  window.addEventListener("resize", function () { sizeCanvas(); render(); });
  window.addEventListener("beforeunload", function (event) {
    if (dirty) { event.preventDefault(); event.returnValue = ""; }
  });

  // --- loading -------------------------------------------------------------------------------------
  function loadPicture() {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("the image could not be loaded")); };
      img.src = root.dataset.imageUrl;
    });
  }

  function loadLabels() {
    return fetch(root.dataset.labelsUrl, {credentials: "same-origin"}).then(function (response) {
      if (!response.ok) { throw new Error("the labels could not be loaded (status " + response.status + ")"); }
      root.dataset.source = response.headers.get("X-Label-Source") || "";
      return response.arrayBuffer();
    }).then(function (buffer) {
      if (buffer.byteLength !== W * H * 4) { throw new Error("the labels do not match the image's size"); }
      return new Uint32Array(buffer);  // the server sends little-endian ids, as every browser's platform is
    });
  }

  sizeCanvas();
  choose("paint");
  Promise.all([loadPicture(), loadLabels()]).then(function (loaded) {
    picture = loaded[0];
    labels = loaded[1];
    for (var i = 0; i < labels.length; i++) { if (labels[i] > maxId) { maxId = labels[i]; } }
    overlay.width = W;
    overlay.height = H;
    overlayCtx = overlay.getContext("2d");
    overlayData = overlayCtx.createImageData(W, H);
    overlayPixels = new Uint32Array(overlayData.data.buffer);
    repaintOverlay(0, 0, W - 1, H - 1);
    say("Ready. New nucleus, then drag to paint it; erase; delete a nucleus with a click; wheel to zoom.", "ready");
    draw();
  }).catch(function (error) {
    say("The editor could not start: " + error.message, "error");
  });
})();
