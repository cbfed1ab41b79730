// Ocellus dashboard: live tiles with overlays, events, stats, counts over time. No build step;
// the one library is uPlot (web/vendor/uplot, served by the daemon) for the counts charts.
// Protocol: docs/protocol.md. Frames are decoded off the main thread (createImageBitmap) and
// the newest frame wins: a frame that arrives while one is decoding replaces any waiting one.

import { $, setConn, tokenDialog, tokenStore } from "/assets/common.js";

const token = tokenStore("ocellus.token");
const withToken = token.withToken;

// Counters the browser test reads; each is bumped where the thing really happens.
const probe = (window.ocellus = { framesDrawn: 0, boxesDrawn: 0, masksDrawn: 0, zonesDrawn: 0, linesDrawn: 0, eventsShown: 0, connects: 0, feeds: {}, boxesOn: {} });
// Media Source Extensions: iOS Safari has only ManagedMediaSource.
const MSE = window.ManagedMediaSource || window.MediaSource || null;
// Zones and counting lines on the live view: on unless the user turned them off.
let showZones = localStorage.getItem("ocellus.zones") !== "off";

const cams = new Map();       // id -> camera view state
const events = new Map();     // event id -> latest event
let ws = null;
let reqId = 0;
const replies = new Map();    // request id -> resolve
let retryMs = 500;
let retryTimer = null;
let oldestId = null;
let viewerCam = null;

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function request(msg) {
  const id = "r" + ++reqId;
  return new Promise((resolve) => {
    replies.set(id, resolve);
    send({ ...msg, id });
  });
}

// --- connection ------------------------------------------------------------------------

async function connect() {
  clearTimeout(retryTimer);
  setConn("connecting", "connecting…");
  // A WebSocket refused with 401 only says "closed"; ask the API first to tell a missing
  // token from a daemon that is down.
  try {
    const r = await fetch(withToken("/api/cameras"), { cache: "no-store" });
    if (r.status === 401) {
      setConn("auth", "token needed");
      openTokenDialog();
      return;
    }
  } catch (e) {
    return scheduleReconnect();
  }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(withToken(`${proto}://${location.host}/ws`));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { retryMs = 500; probe.connects++; setConn("live", "live"); };
  ws.onmessage = (m) => (typeof m.data === "string" ? onText(JSON.parse(m.data)) : onFrame(m.data));
  ws.onclose = () => { ws = null; scheduleReconnect(); };
}

function scheduleReconnect() {
  const wait = retryMs;
  retryMs = Math.min(retryMs * 2, 10000);
  setConn("reconnecting", `reconnecting in ${Math.round(wait / 1000) || 1} s`);
  for (const c of cams.values()) c.tile.dataset.state = "offline";
  retryTimer = setTimeout(connect, wait);
}

function onText(msg) {
  switch (msg.type) {
    case "hello": return onHello(msg);
    case "event": return onEvent(msg.kind, msg.event);
    case "detections": return onDetections(msg);
    case "stats": return onStats(msg);
    case "counts": return onCountsBucket(msg);
    case "reply": {
      const r = replies.get(msg.id);
      if (r) { replies.delete(msg.id); r(msg); }
      return;
    }
    case "error": {
      console.warn("ocellus:", msg.code, msg.message);
      const r = replies.get(msg.id);
      if (r) { replies.delete(msg.id); r(msg); }
      return;
    }
    case "video": return onVideoStart(msg);
    case "video_unavailable": return useJpeg(cams.get(msg.camera), msg.reason);
    case "lagged": return; // the newest frame, or the next key frame of the video, follows
  }
}

function onHello(msg) {
  $("#no-cameras").hidden = msg.cameras.length > 0;
  for (const info of msg.cameras) {
    const cam = cams.get(info.id) || makeTile(info);
    cam.info = info;
    updateTile(cam, info);
    send({ op: "subscribe", topic: "detections", camera: info.id });
    if (MSE && !cam.jpegWhy) subscribeVideo(cam);
    else subscribeFrames(cam);
  }
  send({ op: "subscribe", topic: "events" });
  send({ op: "subscribe", topic: "stats" });
  send({ op: "subscribe", topic: "counts" });
  loadCountCameras();
  // The stats topic ticks once a second; show the latest at once.
  fetch(withToken("/api/stats"), { cache: "no-store" })
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => { if (s && s.cameras) onStats(s); })
    .catch(() => {});
  reloadEvents();
}

// --- live tiles -------------------------------------------------------------------------

