// Receipts and the server's conversation list (docs/api.md, "Receipts and the conversation list").
//
// - The conversation list comes from GET /api/conversations: each conversation's last message,
//   the server's unread count and my read marker (the same on all my devices).
// - Reading a conversation sends {type:"read", to|group, cursor}; a read on another device of mine
//   arrives as a `read` event and moves the marker here too.
// - Others' markers (GET /api/receipts, then `read`/`delivered` events) decide what my messages
//   show: ✓ sent, ✓✓ delivered, read; in groups "read by N".

import { compareCursors } from "./order.js";
import { api, ctx } from "./state.js";

const LIST_PAGES = 4; // up to 4 × 200 conversations

/** A conversation's key in the client ("d:peer", "g:group") for a frame or list item. */
function keyOf(x, me) {
  if (x.group != null) return `g:${x.group}`;
  if (x.with != null) return `d:${x.with}`;
  return `d:${x.from === me ? x.to : x.from}`;
}

const later = (a, b) => (!a ? b : !b ? a : a.ts > b.ts || (a.ts === b.ts && a.msgId > b.msgId) ? a : b);
const covers = (marker, m) => !!marker && (marker.ts > m.ts || (marker.ts === m.ts && marker.msgId >= m.msgId));

function setMarker(c, user, kind, marker) {
  c.receipts ??= {};
  const r = (c.receipts[user] ??= { read: null, delivered: null });
  const next = later(r[kind], marker);
  if (next === r[kind]) return false;
  r[kind] = next;
  if (kind === "read") r.delivered = later(r.delivered, next);
  return true;
}

// ---------- the conversation list ----------

let listing = null;
let again = false;
/** Loads the conversation list from the server (coalesced: one load at a time, one more if asked meanwhile). */
export function loadConversations() {
  if (listing) {
    again = true;
    return listing;
  }
  const store = ctx.store;
  listing = (async () => {
    let before = null;
    for (let page = 0; page < LIST_PAGES; page++) {
      const r = await api.conversations(before);
      if (ctx.store !== store) return;
      const frames = [];
      for (const item of r.conversations ?? []) {
        const key = keyOf(item, store.me);
        const c = store.conv(key);
        if (item.name && key.startsWith("g:")) c.name = item.name;
        if (item.lastMessage) frames.push(item.lastMessage);
        if (item.read?.cursor) store.setRead(key, item.read.cursor);
        c.serverUnread = item.unread ?? 0;
        c.serverTop = item.lastMessage?.cursor ?? null;
        for (const [u, m] of Object.entries(item.receipts ?? {})) {
          if (m.read) setMarker(c, u, "read", m.read);
          if (m.delivered) setMarker(c, u, "delivered", m.delivered);
        }
        if (item.lastMessageReceipts) c.lastReceipts = { msgId: item.lastMessage?.msgId, ...item.lastMessageReceipts };
        store.receiptsChanged(key);
      }
      store.mergeFrames(frames);
      before = r.before;
      if (!before) break;
    }
    // For tests and styles: the list now holds the server's counts.
    document.getElementById("conv-list")?.setAttribute("data-server", "loaded");
  })()
    .catch(() => {})
    .finally(() => {
      listing = null;
      if (again && ctx.store === store) {
        again = false;
        loadConversations();
      }
    });
  return listing;
}

let listTimer = null;
function loadConversationsSoon() {
  clearTimeout(listTimer);
  listTimer = setTimeout(loadConversations, 300);
}

/** Fetches every other participant's markers for a conversation (when it is opened, and after reconnecting). */
export async function loadReceipts(key) {
  const store = ctx.store;
  if (!store) return;
  const q = key.startsWith("g:") ? { group: key.slice(2) } : { with: key.slice(2) };
  try {
    const r = await api.receipts(q);
    if (ctx.store !== store) return;
    const c = store.conv(key);
    for (const [u, m] of Object.entries(r.receipts ?? {})) {
      if (m.read) setMarker(c, u, "read", m.read);
      if (m.delivered) setMarker(c, u, "delivered", m.delivered);
      c.receipts ??= {};
      c.receipts[u] ??= { read: null, delivered: null };
    }
    c.receiptsLoaded = true;
    store.receiptsChanged(key);
  } catch {}
}

