// palaver's browser client: one plain ES module, no dependencies, no build.
// Tokens live in memory and sessionStorage only; the WebSocket is opened with
// a single-use ticket so no long-lived token lands in a URL.

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- tokens --

const STORAGE_KEY = "palaver.auth";
let auth = loadAuth();

function loadAuth() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return saved && saved.refresh ? saved : null;
  } catch {
    return null;
  }
}

function saveAuth() {
  if (auth) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(auth));
  else sessionStorage.removeItem(STORAGE_KEY);
}

function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

function setTokens(body) {
  auth = {
    ...(auth || {}),
    access: body.access,
    refresh: body.refresh,
    accessExp: claims(body.access).exp,
    refreshExp: claims(body.refresh).exp,
  };
  if (body.user) auth.user = body.user;
  if (body.is_demo !== undefined) auth.isDemo = body.is_demo;
  if (body.expires_at) auth.demoEnd = body.expires_at;
  if (body.request_limit !== undefined) {
    auth.quota = { count: body.request_count, limit: body.request_limit };
  }
  saveAuth();
  scheduleRefresh();
}

const now = () => Math.floor(Date.now() / 1000);

// ------------------------------------------------------------------- api --

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

async function api(method, path, body, { authed = true, retried = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (authed && auth) headers.Authorization = `Bearer ${auth.access}`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  noteRateLimit(res.headers.get("RateLimit"));
  if (res.status === 401 && authed && auth && !retried && (await refreshTokens())) {
    return api(method, path, body, { authed, retried: true });
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

let refreshTimer = null;
let refreshing = null;

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!auth || !auth.accessExp) return;
  const end = auth.isDemo && auth.demoEnd ? Math.min(auth.accessExp, auth.demoEnd) : auth.accessExp;
  // Refresh a minute before expiry (or halfway, for short tokens).
  const lead = Math.min(60, (end - now()) / 2);
  const delay = Math.max(1, end - now() - lead) * 1000;
  refreshTimer = setTimeout(() => refreshTokens(), delay);
}

// Refreshes the tokens (once at a time) and tells the open socket.
function refreshTokens() {
  if (!auth) return Promise.resolve(false);
  if (auth.isDemo && auth.demoEnd && auth.demoEnd <= now()) {
    signedOut("The demo has ended. Start a new one or sign in.");
    return Promise.resolve(false);
  }
  refreshing ??= (async () => {
    try {
      const body = await api("POST", "/api/auth/refresh/", { refresh: auth.refresh }, { authed: false });
      setTokens(body);
      if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "refresh", token: auth.access }));
      }
      return true;
    } catch {
      signedOut("Your session has ended. Please sign in again.");
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// ----------------------------------------------------------------- views --

function banner(message) {
  const node = $('[data-testid="error-banner"]');
  node.textContent = message || "";
  node.hidden = !message;
}

function setStatus(text, online = false) {
  const node = $('[data-testid="connection-status"]');
  node.textContent = text;
  node.classList.toggle("online", online);
}

function showAuth(message) {
  $("#auth-view").hidden = false;
  $("#chat-view").hidden = true;
  $("#logout").hidden = true;
  $('[data-testid="quota-remaining"]').hidden = true;
  setStatus("offline");
  banner(message);
}

function showChat() {
  $("#auth-view").hidden = true;
  $("#chat-view").hidden = false;
  $("#logout").hidden = false;
  banner("");
  renderQuota();
}

function renderQuota() {
  const node = $('[data-testid="quota-remaining"]');
  if (!auth || !auth.quota) {
    node.hidden = true;
    return;
  }
  const left = Math.max(0, auth.quota.limit - auth.quota.count);
  let text = `${left} of ${auth.quota.limit} requests left`;
  if (auth.isDemo && auth.demoEnd) {
    const end = new Date(auth.demoEnd * 1000);
    text += ` · demo ends ${end.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
  }
  node.textContent = text;
  node.hidden = false;
}

function noteRateLimit(header) {
  // RateLimit: "demo";r=3;t=612
  const match = header && /;r=(\d+)/.exec(header);
  if (!match || !auth || !auth.quota) return;
  auth.quota.count = auth.quota.limit - Number(match[1]);
  saveAuth();
  renderQuota();
}

let demoTimer = null;

function signedIn() {
  showChat();
  clearTimeout(demoTimer);
  if (auth.isDemo && auth.demoEnd) {
    const ms = Math.max(0, auth.demoEnd - now()) * 1000;
    demoTimer = setTimeout(() => signedOut("The demo has ended. Start a new one or sign in."), ms);
  }
  scheduleRefresh();
  loadSessions(true);
  loadTracks();
}

function signedOut(message) {
  closeSocket();
  clearTimeout(refreshTimer);
  clearTimeout(demoTimer);
  auth = null;
  saveAuth();
  sessions = [];
  current = null;
  stopAllWatching();
  tracks = [];
  selectedTrack = null;
  trackDetails.clear();
  overviews.clear();
  drawn = null;
  renderPanel(null);
  $("#message-list").replaceChildren();
  $("#session-list").replaceChildren();
  $("#track-list").replaceChildren();
  showAuth(message);
}

// -------------------------------------------------------------- sessions --

let sessions = [];
let current = null;

async function loadSessions(openFirst) {
  try {
    const body = await api("GET", "/api/sessions/?limit=100");
    sessions = body.sessions;
    renderSessions();
    if (openFirst) {
      if (sessions.length) await openSession(sessions[0].id);
      else await newSession();
    }
  } catch (e) {
    handleError(e);
  }
}

function renderSessions() {
  const list = $("#session-list");
  list.replaceChildren(
    ...sessions.map((s) => {
      const item = el("li");
      const button = el("button", { type: "button", "data-session-id": s.id }, s.title);
      if (s.track_id) button.classList.add("with-track");
      if (s.id === current) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openSession(s.id));
      item.append(button);
      return item;
    }),
  );
  const session = sessions.find((s) => s.id === current);
  $("#session-title").textContent = session ? session.title : "No session";
}

async function newSession() {
  try {
    const session = await api("POST", "/api/sessions/", {});
    sessions.unshift(session);
    await openSession(session.id);
  } catch (e) {
    handleError(e);
  }
}

async function renameSession() {
  const session = sessions.find((s) => s.id === current);
  if (!session) return;
  const title = prompt("New title", session.title);
  if (title === null || !title.trim()) return;
  try {
    Object.assign(session, await api("PATCH", `/api/sessions/${session.id}/`, { title }));
    renderSessions();
  } catch (e) {
    handleError(e);
  }
}

async function deleteSession() {
  const session = sessions.find((s) => s.id === current);
  if (!session || !confirm(`Delete "${session.title}"?`)) return;
  try {
    closeSocket();
    await api("DELETE", `/api/sessions/${session.id}/`);
    sessions = sessions.filter((s) => s.id !== session.id);
    current = null;
    $("#message-list").replaceChildren();
    renderSessions();
    if (sessions.length) await openSession(sessions[0].id);
  } catch (e) {
    handleError(e);
  }
}

async function openSession(id) {
  closeSocket(); // the last session's socket takes no question meanwhile
  current = id;
  renderSessions();
  selectedTrack = sessions.find((s) => s.id === id)?.track_id ?? null;
  renderTracks();
  showTrack(selectedTrack);
  await loadHistory();
  connect();
}

async function loadHistory() {
  const id = current;
  const list = $("#message-list");
  const items = [];
  let after = 0;
  try {
    for (;;) {
      const page = await api("GET", `/api/sessions/${id}/messages/?after=${after}&limit=500`);
      items.push(...page.messages);
      if (!page.next) break;
      after = page.next;
    }
  } catch (e) {
    handleError(e);
    return;
  }
  if (id !== current) return;
  list.replaceChildren(...items.map(renderMessage));
  list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- tracks --

let tracks = [];
// The track whose panel is shown: picked in the list, or the open session's.
let selectedTrack = null;
// Tracks fetched whole (with their analysis) and their overviews, by id.
const trackDetails = new Map();
const overviews = new Map();

async function loadTracks() {
  try {
    tracks = (await api("GET", "/api/tracks/")).tracks;
    renderTracks();
    for (const t of tracks) if (t.analysis_status === "pending") watchTrack(t.track_id);
  } catch (e) {
    handleError(e);
  }
}

function renderTracks() {
  const list = $("#track-list");
  // Keyboard focus stays on the same button across the redraw.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const trackId = focused?.closest("[data-track-id]")?.dataset.trackId;
  list.replaceChildren(...tracks.map(trackItem));
  if (focused) list.querySelector(`[data-track-id="${trackId}"] .${focused.className}`)?.focus();
  $("#track-new-session").disabled = !tracks.some((t) => t.track_id === selectedTrack);
}

function trackItem(t) {
  const item = el("li", { "data-track-id": t.track_id, "data-status": t.analysis_status });
  const pick = el("button", { type: "button", class: "pick" });
  if (t.track_id === selectedTrack) pick.setAttribute("aria-current", "true");
  pick.append(
    el("span", { class: "name" }, t.filename),
    el("span", { class: "meta" }, `${clock(t.duration_seconds)} · ${t.format.toUpperCase()} · `),
    el("span", { class: "state" }, statusWords(t)),
  );
  pick.addEventListener("click", () => selectTrack(t.track_id));
  const remove = el("button", { type: "button", class: "remove", "aria-label": `Delete ${t.filename}`, title: "Delete" }, "✕");
  remove.addEventListener("click", () => deleteTrack(t.track_id));
  item.append(pick, remove);
  return item;
}

function statusWords(t) {
  if (t.analysis_status === "ready") return "ready";
  if (t.analysis_status === "failed") return "analysis failed";
  return polls.has(t.track_id) ? "analysing…" : "analysing (select to check)";
}

// A track as the server now shows it (from a poll, a GET or an upload).
function trackArrived(track) {
  const index = tracks.findIndex((t) => t.track_id === track.track_id);
  const summary = { ...track };
  delete summary.analysis;
  delete summary.analysis_error;
  if (index >= 0) tracks[index] = summary;
  else tracks.unshift(summary);
  if ("analysis" in track) trackDetails.set(track.track_id, track);
  renderTracks();
  if (track.track_id === selectedTrack) renderPanel(track);
}

function forgetTrack(id) {
  stopWatching(id);
  tracks = tracks.filter((t) => t.track_id !== id);
  trackDetails.delete(id);
  overviews.delete(id);
  if (selectedTrack === id) {
    selectedTrack = null;
    renderPanel(null);
  }
  renderTracks();
}

async function deleteTrack(id) {
  const track = tracks.find((t) => t.track_id === id);
  if (!track || !confirm(`Delete the track "${track.filename}"?`)) return;
  try {
    await api("DELETE", `/api/tracks/${id}/`);
    forgetTrack(id);
  } catch (e) {
    if (e.status === 404) forgetTrack(id);
    else handleError(e);
  }
}

function selectTrack(id) {
  selectedTrack = id;
  renderTracks();
  return showTrack(id);
}

// Shows the panel of track `id` (or hides it, for null) and fetches what it
// lacks: the track with its analysis, then its overview.
async function showTrack(id) {
  if (!id) {
    renderPanel(null);
    return;
  }
  renderPanel(trackDetails.get(id) || tracks.find((t) => t.track_id === id) || null);
  try {
    const track = await api("GET", `/api/tracks/${id}/`);
    if (selectedTrack !== id) return;
    trackArrived(track);
    if (track.analysis_status === "pending") watchTrack(id);
  } catch (e) {
    if (e.status !== 404) handleError(e);
    else if (selectedTrack === id) {
      forgetTrack(id);
      banner("That track has been deleted.");
    }
  }
}

async function newTrackSession() {
  const track = tracks.find((t) => t.track_id === selectedTrack);
  if (!track) return;
  try {
    const body = { track_id: track.track_id, title: track.filename.slice(0, 200) };
    const session = await api("POST", "/api/sessions/", body);
    sessions.unshift(session);
    await openSession(session.id);
  } catch (e) {
    if (e.status !== 404) handleError(e);
    else {
      forgetTrack(track.track_id);
      banner("That track has been deleted.");
    }
  }
}

// ------------------------------------------------------- analysis polling --

// A pending track is asked about again with a growing delay, while the page
// is visible and for at most this long (then selecting it asks again).
const POLL_FOR_MS = 120_000;
const POLL_FIRST_MS = 500;
const POLL_MAX_MS = 8000;
const polls = new Map(); // track id → { timer, delay, deadline }

function watchTrack(id) {
  if (polls.has(id) || document.hidden) return;
  polls.set(id, { timer: null, delay: POLL_FIRST_MS, deadline: Date.now() + POLL_FOR_MS });
  schedulePoll(id);
}

function schedulePoll(id) {
  const poll = polls.get(id);
  poll.timer = setTimeout(() => pollTrack(id, poll), poll.delay);
  poll.delay = Math.min(POLL_MAX_MS, poll.delay * 1.6);
}

async function pollTrack(id, poll) {
  let track;
  try {
    track = await api("GET", `/api/tracks/${id}/`);
  } catch (e) {
    stopWatching(id);
    if (e.status === 404) forgetTrack(id);
    else handleError(e);
    return;
  }
  if (polls.get(id) !== poll) return; // stopped meanwhile
  if (track.analysis_status !== "pending" || Date.now() >= poll.deadline) stopWatching(id);
  else schedulePoll(id);
  trackArrived(track);
}

function stopWatching(id) {
  clearTimeout(polls.get(id)?.timer);
  polls.delete(id);
}

function stopAllWatching() {
  for (const id of [...polls.keys()]) stopWatching(id);
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) stopAllWatching();
  else if (auth) for (const t of tracks) if (t.analysis_status === "pending") watchTrack(t.track_id);
  renderTracks();
});

// ---------------------------------------------------------------- upload --

// POSTs `file` as the multipart field `file` with XMLHttpRequest (fetch
// cannot report upload progress); resolves with the status and JSON body.
function sendFile(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    if (auth) xhr.setRequestHeader("Authorization", `Bearer ${auth.access}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      noteRateLimit(xhr.getResponseHeader("RateLimit"));
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        data = null;
      }
      resolve({ status: xhr.status, data });
    });
    xhr.addEventListener("error", () => reject(new TypeError("the upload broke off")));
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}

