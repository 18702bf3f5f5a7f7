// The browser client: wires the API, the socket and the store to the page.

import { ApiError, createApi } from "./api.js";
import { createConnection } from "./connection.js";
import { $, dayKey, fmtDay, fmtFull, fmtShort, fmtTime, h, hue, paintAvatar, reconcile } from "./dom.js";
import { createStore, USER_ID_RE } from "./store.js";

const SESSION_KEY = "relay-chat:session";
const PRESENCE_EVERY_MS = 5_000;
const GROUPS_EVERY_MS = 15_000;
const RESEND_AFTER_MS = 15_000;
const NEAR_BOTTOM_PX = 80;
const NEAR_TOP_PX = 120;

const ERROR_TEXT = {
  bad_request: "Rejected by the server",
  too_large: "Too long (4096 characters at most)",
  forbidden: "Not allowed here",
  rate_limited: "Sending too fast",
  unavailable: "Server busy, not sent",
};
const RETRYABLE = new Set(["unavailable", "rate_limited"]);

let session = null; // { userId, token }
let store = null;
let conn = null;
let activeKey = null;
let timers = [];
let unsubscribe = null;
const presence = new Map();
const sentAt = new Map(); // client id -> when last written to a socket (this page only)

const api = createApi({
  getToken: () => session?.token ?? "",
  getRefreshToken: () => session?.refreshToken,
  onSession: saveSession,
  onUnauthorized: () => session && logout("Your session has ended. Please log in again."),
});

function saveSession(r) {
  session = { userId: r.userId, token: r.token, refreshToken: r.refreshToken };
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

// ---------- session ----------

function jwtExpired(token) {
  try {
    const p = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof p.exp === "number" && p.exp * 1000 <= Date.now();
  } catch {
    return true;
  }
}

function readSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
    if (s && USER_ID_RE.test(s.userId) && typeof s.token === "string" && (!jwtExpired(s.token) || typeof s.refreshToken === "string")) return s;
  } catch {}
  return null;
}

function showView(name) {
  $("boot").hidden = true;
  $("auth-view").hidden = name !== "auth";
  $("chat-view").hidden = name !== "chat";
}

// ---------- auth ----------

function showAuth(message = "") {
  showView("auth");
  $("auth-error").textContent = message;
  $("auth-password").value = "";
  $("auth-username").focus();
}

async function authenticate(mode) {
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const err = $("auth-error");
  err.textContent = "";
  if (!USER_ID_RE.test(username)) {
    err.textContent = "A username is 1 to 64 letters, digits, or _ . -";
    return;
  }
  if (mode === "register" ? password.length < 8 || password.length > 128 : !password) {
    err.textContent = mode === "register" ? "A password is 8 to 128 characters." : "Enter your password.";
    return;
  }
  const buttons = [$("auth-login"), $("auth-register")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const r = mode === "register" ? await api.register(username, password) : await api.login(username, password);
    saveSession(r);
    startChat();
  } catch (e) {
    const s = e instanceof ApiError ? e.status : 0;
    err.textContent =
      s === 401 ? "Wrong username or password." :
      s === 409 ? "That username is taken. Log in instead?" :
      s === 400 ? `Not accepted: ${e.message}` :
      s === 429 ? "Too many attempts. Wait a moment and try again." :
      e.message || "Something went wrong.";
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  authenticate("login");
});
$("auth-register").addEventListener("click", () => authenticate("register"));

// ---------- chat lifecycle ----------

