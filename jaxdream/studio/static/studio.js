// jaxdream studio: the page. Plain JavaScript, no build step.
// The forms come from /api/options (the command line's own options), progress from the
// server-sent events of /api/events, results from /files/.
"use strict";

const $ = (selector) => document.querySelector(selector);
const CHANGES = {"X-Jaxdream": "1"};  // the server refuses changes without it (other sites cannot send it)
const COLOURS = ["#f3a953", "#5ec8d8", "#c38cf2", "#8fd175", "#f27c8c"];
const FINAL = ["done", "failed", "cancelled", "stopped"];
const STORE = "jaxdream.studio.v1";  // localStorage: the chosen tab, the forms and the chosen uploads
const ANNOUNCE_EVERY_MS = 20000;     // the phase is read out at most this often (state changes at once)

// The video command's options that apply only to a style transfer of the clip, or only to --dream.
const VIDEO_GROUPS = {
  style: {names: ["iterations-first", "iterations", "temporal-weight", "style-weight", "content-weight"],
          legend: "Style transfer of the clip (with style images)"},
  dream: {names: ["steps-per-frame", "blend", "octaves", "steps", "layers"],
          legend: "Dream the clip (these apply with --dream only)"},
};

const state = {
  options: null,      // {command: {fields, inputs, presets}}
  command: "dream",
  uploads: {},        // "role:kind" -> [{id, name, kind, width, height}]
  values: {},         // command -> {field: text} as typed
  shown: null,        // id of the job in the "current" panel
  follow: true,       // show the running job as it starts
  previews: -1,       // preview count shown for the current job
  version: -1,        // gallery version last fetched
  live: null,
  submitted: null,    // {id, command, text}: the last run started here, while its message shows
  deleted: new Set(), // gallery ids deleted from this page (a gallery fetched before must not bring them back)
  announced: {key: "", at: 0},
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
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.field = body.field || null;
    throw error;
  }
  return body;
}

function inputNames(job) { return Object.values(job.inputs || {}).flat().join(", "); }

// ---------------------------------------------------------------------------------------------
// what is kept across a reload (localStorage)

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify({command: state.command, values: state.values, uploads: state.uploads}));
  } catch (e) { /* private mode or full: the page works without */ }
}