async function uploadTrack(file, retried = false) {
  const res = await sendFile("/api/tracks/", file, showProgress);
  if (res.status === 401 && !retried && (await refreshTokens())) return uploadTrack(file, true);
  if (res.status !== 201) throw new ApiError(res.status, res.data);
  return res.data;
}

// Progress while the bytes go up, then "working" while the server checks them.
function showProgress(fraction) {
  const bar = $("#upload-progress");
  bar.hidden = false;
  if (fraction < 1) bar.value = fraction;
  else bar.removeAttribute("value");
}

async function uploadChosen() {
  const input = $("#track-upload");
  const file = input.files[0];
  if (!file) return;
  input.disabled = true;
  showProgress(0);
  try {
    const track = await uploadTrack(file);
    banner("");
    trackArrived(track);
    if (track.analysis_status === "pending") watchTrack(track.track_id);
    await selectTrack(track.track_id);
  } catch (e) {
    uploadFailed(e, file);
  } finally {
    input.value = "";
    input.disabled = false;
    $("#upload-progress").hidden = true;
  }
}

function uploadFailed(e, file) {
  const name = file.name;
  if (!(e instanceof ApiError)) {
    // The server may cut a large upload off as soon as it passes its limit.
    const why = file.size > 8 << 20 ? " (perhaps it is over the server's size limit)" : "";
    banner(`"${name}" was not uploaded: the connection broke off${why}.`);
    return;
  }
  const limit = /(\d+) bytes/.exec(e.message || "");
  const messages = {
    payload_too_large: `"${name}" is too large to upload${limit && Number(limit[1]) ? ` (the limit is ${bytes(Number(limit[1]))})` : ""}.`,
    unsupported_media_type: `"${name}" is not audio palaver can read: upload WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC.`,
    track_limit: "You have as many tracks as this server keeps for one user: delete one to upload another.",
    busy: "The server is busy. Try the upload again in a moment.",
  };
  if (messages[e.code]) banner(messages[e.code]);
  else handleError(e);
}

