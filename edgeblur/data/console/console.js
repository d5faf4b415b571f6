// edgeblur console: polls /status and updates the server-rendered page in place.
// Every value is written with textContent (never innerHTML): names and errors stay text.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 5000;

function num(value, digits, unit) {
  if (typeof value !== "number" || !isFinite(value)) return "–";
  return value.toFixed(digits) + (unit || "");
}

function duration(seconds) {
  if (typeof seconds !== "number") return "–";
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const two = (x) => String(x).padStart(2, "0");
  return (d ? d + "d " : "") + two(h) + ":" + two(m) + ":" + two(s);
}

function droppedText(dropped) {
  if (!dropped || typeof dropped !== "object") return "–";
  const parts = Object.keys(dropped).sort().filter((k) => dropped[k]).map((k) => k + " " + dropped[k]);
  return parts.join(", ") || "none";
}

function outputsText(outputs) {
  if (!outputs || typeof outputs !== "object") return "–";
  const parts = Object.keys(outputs).filter((k) => outputs[k])
    .map((k) => (k === "preview" ? "preview" : k + ": " + outputs[k]));
  return parts.join("; ") || "none";
}

function stateClass(state) {
  return "state-" + String(state || "unknown").toLowerCase().replace(/[^a-z0-9]/g, "-").slice(0, 32);
}

const FIELDS = [
  ["fps in", "fps_in", (c) => num(c.fps_in, 1)],
  ["fps out", "fps_out", (c) => num(c.fps_out, 1)],
  ["latency p95", "latency_p95_ms", (c) => num(c.latency_p95_ms, 0, " ms")],
  ["frames in", "frames_in", (c) => num(c.frames_in, 0)],
  ["dropped", "dropped", (c) => droppedText(c.dropped)],
  ["reconnects", "reconnects", (c) => num(c.reconnects, 0)],
  ["last error", "last_error", (c) => c.last_error || "none"],
  ["outputs", "outputs", (c) => outputsText(c.outputs)],
];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function newTile(name) {
  const tile = el("section", "camera");
  tile.dataset.camera = name;
  const h2 = el("h2");
  h2.append(el("span", "name", name), " ");
  const state = el("span", "state");
  state.dataset.field = "state";
  h2.append(state);
  const frame = el("div", "frame");
  const empty = el("div", "preview empty", "no preview yet");
  empty.dataset.seq = "0";
  frame.append(empty);
  const dl = el("dl");
  for (const [label, key] of FIELDS) {
    const dd = el("dd");
    dd.dataset.field = key;
    dl.append(el("dt", "", label), dd);
  }
  tile.append(h2, frame, dl);
  return tile;
}

function showPreview(tile, name, seq) {
  const frame = tile.querySelector(".frame");
  const current = frame.querySelector(".preview");
  if (!seq || Number(current.dataset.seq || 0) >= seq || frame.dataset.loading) return;
  // Load off-screen and swap when complete: no flicker, no broken image between frames.
  const img = new Image();
  img.className = "preview";
  img.alt = "live preview of " + name;
  frame.dataset.loading = "1";
  img.onload = () => {
    delete frame.dataset.loading;
    img.dataset.seq = String(seq);
    const now = frame.querySelector(".preview");
    if (now) now.replaceWith(img); else frame.prepend(img);
  };
  img.onerror = () => { delete frame.dataset.loading; };
  img.src = "/preview/" + encodeURIComponent(name) + ".jpg?seq=" + seq;
}

function updateTile(tile, cam, previews) {
  const state = cam.state || (cam.enabled === false ? "disabled" : "unknown");
  const badge = tile.querySelector('[data-field="state"]');
  badge.textContent = state;
  badge.className = "state " + stateClass(state);
  for (const [, key, fmt] of FIELDS) {
    const dd = tile.querySelector('[data-field="' + key + '"]');
    if (dd) dd.textContent = fmt(cam);
  }
  if (previews) showPreview(tile, cam.name, cam.preview_seq || 0);
}

function render(status) {
  const previews = document.body.dataset.previews === "1";
  document.getElementById("version").textContent = status.version || "";
  document.getElementById("uptime").textContent = duration(status.uptime_s);
  // Each runtime entry names its model ("centerface: onnxruntime-cpu fp32").
  const runtimes = (status.inference || []).map((g) => (g.runtime || []).join(", ") || String(g.group));
  document.getElementById("runtimes").textContent = runtimes.join("; ") || "–";
  const main = document.getElementById("cameras");
  const tiles = new Map();
  for (const t of main.querySelectorAll("section.camera")) tiles.set(t.dataset.camera, t);
  const seen = new Set();
  for (const cam of status.cameras || []) {
    if (!cam || typeof cam.name !== "string") continue;
    seen.add(cam.name);
    let tile = tiles.get(cam.name);
    if (!tile) {
      tile = newTile(cam.name);
      main.append(tile);
    }
    updateTile(tile, cam, previews);
  }
  for (const [name, tile] of tiles) if (!seen.has(name)) tile.remove();
  const none = main.querySelector("p.none");
  if (none && seen.size) none.remove();
}

function setError(text) {
  const p = document.getElementById("error");
  p.textContent = text || "";
  p.hidden = !text;
}

async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const resp = await fetch("/status", { cache: "no-store", signal: ctl.signal });
    if (!resp.ok) throw new Error("/status answered " + resp.status);
    render(await resp.json());
    setError("");
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    setError("edgeblur is not answering (" + (err && err.message ? err.message : err) + "); retrying");
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