function startChat() {
  const me = session.userId;
  store = createStore(me);
  store.load();
  unsubscribe = store.subscribe(onStoreChange);
  presence.clear();
  sentAt.clear();
  conn = createConnection({
    url: () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?token=${encodeURIComponent(session.token)}`,
    handlers,
    onOpen,
    onStatus: renderConnStatus,
    onRefused: () => {
      // The upgrade is refused with 401 for a bad or expired token; the API tells us which.
      if (jwtExpired(session.token)) api.refresh().catch((e) => e.status === 401 && logout("Your session has expired. Please log in again."));
      else api.groups().then((r) => store?.setGroups(r.groups ?? []), () => {});
    },
  });

  showView("chat");
  $("me-name").textContent = me;
  paintAvatar($("me-avatar"), me);
  activeKey = null;
  renderSidebar();
  openConv(keyFromHash(), { push: false });

  conn.start();
  refreshGroups();
  pollPresence();
  timers.push(setInterval(pollPresence, PRESENCE_EVERY_MS));
  timers.push(setInterval(refreshGroups, GROUPS_EVERY_MS));
  timers.push(setInterval(resendStale, 5_000));
  timers.push(setInterval(renderSidebar, 60_000)); // relative times
}

function logout(message = "") {
  if (!session) return;
  api.logout().catch(() => {});
  conn?.stop();
  unsubscribe?.();
  store?.clear(); // a shared computer keeps nothing of this user
  timers.forEach(clearInterval);
  timers = [];
  store = conn = session = null;
  activeKey = null;
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {}
  $("conv-list").replaceChildren();
  $("message-items").replaceChildren();
  msgEls.clear();
  convEls.clear();
  pendingRender = null;
  history.replaceState(null, "", location.pathname + location.search);
  document.title = "Relay";
  showAuth(message);
}

$("logout").addEventListener("click", () => logout());

addEventListener("pagehide", () => store?.flush());
addEventListener("storage", (e) => {
  // Logged in or out in another tab.
  if (e.key !== SESSION_KEY) return;
  const next = readSession();
  if (next?.userId !== session?.userId) location.reload();
  else if (next) session = next; // another tab refreshed the session
});

// ---------- socket ----------

function frameOf(m) {
  return m.group != null
    ? { type: "send", id: m.id, group: m.group, body: m.body }
    : { type: "send", id: m.id, to: m.to, body: m.body };
}

function transmit(m) {
  if (conn.send(frameOf(m))) sentAt.set(m.id, Date.now());
}

function onOpen() {
  // Resume from the last cursor (from the start the first time), then resend what was never
  // acked with the same ids: the server acks a repeated id again and stores it once.
  conn.send(store.cursor ? { type: "sync", after: store.cursor } : { type: "sync" });
  for (const m of store.outbox()) transmit(m);
  refreshGroups();
  watched = "";
  pollPresence();
}

function resendStale() {
  if (!conn?.isOpen) return;
  const now = Date.now();
  for (const m of store.outbox()) if (now - (sentAt.get(m.id) ?? 0) > RESEND_AFTER_MS) transmit(m);
}

const handlers = {
  ack(f) {
    store.applyAck(f);
  },
  message(f) {
    const r = store.applyMessage(f);
    if (r.added && r.msg.group != null && store.groupsLoaded && !store.groups.has(r.msg.group)) refreshGroupsSoon();
  },
  synced(f) {
    store.applySynced(f);
  },
  error(f) {
    const m = store.applySendError(f);
    // Forbidden in a group: we were most likely removed; the group list tells.
    if (m?.group != null && f.code === "forbidden") refreshGroupsSoon();
    if (!m) toast(`${ERROR_TEXT[f.code] ?? f.code}${f.message ? `: ${f.message}` : ""}`);
  },
  pong() {},
  presence(f) {
    if (typeof f.user === "string") {
      presence.set(f.user, !!f.online);
      renderPresence();
    }
  },
};

// ---------- groups & presence ----------

let groupsTimer = null;
function refreshGroupsSoon() {
  if (groupsTimer) return;
  groupsTimer = setTimeout(() => {
    groupsTimer = null;
    refreshGroups();
  }, 300);
}

async function refreshGroups() {
  if (!store) return;
  const s = store;
  try {
    const r = await api.groups();
    if (s === store) s.setGroups(r?.groups ?? []);
  } catch {}
}

let watched = "";
async function pollPresence() {
  if (!store || document.hidden) return;
  const users = new Set();
  for (const c of store.conversations()) if (c.kind === "d") users.add(c.peer);
  const g = activeGroup();
  for (const u of g?.members ?? []) users.add(u);
  users.delete(store.me);
  const list = [...users].slice(0, 100);
  // Ask the server to push changes of these users (presence frames); the HTTP poll stays as a
  // fallback for servers without push.
  const key = list.sort().join(",");
  if (key !== watched && conn?.isOpen && conn.send({ type: "watch", users: list })) watched = key;
  if (!list.length) return;
  try {
    const r = await api.presence(list);
    for (const [u, online] of Object.entries(r?.online ?? {})) presence.set(u, !!online);
    renderPresence();
  } catch {}
}

function isOnline(user) {
  return user === store?.me ? !!conn?.isOpen : presence.get(user) === true;
}

function activeGroup() {
  return activeKey?.startsWith("g:") ? store.groups.get(activeKey.slice(2)) : undefined;
}

// ---------- store changes ----------

// Changes are coalesced into one render per frame (a sync can bring thousands of frames).
let pendingRender = null;
function onStoreChange(change) {
  if (!pendingRender) {
    pendingRender = { head: false, messages: false, history: false, own: false };
    const run = () => {
      const p = pendingRender;
      if (!p || !store) return;
      pendingRender = null;
      flushRender(p);
    };
    requestAnimationFrame(run);
    setTimeout(run, 100); // rAF does not run in a hidden tab
  }
  const p = pendingRender;
  if (change.type === "convs" || change.type === "synced") p.head = p.messages = true;
  if (activeKey && change.conv === activeKey) {
    p.messages = true;
    if (change.history) p.history = true;
    if (change.added?.from === store.me) p.own = true;
  }
}

function flushRender(p) {
  markActiveRead();
  renderSidebar();
  if (!activeKey) return;
  if (p.head) renderPaneHead();
  if (p.messages) renderMessages({ history: p.history, own: p.own });
}

function markActiveRead() {
  if (activeKey && !document.hidden && store.hasConv(activeKey)) store.markRead(activeKey);
}

document.addEventListener("visibilitychange", () => {
  if (!store) return;
  markActiveRead();
  if (!document.hidden) pollPresence();
});

// ---------- status ----------

let statusTick = null;
function renderConnStatus(state, detail) {
  const el = $("conn-status");
  clearInterval(statusTick);
  el.dataset.state = state;
  const paint = () => {
    el.textContent =
      state === "open" ? "Connected" :
      state === "connecting" ? "Connecting…" :
      state === "waiting" ? `Reconnecting in ${Math.max(1, Math.ceil((detail.at - Date.now()) / 1000))} s…` :
      state === "offline" ? "Offline — waiting for network" : "Disconnected";
  };
  paint();
  if (state === "waiting") statusTick = setInterval(paint, 500);
  if (store) renderMessages({});
}
$("conn-status").addEventListener("click", () => conn?.retryNow());

let toastTimer = null;
function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 5000);
}

// ---------- sidebar ----------

function convName(c) {
  if (c.kind === "g") return store.groups.get(c.peer)?.name || c.peer;
  return c.peer === store.me ? `${c.peer} (you)` : c.peer;
}

const convEls = new Map(); // key -> { li, sig }

function convContent(c, name, last, unread) {
  const av = h("span", { class: "avatar", "aria-hidden": "true" });
  paintAvatar(av, name, c.kind === "g");
  let preview = "No messages yet";
  if (last) {
    const who = last.from === store.me ? "You: " : c.kind === "g" ? `${last.from}: ` : "";
    preview = (last.status === "failed" ? "⚠ " : "") + who + last.body.replace(/\s+/g, " ");
  }
  return [
    h("span", { class: "avatar-wrap" }, av,
      c.kind === "d" ? h("span", { class: "dot", "data-testid": "presence-dot", dataset: { online: String(isOnline(c.peer)) } }) : null),
    h("span", { class: "conv-main" },
      h("span", { class: "conv-top" },
        h("span", { class: "conv-name", "data-testid": "conv-name" }, name),
        last ? h("time", { class: "conv-time", title: fmtFull(last.ts) }, fmtShort(last.ts)) : null),
      h("span", { class: "conv-bottom" },
        h("span", { class: "conv-preview", "data-testid": "conv-preview" }, preview),
        unread ? h("span", { class: "badge", "data-testid": "conv-unread" }, unread > 99 ? "99+" : String(unread)) : null)),
  ];
}

function renderSidebar() {
  if (!store) return;
  const convs = store.conversations();
  const live = new Set();
  const nodes = convs.map((c) => {
    const last = store.lastMessage(c);
    const unread = store.unread(c);
    const name = convName(c);
    const active = c.key === activeKey;
    const sig = JSON.stringify([name, last?.key, last?.status, last?.ts, unread, active, c.kind === "d" && isOnline(c.peer), last && fmtShort(last.ts)]);
    let e = convEls.get(c.key);
    if (!e) {
      const li = h("li", { class: "conv", "data-testid": "conv-item", dataset: { conv: c.key } }, h("button", { type: "button", class: "conv-btn" }));
      e = { li, sig: "" };
      convEls.set(c.key, e);
    }
    if (e.sig !== sig) {
      e.sig = sig;
      e.li.classList.toggle("active", active);
      e.li.classList.toggle("has-unread", unread > 0);
      e.li.dataset.unread = String(unread);
      const btn = e.li.firstElementChild;
      if (active) btn.setAttribute("aria-current", "true");
      else btn.removeAttribute("aria-current");
      btn.replaceChildren(...convContent(c, name, last, unread));
    }
    live.add(c.key);
    return e.li;
  });
  for (const k of convEls.keys()) if (!live.has(k)) convEls.delete(k);
  reconcile($("conv-list"), nodes);
  $("conv-empty").hidden = convs.length > 0;
  const total = store.totalUnread();
  document.title = total ? `(${total}) Relay` : "Relay";
}

$("conv-list").addEventListener("click", (e) => {
  const li = e.target.closest("[data-conv]");
  if (li) openConv(li.dataset.conv);
});

function renderPresence() {
  renderSidebar();
  if (activeKey) renderPaneHead();
}

// ---------- conversation pane ----------

function keyFromHash() {
  const k = decodeURIComponent(location.hash.slice(1));
  return /^[dg]:[A-Za-z0-9_.-]{1,64}$/.test(k) ? k : null;
}

// Opening a conversation from the list pushes one history entry, so the browser's back button
// (and ours, on narrow screens) returns to the list.
let pushedHash = false;
function openConv(key, { push = true } = {}) {
  if (!store) return;
  if (push && key !== keyFromHash()) {
    const url = key ? `#${encodeURIComponent(key)}` : location.pathname + location.search;
    if (key && !activeKey) {
      history.pushState(null, "", url);
      pushedHash = true;
    } else history.replaceState(null, "", url);
  }
  if (key && key.startsWith("d:")) store.touch(key);
  const changed = key !== activeKey;
  activeKey = key;
  $("chat-view").classList.toggle("has-active", !!key);
  $("pane-empty").hidden = !!key;
  $("conv-pane").hidden = !key;
  if (changed) {
    msgEls.clear();
    $("message-items").replaceChildren();
    $("members-panel").hidden = true;
    $("composer-input").value = draftOf(key);
    syncComposer();
  }
  renderSidebar();
  if (!key) return;
  renderPaneHead();
  renderMessages({ jump: changed });
  markActiveRead();
  const c = store.conv(key);
  if (c.hist === undefined) loadOlder(key);
  if (changed && matchMedia("(min-width: 721px)").matches) $("composer-input").focus();
  if (changed) pollPresence();
}

addEventListener("popstate", () => store && openConv(keyFromHash(), { push: false }));

$("back").addEventListener("click", () => {
  if (pushedHash) {
    pushedHash = false;
    history.back();
  } else openConv(null);
});
addEventListener("popstate", () => (pushedHash = false));
addEventListener("keydown", (e) => {
  if (e.key === "Escape" && activeKey && !$("members-panel").hidden) $("members-panel").hidden = true;
});

function renderPaneHead() {
  const c = store.conv(activeKey);
  const name = convName(c);
  $("conv-title").textContent = name;
  paintAvatar($("conv-avatar"), name, c.kind === "g");
  const sub = $("conv-sub");
  const composerInput = $("composer-input");
  let canWrite = true;
  if (c.kind === "d") {
    const on = isOnline(c.peer);
    sub.textContent = on ? "online" : "offline";
    sub.dataset.online = String(on);
    $("members-toggle").hidden = true;
    $("members-panel").hidden = true;
  } else {
    const g = store.groups.get(c.peer);
    delete sub.dataset.online;
    $("members-toggle").hidden = !g;
    if (g) {
      const online = g.members.filter((u) => u !== store.me && isOnline(u)).length;
      sub.textContent = `${g.members.length} member${g.members.length === 1 ? "" : "s"}${online ? `, ${online} online` : ""}`;
      renderMembers(g);
    } else {
      sub.textContent = store.groupsLoaded ? "You are not a member of this group" : "";
      canWrite = !store.groupsLoaded;
      $("members-panel").hidden = true;
    }
  }
  composerInput.disabled = !canWrite;
  syncComposer();
}

function renderMembers(g) {
  const creator = g.creator;
  $("members-list").replaceChildren(
    ...g.members.map((u) =>
      h(
        "li",
        { dataset: { user: u } },
        h("span", { class: "dot", dataset: { online: String(isOnline(u)) } }),
        h("span", { class: "member-name" }, u === store.me ? `${u} (you)` : u),
        creator === u ? h("span", { class: "muted small" }, "creator") : null,
        creator === store.me && u !== store.me
          ? h("button", { type: "button", class: "ghost small", "data-testid": "member-remove", "aria-label": `Remove ${u}`, onclick: () => removeMember(g.groupId, u) }, "Remove")
          : null,
      ),
    ),
  );
}

$("members-toggle").addEventListener("click", () => {
  const p = $("members-panel");
  p.hidden = !p.hidden;
  $("members-error").textContent = "";
  resetLeave();
});

async function removeMember(groupId, userId) {
  try {
    await api.removeMember(groupId, userId);
    await refreshGroups();
  } catch (e) {
    $("members-error").textContent = e.message;
  }
}

$("add-member-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("add-member-input");
  const userId = input.value.trim();
  const err = $("members-error");
  err.textContent = "";
  const g = activeGroup();
  if (!g) return;
  if (!USER_ID_RE.test(userId)) {
    err.textContent = "Not a valid user id.";
    return;
  }
  try {
    await api.addMember(g.groupId, userId);
    input.value = "";
    await refreshGroups();
  } catch (ex) {
    err.textContent = ex.status === 403 ? "Only members can add people." : ex.message;
  }
});