// ----------------------------------------------------------- track panel --

function renderPanel(track) {
  const panel = $("#track-panel");
  panel.hidden = !track;
  if (!track) return;
  $("#track-panel-title").textContent = track.filename;
  const status = $("#track-panel-status");
  status.textContent =
    track.analysis_status === "pending"
      ? "Analysing…"
      : track.analysis_status === "failed"
        ? `The analysis failed${track.analysis_error ? `: ${track.analysis_error}` : "."}`
        : "";
  status.hidden = !status.textContent;
  $("#track-analysis").replaceChildren(
    ...analysisRows(track).map(([key, label, value]) => {
      const row = el("div", { "data-key": key });
      row.append(el("dt", {}, label), el("dd", {}, value));
      return row;
    }),
  );
  showOverview(track);
}

function analysisRows(track) {
  const a = track.analysis;
  const rows = [
    ["duration_seconds", "Duration", clock(a ? a.duration_seconds : track.duration_seconds)],
    ["format", "Format", `${track.format.toUpperCase()} · ${kilohertz(track.sample_rate)} · ${channels(track.channels)}`],
  ];
  if (!a) return rows;
  rows.push(
    ["loudness_lufs", "Loudness", fixed(a.loudness_lufs, 1, "LUFS")],
    ["loudness_range_lu", "Loudness range", fixed(a.loudness_range_lu, 1, "LU")],
    ["true_peak_dbtp", "True peak", fixed(a.true_peak_dbtp, 1, "dBTP")],
    ["peak_dbfs", "Sample peak", fixed(a.peak_dbfs, 1, "dBFS")],
    ["rms_dbfs", "RMS", fixed(a.rms_dbfs, 1, "dBFS")],
    ["tempo_bpm", "Tempo", a.tempo_bpm == null ? "no steady beat" : fixed(a.tempo_bpm, 1, "BPM")],
    ["silence", "Silence", silenceWords(a.silence)],
    ["clipping", "Clipped samples", clippingWords(a.clipping)],
    ["spectral_centroid_hz", "Spectral centroid", fixed(a.spectral_centroid_hz, 0, "Hz")],
  );
  if (a.decode_errors) rows.push(["decode_errors", "Decode errors", `${a.decode_errors} bad packets skipped`]);
  return rows;
}