// ---------- read frames ----------

/** Sends my read marker of `key` to the server when it moved here and was not sent yet. */
export function sendRead(key) {
  const { store, conn } = ctx;
  const c = store?.conv(key, false);
  const cursor = c?.read?.cursor;
  if (!c || !cursor || !/^\d+\.\d+$/.test(cursor) || (c.readSent && compareCursors(cursor, c.readSent) <= 0)) return;
  if (!conn?.isOpen) return; // sent when the connection opens again
  conn.send({ type: "read", ...(key.startsWith("g:") ? { group: key.slice(2) } : { to: key.slice(2) }), cursor });
  c.readSent = cursor;
}

/** After (re)connecting: send the markers that moved while offline, refresh the list and the open conversation's receipts. */
export function receiptsOnOpen() {
  const { store } = ctx;
  for (const c of store.conversations()) sendRead(c.key);
  loadConversations();
  if (ctx.activeKey) loadReceipts(ctx.activeKey);
}

/** A store change: a local read goes to the server. */
export function receiptsOnChange(change) {
  if (change.type === "read" && change.local) sendRead(change.conv);
}

// ---------- events ----------

/**
 * A `read` or `delivered` event frame (docs/api.md): `from`'s marker in the conversation is now at
 * the message `ref` (sent at `refTs`); `upTo` is that message's cursor in `from`'s own stream.
 */
export function applyReceiptEvent(f) {
  const { store } = ctx;
  if (!store) return;
  if ((f.kind !== "read" && f.kind !== "delivered") || typeof f.from !== "string") return;
  const key = keyOf(f, store.me);
  const c = store.conv(key);
  if (f.from === store.me) {
    // Read on another device of mine (or this one): the marker moves here too, and the server recounts.
    if (f.kind === "read" && typeof f.upTo === "string" && store.setRead(key, f.upTo)) {
      c.readSent = f.upTo;
      loadConversationsSoon();
    }
    return;
  }
  if (typeof f.ref !== "string" || typeof f.refTs !== "number") return;
  if (setMarker(c, f.from, f.kind, { msgId: f.ref, ts: f.refTs })) store.receiptsChanged(key);
}

// ---------- what a message of mine shows ----------

/**
 * The receipt state of my acked message `m`: {state: "sent"|"delivered"|"read", readBy, of}. In a
 * group, delivered means every other member has it, and `readBy` counts who has read it.
 */
export function receiptOf(m) {
  const { store } = ctx;
  const c = store.conv(m.conv, false);
  if (!c || !m.msgId) return { state: "sent", readBy: 0, of: 0 };
  const mark = { msgId: m.msgId, ts: m.ts };
  let others;
  if (c.kind === "d") others = c.peer === store.me ? [] : [c.peer];
  else others = (store.groups.get(c.peer)?.members ?? Object.keys(c.receipts ?? {})).filter((u) => u !== store.me);
  let readBy = 0;
  let delivered = 0;
  for (const u of others) {
    const r = c.receipts?.[u];
    if (covers(r?.read, mark)) readBy++;
    if (covers(r?.delivered, mark) || covers(r?.read, mark)) delivered++;
  }
  // The list's counts for its last message, until this conversation's own markers are loaded.
  if (!c.receiptsLoaded && c.lastReceipts?.msgId === m.msgId) {
    readBy = Math.max(readBy, c.lastReceipts.readBy ?? 0);
    delivered = Math.max(delivered, c.lastReceipts.deliveredTo ?? 0);
  }
  const of = c.kind === "d" ? others.length : Math.max(others.length, c.lastReceipts?.of ?? 0);
  const state = of > 0 && readBy >= of ? "read" : of > 0 && delivered >= of ? "delivered" : "sent";
  return { state, readBy, of };
}

/** The text under my message: "sent ✓", "delivered ✓✓", "read ✓✓", or in a group "read by N" (`r`: its receiptOf, if known). */
export function receiptText(m, r = receiptOf(m)) {
  if (m.group != null && r.readBy > 0) return `${r.state === "sent" ? "✓" : "✓✓"} read by ${r.readBy}`;
  return r.state === "read" ? "read ✓✓" : r.state === "delivered" ? "delivered ✓✓" : "sent ✓";
}