function restore() {
  let kept = {};
  try { kept = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { kept = {}; }
  if (kept.command in state.options) state.command = kept.command;
  for (const [command, values] of Object.entries(kept.values || {})) {
    if (!(command in state.options) || typeof values !== "object" || !values) continue;
    const known = new Set(state.options[command].fields.map((f) => f.name));
    state.values[command] = Object.fromEntries(Object.entries(values).filter(([k, v]) => known.has(k) && typeof v === "string"));
  }
  for (const [key, list] of Object.entries(kept.uploads || {})) {
    if (Array.isArray(list)) state.uploads[key] = list.filter((u) => u && typeof u.id === "string" && typeof u.name === "string");
  }
}

async function uploadExists(id) {
  try {
    return (await fetch(`/files/uploads/${encodeURIComponent(id)}`, {method: "HEAD"})).ok;
  } catch (e) {
    return true;  // the server is away: keep it, the run's submission will say
  }
}

async function checkKeptUploads() {
  const gone = [];
  for (const [key, list] of Object.entries(state.uploads)) {
    const kept = [];
    for (const upload of list) (await uploadExists(upload.id) ? kept : gone).push(upload);
    state.uploads[key] = kept;
  }
  if (!gone.length) return;
  save();
  renderInputs();
  say(`${gone.map((u) => u.name).join(", ")}: no longer in the studio folder; choose ${gone.length > 1 ? "them" : "it"} again`, "error");
}

// ---------------------------------------------------------------------------------------------
// the new-run panel: tabs, inputs, options

function renderCommands() {
  const tabs = $("#commands");
  if (!tabs.children.length) {
    for (const name of Object.keys(state.options)) {
      const tab = el("button", {type: "button", role: "tab", id: `tab-${name}`, "aria-controls": "run-form",
                                dataset: {command: name}}, name);
      tab.addEventListener("click", () => chooseCommand(name));
      tabs.append(tab);
    }
    tabs.addEventListener("keydown", onTabKey);
  }
  for (const tab of tabs.children) {
    const selected = tab.dataset.command === state.command;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  $("#run-form").setAttribute("aria-labelledby", `tab-${state.command}`);
}

function onTabKey(event) {
  const names = Object.keys(state.options);
  const at = names.indexOf(state.command);
  const to = {ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1, Home: 0, End: names.length - 1}[event.key];
  if (to === undefined) return;
  event.preventDefault();
  const name = names[(to + names.length) % names.length];
  chooseCommand(name);
  document.getElementById(`tab-${name}`).focus();
}

function chooseCommand(name) {
  state.command = name;
  renderCommands();
  renderInputs();
  renderOptions();
  save();
}

function uploadKey(spec) { return `${spec.role}:${spec.kind}`; }

function what(spec) {
  if (spec.kind === "video") return "a clip";
  return spec.most === 1 ? "a photo" : "images";
}

function dreamingVideo() {
  return state.command === "video" && (state.values.video || {}).dream === "on";
}

function usedInputs() {
  // the inputs this run takes (a video with --dream takes no style images)
  return state.options[state.command].inputs.filter((spec) => !(dreamingVideo() && spec.role === "style"));
}

function renderInputs() {
  const box = $("#inputs");
  box.textContent = "";
  for (const spec of state.options[state.command].inputs) {
    const input = el("input", {type: "file", id: `file-${spec.role}`, multiple: spec.most !== 1, tabindex: "-1",
                               "aria-hidden": "true", accept: spec.kind === "video" ? "video/*,.gif,.mkv" : "image/*"});
    const hintId = `drop-hint-${spec.role}`;
    const target = el("div", {class: "drop-target", role: "button", tabindex: "0", "aria-describedby": hintId},
                      el("span", {class: "drop-title"}, spec.label),
                      el("span", {class: "hint", id: hintId}, `drop ${what(spec)} here, or click (Enter) to choose`));
    const zone = el("div", {class: "drop", dataset: {role: spec.role, kind: spec.kind}},
                    target, input, el("p", {class: "field-error", hidden: true}), el("span", {class: "thumbs"}));
    target.addEventListener("click", () => input.click());
    target.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
    });
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
  showVideoGroups();
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
      state.uploads[uploadKey(spec)] = (state.uploads[uploadKey(spec)] || []).filter((u) => u.id !== upload.id);
      renderThumbs(spec);
      save();
    });
    const size = upload.width ? ` · ${upload.width}×${upload.height}` : "";
    const name = el("span", {class: "thumb-name", title: upload.name}, `${upload.name}${size}`);
    let picture = el("span", {class: "clip-icon", "aria-hidden": "true"}, "▶");
    if (upload.kind !== "video") {
      picture = el("img", {src: `/files/uploads/${encodeURIComponent(upload.id)}`, alt: ""});
      picture.addEventListener("load", () => {
        if (!upload.width) name.textContent = `${upload.name} · ${picture.naturalWidth}×${picture.naturalHeight}`;
      });
    }
    thumbs.append(el("span", {class: "thumb", dataset: {upload: upload.id}}, picture, name, remove));
  }
}

