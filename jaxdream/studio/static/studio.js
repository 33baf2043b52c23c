// jaxdream studio: the page. Plain JavaScript, no build step.
// The forms come from /api/options (the command line's own options), progress from the
// server-sent events of /api/events, results from /files/.
"use strict";

const $ = (selector) => document.querySelector(selector);
const CHANGES = {"X-Jaxdream": "1"};  // the server refuses changes without it (other sites cannot send it)
const COLOURS = ["#f3a953", "#5ec8d8", "#c38cf2", "#8fd175", "#f27c8c"];
const FINAL = ["done", "failed", "cancelled", "stopped"];

const state = {
  options: null,      // {command: {fields, inputs}}
  command: "dream",
  uploads: {},        // "role:kind" -> [upload]
  values: {},         // command -> {field: value} typed so far
  shown: null,        // id of the job in the "current" panel
  follow: true,       // show the running job as it starts
  previews: -1,       // preview count shown for the current job
  version: -1,        // gallery version last fetched
  live: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.dataset.kind = kind;
}

function clock(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")} min`;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// ---------------------------------------------------------------------------------------------
// the new-run panel

function renderCommands() {
  const tabs = $("#commands");
  tabs.textContent = "";
  for (const name of Object.keys(state.options)) {
    const tab = el("button", {type: "button", role: "tab", "aria-selected": String(name === state.command),
                              dataset: {command: name}}, name);
    tab.addEventListener("click", () => chooseCommand(name));
    tabs.append(tab);
  }
}

function chooseCommand(name) {
  rememberValues();
  state.command = name;
  renderCommands();
  renderInputs();
  renderOptions();
}

function uploadKey(spec) { return `${spec.role}:${spec.kind}`; }

function what(spec) {
  if (spec.kind === "video") return "a clip";
  return spec.most === 1 ? "a photo" : "images";
}

function renderInputs() {
  const box = $("#inputs");
  box.textContent = "";
  for (const spec of state.options[state.command].inputs) {
    const input = el("input", {type: "file", id: `file-${spec.role}`, multiple: spec.most !== 1,
                               accept: spec.kind === "video" ? "video/*,.gif,.mkv" : "image/*"});
    const zone = el("label", {class: "drop", for: `file-${spec.role}`, dataset: {role: spec.role, kind: spec.kind}},
                    input, el("span", {class: "drop-title"}, spec.label),
                    el("span", {class: "hint"}, `drop ${what(spec)} here or click to choose`),
                    el("span", {class: "thumbs"}));
    input.addEventListener("change", () => { uploadFiles(spec, [...input.files]); input.value = ""; });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      uploadFiles(spec, [...e.dataTransfer.files]);
    });
    box.append(zone);
    renderThumbs(spec);
  }
}

function renderThumbs(spec) {
  const zone = document.querySelector(`.drop[data-role="${spec.role}"]`);
  if (!zone) return;
  const thumbs = zone.querySelector(".thumbs");
  const list = state.uploads[uploadKey(spec)] || [];
  zone.dataset.count = String(list.length);
  thumbs.textContent = "";
  for (const upload of list) {
    const remove = el("button", {type: "button", class: "remove", title: "remove", "aria-label": `remove ${upload.name}`}, "×");
    remove.addEventListener("click", (e) => {
      e.preventDefault();
      state.uploads[uploadKey(spec)] = list.filter((u) => u.id !== upload.id);
      renderThumbs(spec);
    });
    const picture = upload.kind === "image"
      ? el("img", {src: `/files/uploads/${upload.id}`, alt: ""})
      : el("span", {class: "clip-icon"}, "▶");
    thumbs.append(el("span", {class: "thumb", dataset: {upload: upload.id}}, picture,
                     el("span", {class: "thumb-name"}, `${upload.name} · ${upload.width}×${upload.height}`), remove));
  }
}