let leaveArmed = null;
function resetLeave() {
  clearTimeout(leaveArmed);
  leaveArmed = null;
  $("leave-group").textContent = "Leave group";
}
$("leave-group").addEventListener("click", async () => {
  const g = activeGroup();
  if (!g) return;
  if (!leaveArmed) {
    $("leave-group").textContent = "Click again to leave";
    leaveArmed = setTimeout(resetLeave, 4000);
    return;
  }
  resetLeave();
  try {
    await api.removeMember(g.groupId, store.me);
    store.groups.delete(g.groupId);
    store.forget(`g:${g.groupId}`);
    openConv(null);
    refreshGroups();
  } catch (e) {
    $("members-error").textContent = e.message;
  }
});

// ---------- messages ----------

const msgEls = new Map(); // key -> { el, sig }

function statusText(m) {
  if (m.status === "sending") return conn?.isOpen ? "sending…" : "sending… (waiting for connection)";
  if (m.status === "sent") return "sent ✓";
  if (m.status === "failed") return "not sent";
  return "";
}

function messageEl(m, showSender) {
  const sig = `${m.status}|${m.msgId}|${m.ts}|${m.error?.code}|${showSender}|${m.status === "sending" && conn?.isOpen}`;
  const cached = msgEls.get(m.key);
  if (cached && cached.sig === sig) return cached.el;
  const mine = m.from === store.me;
  const el = h(
    "li",
    {
      class: `msg ${mine ? "mine" : "theirs"} ${m.status}`,
      "data-testid": "message",
      dataset: { msgid: m.msgId ?? "", id: m.id ?? "", status: m.status, from: m.from },
    },
    showSender && !mine ? h("div", { class: "sender", style: `--h: ${hue(m.from)}` }, m.from) : null,
    h(
      "div",
      { class: "bubble" },
      h("div", { class: "body", "data-testid": "message-body" }, m.body),
      h(
        "div",
        { class: "meta" },
        h("time", { datetime: new Date(m.ts).toISOString(), title: fmtFull(m.ts) }, fmtTime(m.ts)),
        mine ? h("span", { class: "status", "data-testid": "message-status" }, statusText(m)) : null,
      ),
    ),
    m.status === "failed"
      ? h(
          "div",
          { class: "msg-error", "data-testid": "message-error", dataset: { code: m.error?.code ?? "" } },
          h("span", {}, ERROR_TEXT[m.error?.code] ?? "Not sent", m.error?.message ? ` — ${m.error.message}` : ""),
          RETRYABLE.has(m.error?.code)
            ? h("button", { type: "button", class: "link", "data-testid": "message-retry", onclick: () => retry(m) }, "Retry")
            : null,
          h("button", { type: "button", class: "link", "data-testid": "message-discard", onclick: () => store.discard(m) }, "Discard"),
        )
      : null,
  );
  if (cached) cached.el.replaceWith(el);
  msgEls.set(m.key, { el, sig });
  return el;
}