async function uploadFiles(spec, files) {
  for (const file of files) {
    say(`uploading ${file.name}…`);
    try {
      const upload = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`, {
        method: "POST", body: file, headers: {...CHANGES, "Content-Type": "application/octet-stream"}});
      const key = uploadKey(spec);
      const kept = {id: upload.id, name: upload.name, kind: upload.kind, width: upload.width, height: upload.height};
      state.uploads[key] = spec.most === 1 ? [kept] : [...(state.uploads[key] || []), kept];
      renderThumbs(spec);
      unmark(spec.role);
      save();
      say(`${upload.name}: ${upload.width}×${upload.height}, ready`, "ok");
    } catch (error) {
      say(error.message, "error");
    }
  }
}

function presetOf(command, field) {
  const presets = state.options[command].presets || {};
  if (field.name in presets) return String(presets[field.name]);
  return field.kind === "flag" ? "" : field.default;
}

function valueOf(command, field) {
  const typed = state.values[command] || {};
  return field.name in typed ? typed[field.name] : presetOf(command, field);
}

function plainLabel(field) {
  // the server's plain-language label; else the flag in words (--step-size: Step size)
  if (field.label) return field.label;
  const words = field.flag.replace(/^-+/, "").replace(/-/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function fieldInput(field, value, id) {
  if (field.kind === "flag") return el("input", {type: "checkbox", id, name: field.name, checked: value === "on"});
  if (field.choices && field.choices.length) {
    const choices = [...field.choices];
    const options = choices.map((c) => el("option", {value: c}, c));
    if (!choices.includes(field.default) && field.default === "") options.unshift(el("option", {value: ""}, "off"));
    const select = el("select", {id, name: field.name}, ...options);
    select.value = value;
    if (select.value !== value) select.value = field.default;
    return select;
  }
  const numeric = field.kind === "number";
  return el("input", {type: "text", id, name: field.name, value, spellcheck: "false",
                      inputmode: numeric ? (field.integer ? "numeric" : "decimal") : null,
                      placeholder: field.default ? null : (numeric ? "default" : "none")});
}

function bound(value) { return Math.abs(value) >= 1e6 ? Number(value).toExponential() : String(value); }

function range(field) {
  if (field.low === null || field.low === undefined) return "";
  const low = field.low_open ? `> ${bound(field.low)}` : bound(field.low);
  const span = `${low} … ${bound(field.high)}`;
  return field.kind === "list" ? `${span}, comma-separated for a sweep` : span;
}

function hintOf(command, field) {
  const preset = presetOf(command, field);
  const differs = preset !== (field.kind === "flag" ? "" : field.default);
  const shown = field.kind === "flag" ? (preset ? "on" : "off") : preset;
  const start = differs ? `the studio starts at ${shown}` : "";
  return [field.help, range(field), start].filter(Boolean).join(" · ");
}

function randomSeed(field, input) {
  const high = Math.min(Number(field.high) || 2 ** 31 - 1, 2 ** 31 - 1);
  input.value = String(Math.floor(Math.random() * (high + 1)));
  input.dispatchEvent(new Event("input", {bubbles: true}));
}

function fieldRow(command, field) {
  const id = `opt-${field.name}`;
  const input = fieldInput(field, valueOf(command, field), id);
  input.setAttribute("aria-describedby", `help-${field.name}`);
  const label = el("label", {for: id}, el("span", {class: "label-text"}, plainLabel(field)), " ",
                   el("code", {class: "flag"}, field.flag));
  let control = input;
  if (field.name === "seed") {
    const dice = el("button", {type: "button", class: "small seed-random", "aria-label": "random seed"}, "random");
    dice.addEventListener("click", () => randomSeed(field, input));
    control = el("div", {class: "with-button"}, input, dice);
  }
  const help = el("small", {class: "help", id: `help-${field.name}`}, hintOf(command, field));
  return el("div", {class: `field ${field.kind}`, dataset: {field: field.name}},
            ...(field.kind === "flag" ? [el("div", {class: "check"}, input, label)] : [label, control]),
            el("p", {class: "field-error", id: `error-${field.name}`, hidden: true}),
            el("div", {class: "help-box"}, help));  // one line; the whole help overlays what follows on focus
}

function renderOptions() {
  const form = $("#options");
  form.textContent = "";
  const command = state.command;
  const fields = state.options[command].fields;
  if (command !== "video") {
    form.append(el("div", {class: "group"}, ...fields.map((f) => fieldRow(command, f))));
    return;
  }
  const grouped = new Set(Object.values(VIDEO_GROUPS).flatMap((g) => g.names));
  form.append(el("div", {class: "group"}, ...fields.filter((f) => !grouped.has(f.name)).map((f) => fieldRow(command, f))));
  form.append(el("p", {class: "group-note", id: "group-note"}));
  for (const [name, group] of Object.entries(VIDEO_GROUPS)) {
    const rows = fields.filter((f) => group.names.includes(f.name)).map((f) => fieldRow(command, f));
    if (!rows.length) continue;
    form.append(el("fieldset", {class: "group", dataset: {group: name}}, el("legend", {}, group.legend), ...rows));
  }
  showVideoGroups();
}

function showVideoGroups() {
  if (state.command !== "video") return;
  const dreaming = dreamingVideo();
  const style = document.querySelector("fieldset[data-group='style']");
  const dream = document.querySelector("fieldset[data-group='dream']");
  if (style) style.hidden = dreaming;
  if (dream) dream.hidden = !dreaming;
  const note = $("#group-note");
  if (note) {
    note.textContent = dreaming ? "Dreaming the clip: the style-transfer options are hidden (switch --dream off for them)."
                                : "Style transfer of the clip: switch on --dream to dream it instead (its options appear then).";
  }
  const zone = document.querySelector(".drop[data-role='style']");
  if (zone) zone.hidden = dreaming;
}

function hiddenField(name) {
  if (state.command !== "video") return false;
  const group = dreamingVideo() ? VIDEO_GROUPS.style : VIDEO_GROUPS.dream;
  return group.names.includes(name);
}

function onFormInput(event) {
  const input = event.target;
  if (!input.name || !state.options) return;
  const field = state.options[state.command].fields.find((f) => f.name === input.name);
  if (!field) return;
  state.values[state.command] = {...(state.values[state.command] || {}),
                                 [field.name]: field.kind === "flag" ? (input.checked ? "on" : "") : input.value};
  unmark(field.name);
  if (field.name === "dream") showVideoGroups();
  save();
}

function formValues() {
  const values = {};
  for (const field of state.options[state.command].fields) {
    if (hiddenField(field.name)) continue;  // options of the other kind of video run: not sent
    values[field.name] = valueOf(state.command, field);
  }
  return values;
}

function resetForm() {
  delete state.values[state.command];
  renderOptions();
  renderInputs();
  save();
  say(`${state.command}: the studio's starting values`);
}

// a refused submission: the field it names is marked and focused
function mark(name, message) {
  const input = document.getElementById(`opt-${name}`);
  const zone = document.querySelector(`.drop[data-role="${name}"]`);
  const box = input ? input.closest(".field") : zone;
  if (!box) return false;
  const error = box.querySelector(".field-error");
  error.textContent = message;
  error.hidden = false;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", `error-${name} help-${name}`);
    input.focus();
  } else {
    const target = zone.querySelector(".drop-target");
    target.setAttribute("aria-invalid", "true");
    zone.classList.add("invalid");
    target.focus();
  }
  box.scrollIntoView({block: "nearest"});
  return true;
}

function unmark(name) {
  const input = document.getElementById(`opt-${name}`);
  const zone = document.querySelector(`.drop[data-role="${name}"]`);
  const box = input ? input.closest(".field") : zone;
  if (!box) return;
  const error = box.querySelector(".field-error");
  if (error) { error.hidden = true; error.textContent = ""; }
  if (input) {
    input.removeAttribute("aria-invalid");
    input.setAttribute("aria-describedby", `help-${name}`);
  } else {
    zone.classList.remove("invalid");
    zone.querySelector(".drop-target").removeAttribute("aria-invalid");
  }
}

function unmarkAll() {
  for (const box of document.querySelectorAll("#new-run .field-error:not([hidden])")) {
    const owner = box.closest("[data-field]") || box.closest(".drop");
    unmark(owner.dataset.field || owner.dataset.role);
  }
}

function showNotes(notes) {
  const list = $("#notes");
  list.textContent = "";
  list.append(...notes.map((n) => el("li", {}, n)));
  list.hidden = !notes.length;
}

async function start() {
  const button = $("#start");
  if (button.disabled) return;
  unmarkAll();
  showNotes([]);
  const files = {};
  for (const spec of usedInputs()) files[spec.role] = (state.uploads[uploadKey(spec)] || []).map((u) => u.id);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = "Checking…";
  say("checking the settings…");
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: {...CHANGES, "Content-Type": "application/json"},
      body: JSON.stringify({command: state.command, files, values: formValues()})});
    const text = `${job.command} run ${job.id} queued`;
    say(text, "ok");
    showNotes(job.notes || []);
    state.submitted = {id: job.id, command: job.command, text};
    state.follow = true;
    if (!state.live || !state.live.active) showJob(job);
  } catch (error) {
    say(error.message, "error");
    if (error.field) mark(error.field, error.message);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = "Start";
  }
}