function silenceWords(silence) {
  if (!silence) return "—";
  const n = silence.segments.length;
  if (!n) return "none";
  return `${percent(silence.ratio)} in ${n} ${n === 1 ? "stretch" : "stretches"}`;
}

function clippingWords(clipping) {
  if (!clipping) return "—";
  if (!clipping.clipped_samples) return "none";
  return `${clipping.clipped_samples.toLocaleString("en")} (${percent(clipping.ratio)})`;
}

// Fetches the overview of a ready track once, then draws it.
async function showOverview(track) {
  const figure = $(".track-panel .overview");
  const id = track.track_id;
  figure.hidden = track.analysis_status !== "ready";
  if (figure.hidden) return;
  const canvas = $("#track-overview");
  if (canvas.dataset.trackId !== id) {
    // Another track's picture: not shown while this one's loads.
    drawn = null;
    delete canvas.dataset.trackId;
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  if (!overviews.has(id)) {
    overviews.set(id, null); // asked for
    try {
      overviews.set(id, await api("GET", `/api/tracks/${id}/overview/`));
    } catch (e) {
      overviews.delete(id);
      if (e.status !== 404) handleError(e);
      return;
    }
  }
  const overview = overviews.get(id);
  if (!overview || selectedTrack !== id) return;
  canvas.dataset.trackId = id;
  canvas.setAttribute("aria-label", overviewLabel(track, overview));
  drawn = overview;
  drawOverview(canvas, overview);
}

function overviewLabel(track, overview) {
  const levels = overview.short_term_lufs.filter((v) => v !== null);
  const loudness = levels.length
    ? `short-term loudness from ${Math.min(...levels).toFixed(0)} to ${Math.max(...levels).toFixed(0)} LUFS`
    : "silent throughout";
  return `Waveform of ${track.filename} (${clock(overview.duration_seconds)}), ${loudness}`;
}

// The overview on the canvas now, redrawn when the canvas changes size.
let drawn = null;

// The min/max envelope around the middle line, and over it the short-term
// loudness on a −60…0 LUFS scale (top is 0), with gaps where it is silent.
// Drawn in device pixels, so it stays sharp on any screen.
function drawOverview(canvas, overview) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (!width || !height) return; // hidden: drawn when it is shown
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const color = (name) => getComputedStyle(canvas).getPropertyValue(name).trim();
  const lufsY = (lufs) => (Math.max(-60, Math.min(0, lufs)) / -60) * height;

  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = color("--line");
  for (const lufs of [-20, -40]) ctx.fillRect(0, Math.round(lufsY(lufs)), width, Math.max(1, Math.round(ratio)));

  const envelope = overview.envelope;
  const slice = width / Math.max(1, envelope.length);
  const middle = height / 2;
  ctx.fillStyle = color("--wave");
  envelope.forEach(([min, max], i) => {
    const top = middle - max * middle;
    ctx.fillRect(Math.floor(i * slice), top, Math.max(1, Math.ceil(slice)), Math.max(ratio, (max - min) * middle));
  });

  const levels = overview.short_term_lufs;
  const step = overview.short_term_step_seconds;
  const duration = overview.duration_seconds || levels.length * step || 1;
  ctx.strokeStyle = color("--loudness");
  ctx.lineWidth = 2 * ratio;
  ctx.lineJoin = "round";
  ctx.beginPath();
  let drawing = false;
  levels.forEach((lufs, i) => {
    if (lufs === null) {
      drawing = false;
      return;
    }
    const x = ((i * step) / duration) * width;
    if (drawing) ctx.lineTo(x, lufsY(lufs));
    else ctx.moveTo(x, lufsY(lufs));
    drawing = true;
  });
  ctx.stroke();
}

