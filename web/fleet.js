// The fleet dashboard (ocellus fleet, docs/fleet.md): the devices that publish to the broker with
// their state and health, counters per device and camera, and one event feed across the fleet.
// Everything comes from the fleet view's /api; /ws says when something was stored, and the
// panels reload then (and every 10 s, so that "since" times and offline devices stay right).

import { $, setConn as showConn, tokenDialog, tokenStore } from "/assets/common.js";

const token = tokenStore("ocellus.fleet.token");
const withToken = token.withToken;
// What the browser test reads: counts of what is shown, and the socket's state.
const probe = (window.ocellusFleet = { devices: 0, events: 0, ws: "connecting", loads: 0 });

async function api(path) {
  const r = await fetch(withToken(path));
  if (r.status === 401) { setConn("auth", "token needed"); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function setConn(state, text) {
  showConn(state, text);
  probe.ws = state;
}

const ago = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
};
const gb = (b) => (b == null ? "–" : `${(b / 1e9).toFixed(1)} GB`);
const fmtTime = (ms) => new Date(ms).toLocaleString();
const cell = (tr, text, title) => {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) td.title = title;
  tr.append(td);
  return td;
};

function showDevices(list) {
  const body = $("#devices tbody");
  body.replaceChildren();
  $("#no-devices").hidden = list.length > 0;
  const sel = $("#f-device");
  const chosen = sel.value;
  sel.replaceChildren(new Option("all", ""));
  for (const d of list) {
    sel.append(new Option(d.device, d.device));
    const s = d.stats || {};
    const h = s.health || {};
    const tr = document.createElement("tr");
    tr.dataset.device = d.device;
    tr.dataset.online = d.online ? "1" : "0";
    cell(tr, d.device);
    const st = cell(tr, `${d.online ? "online" : "offline"} for ${ago(d.since_ms)}`, `since ${fmtTime(d.since_ms)}; last message ${fmtTime(d.seen_ms)}`);
    st.className = d.online ? "ok" : "bad";
    const cams = (s.cameras || []).map((c) => `${c.id} ${c.state} ${c.processed_fps.toFixed(1)} fps`);
    cell(tr, cams.join(", ") || "–");
    const det = (s.cameras || []).map((c) => c.detector).find(Boolean);
    cell(tr, det ? `${det.family || det.kind} ${det.input ? det.input.join("x") : ""} (${det.runtime || ""})` : "–");
    cell(tr, h.cpu_percent == null ? "–" : `${Math.round(h.cpu_percent)} %`, h.load ? `load ${h.load.join(" / ")}` : "");
    cell(tr, gb(h.memory_available_bytes));
    cell(tr, gb(h.disk_free_bytes));
    cell(tr, h.temperature_c == null ? "–" : `${h.temperature_c.toFixed(1)} °C`);
    const t = h.throttled;
    const power = !t ? "–" : t.under_voltage || t.throttled ? "throttled now" : t.under_voltage_occurred || t.throttled_occurred ? "throttled since boot" : "ok";
    cell(tr, power);
    cell(tr, String(d.events));
    const link = cell(tr, "");
    const url = d.info && d.info.dashboard_url;
    if (url) {
      const a = document.createElement("a");
      a.href = url;
      a.textContent = "open";
      a.target = "_blank";
      a.rel = "noopener";
      link.append(a);
    } else link.textContent = "–";
    body.append(tr);
  }
  sel.value = chosen;
  probe.devices = list.length;
  probe.online = list.filter((d) => d.online).map((d) => d.device);
}

function showPlaces(places, counts) {
  const rows = new Map();
  const row = (device, camera) => {
    const k = `${device}/${camera}`;
    if (!rows.has(k)) rows.set(k, { device, camera, lines: new Map(), zones: [], labels: [] });
    return rows.get(k);
  };
  for (const p of places) {
    const r = row(p.device, p.camera);
    if (p.kind === "line_left" || p.kind === "line_right") {
      const l = r.lines.get(p.name) || { left: 0, right: 0 };
      l[p.kind === "line_left" ? "left" : "right"] = p.value;
      r.lines.set(p.name, l);
    } else if (p.kind === "zone") r.zones.push(`${p.name} ${p.value}`);
  }
  for (const c of counts.rows) row(c.device, c.camera).labels.push(`${c.label} ${c.events}`);
  const body = $("#places tbody");
  body.replaceChildren();
  for (const r of [...rows.values()].sort((a, b) => (a.device + a.camera).localeCompare(b.device + b.camera))) {
    const tr = document.createElement("tr");
    cell(tr, r.device);
    cell(tr, r.camera);
    cell(tr, [...r.lines].map(([n, l]) => `${n} ${l.left} / ${l.right}`).join(", ") || "–");
    cell(tr, r.zones.join(", ") || "–");
    cell(tr, r.labels.join(", ") || "–");
    body.append(tr);
  }
}