function makeTile(info) {
  const fig = document.createElement("figure");
  fig.className = "tile";
  fig.tabIndex = 0;
  fig.setAttribute("role", "button");
  fig.setAttribute("aria-label", `${info.name}: open the large view`);
  fig.innerHTML = `<canvas width="640" height="480" aria-hidden="true"></canvas>
    <figcaption><span class="name"></span><span class="fps"></span><span class="feed"></span><span class="state"></span></figcaption>
    <div class="err" hidden></div>`;
  fig.querySelector(".name").textContent = info.name;
  fig.addEventListener("click", () => openViewer(info.id));
  fig.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openViewer(info.id); } });
  $("#tiles").append(fig);
  const opt = document.createElement("option");
  opt.value = opt.textContent = info.id;
  $("#f-camera").append(opt);
  const cam = { info, tile: fig, canvas: fig.querySelector("canvas"), dets: new Map(), pending: null, decoding: false, last: null, feed: null, jpegWhy: null, video: null };
  cams.set(info.id, cam);
  return cam;
}

function updateTile(cam, s) {
  cam.tile.dataset.state = s.state;
  cam.tile.querySelector(".state").textContent = s.state;
  const err = cam.tile.querySelector(".err");
  err.hidden = !(s.state === "retrying" && s.last_error);
  err.textContent = s.last_error || "";
}

function parseFrame(buf) {
  const v = new DataView(buf);
  if (buf.byteLength < 22 || v.getUint8(0) !== 1) return null;
  const idLen = v.getUint8(1);
  return {
    width: v.getUint16(2, true), height: v.getUint16(4, true),
    seq: Number(v.getBigUint64(6, true)), ts: Number(v.getBigInt64(14, true)),
    camera: new TextDecoder().decode(new Uint8Array(buf, 22, idLen)),
    jpeg: new Blob([new Uint8Array(buf, 22 + idLen)], { type: "image/jpeg" }),
  };
}

function onFrame(buf) {
  if (new DataView(buf).getUint8(0) === 2) return onVideoData(buf);
  const f = parseFrame(buf);
  const cam = f && cams.get(f.camera);
  if (!cam) return;
  cam.pending = f; // replaces a frame still waiting: newest wins, nothing queues
  if (!cam.decoding) decodeNext(cam);
}

async function decodeNext(cam) {
  const f = cam.pending;
  if (!f) return;
  cam.pending = null;
  cam.decoding = true;
  try {
    const bmp = await createImageBitmap(f.jpeg);
    if (cam.last && cam.last.bmp.close) cam.last.bmp.close();
    cam.last = { bmp, f };
    probe.framesDrawn++;
    redraw(cam);
  } catch (e) {
    console.warn("frame decode failed", e);
  }
  cam.decoding = false;
  if (cam.pending) decodeNext(cam);
}

// --- live video (H.264 through Media Source Extensions) ----------------------------------
// The camera's own stream, never re-encoded (docs/protocol.md, "Live video"): a `video`
// message with the codec, the init segment, then a media segment per picture. Kept at most
// about a second behind the newest picture; the boxes are drawn over it from the detections
// whose time is the picture's. Where MSE or the codec is missing, the JPEG frames, as before.

/// The feed the tile says it uses, and why.
function setFeed(cam, feed, why) {
  cam.feed = feed;
  const label = cam.tile.querySelector(".feed");
  label.textContent = feed === "video" ? "H.264 video" : "JPEG";
  label.title = why || "";
  probe.feeds[cam.info.id] = { feed, why: why || null };
}

function subscribeFrames(cam) {
  setFeed(cam, "jpeg", cam.jpegWhy || (MSE ? "" : "this browser has no Media Source Extensions"));
  send({ op: "subscribe", topic: "frames", camera: cam.info.id, width: viewerCam === cam.info.id ? 0 : 640 });
}

function subscribeVideo(cam) {
  send({ op: "subscribe", topic: "video", camera: cam.info.id });
}

/// Gives up the video of `cam` for its JPEG frames, saying why.
function useJpeg(cam, why) {
  if (!cam) return;
  cam.jpegWhy = why;
  stopVideo(cam);
  send({ op: "unsubscribe", topic: "video", camera: cam.info.id });
  subscribeFrames(cam);
}

function stopVideo(cam) {
  const v = cam.video;
  if (!v) return;
  cam.video = null;
  v.el.pause();
  v.el.removeAttribute("src");
  v.el.load();
  v.el.remove();
  URL.revokeObjectURL(v.url);
}

function onVideoStart(msg) {
  const cam = cams.get(msg.camera);
  if (!cam) return;
  if (!MSE || !MSE.isTypeSupported(msg.mime)) {
    return useJpeg(cam, `this browser cannot play ${msg.mime.replace(/^.*codecs="?([^"]*)"?.*$/, "$1")}; the camera's JPEG frames instead`);
  }
  stopVideo(cam); // a new stream (the camera reconnected, or changed its codec or size)
  const el = document.createElement("video");
  el.muted = true;
  el.playsInline = true;
  el.disableRemotePlayback = true; // ManagedMediaSource needs it
  el.className = "live-video";
  const ms = new MSE();
  const url = URL.createObjectURL(ms);
  el.src = url;
  cam.tile.append(el);
  const v = { el, ms, url, sb: null, queue: [], origin: msg.origin_ms, newest: null, width: msg.width, height: msg.height, lastTime: -1 };
  cam.video = v;
  ms.addEventListener("sourceopen", () => {
    v.sb = ms.addSourceBuffer(msg.mime);
    v.sb.addEventListener("updateend", () => { keepLive(v); appendNext(v); });
    appendNext(v);
  }, { once: true });
  setFeed(cam, "video", msg.mime);
  if (!cam.videoLoop) videoLoop(cam);
}

