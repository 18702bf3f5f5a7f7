// The browser client's composition root: wires the API, the socket, the store and the views
// (auth-view, sidebar, thread, composer, groups, presence) to the page, and owns the session's
// lifecycle and the frame handler table.

import { initAccount, resetAccount } from "./account.js";
import { initAuthView, showAuth, showView } from "./auth-view.js";
import { initComposer } from "./composer.js";
import { createConnection } from "./connection.js";
import { $, paintAvatar } from "./dom.js";
import { applyGroupFrame, initGroups, refreshGroups, refreshGroupsSoon } from "./groups.js";
import { ERROR_TEXT, renderConnStatus, toast } from "./notify.js";
import { pump, resendAll, resendStale, resetOutbox } from "./outbox.js";
import { initPush, startPush, stopPush } from "./push.js";
import { applyPresence, connectionChanged, initPresence, pollPresence, resetPresence, rewatch } from "./presence.js";
import { forgetSession, jwtExpired, readSession, SESSION_KEY } from "./session.js";
import { initSidebar, renderSidebar, resetSidebar } from "./sidebar.js";
import { api, ctx, SIGNED_OUT_EVERYWHERE } from "./state.js";
import { createStore } from "./store.js";
import { closeConv, initThread, keyFromHash, markActiveRead, openConv, prefetchEmptyGroups, renderMessages, renderPaneHead, resetThread } from "./thread.js";
import { initSearch, resetSearch } from "./search.js";
import { applyTyping, resetTyping, stopTyping } from "./typing.js";
import { resetUsers } from "./users.js";
import { applyReceiptEvent, receiptsOnChange, receiptsOnOpen } from "./receipts.js";

const PRESENCE_EVERY_MS = 5_000;
// Membership changes are pushed (`group` frames); the list is read again now and then in case one was missed.
const GROUPS_EVERY_MS = 60_000;

let timers = [];
let unsubscribe = null;
/** The access token the current (or last) WebSocket connected with. */
let socketToken = null;

// ---------- chat lifecycle ----------