// the message "… queued" is replaced once that run has ended
function settleSubmitted(job) {
  const sent = state.submitted;
  if (!sent || sent.id !== job.id || !FINAL.includes(job.state)) return;
  if ($("#message").textContent === sent.text) {
    const why = job.error ? `: ${job.error}` : "";
    say(`${sent.command} run ${sent.id} ${job.state}${why}`, job.state === "done" ? "ok" : job.state === "failed" ? "error" : "info");
  }
  state.submitted = null;
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
  const inputs = inputNames(job);
  $("#current-title").textContent = `${job.command} · ${inputs}`;
  $("#current-state").textContent = job.state;
  $("#current-state").dataset.state = job.state;
  showProgress(job);
  showPicture(job);
  showActions(job);
  settleSubmitted(job);
}

function clearCurrent() {
  const panel = $("#current");
  state.shown = null;
  state.previews = -1;
  panel.dataset.job = "";
  panel.dataset.state = "";
  $("#current-title").textContent = "Nothing running";
  $("#current-state").textContent = "";
  for (const id of ["#preview", "#result-video"]) { $(id).hidden = true; $(id).removeAttribute("src"); }
  $("#placeholder").hidden = false;
  $("#phase").textContent = "";
  $("#eta").textContent = "";
  setBar(0, "");
  drawCurve({points: []});
  $("#stop").disabled = true;
  for (const id of ["#download", "#download-settings", "#command-line"]) $(id).hidden = true;
  $("#results-more").textContent = "";
}