function onVideoData(buf) {
  const dv = new DataView(buf);
  const idLen = dv.getUint8(1);
  const cam = cams.get(new TextDecoder().decode(new Uint8Array(buf, 12, idLen)));
  if (!cam || !cam.video) return;
  const v = cam.video;
  if (!(dv.getUint8(2) & 1)) v.newest = Number(dv.getBigInt64(4, true));
  v.queue.push(new Uint8Array(buf, 12 + idLen));
  appendNext(v);
}

function appendNext(v) {
  if (!v.sb || v.sb.updating || !v.queue.length) return;
  // Everything waiting in one append.
  const parts = v.queue.splice(0);
  const len = parts.reduce((n, p) => n + p.byteLength, 0);
  const all = new Uint8Array(len);
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.byteLength; }
  try {
    v.sb.appendBuffer(all);
  } catch (e) {
    // QuotaExceededError: drop what was played and try again with the next segment.
    console.warn("video append failed", e);
    if (v.el.currentTime > 2 && !v.sb.updating) v.sb.remove(0, v.el.currentTime - 1);
  }
}

/// At most about a second behind the newest picture: further behind, jump to it; keep ten
/// seconds of what was played.
function keepLive(v) {
  const b = v.sb.buffered;
  if (!b.length) return;
  const last = b.length - 1, end = b.end(last), t = v.el.currentTime;
  // Before the newest range (a gap after a skip to a key frame, or the start): go to it; over
  // a second behind: jump to the newest picture.
  if (t < b.start(last) && !(last > 0 && t >= b.start(last - 1) && t < b.end(last - 1) - 0.05)) v.el.currentTime = b.start(last);
  else if (end - t > 1.0) v.el.currentTime = end - 0.2;
  if (v.el.paused) v.el.play().catch(() => {});
  if (!v.sb.updating && b.start(0) < t - 15) v.sb.remove(0, t - 10);
}

/// Draws the video's picture, when it moved on, with the boxes of its time.
function videoLoop(cam) {
  cam.videoLoop = true;
  const tick = () => {
    const v = cam.video;
    if (cam.feed !== "video") { cam.videoLoop = false; return; }
    if (v && v.el.readyState >= 2 && v.el.currentTime !== v.lastTime) {
      v.lastTime = v.el.currentTime;
      const ts = v.origin + v.el.currentTime * 1000;
      const el = v.el;
      cam.last = { bmp: { width: el.videoWidth, height: el.videoHeight, source: el }, f: { ts, seq: Infinity, byTime: true } };
      probe.framesDrawn++;
      probe.feeds[cam.info.id] = { feed: "video", why: null, currentTime: el.currentTime, behindMs: v.newest == null ? null : v.newest - ts, width: el.videoWidth, height: el.videoHeight };
      redraw(cam);
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function onDetections(d) {
  const cam = cams.get(d.camera);
  if (!cam) return;
  cam.dets.set(d.seq, d);
  // Keep the last couple of seconds.
  for (const seq of cam.dets.keys()) { if (seq < d.seq - 50) cam.dets.delete(seq); else break; }
  // Frames are streamed straight from capture and arrive before the detector is done with them:
  // the frame on screen was drawn with the previous boxes; draw it again with its own.
  if (cam.last && cam.last.f.seq === d.seq && cam.feed !== "video") redraw(cam);
}

/// The detections of the frame or, until they come, the newest of an earlier frame (a busy
/// detector skips frames); none older than a second.
function detsFor(cam, f) {
  let best = null;
  if (f.byTime) {
    // A video picture: the detections of its frame (same time, to the ms), or the newest
    // before it.
    for (const d of cam.dets.values()) { if (d.ts_ms <= f.ts + 1 && f.ts - d.ts_ms <= 1000) best = d; }
    return best;
  }
  for (const [seq, d] of cam.dets) { if (seq <= f.seq && f.ts - d.ts_ms <= 1000) best = d; }
  return best;
}

function redraw(cam) {
  draw(cam, cam.canvas);
  if (viewerCam === cam.info.id) draw(cam, $("#viewer-canvas"));
}

const COLORS = { person: "#4cc2ff", car: "#ffb84d", truck: "#ffb84d", bus: "#ffb84d", bicycle: "#c792ea", motorbike: "#c792ea", motorcycle: "#c792ea", dog: "#46d17b", cat: "#46d17b", bird: "#46d17b" };

function draw(cam, canvas) {
  const { bmp, f } = cam.last;
  if (!bmp.width || !bmp.height) return;
  if (canvas.width !== bmp.width || canvas.height !== bmp.height) { canvas.width = bmp.width; canvas.height = bmp.height; }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bmp.source || bmp, 0, 0, bmp.width, bmp.height);
  drawMasks(ctx, cam.info, bmp.width, bmp.height);
  if (showZones) drawZones(ctx, cam.info, bmp.width, bmp.height);
  const d = detsFor(cam, f);
  if (!d || !d.tracks.length) return;
  const sx = bmp.width / d.width, sy = bmp.height / d.height;
  const lw = Math.max(2, Math.round(bmp.width / 320));
  ctx.font = `${Math.max(11, Math.round(bmp.width / 64))}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const t of d.tracks) {
    const color = COLORS[t.label] || "#ff6bd6";
    const x = t.box.x * sx, y = t.box.y * sy, w = t.box.w * sx, h = t.box.h * sy;
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.setLineDash(t.confirmed ? [] : [6, 4]);
    ctx.strokeRect(x, y, w, h);
    const text = `${t.label} #${t.track_id} ${Math.round(t.score * 100)}%${t.stationary ? " · still" : ""}`;
    const tw = ctx.measureText(text).width + 6;
    ctx.fillStyle = color;
    ctx.fillRect(x - lw / 2, y - parseInt(ctx.font) - 4, tw, parseInt(ctx.font) + 4);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x + 3 - lw / 2, y - 2);
    probe.boxesDrawn++;
    const on = `${cam.info.id}:${cam.feed}`;
    probe.boxesOn[on] = (probe.boxesOn[on] || 0) + 1;
  }
  ctx.setLineDash([]);
}

