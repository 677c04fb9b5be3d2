// onen review: fills the page from /api/* and the /api/stream Server-Sent Events.
// Every name and value goes into the DOM through textContent or attributes, never as markup.
"use strict";

const PAGE = document.body.dataset.page;
const STATION = document.body.dataset.station;
const FLEET = document.body.dataset.fleet === "true";
const OVERLAY_MIN_MS = 1000;          // an overlay image is refetched at most once a second per camera
const main = document.getElementById("main");
let model = null;                     // /api/model, loaded once

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(value, digits) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function kv(pairs) {
  const list = el("dl", {class: "kv"});
  for (const [key, value] of pairs) list.append(el("dt", {text: key}), el("dd", {text: value}));
  return list;
}

// ---- header, banners and the event stream ------------------------------------------------------
async function loadModel() {
  try {
    model = await getJSON("/api/model");
    const names = Object.values(model.models).filter((m) => m.model_name).map((m) => m.model_name + " " + m.version);
    document.getElementById("model-name").textContent = names.length ? "model " + names.join(", ") : "";
  } catch (error) {
    document.getElementById("model-name").textContent = "model unknown";
  }
}

function renderBanners(snapshot) {
  const box = document.getElementById("banners");
  box.replaceChildren();
  if (!snapshot) return;
  const station = snapshot.stations[STATION];
  if (!snapshot.broker_connected) {
    box.append(el("div", {class: "banner offline", id: "banner-offline", text: "Station offline: the broker is unreachable (reconnecting…)"}));
  } else if (!FLEET && station && station.online === false) {
    box.append(el("div", {class: "banner offline", id: "banner-offline", text: "Station " + STATION + " offline"}));
  }
  const cameras = station ? station.cameras : {};
  for (const camera of Object.values(cameras)) {
    if (camera.status === "lost" || camera.status === "reconnecting") {
      box.append(el("div", {class: "banner lost", text: "Camera " + camera.name + " lost (" + camera.status + ")"}));
    }
  }
  if (model) {
    for (const camera of Object.values(model.cameras)) {
      if (camera.default_thresholds) {
        box.append(el("div", {class: "banner defaults", text: "Camera " + camera.camera + " runs on the model's default thresholds (not calibrated)"}));
      }
    }
  }
}

function connect(onSnapshot) {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/stream");
  source.onopen = () => { conn.textContent = "live"; };
  source.onerror = () => { conn.textContent = "page server unreachable, retrying…"; };
  source.onmessage = (message) => {
    const snapshot = JSON.parse(message.data);
    renderBanners(snapshot);
    onSnapshot(snapshot);
  };
}

// ---- live -----------------------------------------------------------------------------------
const tiles = {};                     // camera -> {node, parts, overlaySeq, overlayAt}

function makeTile(name) {
  const parts = {
    title: el("h2", {text: name}), verdict: el("div", {class: "verdict", text: "waiting"}),
    fill: el("div", {class: "fill"}), mark: el("div", {class: "mark"}),
    info: el("div"), strip: el("div", {class: "strip", title: "last 50 verdicts"}),
    image: el("img", {alt: "latest overlay of " + name, hidden: ""}),
  };
  const node = el("article", {class: "tile", "data-camera": name}, parts.title, parts.verdict,
    el("div", {class: "bar", title: "score against threshold"}, parts.fill, parts.mark), parts.info, parts.strip, parts.image);
  return {node, parts, overlaySeq: 0, overlayAt: 0};
}