new ResizeObserver(() => {
  if (drawn && !$("#track-panel").hidden) drawOverview($("#track-overview"), drawn);
}).observe($("#track-overview"));

// ------------------------------------------------------------- formatting --

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function fixed(value, digits, unit) {
  return value === null || value === undefined ? "—" : `${value.toFixed(digits)} ${unit}`;
}

const percent = (ratio) => `${(ratio * 100).toFixed(ratio < 0.1 ? 1 : 0)}%`;
const kilohertz = (rate) => `${Number((rate / 1000).toFixed(2))} kHz`;
const channels = (n) => (n === 1 ? "mono" : n === 2 ? "stereo" : `${n} channels`);

function bytes(n) {
  if (n >= 1 << 20) return `${Number((n / (1 << 20)).toFixed(1))} MiB`;
  if (n >= 1 << 10) return `${Number((n / (1 << 10)).toFixed(1))} KiB`;
  return `${n} bytes`;
}

// -------------------------------------------------------------- messages --

function renderMessage(m) {
  const node = el("li", { class: "msg", "data-role": m.role, "data-status": m.status || "complete" });
  if (m.id) node.dataset.id = m.id;
  const tools = el("ul", { class: "tools" });
  for (const t of m.tools || []) tools.append(toolLine(t.tool, t.success, t.result, t.args));
  const body = el("div", { class: "body" }, m.text || "");
  node.append(tools, body);
  if (m.role === "assistant" && m.status && m.status !== "complete") {
    node.append(el("div", { class: "meta" }, m.status === "streaming" ? "…" : m.status));
  }
  return node;
}