/// The camera's masks, faint: object masks red (detections there are dropped), motion masks
/// amber (motion there is ignored).
function drawMasks(ctx, info, w, h) {
  const layers = [[info.object_masks, "rgba(255, 90, 90, 0.16)"], [info.motion_masks, "rgba(255, 190, 60, 0.14)"]];
  for (const [polys, fill] of layers) {
    for (const poly of polys || []) {
      ctx.beginPath();
      poly.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      probe.masksDrawn++;
    }
  }
}

/// The camera's zones (outlined, named) and counting lines (an arrow from the first point to
/// the second: `left` crossings go onto its left).
function drawZones(ctx, info, w, h) {
  const fontPx = Math.max(11, Math.round(w / 64));
  ctx.font = `${fontPx}px system-ui, sans-serif`;
  ctx.lineWidth = Math.max(2, Math.round(w / 400));
  for (const z of info.zones || []) {
    ctx.beginPath();
    z.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
    ctx.closePath();
    ctx.fillStyle = "rgba(120, 200, 255, 0.10)";
    ctx.fill();
    ctx.strokeStyle = "rgba(120, 200, 255, 0.85)";
    ctx.stroke();
    ctx.fillStyle = "rgba(120, 200, 255, 0.95)";
    ctx.textBaseline = "top";
    ctx.fillText(z.name, z.points[0][0] * w + 4, z.points[0][1] * h + 4);
    probe.zonesDrawn++;
  }
  for (const l of info.lines || []) {
    const [[ax, ay], [bx, by]] = l.points.map(([x, y]) => [x * w, y * h]);
    ctx.strokeStyle = "rgba(255, 230, 90, 0.95)";
    ctx.beginPath();
    ctx.moveTo(ax, ay);
    ctx.lineTo(bx, by);
    // Arrow head at the second point.
    const a = Math.atan2(by - ay, bx - ax), k = fontPx;
    ctx.lineTo(bx - k * Math.cos(a - 0.4), by - k * Math.sin(a - 0.4));
    ctx.moveTo(bx, by);
    ctx.lineTo(bx - k * Math.cos(a + 0.4), by - k * Math.sin(a + 0.4));
    ctx.stroke();
    ctx.fillStyle = "rgba(255, 230, 90, 0.95)";
    ctx.textBaseline = "bottom";
    ctx.fillText(l.name, ax + 4, ay - 2 > fontPx ? ay - 2 : ay + fontPx + 2);
    probe.linesDrawn++;
  }
}

function openViewer(id) {
  const cam = cams.get(id);
  viewerCam = id;
  $("#viewer-title").textContent = cam.info.name;
  // The video is the camera's own picture already; JPEG frames come full size for the viewer.
  if (cam.feed === "jpeg") send({ op: "subscribe", topic: "frames", camera: id, width: 0 });
  if (cam.last) draw(cam, $("#viewer-canvas"));
  $("#viewer").showModal();
}

$("#detail").addEventListener("close", () => {
  // Stop the clip's download and playback with the dialog.
  const video = $("#detail-video");
  video.pause();
  video.removeAttribute("src");
  video.load();
});
$("#viewer").addEventListener("close", () => {
  const cam = viewerCam && cams.get(viewerCam);
  if (cam && cam.feed === "jpeg") send({ op: "subscribe", topic: "frames", camera: viewerCam, width: 640 });
  viewerCam = null;
});