function eventQuery(before) {
  const q = new URLSearchParams();
  for (const [k, id] of [["device", "#f-device"], ["camera", "#f-camera"], ["label", "#f-label"], ["zone", "#f-zone"]]) {
    const v = $(id).value.trim();
    if (v) q.set(k, v);
  }
  const from = $("#f-from").value, to = $("#f-to").value;
  if (from) q.set("from_ms", String(new Date(from).getTime()));
  if (to) q.set("to_ms", String(new Date(to).getTime()));
  if (before != null) q.set("before_ms", String(before));
  q.set("limit", "50");
  return "/api/events?" + q;
}

let nextBefore = null;

function eventItem(e) {
  const li = document.createElement("li");
  li.dataset.device = e.device;
  li.dataset.id = String(e.id);
  if (e.has_snapshot) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = `${e.label} on ${e.device}/${e.camera}`;
    img.src = withToken(`/api/events/${encodeURIComponent(e.device)}/${e.id}/snapshot.jpg`);
    img.width = 96;
    li.append(img);
  }
  const text = document.createElement("div");
  const l1 = document.createElement("div");
  l1.className = "l1";
  l1.textContent = `${e.label} · ${e.device} / ${e.camera}`;
  const l2 = document.createElement("div");
  l2.className = "l2 muted";
  const dur = e.end_ms != null ? `${Math.round((e.end_ms - e.start_ms) / 1000)} s` : "ongoing";
  l2.textContent = `${fmtTime(e.start_ms)} · ${dur}` + (e.zones && e.zones.length ? ` · ${e.zones.join(", ")}` : "");
  text.append(l1, l2);
  if (e.clip_url) {
    // The clip is served by the box itself (its token, if it has one, is asked there).
    const a = document.createElement("a");
    a.className = "clip";
    a.href = e.clip_url;
    a.textContent = "clip";
    a.target = "_blank";
    a.rel = "noopener";
    text.append(a);
  }
  li.append(text);
  return li;
}

async function loadEvents(append) {
  const page = await api(eventQuery(append ? nextBefore : null));
  const list = $("#event-list");
  if (!append) list.replaceChildren();
  for (const e of page.events) list.append(eventItem(e));
  nextBefore = page.next_before_ms;
  $("#more").hidden = page.events.length < 50;
  probe.events = list.children.length;
  probe.shown = [...list.children].map((li) => `${li.dataset.device}:${li.dataset.id}`);
}

async function loadAll() {
  try {
    const [devices, places, counts, fleet] = await Promise.all([api("/api/devices"), api("/api/places"), api("/api/counts"), api("/api/fleet")]);
    showDevices(devices);
    showPlaces(places, counts);
    $("#broker").textContent = `${fleet.broker} ${fleet.connected ? "connected" : "not connected" + (fleet.last_error ? ": " + fleet.last_error : "")}`;
    await loadEvents(false);
    probe.loads += 1;
  } catch (e) {
    console.warn("fleet: loading failed", e);
  }
}

let pending = null;
function reloadSoon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; loadAll(); }, 300);
}

let backoff = 500;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(withToken(`${scheme}://${location.host}/ws`));
  ws.onopen = () => { backoff = 500; setConn("live", "live"); loadAll(); };
  ws.onmessage = (m) => {
    let v;
    try { v = JSON.parse(m.data); } catch { return; }
    if (v.type === "event" || v.type === "device" || v.type === "place" || v.type === "lagged") reloadSoon();
  };
  ws.onclose = () => {
    if (probe.ws !== "auth") setConn("reconnecting", "reconnecting…");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

for (const id of ["#f-device", "#f-camera", "#f-label", "#f-zone", "#f-from", "#f-to"]) {
  $(id).addEventListener("change", () => loadEvents(false).catch(() => {}));
}
$("#more").addEventListener("click", () => loadEvents(true).catch(() => {}));
tokenDialog(token, loadAll);
setInterval(loadAll, 10000);
connect();