// A tool card: the tool's name, then "…" until its result arrives, then the
// result's numbers compactly (any tool: the keys are shown as the tool names
// them).
function toolLine(tool, success, result, args) {
  const state = success === undefined ? "pending" : success ? "ok" : "failed";
  const card = el("li", { class: "tool", "data-testid": "tool-call", "data-tool": tool, "data-state": state });
  if (args && Object.keys(args).length) card.title = `${tool} ${JSON.stringify(args)}`;
  card.append(el("span", { class: "tool-name" }, `${state === "failed" ? "✗" : "⚙"} ${tool}:`), " ");
  if (state === "pending") card.append(el("span", { class: "tool-result" }, "…"));
  else if (state === "failed") card.append(el("span", { class: "tool-result" }, `failed: ${short(result)}`));
  else card.append(toolResult(result));
  return card;
}

function toolResult(result) {
  const node = el("span", { class: "tool-result" });
  if (!isRecord(result)) {
    node.textContent = short(compact(result));
    return node;
  }
  for (const [key, value] of flatten(result).slice(0, 10)) {
    const pair = el("span", { class: "kv" });
    pair.append(el("span", { class: "k" }, key), " ", compact(value));
    node.append(pair, " ");
  }
  return node;
}

const isRecord = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

// [key, value] pairs, one level of nesting spelled as "outer.inner".
function flatten(record) {
  return Object.entries(record).flatMap(([key, value]) =>
    isRecord(value) ? Object.entries(value).map(([inner, v]) => [`${key}.${inner}`, v]) : [[key, value]],
  );
}

function compact(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return number(value);
  if (typeof value === "string") return value.length > 60 ? `${value.slice(0, 59)}…` : value;
  if (Array.isArray(value)) {
    const scalars = value.every((v) => !v || typeof v !== "object");
    return scalars && value.length <= 5 ? value.map(compact).join(", ") : `${value.length} items`;
  }
  return short(value);
}

function number(value) {
  if (Number.isInteger(value)) return String(value);
  const size = Math.abs(value);
  if (size >= 1000) return value.toFixed(0);
  return size >= 1 ? value.toFixed(1) : value.toPrecision(2);
}