function setBar(percent, text) {
  const bar = $("#bar");
  $("#bar-fill").style.width = `${percent}%`;
  bar.setAttribute("aria-valuenow", String(percent));
  if (text) bar.setAttribute("aria-valuetext", `${percent}%, ${text}`);
  else bar.removeAttribute("aria-valuetext");
}

function phaseText(job) {
  const progress = job.progress || {};
  if (job.state === "failed") return job.error || "failed";
  if (job.state === "queued") return "queued";
  if (FINAL.includes(job.state)) {
    const why = job.error ? `: ${job.error}` : "";
    return `${job.state}${why}${progress.elapsed_s ? ` after ${clock(progress.elapsed_s)}` : ""}`;
  }
  return progress.phase || "starting";
}

function showProgress(job) {
  const progress = job.progress || {};
  const final = FINAL.includes(job.state);
  const phase = $("#phase");
  const text = phaseText(job);
  phase.classList.toggle("error", job.state === "failed");
  phase.textContent = text;
  setBar(Math.round(100 * (job.state === "done" ? 1 : progress.fraction || 0)), text);
  $("#bar-fill").dataset.state = job.state;
  const eta = !final && progress.eta_s !== null && progress.eta_s !== undefined;
  const sofar = !final && progress.elapsed_s ? `${clock(progress.elapsed_s)} so far` : "";
  $("#eta").textContent = eta ? `about ${clock(progress.eta_s)} left` : sofar;
  drawCurve(progress.curve || {points: []});
  announce(job, text);
}

// the polite live region: a new state at once, the running phase at most every ANNOUNCE_EVERY_MS
function announce(job, text) {
  const key = `${job.id}:${job.state}`;
  const now = Date.now();
  if (key === state.announced.key && now - state.announced.at < ANNOUNCE_EVERY_MS) return;
  state.announced = {key, at: now};
  const eta = $("#eta").textContent;
  const said = text.startsWith(job.state) ? text : `${job.state}: ${text}`;
  $("#announce").textContent = `${job.command} run ${said}${eta ? `, ${eta}` : ""}`;
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
    video.setAttribute("aria-label", `result of the ${job.command} of ${inputNames(job)}`);
    const src = resultUrl(job, name);
    if (video.getAttribute("src") !== src) video.src = src;
    return;
  }
  video.hidden = true;
  video.removeAttribute("src");
  img.hidden = !name;
  if (!name) return;
  img.alt = `${name === "preview.jpg" ? "preview" : "result"} of the ${job.command} of ${inputNames(job)}`;
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

