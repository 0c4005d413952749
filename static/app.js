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
}

function signedOut(message) {
  closeSocket();
  clearTimeout(refreshTimer);
  clearTimeout(demoTimer);
  auth = null;
  saveAuth();
  sessions = [];
  current = null;
  $("#message-list").replaceChildren();
  $("#session-list").replaceChildren();
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
  current = id;
  renderSessions();
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

// -------------------------------------------------------------- messages --

function renderMessage(m) {
  const node = el("li", { class: "msg", "data-role": m.role, "data-status": m.status || "complete" });
  if (m.id) node.dataset.id = m.id;
  const tools = el("ul", { class: "tools" });
  for (const t of m.tools || []) tools.append(toolLine(t.tool, t.success, t.result));
  const body = el("div", { class: "body" }, m.text || "");
  node.append(tools, body);
  if (m.role === "assistant" && m.status && m.status !== "complete") {
    node.append(el("div", { class: "meta" }, m.status === "streaming" ? "…" : m.status));
  }
  return node;
}

function toolLine(tool, success, result) {
  const summary = success === undefined ? "…" : success ? short(result) : `failed: ${short(result)}`;
  return el("li", { "data-tool": tool }, `${success === false ? "✗" : "⚙"} ${tool}: ${summary}`);
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
      if (firstTime(node, frame)) node.querySelector(".tools").append(toolLine(frame.tool));
      break;
    }
    case "tool_result": {
      const node = replyNode(frame.message_id);
      if (!firstTime(node, frame)) break;
      const pending = [...node.querySelectorAll(".tools li")].find(
        (li) => li.dataset.tool === frame.tool && li.textContent.endsWith("…"),
      );
      const line = toolLine(frame.tool, frame.success, frame.result);
      if (pending) pending.replaceWith(line);
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