function renderTile(tile, camera, stats) {
  const last = camera.last;
  const verdict = last ? last.verdict : null;
  tile.node.className = "tile " + (verdict || "");
  tile.node.dataset.verdict = verdict || "";
  tile.parts.verdict.className = "verdict " + (verdict || "");
  tile.parts.verdict.textContent = verdict === "defect" ? "DEFECT" : verdict === "ok" ? "OK" : "waiting";
  const score = last ? last.score : null, threshold = last ? last.threshold : null;
  tile.parts.fill.className = "fill " + (verdict || "");
  tile.parts.fill.style.width = (Math.max(0, Math.min(1, score || 0)) * 100) + "%";
  tile.parts.mark.style.left = (Math.max(0, Math.min(1, threshold ?? 0.5)) * 100) + "%";
  const camStats = stats && stats.cameras ? stats.cameras[camera.name] || {} : {};
  const fps = stats && stats.fps ? stats.fps[camera.name] : null;
  const latency = stats && stats.latency_ms && stats.latency_ms.total ? stats.latency_ms.total : {};
  tile.parts.info.replaceChildren(kv([
    ["score", num(score, 3) + " / threshold " + num(threshold, 3)],
    ["class", last ? (last.class || "–") : "–"],
    ["seq", last ? String(last.seq) : "–"],
    ["time", last ? when(last.captured_at) : "–"],
    ["counts", "ok " + camera.ok + " · defect " + camera.defect],
    ["fps", num(fps, 1)],
    ["latency", "p50 " + num(latency.p50, 1) + " ms · p95 " + num(latency.p95, 1) + " ms"],
    ["dropped", camStats.dropped === undefined ? "–" : String(camStats.dropped)],
    ["camera", camera.status],
  ]));
  tile.parts.strip.replaceChildren(...camera.strip.map((v) => el("span", {class: v, title: v})));
  const now = Date.now();
  if (camera.overlay_seq !== tile.overlaySeq && now - tile.overlayAt >= OVERLAY_MIN_MS) {
    tile.overlaySeq = camera.overlay_seq;
    tile.overlayAt = now;
    tile.parts.image.src = "/api/overlay/" + encodeURIComponent(STATION) + "/" + encodeURIComponent(camera.name) + "?v=" + camera.overlay_seq;
    tile.parts.image.hidden = false;
  }
}

function renderFleet(snapshot) {
  const rows = Object.values(snapshot.stations).map((station) => {
    const cameras = Object.values(station.cameras);
    const lasts = cameras.map((c) => c.last).filter(Boolean);
    const last = lasts.sort((a, b) => String(b.captured_at).localeCompare(String(a.captured_at)))[0];
    const total = station.ok + station.defect;
    const stats = station.stats || {};
    return el("tr", {"data-station": station.name},
      el("td", {text: station.name}),
      el("td", {class: station.online ? "" : "muted", text: station.online === null ? "unknown" : station.online ? "online" : "offline"}),
      el("td", {text: last && last.model ? last.model.name + " " + last.model.version : "–"}),
      el("td", {text: cameras.map((c) => c.name).join(", ") || "–"}),
      el("td", {text: last ? last.verdict + " · " + when(last.captured_at) : "–"}),
      el("td", {text: total ? (100 * station.defect / total).toFixed(1) + " %" : "–"}),
      el("td", {text: stats.spool_depth === undefined ? "–" : String(stats.spool_depth)}));
  });
  const head = el("tr", {}, ...["station", "availability", "model", "cameras", "last result", "defect rate", "spool backlog"].map((h) => el("th", {text: h})));
  main.replaceChildren(el("h1", {text: "Fleet"}), el("table", {id: "fleet"}, el("thead", {}, head), el("tbody", {}, ...rows)));
}

function live() {
  const grid = el("div", {class: "tiles", id: "tiles"});
  main.replaceChildren(grid);
  connect((snapshot) => {
    if (FLEET) { renderFleet(snapshot); return; }
    const station = snapshot.stations[STATION];
    if (!station) return;
    for (const camera of Object.values(station.cameras)) {
      if (!tiles[camera.name]) {
        tiles[camera.name] = makeTile(camera.name);
        grid.append(tiles[camera.name].node);
      }
      renderTile(tiles[camera.name], camera, station.stats);
    }
  });
}