// --- events -----------------------------------------------------------------------------

function filters() {
  const q = {};
  if ($("#f-camera").value) q.camera = $("#f-camera").value;
  if ($("#f-label").value) q.label = $("#f-label").value;
  return q;
}

function matches(e) {
  const q = filters();
  return (!q.camera || e.camera === q.camera) && (!q.label || e.label === q.label);
}

function addLabelOption(label) {
  const sel = $("#f-label");
  if ([...sel.options].some((o) => o.value === label)) return;
  const opt = document.createElement("option");
  opt.value = opt.textContent = label;
  sel.append(opt);
}

async function reloadEvents() {
  events.clear();
  $("#event-list").replaceChildren();
  oldestId = null;
  await loadOlder();
}

async function loadOlder() {
  const q = { op: "query", limit: 30, ...filters() };
  if (oldestId !== null) q.before_id = oldestId;
  const r = await request(q);
  if (r.type !== "reply") return;
  for (const e of r.events) { if (!events.has(e.id)) renderEvent(e, false); }
  if (r.events.length) oldestId = r.events[r.events.length - 1].id;
  $("#older").hidden = r.next_before_id === undefined;
}

function onEvent(kind, e) {
  addLabelOption(e.label);
  if (!matches(e)) return;
  renderEvent(e, kind === "start");
}