function retry(m) {
  store.markSending(m);
  transmit(m);
}

function renderMessages({ history = false, own = false, jump = false } = {}) {
  if (!activeKey || !store) return;
  const scroller = $("message-scroll");
  const list = $("message-items");
  const c = store.conv(activeKey);
  const nearBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;

  const nodes = [];
  const live = new Set();
  let prev = null;
  for (const m of c.messages) {
    const dk = dayKey(m.ts);
    if (!prev || dayKey(prev.ts) !== dk) {
      const key = `day:${dk}`;
      let d = msgEls.get(key);
      if (!d) {
        d = { el: h("li", { class: "day", role: "separator" }, h("span", {}, fmtDay(m.ts))), sig: "" };
        msgEls.set(key, d);
      }
      nodes.push(d.el);
      live.add(key);
      prev = null;
    }
    const cont = prev && prev.from === m.from && m.ts - prev.ts < 5 * 60_000;
    const el = messageEl(m, c.kind === "g" && !cont);
    el.classList.toggle("cont", !!cont);
    nodes.push(el);
    live.add(m.key);
    prev = m;
  }
  for (const k of msgEls.keys()) if (!live.has(k)) msgEls.delete(k);
  reconcile(list, nodes);

  if (jump || own || nearBottom) scroller.scrollTop = scroller.scrollHeight;
  else if (history) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  renderHistoryStatus();
  // Still at the top (a short conversation, or a page that brought nothing new): keep going.
  if (typeof c.hist === "string" && !c.loadingHist && !c.histError && scroller.scrollTop < NEAR_TOP_PX) loadOlder(c.key);
}