function short(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 117)}…` : text;
}

// The assistant message being streamed now, if any.
let reply = null;
let awaiting = false;

function replyNode(messageId) {
  if (!reply && messageId) {
    // A reply shown already (history, a resume) continues in place.
    reply = [...$("#message-list").children].find((n) => n.dataset.id === messageId) || null;
  }
  if (!reply) {
    reply = renderMessage({ role: "assistant", status: "streaming", text: "" });
    $("#message-list").append(reply);
  }
  if (messageId && !reply.dataset.id) reply.dataset.id = messageId;
  return reply;
}

// A numbered event (`seq`) is shown once: a resume may repeat what the page
// already has. `false` for an event to skip.
function firstTime(node, frame) {
  if (frame.seq === undefined) return true;
  const last = Number(node.dataset.seq || 0);
  if (frame.seq <= last) return false;
  node.dataset.seq = String(frame.seq);
  return true;
}

// The reply history shows still streaming: the page resumes it on connect.
function streamingReply() {
  const last = $("#message-list").lastElementChild;
  return last && last.dataset.role === "assistant" && last.dataset.status === "streaming" && last.dataset.id
    ? last
    : null;
}

function setBusy(busy) {
  awaiting = busy;
  $('[data-testid="send-button"]').disabled = busy;
  $('[data-testid="cancel-button"]').disabled = !busy;
}

function scrollDown() {
  const list = $("#message-list");
  list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------- websocket --

let socket = null;
let retry = 0;
let reconnectTimer = null;

function closeSocket() {
  clearTimeout(reconnectTimer);
  if (socket) {
    const old = socket;
    socket = null;
    old.close(1000);
  }
  reply = null;
  setBusy(false);
  setStatus("offline");
}

async function connect() {
  closeSocket();
  if (!current || !auth) return;
  const session = current;
  setStatus("connecting…");
  let ticket;
  try {
    ticket = (await api("POST", "/api/auth/ws-ticket/")).ticket;
  } catch (e) {
    handleError(e);
    if (e.status !== 401) scheduleReconnect();
    return;
  }
  if (session !== current || !auth) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // A reply that was streaming when the page (re)loaded its history goes on
  // where it stopped: everything after what the page shows, then live.
  const streaming = streamingReply();
  const resume = streaming ? `&resume=${streaming.dataset.id}:${streaming.dataset.seq || 0}` : "";
  const ws = new WebSocket(
    `${scheme}//${location.host}/ws/sessions/${session}/?ticket=${encodeURIComponent(ticket)}${resume}`,
    "palaver.v1",
  );
  socket = ws;
  ws.onmessage = (event) => {
    if (ws === socket) onFrame(JSON.parse(event.data));
  };
  ws.onclose = (event) => {
    if (ws === socket) onClose(event);
  };
}

function scheduleReconnect() {
  clearTimeout(reconnectTimer);
  const delay = Math.min(15000, 500 * 2 ** retry) * (0.75 + Math.random() / 2);
  retry += 1;
  setStatus("reconnecting…");
  reconnectTimer = setTimeout(async () => {
    await loadHistory(); // replies that finished meanwhile
    connect();
  }, delay);
}

function onClose(event) {
  socket = null;
  reply = null;
  setBusy(false);
  setStatus("offline");
  switch (event.code) {
    case 4001:
      signedOut("Please sign in again.");
      break;
    case 4002:
      signedOut("This account is unavailable.");
      break;
    case 4004:
      banner("This session is gone.");
      current = null;
      loadSessions(true);
      break;
    case 4029:
      banner("Too many open tabs: close one, then reload this page.");
      break;
    case 1000:
      break;
    default:
      scheduleReconnect();
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case "connected":
      retry = 0;
      setStatus("online", true);
      if (frame.quota && auth) {
        auth.quota = { count: frame.quota.request_count, limit: frame.quota.request_limit };
        saveAuth();
        renderQuota();
      }
      break;
    case "message":
      // This tab's question, or another tab's on the same session.
      banner("");
      $("#message-list").append(renderMessage(frame.message));
      reply = null;
      replyNode();
      setBusy(true);
      scrollDown();
      break;
    case "resumed": {
      reply = null;
      const node = replyNode(frame.message_id);
      // History stores a streaming reply without its text: what the page
      // shows of it came from events, counted by `seq`.
      if (frame.after === 0) {
        node.querySelector(".body").textContent = "";
        node.querySelector(".tools").replaceChildren();
        node.dataset.seq = "0";
      }
      setBusy(true);
      break;
    }
    case "tool_call": {
      const node = replyNode(frame.message_id);
      if (firstTime(node, frame)) {
        node.querySelector(".tools").append(toolLine(frame.tool, undefined, null, frame.args));
      }
      break;
    }
    case "tool_result": {
      const node = replyNode(frame.message_id);
      if (!firstTime(node, frame)) break;
      const pending = [...node.querySelectorAll('.tools li[data-state="pending"]')].find(
        (li) => li.dataset.tool === frame.tool,
      );
      const line = toolLine(frame.tool, frame.success, frame.result, pending ? undefined : frame.args);
      if (pending) {
        if (pending.title) line.title = pending.title;
        pending.replaceWith(line);
      }
      else node.querySelector(".tools").append(line);
      break;
    }
    case "token": {
      const node = replyNode(frame.message_id);
      if (firstTime(node, frame)) node.querySelector(".body").append(frame.text);
      scrollDown();
      break;
    }
    case "done": {
      const node = replyNode(frame.message_id);
      node.dataset.status = frame.status;
      node.querySelector(".meta")?.remove();
      if (frame.status !== "complete") node.append(el("div", { class: "meta" }, frame.status));
      reply = null;
      setBusy(false);
      break;
    }
    case "quota":
      if (auth) {
        auth.quota = { count: frame.request_count, limit: frame.request_limit };
        saveAuth();
        renderQuota();
      }
      break;
    case "token_expiring":
      refreshTokens();
      break;
    case "refreshed":
      if (auth && frame.expires_at) auth.accessExp = frame.expires_at;
      break;
    case "error":
      onServerError(frame);
      break;
    default:
      break;
  }
}