function fmtTime(ms) { return new Date(ms).toLocaleTimeString(); }
function fmtDur(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function renderEvent(e, isNew) {
  events.set(e.id, e);
  addLabelOption(e.label);
  let li = document.getElementById("ev-" + e.id);
  if (!li) {
    li = document.createElement("li");
    li.id = "ev-" + e.id;
    li.innerHTML = `<button type="button"><img alt="" loading="lazy" width="96" height="72"><span><span class="l1"></span><br><span class="l2"></span></span></button>`;
    li.querySelector("button").addEventListener("click", () => openDetail(e.id));
    const img = li.querySelector("img");
    img.alt = `${e.label} on ${e.camera}`;
    img.onerror = () => { if (!img.dataset.retried) { img.dataset.retried = "1"; setTimeout(() => { img.src = withToken(`/api/events/${e.id}/snapshot.jpg?r=1`); }, 1000); } };
    // A new event reaches us before the database writer's batch (<= 50 ms) has committed it.
    const src = withToken(`/api/events/${e.id}/snapshot.jpg`);
    if (isNew) setTimeout(() => { img.src = src; }, 300); else img.src = src;
    const list = $("#event-list");
    // Newest first by start time: place before the first older event.
    const after = [...list.children].find((c) => (events.get(+c.id.slice(3))?.start_ms ?? 0) < e.start_ms);
    list.insertBefore(li, isNew ? list.firstChild : after || null);
    probe.eventsShown++;
  }
  const ongoing = e.end_ms === null || e.end_ms === undefined;
  li.querySelector(".l1").innerHTML = "";
  li.querySelector(".l1").append(`${e.label} · ${Math.round(e.top_score * 100)}%`);
  if (ongoing) {
    const b = document.createElement("span");
    b.className = "badge";
    b.textContent = "ongoing";
    li.querySelector(".l1").append(b);
  }
  for (const z of e.zones || []) {
    const b = document.createElement("span");
    b.className = "badge zone";
    b.textContent = z;
    li.querySelector(".l1").append(b);
  }
  for (const c of e.crossings || []) {
    const b = document.createElement("span");
    b.className = "badge crossing";
    b.textContent = `${c.line} ${c.direction === "left" ? "⟲" : "⟳"} ${c.direction}`;
    li.querySelector(".l1").append(b);
  }
  li.querySelector(".l2").textContent =
    `${e.camera} · ${fmtTime(e.start_ms)} · ${ongoing ? "for " + fmtDur(Date.now() - e.start_ms) : fmtDur(e.end_ms - e.start_ms)}`;
  li.dataset.ongoing = ongoing ? "1" : "";
}

function openDetail(id) {
  const e = events.get(id);
  $("#detail-title").textContent = `${e.label} on ${e.camera}`;
  const snapshot = withToken(`/api/events/${id}/snapshot.jpg`);
  const video = $("#detail-video");
  // With a recording, the event's clip plays (the snapshot as its poster); without, the snapshot.
  if (e.clip) {
    const clip = withToken(e.clip);
    video.poster = snapshot;
    video.src = clip;
    video.setAttribute("aria-label", `Video of the ${e.label}`);
    $("#detail-clip-link").href = clip;
    $("#detail-img").hidden = true;
    video.hidden = false;
    $("#detail-clip").hidden = false;
  } else {
    video.removeAttribute("src");
    video.hidden = true;
    $("#detail-clip").hidden = true;
    $("#detail-img").hidden = false;
    $("#detail-img").src = snapshot;
    $("#detail-img").alt = `Best view of the ${e.label}`;
  }
  const rows = [
    ["Event", `#${e.id} (track ${e.track_id})`],
    ["Started", new Date(e.start_ms).toLocaleString()],
    ["Ended", e.end_ms ? new Date(e.end_ms).toLocaleString() : "ongoing"],
    ["Duration", fmtDur((e.end_ms || Date.now()) - e.start_ms)],
    ["Best score", `${Math.round(e.top_score * 100)}% at ${fmtTime(e.best_ms)}`],
    ["Box", `${Math.round(e.box.w)}×${Math.round(e.box.h)} at ${Math.round(e.box.x)},${Math.round(e.box.y)}`],
    ["Detections", String(e.hits)],
  ];
  if (e.zones && e.zones.length) rows.push(["Zones", e.zones.join(", ")]);
  for (const c of e.crossings || []) rows.push([`Crossed ${c.line}`, `${c.direction} at ${fmtTime(c.ms)}`]);
  const dl = $("#detail-list");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  $("#detail").showModal();
}

// --- stats ------------------------------------------------------------------------------

function onStats(s) {
  const body = $("#stats tbody");
  body.replaceChildren();
  for (const c of s.cameras) {
    const tr = document.createElement("tr");
    const state = c.state === "retrying" && c.last_error ? `retrying: ${c.last_error}` : c.state;
    for (const v of [c.name, state, `${c.captured_fps.toFixed(1)} fps`, `${c.processed_fps.toFixed(1)} fps`, `${c.detect_ms.toFixed(1)} ms`]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    tr.dataset.camera = c.id;
    body.append(tr);
    // The recorder: what it records, or why it does not (a full disk, a stream it cannot keep).
    if (c.recording) {
      const r = c.recording;
      const rr = document.createElement("tr");
      rr.className = "count" + (r.state === "error" ? " error" : "");
      rr.dataset.recording = r.state;
      const td = document.createElement("td");
      td.colSpan = 5;
      const what = r.codec ? ` (${r.codec}, ${r.width}×${r.height})` : "";
      td.textContent = r.error ? `recording ${r.state}: ${r.error}` : `recording ${r.mode}: ${r.state}${what}`;
      rr.append(td);
      body.append(rr);
    }
    // Per camera: objects in each zone now, crossings per line (since start, last hour).
    for (const z of c.zones || []) {
      const zr = document.createElement("tr");
      zr.className = "count";
      zr.dataset.zone = z.name;
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = `zone ${z.name}: ${z.objects} now`;
      zr.append(td);
      body.append(zr);
    }
    for (const l of c.lines || []) {
      const lr = document.createElement("tr");
      lr.className = "count";
      lr.dataset.line = l.name;
      lr.dataset.total = String(l.left + l.right);
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = `line ${l.name}: ${l.left} left, ${l.right} right in all (last hour ${l.left_last_hour} / ${l.right_last_hour})`;
      lr.append(td);
      body.append(lr);
    }
    const cam = cams.get(c.id);
    if (cam) {
      updateTile(cam, c);
      cam.tile.querySelector(".fps").textContent = `${c.processed_fps.toFixed(1)} fps`;
    }
  }
  probe.crossings = s.cameras.reduce((n, c) => n + (c.lines || []).reduce((m, l) => m + l.left + l.right, 0), 0);
  const up = s.uptime_s;
  $("#daemon-stats").textContent =
    `${s.clients} client${s.clients === 1 ? "" : "s"} · up ${Math.floor(up / 3600)} h ${Math.floor(up / 60) % 60} min` +
    (s.db.errors ? ` · ${s.db.errors} database errors` : "");
  showHealth(s.health);
  // Ongoing events' durations tick with the stats.
  for (const li of document.querySelectorAll('#event-list li[data-ongoing="1"]')) {
    const e = events.get(+li.id.slice(3));
    if (e) li.querySelector(".l2").textContent = `${e.camera} · ${fmtTime(e.start_ms)} · for ${fmtDur(Date.now() - e.start_ms)}`;
  }
}

// The box's health line: what the stats have of it (a figure the box cannot give is left out),
// marked when the disk is nearly full, memory is short or a Pi is under-volted or throttled.
function showHealth(h) {
  const el = $("#box-health");
  if (!h) { el.textContent = ""; return; }
  const gb = (b) => `${(b / 1e9).toFixed(1)} GB`;
  const parts = [];
  let warn = false;
  if (h.cpu_percent != null) {
    parts.push(`CPU ${Math.round(h.cpu_percent)} %` + (h.process_cpu_percent != null ? ` (daemon ${Math.round(h.process_cpu_percent / h.cpus)} %)` : ""));
  }
  if (h.load) parts.push(`load ${h.load[0].toFixed(2)}`);
  if (h.memory_available_bytes != null && h.memory_total_bytes) {
    parts.push(`memory ${gb(h.memory_available_bytes)} of ${gb(h.memory_total_bytes)} free`);
    warn ||= h.memory_available_bytes < 0.05 * h.memory_total_bytes;
  }
  if (h.disk_free_bytes != null) {
    parts.push(`disk ${gb(h.disk_free_bytes)} free`);
    warn ||= h.disk_free_bytes < 1e9;
  }
  if (h.temperature_c != null) parts.push(`${h.temperature_c.toFixed(1)} °C`);
  const t = h.throttled;
  if (t) {
    const now = [t.under_voltage && "under-voltage", t.throttled && "throttled", t.frequency_capped && "frequency capped", t.soft_temperature_limit && "temperature limit"].filter(Boolean);
    if (now.length) { parts.push(now.join(", ") + " now"); warn = true; }
    else if (t.under_voltage_occurred || t.throttled_occurred) parts.push("throttled since boot");
  }
  el.textContent = parts.join(" · ");
  el.classList.toggle("warn", warn);
}

// --- counts over time ------------------------------------------------------------------
// One camera's lines, zones or labels over a range, from GET /api/counts (docs/counts.md): a
// chart (hovering shows each bucket's values in its legend), the totals for the range, and a
// CSV link for the same query. Each minute that closes on the camera (the counts topic) loads
// the view again, so it follows live.

const BUCKET_MS = { "1m": 60000, "15m": 900000, "1h": 3600000, "1d": 86400000 };
const RANGE_BUCKET = { 3600: "1m", 86400: "15m", 604800: "1h" };
const PALETTE = ["#4cc2ff", "#ffb84d", "#46d17b", "#c792ea", "#ff6b6b", "#ffd84d", "#7fdbca", "#f78c6c"];
const countsView = { range: "86400", plot: null, seq: 0, reload: null };
probe.countsLoads = 0;

async function loadCountCameras() {
  let ids = [];
  try {
    const r = await fetch(withToken("/api/counts/cameras"), { cache: "no-store" });
    if (r.ok) ids = await r.json();
  } catch (e) { return; }
  const sel = $("#c-camera");
  const keep = sel.value;
  sel.replaceChildren();
  for (const id of ids) {
    const o = document.createElement("option");
    o.value = o.textContent = id;
    sel.append(o);
  }
  if (ids.includes(keep)) sel.value = keep;
  $("#counts").hidden = ids.length === 0;
  if (ids.length) loadCounts();
}

/// The query of the view now: [URLSearchParams, bucket or null].
function countsQuery() {
  const kind = $("#c-kind").value;
  const q = new URLSearchParams({ camera: $("#c-camera").value, [kind]: "*" });
  let bucket = null;
  if (countsView.range === "custom") {
    const from = Date.parse($("#c-from").value), to = Date.parse($("#c-to").value);
    if (!(from < to)) return [null, null];
    q.set("from", String(from));
    q.set("to", String(to));
  } else {
    const to = Date.now();
    q.set("from", String(to - Number(countsView.range) * 1000));
    q.set("to", String(to));
    bucket = RANGE_BUCKET[countsView.range];
    q.set("bucket", bucket);
  }
  q.set("tz", String(-new Date().getTimezoneOffset()));
  return [q, bucket];
}

async function loadCounts() {
  const seq = ++countsView.seq;
  const [q] = countsQuery();
  if (!q || !$("#c-camera").value) {
    $("#c-status").textContent = q ? "" : "Choose a start before the end.";
    return;
  }
  let ans;
  try {
    const r = await fetch(withToken("/api/counts?" + q), { cache: "no-store" });
    ans = await r.json();
    if (!r.ok) {
      $("#c-status").textContent = ans.message || `error ${r.status}`;
      return;
    }
  } catch (e) {
    return;
  }
  // A newer load started meanwhile: its answer is the one to show.
  if (seq !== countsView.seq) return;
  $("#c-csv").href = withToken("/api/counts?" + q + "&format=csv");
  renderCounts(ans, $("#c-kind").value);
  probe.countsLoads++;
}

/// What each series of `kind` draws and totals: [field, label suffix, bars].
function columnsOf(kind) {
  if (kind === "line") return [["left", " left", true], ["right", " right", true]];
  if (kind === "zone") return [["peak", " peak", false], ["mean", " mean", false], ["entries", " entries", true]];
  return [["events", "", true]];
}

function renderCounts(ans, kind) {
  const w = BUCKET_MS[ans.bucket];
  const shift = ans.tz * 60000;
  const start = Math.floor((ans.from_ms + shift) / w) * w - shift;
  const xs = [];
  for (let t = start; t < ans.to_ms; t += w) xs.push(t / 1000);
  const cols = columnsOf(kind);
  const data = [xs];
  const series = [{ label: "time", value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleString()) }];
  let colour = 0;
  for (const s of ans.series) {
    for (const [field, suffix, bars] of cols) {
      const ys = new Array(xs.length).fill(field === "mean" || field === "peak" ? null : 0);
      for (const p of s.points) {
        const i = Math.round((p.t - start) / w);
        if (i >= 0 && i < ys.length) ys[i] = p[field];
      }
      data.push(ys);
      const stroke = PALETTE[colour++ % PALETTE.length];
      series.push({
        label: s.name + suffix,
        stroke,
        fill: bars ? stroke + "88" : undefined,
        width: bars ? 0 : 2,
        paths: bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.8, 40], gap: 1 }) : undefined,
        points: { show: false },
        value: (u, v) => (v == null ? "–" : String(v)),
      });
    }
  }
  const el = $("#c-chart");
  if (countsView.plot) { countsView.plot.destroy(); countsView.plot = null; }
  el.replaceChildren();
  const empty = ans.series.length === 0;
  $("#c-status").textContent = empty
    ? "Nothing counted in this range."
    : `${ans.series.length} ${kind === "line" ? "line" : kind === "zone" ? "zone" : "label"}${ans.series.length === 1 ? "" : "s"}, buckets of ${ans.bucket}`;
  if (!empty && window.uPlot) {
    const opts = {
      width: Math.max(320, el.clientWidth || 640),
      height: 220,
      series,
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } },
      axes: [{ stroke: "#a3afbd", grid: { stroke: "#2a323c" } }, { stroke: "#a3afbd", grid: { stroke: "#2a323c" } }],
      cursor: { drag: { x: false, y: false } },
    };
    countsView.plot = new uPlot(opts, data, el);
  }
  // Totals for the range, a row per series.
  const head = $("#c-totals thead"), body = $("#c-totals tbody");
  head.replaceChildren();
  body.replaceChildren();
  if (empty) return;
  const hr = document.createElement("tr");
  const names = kind === "line" ? ["Line", "Left", "Right", "Both"] : kind === "zone" ? ["Zone", "Entries", "Peak", "Mean objects"] : ["Label", "Events"];
  for (const n of names) { const th = document.createElement("th"); th.scope = "col"; th.textContent = n; hr.append(th); }
  head.append(hr);
  for (const s of ans.series) {
    const tr = document.createElement("tr");
    tr.dataset.kind = kind;
    tr.dataset.name = s.name;
    const t = s.total;
    const cells = kind === "line" ? [s.name, t.left, t.right, t.left + t.right] : kind === "zone" ? [s.name, t.entries, t.peak, t.mean.toFixed(2)] : [s.name, t.events];
    for (const [k, v] of Object.entries(t)) tr.dataset[k] = String(v);
    for (const v of cells) { const td = document.createElement("td"); td.textContent = String(v); tr.append(td); }
    body.append(tr);
  }
}