async function uploadFiles(spec, files) {
  for (const file of files) {
    say(`uploading ${file.name}…`);
    try {
      const upload = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`, {
        method: "POST", body: file, headers: {...CHANGES, "Content-Type": "application/octet-stream"}});
      const key = uploadKey(spec);
      state.uploads[key] = spec.most === 1 ? [upload] : [...(state.uploads[key] || []), upload];
      renderThumbs(spec);
      say(`${upload.name}: ${upload.width}×${upload.height}, ready`, "ok");
    } catch (error) {
      say(error.message, "error");
    }
  }
}

function fieldInput(field, value) {
  const id = `opt-${field.name}`;
  if (field.kind === "flag") return el("input", {type: "checkbox", id, name: field.name, checked: value === "on"});
  if (field.kind === "choice") {
    const select = el("select", {id, name: field.name}, ...field.choices.map((c) => el("option", {value: c}, c)));
    select.value = value;
    return select;
  }
  if (field.kind === "number") {
    return el("input", {type: "number", id, name: field.name, value, step: field.integer ? "1" : "any",
                        min: field.low_open ? null : field.low, max: field.high, placeholder: field.default ? null : "default"});
  }
  return el("input", {type: "text", id, name: field.name, value, placeholder: field.default ? null : "none",
                      spellcheck: "false"});
}

function bound(value) { return Math.abs(value) >= 1e6 ? Number(value).toExponential() : String(value); }

function range(field) {
  if (field.low === null || field.low === undefined) return "";
  const low = field.low_open ? `> ${bound(field.low)}` : bound(field.low);
  const span = `${low} … ${bound(field.high)}`;
  return field.kind === "list" ? `${span}, comma-separated for a sweep` : span;
}

function renderOptions() {
  const form = $("#options");
  form.textContent = "";
  const typed = state.values[state.command] || {};
  for (const field of state.options[state.command].fields) {
    const value = field.name in typed ? typed[field.name] : field.default;
    const hint = [field.help, range(field)].filter(Boolean).join(" · ");
    const row = el("div", {class: `field ${field.kind}`, title: hint},
                   el("label", {for: `opt-${field.name}`}, field.flag),
                   fieldInput(field, field.kind === "flag" ? (typed[field.name] || "") : value),
                   el("small", {}, hint));
    form.append(row);
  }
}

function formValues() {
  const values = {};
  for (const field of state.options[state.command].fields) {
    const input = document.getElementById(`opt-${field.name}`);
    if (!input) continue;
    values[field.name] = field.kind === "flag" ? (input.checked ? "on" : "") : input.value;
  }
  return values;
}

function rememberValues() {
  if (state.options && $("#options").children.length) state.values[state.command] = formValues();
}

async function start() {
  const files = {};
  for (const spec of state.options[state.command].inputs) {
    files[spec.role] = (state.uploads[uploadKey(spec)] || []).map((u) => u.id);
  }
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: {...CHANGES, "Content-Type": "application/json"},
      body: JSON.stringify({command: state.command, files, values: formValues()})});
    say(`${job.command} run ${job.id} queued`, "ok");
    state.follow = true;
    if (!state.live || !state.live.active) showJob(job);
  } catch (error) {
    say(error.message, "error");
  }
}

// ---------------------------------------------------------------------------------------------
// the current run

function resultUrl(job, name, extra = "") { return `/files/${job.id}/${name}${extra}`; }

function mainPicture(job) {
  const results = job.results || [];
  const progress = job.progress || {};
  if (results.length) return results[0];
  return progress.previews > 0 ? "preview.jpg" : null;
}

function showJob(job) {
  const panel = $("#current");
  if (panel.dataset.job !== job.id) {
    state.previews = -1;
    $("#preview").dataset.updates = "0";
    $("#preview").removeAttribute("src");
  }
  state.shown = job.id;
  panel.dataset.job = job.id;
  panel.dataset.state = job.state;
  const inputs = Object.values(job.inputs || {}).flat().join(", ");
  $("#current-title").textContent = `${job.command} · ${inputs}`;
  $("#current-state").textContent = job.state;
  $("#current-state").dataset.state = job.state;
  showProgress(job);
  showPicture(job);
  showActions(job);
}

function showProgress(job) {
  const progress = job.progress || {};
  const final = FINAL.includes(job.state);
  $("#bar-fill").style.width = `${Math.round(100 * (job.state === "done" ? 1 : progress.fraction || 0))}%`;
  $("#bar-fill").dataset.state = job.state;
  const phase = $("#phase");
  phase.classList.toggle("error", job.state === "failed");
  if (job.state === "failed") phase.textContent = job.error || "failed";
  else if (job.state === "queued") phase.textContent = "queued";
  else if (final) {
    const why = job.error ? `: ${job.error}` : "";
    phase.textContent = `${job.state}${why}${progress.elapsed_s ? ` after ${clock(progress.elapsed_s)}` : ""}`;
  }
  else phase.textContent = progress.phase || "starting";
  const eta = !final && progress.eta_s !== null && progress.eta_s !== undefined;
  const sofar = !final && progress.elapsed_s ? `${clock(progress.elapsed_s)} so far` : "";
  $("#eta").textContent = eta ? `about ${clock(progress.eta_s)} left` : sofar;
  drawCurve(progress.curve || {points: []});
}

function showPicture(job) {
  const img = $("#preview");
  const video = $("#result-video");
  const progress = job.progress || {};
  const final = FINAL.includes(job.state);
  const name = final ? mainPicture(job) : (progress.previews > 0 ? "preview.jpg" : null);
  $("#placeholder").hidden = Boolean(name);
  if (name && name.endsWith(".mp4")) {
    img.hidden = true;
    video.hidden = false;
    const src = resultUrl(job, name);
    if (video.getAttribute("src") !== src) video.src = src;
    return;
  }
  video.hidden = true;
  video.removeAttribute("src");
  img.hidden = !name;
  if (!name) return;
  if (name === "preview.jpg") {
    if (progress.previews === state.previews) return;
    state.previews = progress.previews;
    img.dataset.pending = "preview";
    img.src = resultUrl(job, name, `?n=${progress.previews}`);
  } else {
    const src = resultUrl(job, name, `?v=${job.finished}`);
    if (img.getAttribute("src") !== src) { img.dataset.pending = "result"; img.src = src; }
  }
}

function showActions(job) {
  const running = !FINAL.includes(job.state);
  $("#stop").disabled = !running || job.state === "stopping";
  $("#stop").textContent = job.state === "queued" ? "Remove from queue" : "Stop";
  const results = job.results || [];
  const download = $("#download");
  download.hidden = running || !results.length;
  if (results.length) {
    download.href = resultUrl(job, results[0], "?download=1");
    download.textContent = `Download ${results[0]}`;
  }
  const settings = $("#download-settings");
  settings.hidden = running;
  settings.href = resultUrl(job, "settings.json", "?download=1");
  const more = $("#results-more");
  more.textContent = "";
  if (!running && results.length > 1) {
    const links = results.slice(1).map((r) => el("a", {href: resultUrl(job, r, "?download=1")}, r));
    more.append("also: ", ...links.flatMap((link, i) => [i ? ", " : "", link]));
  }
  const line = $("#command-line");
  line.hidden = !job.argv;
  if (job.argv) $("#argv").textContent = `jaxdream ${job.argv.map(quote).join(" ")}`;
}

function quote(word) { return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`; }

function drawCurve(curve) {
  const svg = $("#curve");
  const legend = $("#curve-legend");
  svg.textContent = "";
  legend.textContent = "";
  const points = curve.points || [];
  svg.parentElement.hidden = points.length === 0;
  if (!points.length) return;
  const W = 480, H = 150, pad = 8;
  const names = curve.names || [];
  const xs = points.map((p) => p[0]);
  const all = points.flatMap((p) => p.slice(1));
  const log = all.every((v) => v > 0);
  const f = (v) => (log ? Math.log10(v) : v);
  let lo = Math.min(...all.map(f)), hi = Math.max(...all.map(f));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs) > x0 ? Math.max(...xs) : x0 + 1;
  const sx = (x) => pad + ((x - x0) / (x1 - x0)) * (W - 2 * pad);
  const sy = (v) => H - pad - ((f(v) - lo) / (hi - lo)) * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  for (let k = 0; k < 4; k++) {
    const line = document.createElementNS(ns, "line");
    const y = pad + (k * (H - 2 * pad)) / 3;
    Object.entries({x1: 0, x2: W, y1: y, y2: y, class: "grid"}).forEach(([a, v]) => line.setAttribute(a, v));
    svg.append(line);
  }
  names.forEach((name, i) => {
    const path = document.createElementNS(ns, points.length > 1 ? "polyline" : "circle");
    const xy = (p) => `${sx(p[0]).toFixed(1)},${sy(p[i + 1]).toFixed(1)}`;
    if (points.length > 1) path.setAttribute("points", points.map(xy).join(" "));
    else { path.setAttribute("cx", sx(points[0][0])); path.setAttribute("cy", sy(points[0][i + 1])); path.setAttribute("r", 3); }
    path.setAttribute("stroke", COLOURS[i % COLOURS.length]);
    path.setAttribute("fill", points.length > 1 ? "none" : COLOURS[i % COLOURS.length]);
    path.setAttribute("data-name", name);
    svg.append(path);
    const last = points[points.length - 1][i + 1];
    legend.append(el("span", {class: "key"}, el("i", {dataset: {colour: String(i)}}),
                     `${name} ${Number(last).toPrecision(4)}`));
  });
  const unit = {"loss per frame": "frames", "objective": "steps"}[curve.label] || "iterations";
  legend.append(el("span", {class: "axis"},
                   `${curve.label || ""}${log ? " (log scale)" : ""} over ${unit} ${x0}–${Math.max(...xs)}`));
}

async function stopShown() {
  if (!state.shown) return;
  try {
    const job = await api(`/api/jobs/${state.shown}/cancel`, {method: "POST", headers: CHANGES});
    say(`${job.command} run ${job.id}: ${job.state === "stopping" ? "stopping (keeping what is finished)" : job.state}`);
  } catch (error) {
    say(error.message, "error");
  }
}

async function showById(id) {
  try {
    showJob(await api(`/api/jobs/${id}`));
  } catch (error) {
    say(error.message, "error");
  }
}

// ---------------------------------------------------------------------------------------------
// queue, gallery, live updates

function renderQueue(live) {
  const list = $("#queue");
  list.textContent = "";
  const jobs = [...(live.active ? [live.active] : []), ...live.queue];
  if (!jobs.length) list.append(el("li", {class: "empty"}, "empty"));
  jobs.forEach((job) => {
    const cancel = el("button", {type: "button", class: "subtle small"}, job.state === "queued" ? "remove" : "stop");
    cancel.addEventListener("click", async (e) => {
      e.stopPropagation();
      try {
        await api(`/api/jobs/${job.id}/cancel`, {method: "POST", headers: CHANGES});
      } catch (error) {
        say(error.message, "error");
      }
    });
    const inputs = Object.values(job.inputs || {}).flat().join(", ");
    const item = el("li", {dataset: {job: job.id, state: job.state}},
                    el("span", {class: "badge", dataset: {state: job.state}}, job.state),
                    el("span", {class: "what"}, `${job.command} · ${inputs}`), cancel);
    item.addEventListener("click", () => { state.follow = job.state !== "queued"; showById(job.id); });
    list.append(item);
  });
}

function thumbnail(job) {
  const picture = (job.results || []).find((r) => /\.(png|jpe?g|gif|webp)$/i.test(r));
  if (picture) return `/files/${job.id}/${picture}?v=${job.finished}`;
  return null;
}

function renderGallery(gallery) {
  const box = $("#gallery");
  box.textContent = "";
  if (!gallery.length) box.append(el("p", {class: "empty"}, "No finished runs yet."));
  for (const job of gallery) {
    const src = thumbnail(job) || (job.state !== "failed" ? `/files/${job.id}/preview.jpg` : null);
    const picture = src ? el("img", {src, alt: `${job.command} result`, loading: "lazy"})
                        : el("div", {class: "no-picture"}, "no image");
    if (src) picture.addEventListener("error", () => picture.replaceWith(el("div", {class: "no-picture"}, "no image")));
    const when = new Date(job.created * 1000).toLocaleString();
    const inputs = Object.values(job.inputs || {}).flat().join(", ");
    const card = el("figure", {class: "card", tabindex: "0", dataset: {job: job.id, state: job.state}}, picture,
                    el("figcaption", {}, el("span", {}, el("b", {}, job.command), ` ${inputs}`),
                       el("span", {class: "badge", dataset: {state: job.state}}, job.state), el("time", {}, when)));
    const open = () => { state.follow = false; showById(job.id); window.scrollTo({top: 0, behavior: "smooth"}); };
    card.addEventListener("click", open);
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    box.append(card);
  }
}

async function refreshGallery() {
  try {
    const data = await api("/api/jobs");
    renderGallery(data.gallery);
  } catch (error) {
    say(error.message, "error");
  }
}

function onLive(live) {
  const before = state.live;
  state.live = live;
  renderQueue(live);
  if (live.version !== state.version) {
    state.version = live.version;
    refreshGallery();
  }
  const active = live.active;
  if (active && (state.follow || state.shown === active.id || !state.shown)) {
    showJob(active);
    return;
  }
  const queued = live.queue.find((j) => j.id === state.shown);
  if (queued) { showJob(queued); return; }
  const wasActive = before && before.active && before.active.id === state.shown;
  if (wasActive) showById(state.shown);  // it has just ended: show its result
}

function connect() {
  const events = new EventSource("/api/events");
  const mark = (text) => { $("#connection").textContent = text; $("#connection").dataset.state = text; };
  events.onopen = () => mark("live");
  events.onmessage = (e) => onLive(JSON.parse(e.data));
  events.onerror = () => mark("reconnecting");  // EventSource tries again by itself
}

async function main() {
  $("#preview").addEventListener("load", () => {
    const img = $("#preview");
    if (img.dataset.pending === "preview") img.dataset.updates = String(Number(img.dataset.updates || 0) + 1);
    img.dataset.pending = "";
  });
  $("#start").addEventListener("click", start);
  $("#stop").addEventListener("click", stopShown);
  try {
    state.options = await api("/api/options");
  } catch (error) {
    say(`cannot read the options: ${error.message}`, "error");
    return;
  }
  chooseCommand(state.command);
  connect();
}

main();