async function cancelJob(id) {
  const job = await api(`/api/jobs/${id}/cancel`, {method: "POST", headers: CHANGES});
  say(`${job.command} run ${job.id}: ${job.state === "stopping" ? "stopping (keeping what is finished)" : job.state}`);
  return job;
}

async function stopShown() {
  if (!state.shown) return;
  try {
    await cancelJob(state.shown);
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
// queue and gallery: keyed elements, rebuilt only when what they show has changed (so that a
// click lands even while progress arrives several times a second)

function syncKeyed(container, items, signature, build, empty) {
  const existing = new Map();
  for (const node of container.children) if (node.dataset.job) existing.set(node.dataset.job, node);
  const nodes = items.map((item) => {
    const sig = signature(item);
    let node = existing.get(item.id);
    if (!node || node.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.job = item.id;
      fresh.dataset.sig = sig;
      if (node) node.replaceWith(fresh);
      node = fresh;
    }
    return node;
  });
  if (!nodes.length) nodes.push(container.querySelector(":scope > .empty") || empty());
  for (const child of [...container.children]) if (!nodes.includes(child)) child.remove();
  nodes.forEach((node, i) => {
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
  });
}

function queueItem(job) {
  const verb = job.state === "queued" ? "remove" : "stop";
  const what = `${job.command} · ${inputNames(job)}`;
  const cancel = el("button", {type: "button", class: "subtle small", "aria-label": `${verb} ${what}`}, verb);
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancel.textContent = verb === "remove" ? "removing…" : "stopping…";
    try {
      await cancelJob(job.id);
    } catch (error) {
      say(error.message, "error");
      cancel.disabled = false;
      cancel.textContent = verb;
    }
  });
  const show = el("button", {type: "button", class: "what link", title: what}, what);
  show.addEventListener("click", () => { state.follow = job.state !== "queued"; showById(job.id); });
  return el("li", {dataset: {state: job.state}},
            el("span", {class: "badge", dataset: {state: job.state}}, job.state), show, cancel);
}

function renderQueue(live) {
  const jobs = [...(live.active ? [live.active] : []), ...live.queue];
  syncKeyed($("#queue"), jobs, (job) => [job.state, job.command, inputNames(job)].join("|"), queueItem,
            () => el("li", {class: "empty"}, "empty"));
}

function thumbnail(job) {
  const picture = (job.results || []).find((r) => /\.(png|jpe?g|gif|webp)$/i.test(r));
  return picture ? `/files/${job.id}/${picture}?v=${job.finished}` : null;
}

function noPicture(job) {
  const results = job.results || [];
  const text = results.length ? results[0] : job.state === "done" ? "no image" : `${job.state}, no image`;
  return el("span", {class: "no-picture"}, text);
}

function galleryCard(job) {
  const inputs = inputNames(job);
  const src = thumbnail(job);
  const picture = src ? el("img", {src, alt: `${job.command} of ${inputs}: ${job.state === "done" ? "result" : `${job.state} run`}`,
                                   loading: "lazy"})
                      : noPicture(job);
  if (src) picture.addEventListener("error", () => picture.replaceWith(noPicture(job)));
  const open = el("button", {type: "button", class: "open", title: `show this ${job.command} run`}, picture);
  open.addEventListener("click", () => { state.follow = false; showById(job.id); window.scrollTo({top: 0, behavior: "smooth"}); });
  const again = el("button", {type: "button", class: "small", "aria-label": `use again: the settings of this ${job.command} of ${inputs}`},
                   "use again");
  const remove = el("button", {type: "button", class: "small danger", "aria-label": `delete this ${job.command} of ${inputs}`}, "delete");
  const problem = el("p", {class: "card-error", role: "alert", hidden: true});
  const card = el("figure", {class: "card", dataset: {state: job.state}}, open,
                  el("figcaption", {},
                     el("span", {class: "what", title: `${job.command} ${inputs}`}, el("b", {}, job.command), ` ${inputs}`),
                     el("span", {class: "badge", dataset: {state: job.state}}, job.state),
                     el("time", {}, new Date(job.created * 1000).toLocaleString()),
                     el("span", {class: "card-actions"}, again, remove), problem));
  again.addEventListener("click", () => useAgain(job));
  remove.addEventListener("click", () => deleteJob(job, card, remove, problem));
  return card;
}