function onCountsBucket(msg) {
  if (msg.camera !== $("#c-camera").value || countsView.range === "custom") return;
  // Several cameras' minutes close together: load once.
  clearTimeout(countsView.reload);
  countsView.reload = setTimeout(loadCounts, 300);
}

function setRange(range) {
  countsView.range = range;
  for (const b of document.querySelectorAll("#counts .ranges button")) b.setAttribute("aria-pressed", String(b.dataset.range === range));
  $("#c-custom").hidden = range !== "custom";
  if (range === "custom" && !$("#c-from").value) {
    const local = (ms) => { const d = new Date(ms - new Date().getTimezoneOffset() * 60000); return d.toISOString().slice(0, 16); };
    $("#c-to").value = local(Date.now());
    $("#c-from").value = local(Date.now() - 86400000);
  }
  if (range !== "custom") loadCounts();
}
for (const b of document.querySelectorAll("#counts .ranges button")) b.addEventListener("click", () => setRange(b.dataset.range));
$("#c-apply").addEventListener("click", loadCounts);
$("#c-camera").addEventListener("change", loadCounts);
$("#c-kind").addEventListener("change", loadCounts);
setRange(countsView.range);
window.addEventListener("resize", () => {
  if (countsView.plot) countsView.plot.setSize({ width: Math.max(320, $("#c-chart").clientWidth), height: 220 });
});

// --- controls ---------------------------------------------------------------------------

$("#f-camera").addEventListener("change", reloadEvents);
$("#f-label").addEventListener("change", reloadEvents);
$("#older").addEventListener("click", loadOlder);
$("#zones-toggle").checked = showZones;
$("#zones-toggle").addEventListener("change", (ev) => {
  showZones = ev.target.checked;
  localStorage.setItem("ocellus.zones", showZones ? "on" : "off");
  for (const cam of cams.values()) if (cam.last) redraw(cam);
});
for (const b of document.querySelectorAll("dialog .close")) b.addEventListener("click", () => b.closest("dialog").close());

const openTokenDialog = tokenDialog(token, () => {
  if (ws) ws.close(); else connect();
});

connect();