function onServerError(frame) {
  const messages = {
    quota_exceeded:
      auth && auth.isDemo
        ? `The demo limit is reached: all ${frame.request_limit} requests are used. Sign in to keep going.`
        : "Your request quota is used up for now.",
    stream_in_progress: "Wait for the current reply to finish (or cancel it).",
    // The reply finished long ago: history (loaded on connect) has it.
    resume_unavailable: "",
    busy: "The server is busy. Try again in a moment.",
    question_too_long: "That question is too long.",
    rate_limited: "Slow down: too many messages.",
    token_invalid: "Your sign-in could not be renewed.",
  };
  banner(messages[frame.code] ?? frame.message ?? "Something went wrong.");
  if (frame.code === "resume_unavailable") {
    reply = null;
    setBusy(false);
    loadHistory();
    return;
  }
  if (frame.code === "quota_exceeded" && auth) {
    auth.quota = { count: frame.request_count, limit: frame.request_limit };
    saveAuth();
    renderQuota();
  }
  if (frame.code !== "stream_in_progress" && !reply?.dataset.id) {
    reply?.remove();
    reply = null;
    setBusy(false);
  }
}

function handleError(e) {
  if (!(e instanceof ApiError)) {
    banner("The server cannot be reached.");
    return;
  }
  if (e.status === 401) {
    signedOut("Please sign in again.");
  } else if (e.code === "quota_exceeded") {
    banner(
      auth && auth.isDemo
        ? `The demo limit is reached: all ${e.body.request_limit} requests are used. Sign in to keep going.`
        : "Your request quota is used up for now.",
    );
  } else {
    banner(e.message);
  }
}

// --------------------------------------------------------------- actions --

function ask(event) {
  event.preventDefault();
  const input = $('[data-testid="question-input"]');
  const text = input.value.trim();
  if (!text || awaiting) return;
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    banner("Not connected yet: wait a moment and send again.");
    return;
  }
  socket.send(JSON.stringify({ type: "question", text, id: crypto.randomUUID() }));
  input.value = "";
  setBusy(true);
}

async function startDemo() {
  try {
    setTokens(await api("POST", "/api/auth/demo/", undefined, { authed: false }));
    signedIn();
  } catch (e) {
    banner(e.code === "rate_limited" ? "Too many demos from here: try again later." : e.message);
  }
}

async function login(event) {
  event.preventDefault();
  const email = $("#login-email").value;
  const password = $("#login-password").value;
  try {
    const body = await api("POST", "/api/auth/login/", { email, password }, { authed: false });
    setTokens(body);
    auth.quota = null;
    const me = await api("GET", "/api/auth/me/");
    if (me.quota) auth.quota = { count: me.quota.request_count, limit: me.quota.request_limit };
    saveAuth();
    signedIn();
  } catch (e) {
    banner(e.code === "rate_limited" ? "Too many attempts: try again later." : e.message);
  }
}

async function register() {
  const form = $("#login-form");
  if (!form.reportValidity()) return;
  const email = $("#login-email").value;
  const password = $("#login-password").value;
  try {
    await api("POST", "/api/auth/register/", { email, password }, { authed: false });
    await login(new Event("submit"));
  } catch (e) {
    banner(e.code === "registration_closed" ? "Registration is closed on this server." : e.message);
  }
}

async function logout() {
  const refresh = auth && auth.refresh;
  closeSocket();
  if (refresh) {
    try {
      await api("POST", "/api/auth/logout/", { refresh }, { authed: false });
    } catch {
      // Signed out locally either way.
    }
  }
  signedOut("");
}

$("#demo").addEventListener("click", startDemo);
$("#login-form").addEventListener("submit", login);
$("#register").addEventListener("click", register);
$("#logout").addEventListener("click", logout);
$("#new-session").addEventListener("click", newSession);
$("#rename-session").addEventListener("click", renameSession);
$("#delete-session").addEventListener("click", deleteSession);
$("#ask-form").addEventListener("submit", ask);
$("#track-upload").addEventListener("change", uploadChosen);
$("#track-new-session").addEventListener("click", newTrackSession);
$("#cancel").addEventListener("click", () => {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "cancel" }));
});
$('[data-testid="question-input"]').addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) ask(event);
});

if (auth && auth.refreshExp > now()) signedIn();
else {
  auth = null;
  saveAuth();
  showAuth();
}