// ---- defects --------------------------------------------------------------------------------
function defects() {
  const camera = el("select", {name: "camera"}), klass = el("select", {name: "class"});
  const since = el("input", {type: "datetime-local", name: "since"}), until = el("input", {type: "datetime-local", name: "until"});
  const gallery = el("div", {class: "gallery", id: "gallery"});
  const pager = el("div", {class: "pager"});
  const detail = el("div", {id: "detail"});
  let page = 0;
  const filters = el("div", {class: "filters"},
    el("label", {}, "camera", camera), el("label", {}, "class", klass),
    el("label", {}, "from", since), el("label", {}, "to", until),
    el("button", {type: "button", onclick: () => { page = 0; load(); }, text: "apply"}),
    el("a", {href: "/api/marks.csv", download: "", text: "export marks (CSV)"}));
  main.replaceChildren(el("h1", {text: "Defect archive"}), filters, gallery, pager, detail);

  function fillSelect(select, values) {
    const chosen = select.value;
    select.replaceChildren(el("option", {value: "", text: "all"}), ...values.map((v) => el("option", {value: v, text: v})));
    select.value = values.includes(chosen) ? chosen : "";
  }

  async function load() {
    const query = new URLSearchParams({page: String(page)});
    if (camera.value) query.set("camera", camera.value);
    if (klass.value) query.set("class", klass.value);
    if (since.value) query.set("since", String(new Date(since.value).getTime() / 1000));
    if (until.value) query.set("until", String(new Date(until.value).getTime() / 1000));
    const listing = await getJSON("/api/defects?" + query);
    fillSelect(camera, listing.cameras);
    fillSelect(klass, listing.classes);
    gallery.replaceChildren(...listing.items.map((item) => el("div", {class: "card", "data-id": item.id, onclick: () => show(item.id)},
      el("img", {src: "/api/defects/" + item.id + "/file/overlay", alt: "overlay " + item.id, loading: "lazy"}),
      el("div", {class: "caption"}, el("strong", {text: item.camera}), " #" + item.seq, el("br"),
        (item.class || "–") + " · " + num(item.score, 3), el("br"), when(item.captured_at), " ",
        item.mark ? el("span", {class: "pill " + item.mark.replace(" ", "-"), text: item.mark}) : null))));
    if (!listing.items.length) gallery.append(el("p", {class: "muted", text: "no archived defects match"}));
    pager.replaceChildren(
      el("button", {type: "button", disabled: page <= 0 ? "" : null, onclick: () => { page -= 1; load(); }, text: "‹ newer"}),
      " page " + (listing.page + 1) + " of " + listing.pages + " (" + listing.total + " frames) ",
      el("button", {type: "button", disabled: page + 1 >= listing.pages ? "" : null, onclick: () => { page += 1; load(); }, text: "older ›"}));
  }

  async function show(id) {
    const item = await getJSON("/api/defect/" + id);
    const size = item.frame_size || {width: 1, height: 1};
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 " + size.width + " " + size.height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("id", "regions");
    for (const region of item.regions) {
      const [x, y, w, h] = region.bbox;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      for (const [k, v] of Object.entries({x, y, width: w, height: h, fill: "none", stroke: "#ff1744", "stroke-width": Math.max(1, size.width / 200), class: "region"})) rect.setAttribute(k, v);
      svg.append(rect);
    }
    const status = el("span", {id: "mark-status", text: item.mark ? "marked: " + item.mark : "not marked"});
    async function mark(value) {
      const response = await fetch("/api/marks", {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"}, body: JSON.stringify({id, mark: value})});
      status.textContent = response.ok ? "marked: " + value : "could not mark (HTTP " + response.status + ")";
      load();
    }
    const regionRows = item.regions.map((r, i) => el("tr", {}, el("td", {text: String(i + 1)}), el("td", {text: r.bbox.join(", ")}), el("td", {text: String(r.area)}), el("td", {text: num(r.peak, 3)})));
    detail.replaceChildren(el("div", {class: "detail", "data-id": id},
      el("figure", {}, el("div", {class: "frame"}, el("img", {src: "/api/defects/" + id + "/file/frame", alt: "original frame", id: "detail-frame"}), svg),
        el("figcaption", {text: "original with regions"})),
      el("figure", {}, el("div", {class: "frame"}, el("img", {src: "/api/defects/" + id + "/file/overlay", alt: "heat map overlay", id: "detail-overlay"})),
        el("figcaption", {text: "heat map overlay"})),
      el("div", {},
        el("h2", {text: item.camera + " #" + item.seq}),
        kv([["time", when(item.captured_at)], ["class", item.class || "–"], ["score", num(item.score, 3) + " / " + num(item.threshold, 3)]]),
        el("table", {id: "region-table"}, el("thead", {}, el("tr", {}, ...["region", "bbox x,y,w,h", "area px", "peak"].map((h) => el("th", {text: h})))), el("tbody", {}, ...regionRows)),
        el("p", {}, el("button", {type: "button", onclick: () => mark("confirmed"), text: "confirmed defect"}), " ",
          el("button", {type: "button", onclick: () => mark("false reject"), text: "false reject"}), " ", status),
        el("p", {class: "muted", text: "Marks are stored beside the archive for retraining and calibration checks; they never change a published verdict."}),
        el("pre", {id: "result-json", text: JSON.stringify(item.result, null, 1)}))));
    detail.scrollIntoView();
  }
  load();
  connect(() => {});
}

// ---- stats ----------------------------------------------------------------------------------
function stats() {
  const body = el("div");
  main.replaceChildren(el("h1", {text: "Stats"}), body);
  async function load() {
    const data = await getJSON("/api/stats");
    const hourly = el("table", {}, el("thead", {}, el("tr", {}, ...["hour (local)", "ok", "defect", "defect rate"].map((h) => el("th", {text: h})))),
      el("tbody", {}, ...data.hourly.map((h) => el("tr", {}, el("td", {text: new Date(h.hour * 1000).toLocaleString()}), el("td", {text: String(h.ok)}), el("td", {text: String(h.defect)}),
        el("td", {text: (100 * h.defect / Math.max(1, h.ok + h.defect)).toFixed(1) + " %"})))));
    const shifts = new Map();          // three 8-hour shifts from 06:00 local time
    for (const h of data.hourly) {
      const start = new Date(h.hour * 1000);
      const offset = (start.getHours() + 24 - 6) % 24;
      start.setHours(start.getHours() - (offset % 8), 0, 0, 0);
      const key = start.toLocaleString() + " + 8 h";
      const entry = shifts.get(key) || {ok: 0, defect: 0};
      entry.ok += h.ok; entry.defect += h.defect;
      shifts.set(key, entry);
    }
    const shiftTable = el("table", {id: "shifts"}, el("thead", {}, el("tr", {}, ...["shift (06/14/22 h local)", "ok", "defect", "defect rate"].map((h) => el("th", {text: h})))),
      el("tbody", {}, ...[...shifts].map(([key, c]) => el("tr", {}, el("td", {text: key}), el("td", {text: String(c.ok)}), el("td", {text: String(c.defect)}),
        el("td", {text: (100 * c.defect / Math.max(1, c.ok + c.defect)).toFixed(1) + " %"})))));
    const classes = el("table", {}, el("thead", {}, el("tr", {}, el("th", {text: "class"}), el("th", {text: "results"}), el("th", {text: "share"}))),
      el("tbody", {}, ...Object.entries(data.classes).map(([name, c]) => el("tr", {}, el("td", {text: name}), el("td", {text: String(c.count)}), el("td", {text: (100 * c.rate).toFixed(1) + " %"})))));
    const bins = new Array(40).fill(0);
    let threshold = 0.5;
    for (const s of data.scores) {
      if (s.score === null || s.score === undefined) continue;
      bins[Math.min(bins.length - 1, Math.max(0, Math.floor(s.score * bins.length)))] += 1;
      if (s.threshold !== null && s.threshold !== undefined) threshold = s.threshold;
    }
    const peak = Math.max(1, ...bins);
    const hist = el("div", {class: "hist", id: "histogram"}, ...bins.map((n, i) => {
      const bar = el("span", {class: (i + 0.5) / bins.length > threshold ? "over" : "", title: n + " parts, score " + (i / bins.length).toFixed(3) + "–" + ((i + 1) / bins.length).toFixed(3)});
      bar.style.height = (100 * n / peak) + "%";
      return bar;
    }), (() => { const m = el("div", {class: "mark", title: "threshold"}); m.style.left = (threshold * 100) + "%"; return m; })());
    body.replaceChildren(
      el("section", {}, el("h2", {text: "Score histogram of the last " + data.scores.length + " parts (threshold " + num(threshold, 3) + ")"}), hist,
        el("p", {class: "muted", text: "Calibrated scores, 0 to 1; good parts drifting towards the threshold show here first."})),
      el("section", {}, el("h2", {text: "Results per hour"}), hourly),
      el("section", {}, el("h2", {text: "Results per shift"}), shiftTable),
      el("section", {}, el("h2", {text: "Results per class (" + data.total + " total)"}), classes));
  }
  load();
  setInterval(load, 5000);
  connect(() => {});
}

// ---- model ----------------------------------------------------------------------------------
async function modelPage() {
  await loadModel();
  const data = await getJSON("/api/model");
  const sections = [el("h1", {text: "Model"})];
  for (const m of Object.values(data.models)) {
    if (m.error) { sections.push(el("section", {}, el("h2", {text: m.name}), el("p", {text: m.error}))); continue; }
    const metrics = Object.entries(m.metrics || {}).map(([k, v]) => [k, typeof v === "number" ? (Number.isInteger(v) ? String(v) : num(v, 4)) : JSON.stringify(v)]);
    sections.push(el("section", {class: "model", "data-model": m.name}, el("h2", {text: m.model_name + " " + m.version + " (" + m.name + ")"}),
      kv([["family", m.family], ["created", m.created], ["classes", (m.classes || []).join(", ")], ["model sha256", m.sha256], ["bundle", m.bundle],
        ["default image threshold", num(m.thresholds.image, 4)]]),
      el("h3", {text: "training metrics"}), metrics.length ? kv(metrics) : el("p", {class: "muted", text: "the manifest lists no metrics"}),
      ...Object.entries(m.versions || {}).map(([pointer, v]) => el("p", {class: "version " + pointer},
        pointer + " in the model store: " + (v.error || v.model_name + " " + v.version + " (" + String(v.sha256).slice(0, 12) + ", created " + v.created + ")")))));
  }
  const serving = Object.entries(data.serving).filter(([, s]) => s).map(([camera, s]) => [camera, s.name + " " + s.version + " on " + s.backend]);
  sections.push(el("section", {}, el("h2", {text: "Serving now (from results)"}), serving.length ? kv(serving) : el("p", {class: "muted", text: "no results seen yet"})));
  const rows = Object.values(data.cameras).map((c) => {
    const marked = data.marked[c.camera] || {"confirmed": 0, "false reject": 0};
    const bound = c.statistics ? (c.statistics.frr_upper_bound ?? c.statistics.target_frr ?? null) : null;
    return el("tr", {"data-camera": c.camera}, el("td", {text: c.camera}), el("td", {text: c.model}),
      el("td", {text: c.default_thresholds ? "default thresholds (not calibrated)" : (c.error || c.file)}),
      el("td", {text: num(c.image_threshold, 4)}), el("td", {text: bound === null ? "–" : String(bound)}),
      el("td", {text: marked["false reject"] + " false rejects, " + marked["confirmed"] + " confirmed of " + (data.inspected[c.camera] || 0) + " inspected"}));
  });
  sections.push(el("section", {}, el("h2", {text: "Calibration per camera"}), el("table", {id: "calibration"},
    el("thead", {}, el("tr", {}, ...["camera", "model", "calibration", "raw image threshold", "promised false-reject bound", "operator marks"].map((h) => el("th", {text: h})))),
    el("tbody", {}, ...rows))));
  sections.push(el("section", {}, el("h2", {text: "Event log"}), el("table", {id: "events"},
    el("thead", {}, el("tr", {}, el("th", {text: "time"}), el("th", {text: "event"}), el("th", {text: "detail"}))),
    el("tbody", {}, ...data.events.slice().reverse().map((e) => el("tr", {}, el("td", {class: "nowrap", text: new Date(e.at * 1000).toLocaleString()}), el("td", {class: "nowrap", text: e.kind}), el("td", {text: JSON.stringify(e.detail)})))))));
  main.replaceChildren(...sections);
  connect(() => {});
}

loadModel();
({live, defects, stats, model: modelPage})[PAGE]();