function renderHistoryStatus() {
  if (!activeKey) return;
  const c = store.conv(activeKey);
  const el = $("history-status");
  el.dataset.state = c.loadingHist ? "loading" : c.histError ? "error" : c.hist === null ? "done" : "more";
  el.replaceChildren(
    c.loadingHist ? "Loading earlier messages…" :
    c.histError ? h("span", {}, "Couldn't load earlier messages. ", h("button", { type: "button", class: "link", onclick: () => loadOlder(c.key) }, "Try again")) :
    c.hist === null ? (c.messages.length ? "This is the beginning of the conversation." : "No messages yet. Say hi!") : "",
  );
}

async function loadOlder(key) {
  const s = store;
  const c = s.conv(key);
  if (c.loadingHist || c.hist === null) return;
  c.loadingHist = true;
  c.histError = false;
  if (key === activeKey) renderHistoryStatus();
  try {
    const r = await api.history(key, c.hist);
    if (s !== store) return;
    c.loadingHist = false;
    s.mergeHistory(key, r?.messages ?? [], r?.before ?? null);
  } catch (e) {
    if (s !== store) return;
    c.loadingHist = false;
    if (e instanceof ApiError && e.status === 403) c.hist = null;
    else c.histError = true;
  } finally {
    c.loadingHist = false;
  }
  if (key === activeKey) renderHistoryStatus();
}