function startChat() {
  const me = ctx.session.userId;
  // Another tab may log out at any time: never write the cache once the saved session is not ours.
  const store = (ctx.store = createStore(me, localStorage, { canSave: () => readSession()?.userId === me }));
  store.load();
  unsubscribe = store.subscribe(onStoreChange);
  resetPresence();
  resetOutbox();
  resetUsers();
  ctx.conn = createConnection({
    url: () => {
      socketToken = ctx.session.token;
      return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?token=${encodeURIComponent(socketToken)}`;
    },
    handlers,
    onOpen,
    onRevoked,
    onStatus: (state, detail) => {
      renderConnStatus(state, detail);
      if (!ctx.store) return;
      // Edits and deletions in flight get no answer on a closed socket: the user may try again.
      if (state !== "open") ctx.store.dropOps();
      renderMessages({});
      connectionChanged();
    },
    onRefused: () => {
      // The upgrade is refused with 401 for a bad or expired token; the API tells us which.
      if (jwtExpired(ctx.session.token)) api.refresh().catch((e) => e.status === 401 && logout("Your session has expired. Please log in again."));
      else api.groups().then((r) => ctx.store?.setGroups(r.groups ?? []), () => {});
    },
  });

  showView("chat");
  $("me-name").textContent = me;
  paintAvatar($("me-avatar"), me);
  ctx.activeKey = null;
  renderSidebar();
  openConv(keyFromHash(), { push: false });

  ctx.conn.start();
  void startPush();
  refreshGroups();
  pollPresence();
  timers.push(setInterval(pollPresence, PRESENCE_EVERY_MS));
  timers.push(setInterval(refreshGroups, GROUPS_EVERY_MS));
  timers.push(setInterval(resendStale, 5_000));
  timers.push(setInterval(renderSidebar, 60_000)); // relative times
}

/**
 * The server closed the socket with 4401: its token was revoked. After a password change (in this
 * tab or another of this browser) the session already has, or is about to get, a new token: connect
 * with it. Otherwise the user logged out everywhere or changed the password on another device, and
 * the refresh fails: sign out here.
 */
function onRevoked() {
  const conn = ctx.conn;
  api.refresh(socketToken).then(
    () => ctx.conn === conn && conn.retryNow(),
    (e) => {
      if (ctx.conn !== conn) return;
      if (e.status === 401) logout(SIGNED_OUT_EVERYWHERE);
      else conn.retryNow(); // offline or busy: reconnect as after any drop (a refused one backs off)
    },
  );
}

/** Ends this tab's chat and drops everything it held of the user, in memory and in localStorage. */
function teardown() {
  resetAccount();
  ctx.conn?.stop();
  unsubscribe?.();
  ctx.store?.clear(); // a shared computer keeps nothing of this user
  timers.forEach(clearInterval);
  timers = [];
  ctx.store = ctx.conn = ctx.session = null;
  ctx.activeKey = null;
  resetSidebar();
  resetThread();
  resetSearch();
  resetTyping();
  pendingRender = null;
  history.replaceState(null, "", location.pathname + location.search);
  document.title = "Relay";
}

function logout(message = "") {
  if (!ctx.session) return;
  // This browser's push subscription goes first, while the token still works.
  const token = ctx.session.token;
  void stopPush(token).finally(() => api.logout(token).catch(() => {}));
  teardown();
  forgetSession(); // every other tab sees this (a storage event) and tears down too
  showAuth(message);
}
ctx.logout = logout;

/** The saved session changed in another tab: log out here too, or follow a new login. */
function onSessionElsewhere() {
  const next = readSession();
  if (next?.userId === ctx.session?.userId) {
    if (next) ctx.session = next; // the same user with a new token
    return;
  }
  if (ctx.session) teardown();
  ctx.session = next;
  if (next) startChat();
  else showAuth("You logged out in another tab.");
}

// ---------- socket ----------

function onOpen() {
  // Resume from the last cursor (from the start the first time), then resend what was never
  // acked with the same ids: the server acks a repeated id again and stores it once.
  const { store, conn } = ctx;
  conn.send(store.cursor ? { type: "sync", after: store.cursor } : { type: "sync" });
  resendAll();
  refreshGroups();
  rewatch();
  pollPresence();
  receiptsOnOpen();
}

const handlers = {
  ack(f) {
    ctx.store.applyAck(f);
    pump();
  },
  message(f) {
    const { store } = ctx;
    const r = store.applyMessage(f);
    if (r.msg) stopTyping(r.msg.conv, r.msg.from);
    // A group we do not know yet (just added), or a sender not in its member list (added since).
    const g = r.msg?.group != null ? store.groups.get(r.msg.group) : undefined;
    if (r.added && r.msg.group != null && store.groupsLoaded && !g?.members.includes(r.msg.from)) refreshGroupsSoon();
    if (r.changed && r.msg.from === store.me) pump(); // came back through sync: acked
  },
  event(f) {
    // Membership notices join their conversation, edits and deletions change their message; every
    // event moves the cursor. The group list itself follows the pushed `group` frames.
    ctx.store.applyEvent(f);
    applyReceiptEvent(f);
  },
  synced(f) {
    ctx.store.applySynced(f);
  },
  error(f) {
    const op = ctx.store.applyOpError(f);
    if (op) return toast(`${op.kind === "edit" ? "Not edited" : "Not deleted"}: ${ERROR_TEXT[f.code] ?? f.code}`);
    const m = ctx.store.applySendError(f);
    // Forbidden in a group: we were most likely removed; the group list tells.
    if (m?.group != null && f.code === "forbidden") refreshGroupsSoon();
    if (!m) toast(`${ERROR_TEXT[f.code] ?? f.code}${f.message ? `: ${f.message}` : ""}`);
    pump();
  },
  pong() {},
  presence: applyPresence,
  typing: applyTyping,
  group: applyGroupFrame,
};

// ---------- store changes ----------

// Changes are coalesced into one render per frame (a sync can bring thousands of frames).
let pendingRender = null;
function onStoreChange(change) {
  receiptsOnChange(change);
  if (!pendingRender) {
    pendingRender = { head: false, messages: false, history: false, own: false };
    const run = () => {
      const p = pendingRender;
      if (!p || !ctx.store) return;
      pendingRender = null;
      flushRender(p);
    };
    requestAnimationFrame(run);
    setTimeout(run, 100); // rAF does not run in a hidden tab
  }
  const p = pendingRender;
  if (change.type === "convs" || change.type === "synced") p.head = p.messages = true;
  if (change.type === "receipts" && change.conv === ctx.activeKey) p.messages = true;
  if (ctx.activeKey && change.conv === ctx.activeKey) {
    p.messages = true;
    if (change.history) p.history = true;
    if (change.added?.from === ctx.store.me) p.own = true;
  }
}

function flushRender(p) {
  markActiveRead();
  renderSidebar();
  if (!ctx.activeKey) return;
  if (p.head) renderPaneHead();
  if (p.messages) renderMessages({ history: p.history, own: p.own });
}

// ---------- wiring ----------

initAuthView({ onLoggedIn: startChat });
initAccount({ logout });
initSidebar({ openConv, closeConv });
initSearch({ openConv });
initGroups({ openConv, loaded: prefetchEmptyGroups });
initThread();
initComposer();
initPush({ openConv });
initPresence({
  changed() {
    renderSidebar();
    if (ctx.activeKey) renderPaneHead();
  },
});

$("logout").addEventListener("click", () => logout());
$("conn-status").addEventListener("click", () => ctx.conn?.retryNow());

document.addEventListener("visibilitychange", () => {
  if (!ctx.store) return;
  markActiveRead();
  if (!document.hidden) pollPresence();
});
addEventListener("pagehide", () => ctx.store?.flush());
addEventListener("storage", (e) => {
  // key null: localStorage was cleared.
  if (e.key === SESSION_KEY || e.key === null) onSessionElsewhere();
});

// ---------- boot ----------

ctx.session = readSession();
if (ctx.session) startChat();
else {
  forgetSession();
  showAuth();
}
