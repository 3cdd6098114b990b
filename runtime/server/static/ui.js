// lama-deploy web page: paint a mask over a photo, POST both to /inpaint, show the result.
// One more client of the HTTP API (same fields as curl); served with a CSP that forbids inline code, so all
// behaviour lives here and all styling in ui.css.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const MASK_COLOR = "rgb(255, 0, 90)";
  const HALF = 128;  // mask canvas alpha from which a pixel is a hole
  // Per-request options, sent under the API's (and the CLI flags') names, only when the user set them.
  const OPTION_FIELDS = ["threshold", "strategy", "exif", "margin", "crop_trigger", "resize_limit"];
  const THRESHOLD_PRESETS = { lama: 0, iopaint: 127 };

  const state = {
    photoFile: null,    // the File as chosen: sent unchanged, so the result keeps its size and mode
    width: 0, height: 0,
    maskFile: null,     // a loaded mask file, sent unchanged while nothing is painted over it
    maskBase: null,     // the loaded mask drawn as overlay (a canvas), or null
    ops: [],            // strokes and clears since the photo (or mask file) was loaded: replayed for undo
    redo: [],
    stroke: null,       // the stroke being painted
    busy: false,
    urls: [],           // object URLs of the current result, revoked when replaced
  };

  const photo = $("photo"), mask = $("mask"), maskCtx = mask.getContext("2d");

  // --- messages ----------------------------------------------------------------------------------------------
  function setStatus(text) { $("status").textContent = text; }
  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  // --- the model the server runs (GET /health) ---------------------------------------------------------------
  async function describeServer() {
    try {
      const response = await fetch("health", { cache: "no-store" });
      const health = await response.json();
      const model = String(health.model || "").split(/[\\/]/).pop();
      $("model-info").textContent = `Model ${model || "?"} on ${health.backend || "?"}` +
        (health.limits ? `; up to ${Math.round(health.limits.max_body_bytes / 1048576)} MiB, ` +
          `${(health.limits.max_pixels / 1e6).toFixed(1)} MP per image` : "");
      showWeights(health.weights);
    } catch (err) {
      $("model-info").textContent = "Could not read /health: " + err.message;
    }
  }

  function showWeights(label) {
    const random = /random/i.test(label || "");
    $("weights-badge").hidden = !random;
    $("weights-badge").textContent = random ? `${label}: results are not real inpaintings` : "";
  }

  // --- the photo and the mask canvas -------------------------------------------------------------------------
  async function decode(file) {
    // EXIF orientation applied, as the server does by default: the mask is painted on the upright photo.
    return createImageBitmap(file, { imageOrientation: "from-image" });
  }

  async function openPhoto(file) {
    if (!file) return;
    showError("");
    let bitmap = null;
    try { bitmap = await decode(file); } catch (err) { bitmap = null; }
    state.photoFile = file;
    state.maskFile = null; state.maskBase = null; state.ops = []; state.redo = [];
    $("mask-file").value = "";
    if (!bitmap) {
      // Not decodable here (or not an image at all): the server judges it when a mask file is added.
      state.width = state.height = 0;
      $("canvas-wrap").hidden = true; $("drop-hint").hidden = false;
      setStatus(`This browser cannot show ${file.name}; add a mask file and press Inpaint to let the server read it.`);
      return;
    }
    state.width = bitmap.width; state.height = bitmap.height;
    photo.width = mask.width = bitmap.width;
    photo.height = mask.height = bitmap.height;
    photo.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close();
    redraw();
    $("drop-hint").hidden = true; $("canvas-wrap").hidden = false;
    fit();
    setStatus(`${file.name}: ${state.width}×${state.height}. Paint over what to remove, then press Inpaint.`);
  }

  // Show the full-resolution canvases scaled down to the space available (never up).
  function fit() {
    if (!state.width) return;
    const stage = $("stage");
    const room = stage.clientWidth - 20;
    const tall = Math.max(200, window.innerHeight * 0.72);
    const scale = Math.min(1, room / state.width, tall / state.height);
    photo.style.width = Math.floor(state.width * scale) + "px";
    photo.style.height = Math.floor(state.height * scale) + "px";
  }

  function previewThreshold() {
    const text = $("threshold").value.trim().toLowerCase();
    if (text in THRESHOLD_PRESETS) return THRESHOLD_PRESETS[text];
    const value = Number(text);
    return text && Number.isFinite(value) ? value : 0;
  }

  async function openMask(file) {
    if (!file) return;
    showError("");
    let bitmap = null;
    try { bitmap = await decode(file); } catch (err) { bitmap = null; }
    state.maskFile = file; state.maskBase = null; state.ops = []; state.redo = [];
    if (!bitmap || !state.width) {
      redraw();
      setStatus(`${file.name} cannot be shown here; it is sent as is and the server will judge it.`);
      return;
    }
    if (bitmap.width !== state.width || bitmap.height !== state.height) {
      bitmap.close();
      state.maskFile = null; $("mask-file").value = "";
      showError(`mask is ${bitmap.width}x${bitmap.height} but the photo is ${state.width}x${state.height}; ` +
        "load a mask of the photo's size or paint one");
      return;
    }
    state.maskBase = maskOverlay(bitmap, previewThreshold());
    bitmap.close();
    redraw();
    setStatus(`${file.name} loaded as the mask (preview: value > ${previewThreshold()}); paint to add, erase to remove.`);
  }

  // The mask file's holes (grey value > threshold) as an overlay canvas of the photo's size.
  function maskOverlay(bitmap, threshold) {
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width; canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      const grey = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      const hole = grey > threshold && data[i + 3] > 0;
      data[i] = 255; data[i + 1] = 0; data[i + 2] = 90; data[i + 3] = hole ? 255 : 0;
    }
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }

  // --- painting ----------------------------------------------------------------------------------------------
  function toImage(event) {
    const rect = mask.getBoundingClientRect();
    return { x: (event.clientX - rect.left) * (mask.width / rect.width),
             y: (event.clientY - rect.top) * (mask.height / rect.height) };
  }

  function brushPixels() {  // the brush is sized on screen; the stroke is stored in image pixels
    const rect = mask.getBoundingClientRect();
    return Number($("brush-size").value) * (mask.width / Math.max(1, rect.width));
  }

  function drawSegment(op, from, to) {
    maskCtx.save();
    maskCtx.globalCompositeOperation = op.erase ? "destination-out" : "source-over";
    maskCtx.strokeStyle = maskCtx.fillStyle = MASK_COLOR;
    maskCtx.lineWidth = op.size; maskCtx.lineCap = "round"; maskCtx.lineJoin = "round";
    if (from.x === to.x && from.y === to.y) {
      maskCtx.beginPath();
      maskCtx.arc(to.x, to.y, op.size / 2, 0, 2 * Math.PI);
      maskCtx.fill();
    } else {
      maskCtx.beginPath(); maskCtx.moveTo(from.x, from.y); maskCtx.lineTo(to.x, to.y); maskCtx.stroke();
    }
    maskCtx.restore();
  }

  function replay(op) {
    if (op.type === "clear") { maskCtx.clearRect(0, 0, mask.width, mask.height); return; }
    op.points.forEach((point, i) => drawSegment(op, op.points[Math.max(0, i - 1)], point));
  }

  function redraw() {
    maskCtx.clearRect(0, 0, mask.width, mask.height);
    if (state.maskBase) maskCtx.drawImage(state.maskBase, 0, 0);
    state.ops.forEach(replay);
    updateButtons();
  }

  function commit(op) {
    state.ops.push(op); state.redo = [];
    updateButtons();
  }

  function undo() { if (state.ops.length) { state.redo.push(state.ops.pop()); redraw(); } }
  function redoOp() { if (state.redo.length) { state.ops.push(state.redo.pop()); redraw(); } }
  function clearMask() {
    if (!state.width) return;
    const op = { type: "clear" };
    replay(op); commit(op);
  }

  function updateButtons() {
    $("undo").disabled = !state.ops.length;
    $("redo").disabled = !state.redo.length;
    $("inpaint").disabled = state.busy;
  }

  function onPointerDown(event) {
    if (!state.width || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    mask.setPointerCapture(event.pointerId);
    const point = toImage(event);
    state.stroke = { type: "stroke", erase: $("tool-eraser").checked, size: brushPixels(), points: [point] };
    drawSegment(state.stroke, point, point);
  }

  function onPointerMove(event) {
    moveCursor(event);
    if (!state.stroke) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of (events.length ? events : [event])) {
      const point = toImage(each), points = state.stroke.points;
      drawSegment(state.stroke, points[points.length - 1], point);
      points.push(point);
    }
  }

  function onPointerUp() {
    if (!state.stroke) return;
    commit(state.stroke);
    state.stroke = null;
  }

  function moveCursor(event) {
    const cursor = $("cursor"), rect = mask.getBoundingClientRect();
    const size = Number($("brush-size").value);
    cursor.style.width = cursor.style.height = size + "px";
    cursor.style.left = (event.clientX - rect.left) + "px";
    cursor.style.top = (event.clientY - rect.top) + "px";
    cursor.style.display = event.pointerType === "mouse" ? "block" : "none";
  }

  function setBrush(size) {
    const input = $("brush-size");
    input.value = String(Math.max(Number(input.min), Math.min(Number(input.max), size)));
    $("brush-size-value").textContent = input.value;
  }

  // --- the request -------------------------------------------------------------------------------------------
  // The painted mask as a black/white PNG at the photo's full resolution. A pixel is a hole when paint covers
  // at least half of it: the brush's anti-aliased rim stays as drawn, and erasing along a stroke leaves no
  // faint outline (an edge pixel erased twice keeps at most a quarter of its paint).
  function maskBlob() {
    const out = document.createElement("canvas");
    out.width = mask.width; out.height = mask.height;
    const painted = maskCtx.getImageData(0, 0, mask.width, mask.height).data;
    const ctx = out.getContext("2d");
    const pixels = ctx.createImageData(mask.width, mask.height), data = pixels.data;
    let holes = 0;
    for (let i = 0; i < data.length; i += 4) {
      const value = painted[i + 3] >= HALF ? 255 : 0;
      holes += value ? 1 : 0;
      data[i] = data[i + 1] = data[i + 2] = value; data[i + 3] = 255;
    }
    ctx.putImageData(pixels, 0, 0);
    return new Promise((resolve) => out.toBlob((blob) => resolve({ blob, holes }), "image/png"));
  }

  async function buildForm() {
    const form = new FormData();
    form.append("image", state.photoFile, state.photoFile.name);
    if (state.maskFile && !state.ops.length) {
      form.append("mask", state.maskFile, state.maskFile.name);  // unchanged: the server's threshold rules apply
    } else {
      const { blob, holes } = await maskBlob();
      if (!holes) throw new Error("paint over what to remove first (the mask is empty)");
      form.append("mask", blob, "mask.png");
    }
    for (const name of OPTION_FIELDS) {
      const value = $(name).value.trim();
      if (value !== "") form.append(name, value);
    }
    return form;
  }

  async function errorLine(response) {
    const text = await response.text();
    let message = "";
    try { message = JSON.parse(text).error || ""; } catch (err) { message = ""; }
    message = message || text.split("\n")[0].slice(0, 300) || response.statusText;
    return `${response.status}: ${message}`;
  }

  async function inpaint() {
    if (state.busy) return;
    showError("");
    if (!state.photoFile) { showError("open a photo first (Photo, or drop one on the page)"); return; }
    if (!state.width && !state.maskFile) {
      showError("this photo cannot be painted on here; load a mask file for it"); return;
    }
    let form;
    try { form = await buildForm(); } catch (err) { showError(err.message); return; }
    state.busy = true; updateButtons();
    setStatus("Inpainting…");
    const started = performance.now();
    try {
      const response = await fetch("inpaint", { method: "POST", body: form });
      if (!response.ok) {
        const line = await errorLine(response);
        const retry = response.headers.get("Retry-After");
        showError(response.status === 503 ? `Server busy (${line})` + (retry ? `; retry in ${retry} s` : "") : line);
        setStatus("The server refused the request.");
        return;
      }
      const blob = await response.blob();
      await showResult(blob, response.headers, (performance.now() - started) / 1000);
    } catch (err) {
      showError("could not reach the server: " + err.message);
      setStatus("");
    } finally {
      state.busy = false; updateButtons();
    }
  }

  // --- the result --------------------------------------------------------------------------------------------
  async function showResult(blob, headers, roundTrip) {
    state.urls.forEach((url) => URL.revokeObjectURL(url));
    const after = URL.createObjectURL(blob), before = URL.createObjectURL(state.photoFile);
    state.urls = [after, before];
    $("after").src = after; $("before").src = before;
    await $("after").decode().catch(() => undefined);
    const stem = state.photoFile.name.replace(/\.[^.]*$/, "") || "photo";
    $("download").href = after;
    $("download").download = `${stem}_inpainted.png`;
    const rows = [
      ["Size", `${$("after").naturalWidth}×${$("after").naturalHeight} PNG, ${(blob.size / 1024).toFixed(1)} KiB`],
      ["Strategy", headers.get("X-Inpaint-Strategy")],
      ["Backend", headers.get("X-Inpaint-Backend")],
      ["Time", `${Number(headers.get("X-Inpaint-Seconds")).toFixed(3)} s on the server, ` +
               `${roundTrip.toFixed(2)} s round trip`],
      ["Notes", headers.get("X-Inpaint-Notes")],
      ["Weights", headers.get("X-Inpaint-Weights")],
    ];
    const list = $("result-info");
    list.replaceChildren();
    for (const [name, value] of rows) {
      if (!value) continue;
      const term = document.createElement("dt"), detail = document.createElement("dd");
      term.textContent = name; detail.textContent = value;
      list.append(term, detail);
    }
    if (headers.get("X-Inpaint-Weights")) showWeights(headers.get("X-Inpaint-Weights"));
    setCompare();
    $("result").hidden = false;
    setStatus("Done. Drag the divider to compare; Download PNG saves the full-resolution result.");
  }

  function setCompare() {  // the original shows left of the divider, the result right of it
    const percent = Number($("compare").value);
    $("before").style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
    $("divider").style.left = `${percent}%`;
  }

  // --- wiring ------------------------------------------------------------------------------------------------
  function isTyping(target) {
    return target && (target.tagName === "SELECT" || target.tagName === "TEXTAREA" ||
      (target.tagName === "INPUT" && ["text", "number"].includes(target.type)));
  }

  function onKey(event) {
    if (isTyping(event.target)) return;  // keys there edit the field
    const key = event.key.toLowerCase(), ctrl = event.ctrlKey || event.metaKey;
    if (!ctrl && (event.key === "[" || event.key === "]")) {
      setBrush(Number($("brush-size").value) + (event.key === "]" ? 5 : -5));
    } else if (ctrl && key === "z") {
      if (event.shiftKey) redoOp(); else undo();
    } else if (ctrl && key === "y") {
      redoOp();
    } else {
      return;
    }
    event.preventDefault();
  }

  function wireDrop() {
    const stage = $("stage");
    const over = (on) => (event) => { event.preventDefault(); stage.classList.toggle("dragging", on); };
    document.addEventListener("dragover", over(true));
    document.addEventListener("dragleave", over(false));
    document.addEventListener("drop", (event) => {
      over(false)(event);
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) openPhoto(file);
    });
  }

  $("image-file").addEventListener("change", (event) => openPhoto(event.target.files[0]));
  $("mask-file").addEventListener("change", (event) => openMask(event.target.files[0]));
  $("brush-size").addEventListener("input", () => setBrush(Number($("brush-size").value)));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redoOp);
  $("clear").addEventListener("click", clearMask);
  $("inpaint").addEventListener("click", inpaint);
  $("compare").addEventListener("input", setCompare);
  mask.addEventListener("pointerdown", onPointerDown);
  mask.addEventListener("pointermove", onPointerMove);
  mask.addEventListener("pointerup", onPointerUp);
  mask.addEventListener("pointercancel", onPointerUp);
  mask.addEventListener("pointerleave", () => { $("cursor").style.display = "none"; });
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", fit);
  wireDrop();
  updateButtons();
  describeServer();
})();