$("message-scroll").addEventListener("scroll", () => {
  if (activeKey && $("message-scroll").scrollTop < NEAR_TOP_PX) loadOlder(activeKey);
}, { passive: true });

// ---------- composer ----------

const drafts = new Map();
const draftOf = (key) => (key ? drafts.get(key) ?? "" : "");

function syncComposer() {
  const input = $("composer-input");
  $("composer-send").disabled = input.disabled || !input.value.trim();
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

$("composer-input").addEventListener("input", () => {
  if (activeKey) drafts.set(activeKey, $("composer-input").value);
  syncComposer();
});
$("composer-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("composer-input");
  const body = input.value.trim();
  if (!activeKey || !body || input.disabled) return;
  if (body.length > 4096) {
    toast(ERROR_TEXT.too_large);
    return;
  }
  const m = store.addOutgoing(activeKey, body);
  transmit(m);
  input.value = "";
  drafts.delete(activeKey);
  syncComposer();
  input.focus();
});

// ---------- new chat / new group ----------

function sideError(text) {
  $("side-error").textContent = text;
}

$("new-chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sideError("");
  const input = $("new-chat-input");
  const id = input.value.trim();
  if (!USER_ID_RE.test(id)) {
    sideError("A user id is 1 to 64 letters, digits, or _ . -");
    return;
  }
  input.value = "";
  openConv(`d:${id}`);
});

$("new-group-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  sideError("");
  const name = $("new-group-name").value.trim();
  const members = [...new Set($("new-group-members").value.split(/[\s,;]+/).filter(Boolean))];
  if (!name) return sideError("Give the group a name.");
  const bad = members.find((u) => !USER_ID_RE.test(u));
  if (bad) return sideError(`"${bad}" is not a valid user id.`);
  const button = e.submitter ?? $("new-group-form").querySelector("button");
  button.disabled = true;
  try {
    const g = await api.createGroup(name, members.filter((u) => u !== store.me));
    store.setGroups([...store.groups.values()].filter((x) => x.groupId !== g.groupId).concat([g]));
    $("new-group-name").value = "";
    $("new-group-members").value = "";
    $("new-group").open = false;
    openConv(`g:${g.groupId}`);
  } catch (ex) {
    sideError(`Could not create the group: ${ex.message}`);
  } finally {
    button.disabled = false;
  }
});

// ---------- boot ----------

session = readSession();
if (session) startChat();
else {
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {}
  showAuth();
}