function renderGallery(gallery) {
  const jobs = gallery.filter((job) => !state.deleted.has(job.id));
  syncKeyed($("#gallery"), jobs, (job) => [job.state, job.finished, (job.results || []).join(","), job.error].join("|"),
            galleryCard, () => el("p", {class: "empty"}, "No finished runs yet."));
  for (const job of jobs) settleSubmitted(job);
}

async function deleteJob(job, card, button, problem) {
  button.disabled = true;
  problem.hidden = true;
  try {
    await api(`/api/jobs/${job.id}`, {method: "DELETE", headers: CHANGES});
  } catch (error) {
    if (error.status !== 404) {  // 404: already gone
      problem.textContent = `not deleted: ${error.message}`;
      problem.hidden = false;
      say(`not deleted: ${error.message}`, "error");
      button.disabled = false;
      return;
    }
  }
  state.deleted.add(job.id);
  const next = card.nextElementSibling || card.previousElementSibling;
  card.remove();
  if (!$("#gallery").children.length) $("#gallery").append(el("p", {class: "empty"}, "No finished runs yet."));
  if (state.shown === job.id) clearCurrent();
  say(`${job.command} run ${job.id} deleted`);
  const focus = next && next.querySelector(".open");
  if (focus) focus.focus();
}

async function useAgain(job) {
  const options = state.options[job.command];
  if (!options) { say(`this studio has no ${job.command}`, "error"); return; }
  const values = job.values || {};
  state.values[job.command] = Object.fromEntries(options.fields.map((f) => [
    f.name, f.name in values ? String(values[f.name] ?? "") : (f.kind === "flag" ? "" : f.default)]));
  const gone = [];
  if (job.files) {
    for (const spec of options.inputs) {
      const ids = job.files[spec.role] || [];
      const names = (job.inputs || {})[spec.role] || [];
      const kept = [];
      for (const [i, id] of ids.entries()) {
        const upload = {id, name: names[i] || id, kind: spec.kind};
        (await uploadExists(id) ? kept : gone).push(upload);
      }
      state.uploads[uploadKey(spec)] = kept;
    }
  }
  chooseCommand(job.command);
  const where = $("#new-run");
  where.scrollIntoView({block: "start", behavior: "smooth"});
  document.getElementById(`tab-${job.command}`).focus({preventScroll: true});
  if (!job.files) say(`the settings of ${job.command} run ${job.id} are in the form; choose its files again`, "info");
  else if (gone.length) say(`the settings of ${job.command} run ${job.id} are in the form; ${gone.map((u) => u.name).join(", ")} ${gone.length > 1 ? "are" : "is"} no longer in the studio folder: choose ${gone.length > 1 ? "them" : "it"} again`, "error");
  else say(`the settings and files of ${job.command} run ${job.id} are in the form`, "ok");
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
  $("#reset").addEventListener("click", resetForm);
  $("#stop").addEventListener("click", stopShown);
  $("#options").addEventListener("input", onFormInput);
  $("#options").addEventListener("change", onFormInput);
  $("#options").addEventListener("submit", (e) => e.preventDefault());
  try {
    state.options = await api("/api/options");
  } catch (error) {
    say(`cannot read the options: ${error.message}`, "error");
    return;
  }
  restore();
  chooseCommand(state.command);
  connect();
  checkKeptUploads();
}

main();
