// Client-side state: conversations, messages, the outbox and the sync cursor.
//
// Guarantees:
// - A message is held once: received frames are deduplicated by `msgId`; the user's own messages
//   are also matched by their client `id`, so an ack, a resend and the same message coming back
//   through `sync` all land on one entry.
// - The cursor and the cached messages are saved together in one localStorage item, so a reload
//   never resumes from a cursor whose messages it has not kept (older ones are trimmed from the
//   cache only; they stay reachable through the history API).
// - Each conversation is kept in the order of order.js: the server's positions (the cursor of each
//   frame as this user received it), then the user's pending messages in the order they were typed.
//   Timestamps are only shown, never used to order messages.
// - Edits and deletions (`event` frames, the acks of this tab's own, and the `editedAt` /
//   `deletedAt` of messages read from storage) converge on the server's state whatever order they
//   arrive in: a deletion is final (a tombstone: the text is dropped, here and in the cache), and
//   otherwise the edit with the greatest `ts` is shown. A change whose message is not here yet
//   waits (in memory) for it.

import { compareCursors, compareMessages, isLegacyCursor, maxCursor, parseCursor, position } from "./order.js";

const STATE_VERSION = 2;
const KEEP_PER_CONV = 300;
/** Changes (edits, deletions) kept for messages not seen yet. */
const MAX_EARLY_CHANGES = 1000;

export const USER_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export function convKeyOfFrame(f, me) {
  if (f.group != null) return `g:${f.group}`;
  return `d:${f.from === me ? f.to : f.from}`;
}

export function newClientId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; getRandomValues does not.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A membership notice ("alice added carol") as `me` reads it; `by` made the change. */
export function noticeText({ action, user, role }, by, me) {
  const who = (u) => (u === me ? "You" : u);
  const whom = (u) => (u === me ? "you" : u);
  const is = user === me ? "are" : "is";
  switch (action) {
    case "created":
      return `${who(by)} created the group`;
    case "added":
      return `${who(by)} added ${whom(user)}`;
    case "left":
      return `${who(user)} left`;
    case "removed":
      return `${who(by)} removed ${whom(user)}`;
    case "role":
      if (role === "owner") return `${who(user)} ${is} now the owner`;
      if (role === "admin") return `${who(by)} made ${whom(user)} an admin`;
      return `${who(user)} ${is} no longer an admin`;
    default:
      return `${who(by)} changed the group`;
  }
}

/**
 * `canSave()` is asked before every write of the cache: false (another tab logged this user out)
 * writes nothing.
 */
export function createStore(me, storage = localStorage, { canSave = () => true } = {}) {
  const storageKey = `relay-chat:state:${me}`;
  /** @type {Map<string, any>} */
  const convs = new Map();
  const byMsgId = new Map();
  const byClientId = new Map();
  const groups = new Map();
  let groupsLoaded = false;
  let groupFrames = 0; // pushed `group` frames applied: a group list asked for before one is stale
  const groupVersions = new Map(); // groupId -> the newest version seen (frames may cross each other)
  let cursor = null;
  let seq = 0; // see order.js
  /** Edits and deletions sent from this tab, by client id, until acked or refused. */
  const ops = new Map();
  /** Changes whose message is not here yet, by its msgId. */
  const early = new Map();
  const listeners = new Set();
  let saveTimer = null;

  function emit(change) {
    for (const fn of listeners) fn(change);
  }

  function conv(key, create = true) {
    let c = convs.get(key);
    if (!c && create) {
      c = {
        key,
        kind: key[0],
        peer: key.slice(2),
        messages: [],
        readTs: 0,
        touched: 0,
        hist: undefined, // undefined: not fetched; string: next `before`; null: no older page
        loadingHist: false,
      };
      convs.set(key, c);
    }
    return c;
  }

  function insert(c, m) {
    const list = c.messages;
    let i = list.length;
    while (i > 0 && compareMessages(list[i - 1], m) > 0) i--;
    list.splice(i, 0, m);
  }

  function resort(c, m) {
    const i = c.messages.indexOf(m);
    if (i >= 0) c.messages.splice(i, 1);
    insert(c, m);
  }

  function index(m) {
    if (m.msgId) byMsgId.set(m.msgId, m);
    if (m.from === me && m.id) byClientId.set(m.id, m);
  }

  /** The greatest position in a conversation (its list is sorted: the last positioned message). */
  function top(c) {
    for (let i = c.messages.length - 1; i >= 0; i--) {
      const p = position(c.messages[i]);
      if (p) return p;
    }
    return null;
  }

  /**
   * Records where a message stands. A cursor of the "<epoch>.<pos>" form is the message's own
   * position in this user's stream, and always wins. Without one (an ack), it is anchored just
   * after everything this user has seen so far. Servers before per-user positions sent plain
   * integers that are not comparable between live frames (the connection's cursor, one the stream
   * has already reached) and sync or history (the message's own): such a cursor places a message
   * seen for the first time, and never moves one already placed.
   */
  function place(m, f, live = false) {
    const at = f.cursor;
    if (parseCursor(at) && !isLegacyCursor(at)) {
      m.cursor = m.cursor && !isLegacyCursor(m.cursor) ? maxCursor(m.cursor, at) : at;
      delete m.anchor;
    } else if (!position(m)) {
      if (parseCursor(at) && !(live && compareCursors(at, cursor ?? "0") <= 0)) m.cursor = at;
      else m.anchor = maxCursor(cursor ?? "0", top(conv(m.conv)));
    }
  }

  /**
   * Applies an edit ({kind:"edit", ts, body}) or a deletion ({kind:"delete", ts}) to a message;
   * returns whether anything changed. A deletion is final; an edit shows only if it is newer.
   */
  function applyChange(m, ch) {
    if (m.deletedAt != null) return false;
    if (ch.kind === "delete") {
      m.deletedAt = ch.ts;
      m.body = "";
      delete m.editedAt;
      return true;
    }
    if (ch.kind !== "edit" || typeof ch.body !== "string" || !(ch.ts > (m.editedAt ?? 0))) return false;
    m.body = ch.body;
    m.editedAt = ch.ts;
    return true;
  }

  /** The state a message frame read from storage carries (or a cached entry). */
  function stateOf(f) {
    if (typeof f.deletedAt === "number") return { kind: "delete", ts: f.deletedAt };
    if (typeof f.editedAt === "number") return { kind: "edit", ts: f.editedAt, body: f.body };
    return null;
  }

  /** A change for `ref`: applied now, or kept until the message arrives. Returns the message when it changed. */
  function change(ref, ch) {
    const m = byMsgId.get(ref);
    if (!m) {
      if (early.size >= MAX_EARLY_CHANGES) early.delete(early.keys().next().value);
      early.set(ref, [...(early.get(ref) ?? []), ch]);
      return null;
    }
    return applyChange(m, ch) ? m : null;
  }

  function fromFrame(f, live) {
    const mine = f.from === me;
    const m = {
      key: `m:${f.msgId}`,
      conv: convKeyOfFrame(f, me),
      msgId: f.msgId,
      id: f.id,
      from: f.from,
      to: f.to,
      group: f.group,
      body: f.body,
      ts: f.ts,
      status: mine ? "sent" : "received",
      error: null,
      seq: ++seq,
    };
    const st = stateOf(f);
    if (st) applyChange(m, st);
    for (const ch of early.get(f.msgId) ?? []) applyChange(m, ch);
    early.delete(f.msgId);
    place(m, f, live);
    return m;
  }

  /** Adds a received or fetched message frame; returns the entry and whether it was new. */
  function addFrame(f, live = false) {
    if (typeof f?.msgId !== "string" || typeof f.body !== "string" || typeof f.from !== "string") return { msg: null, added: false };
    if (f.group == null && typeof f.to !== "string") return { msg: null, added: false };
    const known = byMsgId.get(f.msgId) ?? (f.from === me ? byClientId.get(f.id) : undefined);
    if (known) {
      const before = known.cursor;
      const unacked = !known.msgId || (known.from === me && known.status !== "sent");
      if (unacked) {
        known.msgId = f.msgId;
        known.ts = f.ts;
        known.status = "sent";
        known.error = null;
        known.seq = ++seq;
        index(known);
      }
      place(known, f, live);
      const st = stateOf(f);
      const edited = st ? applyChange(known, st) : false;
      if (unacked || known.cursor !== before || edited) {
        resort(conv(known.conv), known);
        return { msg: known, added: false, changed: true };
      }
      return { msg: known, added: false };
    }
    const m = fromFrame(f, live);
    const c = conv(m.conv);
    insert(c, m);
    index(m);
    c.touched = Math.max(c.touched, m.ts);
    if (live) c.closed = false; // a new message brings a closed conversation back
    return { msg: m, added: true };
  }

  /**
   * Adds a membership notice (a `member` event frame, live, synced or from history) as an entry of
   * its group's conversation, ordered by its position like a message; returns it and whether it was new.
   */
  function addNotice(f, live = false) {
    if (typeof f?.msgId !== "string" || typeof f.group !== "string" || typeof f.from !== "string" || typeof f.user !== "string") return { msg: null, added: false };
    const known = byMsgId.get(f.msgId);
    if (known) {
      const before = known.cursor;
      place(known, f, live);
      if (known.cursor !== before) resort(conv(known.conv), known);
      return { msg: known, added: false, changed: known.cursor !== before };
    }
    const notice = { action: String(f.action), user: f.user };
    if (typeof f.role === "string") notice.role = f.role;
    const m = {
      key: `m:${f.msgId}`,
      conv: `g:${f.group}`,
      msgId: f.msgId,
      from: f.from,
      group: f.group,
      body: noticeText(notice, f.from, me),
      ts: f.ts,
      status: "notice",
      notice,
      error: null,
      seq: ++seq,
    };
    place(m, f, live);
    const c = conv(m.conv);
    insert(c, m);
    index(m);
    c.touched = Math.max(c.touched, m.ts);
    // Live and synced notices come in stream order: one about this user says whether they are
    // still a member (a removal while offline shows when the sync brings it).
    if (live && notice.user === me) {
      if (notice.action === "removed" || notice.action === "left") c.removed = { action: notice.action, by: f.from };
      else if (notice.action === "added") delete c.removed;
    }
    return { msg: m, added: true };
  }

  const store = {
    me,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    get cursor() {
      return cursor;
    },
    conv,
    hasConv: (key) => convs.has(key),
    groups,
    get groupsLoaded() {
      return groupsLoaded;
    },
    get groupFrames() {
      return groupFrames;
    },

    /** Applies a live or synced `message` frame. */
    applyMessage(f) {
      const r = addFrame(f, true);
      if (typeof f.cursor === "string") cursor = f.cursor;
      store.save();
      if (r.msg && (r.added || r.changed)) emit({ type: "messages", conv: r.msg.conv, added: r.added ? r.msg : null });
      return r;
    },

    /**
     * Applies a live or synced `event` frame: its cursor counts like a message's; membership
     * notices are kept as entries of their group; edits and deletions change their message; kinds
     * this client does not know are skipped.
     */
    applyEvent(f) {
      if (typeof f?.cursor === "string") cursor = f.cursor;
      if (f?.kind === "member") {
        const r = addNotice(f, true);
        store.save();
        if (r.msg && (r.added || r.changed)) emit({ type: "messages", conv: r.msg.conv, added: r.added ? r.msg : null });
        return r.msg;
      }
      let m = null;
      if (typeof f.ref === "string" && typeof f.ts === "number") {
        if (f.kind === "delete" || (f.kind === "edit" && typeof f.deletedAt === "number")) m = change(f.ref, { kind: "delete", ts: f.deletedAt ?? f.ts });
        else if (f.kind === "edit" && typeof f.body === "string") m = change(f.ref, { kind: "edit", ts: f.ts, body: f.body });
      }
      store.save();
      if (m) emit({ type: "messages", conv: m.conv });
      return m;
    },

    /** The frame that edits `m` (one's own, acked message), remembered until its answer. */
    editFrame(m, body) {
      const id = newClientId();
      ops.set(id, { kind: "edit", ref: m.msgId, body });
      m.pending = "edit";
      emit({ type: "messages", conv: m.conv });
      return { type: "edit", id, msgId: m.msgId, body };
    },

    /** The frame that deletes `m`. */
    deleteFrame(m) {
      const id = newClientId();
      ops.set(id, { kind: "delete", ref: m.msgId });
      m.pending = "delete";
      emit({ type: "messages", conv: m.conv });
      return { type: "delete", id, msgId: m.msgId };
    },

    /** An edit or deletion sent but not answered (the socket closed): forgotten, the message shown as it is. */
    dropOps() {
      for (const op of ops.values()) {
        const m = byMsgId.get(op.ref);
        if (m?.pending) {
          delete m.pending;
          emit({ type: "messages", conv: m.conv });
        }
      }
      ops.clear();
    },

    applySynced(f) {
      if (typeof f.cursor === "string") cursor = f.cursor;
      store.save();
      emit({ type: "synced" });
    },

    applyAck(f) {
      const op = ops.get(f.id);
      if (op) {
        ops.delete(f.id);
        const m = byMsgId.get(op.ref);
        if (m) delete m.pending;
        change(op.ref, { kind: op.kind, ts: f.ts, body: op.body });
        store.save();
        if (m) emit({ type: "messages", conv: m.conv });
        return m ?? null;
      }
      const m = byClientId.get(f.id);
      if (!m) return null;
      if (m.msgId && m.msgId !== f.msgId) return m;
      if (!m.msgId) m.seq = ++seq; // the first ack only: acked again after a resend, it keeps its place
      m.msgId = f.msgId;
      m.ts = typeof f.ts === "number" ? f.ts : m.ts;
      m.status = "sent";
      m.error = null;
      place(m, f);
      index(m);
      const c = conv(m.conv);
      resort(c, m);
      c.touched = Math.max(c.touched, m.ts);
      store.save();
      emit({ type: "messages", conv: m.conv });
      return m;
    },

    /** A refused edit or deletion of this tab: returns what it was ({kind, ref, message}), or null. */
    applyOpError(f) {
      const op = f.id ? ops.get(f.id) : undefined;
      if (!op) return null;
      ops.delete(f.id);
      const m = byMsgId.get(op.ref);
      if (m) {
        delete m.pending;
        emit({ type: "messages", conv: m.conv });
      }
      return { ...op, message: m ?? null };
    },

    applySendError(f) {
      const m = f.id ? byClientId.get(f.id) : undefined;
      if (!m || m.status === "sent") return null;
      m.status = "failed";
      m.error = { code: f.code, message: f.message };
      store.save();
      emit({ type: "messages", conv: m.conv });
      return m;
    },

    /** Creates an outgoing message in state "sending"; returns it (its `frame()` is what to send). */
    addOutgoing(convKey, body) {
      const c = conv(convKey);
      const id = newClientId();
      const now = Date.now();
      const m = {
        key: `c:${id}`,
        conv: convKey,
        msgId: null,
        id,
        from: me,
        to: c.kind === "d" ? c.peer : undefined,
        group: c.kind === "g" ? c.peer : undefined,
        body,
        ts: now,
        status: "sending",
        error: null,
        seq: ++seq,
      };
      insert(c, m);
      index(m);
      c.touched = Math.max(c.touched, now);
      store.save();
      emit({ type: "messages", conv: convKey, added: m });
      return m;
    },

    markSending(m) {
      m.status = "sending";
      m.error = null;
      store.save();
      emit({ type: "messages", conv: m.conv });
    },

    discard(m) {
      if (m.msgId) return;
      const c = conv(m.conv);
      const i = c.messages.indexOf(m);
      if (i >= 0) c.messages.splice(i, 1);
      byClientId.delete(m.id);
      store.save();
      emit({ type: "messages", conv: m.conv });
    },

    /** Messages written but not acked, to (re)send with their original ids, in the order typed. */
    outbox() {
      const out = [];
      for (const m of byClientId.values()) if (!m.msgId && m.status === "sending") out.push(m);
      return out.sort((a, b) => a.seq - b.seq);
    },

    /** Merges one page of history (oldest first) and records where the next older page starts. */
    mergeHistory(convKey, messages, before) {
      const c = conv(convKey);
      let added = 0;
      for (const f of messages ?? []) {
        const r = f?.type === "event" ? (f.kind === "member" ? addNotice(f) : { added: false }) : addFrame(f);
        if (r.added) added++;
      }
      c.hist = typeof before === "string" ? before : null;
      store.save();
      emit({ type: "messages", conv: convKey, history: true });
      return added;
    },

    /** Opens a conversation: back in the list if it was closed; `activity` puts it first if new. */
    touch(convKey, { activity = true } = {}) {
      const c = conv(convKey);
      if (!c.touched && activity) c.touched = Date.now();
      c.closed = false;
      store.save();
      emit({ type: "convs" });
      return c;
    },

    /** The unsent text of a conversation's composer, kept with the cache (so gone after log out). */
    setDraft(convKey, text) {
      const c = conv(convKey);
      if ((c.draft ?? "") === text) return;
      c.draft = text;
      store.save();
    },

    /** Removes a conversation from the list until it is opened again or a new message arrives. */
    close(convKey) {
      const c = convs.get(convKey);
      if (!c) return;
      c.closed = true;
      store.save();
      emit({ type: "convs" });
    },

    forget(convKey) {
      const c = convs.get(convKey);
      if (!c) return;
      for (const m of c.messages) {
        if (m.msgId) byMsgId.delete(m.msgId);
        if (m.id && m.from === me) byClientId.delete(m.id);
      }
      convs.delete(convKey);
      store.save();
      emit({ type: "convs" });
    },

    /** Marks read up to the last received message (by order, not time). */
    markRead(convKey) {
      const c = convs.get(convKey);
      if (!c) return;
      const last = lastReceived(c);
      if (last && !isRead(c, last)) {
        c.read = { cursor: last.cursor, anchor: last.anchor, seq: last.seq };
        c.serverUnread = 0; // everything received is read, the server's count included
        store.save();
        emit({ type: "read", conv: convKey, local: true });
      }
    },

    /**
     * Unread messages: those received after the read marker. Where the server counted more than this
     * device holds (`serverUnread` up to `serverTop`, from the conversation list), its count stands
     * for the messages up to `serverTop`.
     */
    unread(c) {
      const server = c.serverTop && c.serverUnread > 0 && !isRead(c, { cursor: c.serverTop, seq: Number.MAX_SAFE_INTEGER });
      let n = 0;
      for (let i = c.messages.length - 1; i >= 0; i--) {
        const m = c.messages[i];
        if (!m.msgId || m.from === me || m.notice) continue;
        if (isRead(c, m)) break;
        if (server && compareMessages(m, { cursor: c.serverTop, seq: Number.MAX_SAFE_INTEGER }) <= 0) break;
        n++;
      }
      return server ? n + c.serverUnread : n;
    },

    /** Moves the read marker to `cursor` (read on another device, or the server's), never back. */
    setRead(convKey, cursor) {
      const c = conv(convKey);
      const marker = { cursor, seq: Number.MAX_SAFE_INTEGER };
      if (c.read && position(c.read) && compareCursors(cursor, position(c.read)) <= 0) return false;
      c.read = marker;
      store.save();
      emit({ type: "read", conv: convKey, remote: true });
      return true;
    },

    /** Adds message frames (the conversation list's last messages) without touching history paging. */
    mergeFrames(frames) {
      const convsChanged = new Set();
      for (const f of frames) {
        const r = addFrame(f);
        if (r.msg) convsChanged.add(r.msg.conv);
      }
      store.save();
      for (const k of convsChanged) emit({ type: "messages", conv: k });
      emit({ type: "convs" });
    },

    /** Receipt state of a conversation changed (others' markers, the server's unread count). */
    receiptsChanged(convKey) {
      emit({ type: "receipts", conv: convKey });
    },

    lastMessage(c) {
      return c.messages[c.messages.length - 1] ?? null;
    },

    setGroups(list) {
      const had = new Map(groups);
      groups.clear();
      for (const g of list) {
        if (!g || typeof g.groupId !== "string") continue;
        // keep a newer state a frame brought while the list was on its way
        const newer = had.get(g.groupId);
        const stale = Number.isSafeInteger(g.version) && (groupVersions.get(g.groupId) ?? -1) > g.version;
        groups.set(g.groupId, stale && newer ? newer : g);
        if (Number.isSafeInteger(g.version) && !stale) groupVersions.set(g.groupId, g.version);
      }
      for (const id of groups.keys()) {
        const c = convs.get(`g:${id}`);
        if (c) delete c.removed;
      }
      groupsLoaded = true;
      // Listed by their last activity; the name is remembered for after leaving or removal.
      for (const g of groups.values()) conv(`g:${g.groupId}`).name = g.name;
      emit({ type: "convs" });
    },

    /**
     * A pushed `group` frame: the group as it is now, or `group: null` when this user is no longer
     * a member (the conversation keeps its name and remembers who removed them). A group this user
     * just joined goes to the top of the list.
     */
    applyGroup(f) {
      const valid = f?.group === null || (typeof f?.group === "object" && Array.isArray(f.group.members) && typeof f.group.name === "string");
      if (typeof f?.groupId !== "string" || !valid) return;
      groupFrames++;
      // A frame older than a change already applied (two changes made at once) is stale.
      if (Number.isSafeInteger(f.version)) {
        if ((groupVersions.get(f.groupId) ?? -1) > f.version) return;
        groupVersions.set(f.groupId, f.version);
      }
      const key = `g:${f.groupId}`;
      const change = f.change ?? {};
      if (f.group) {
        groups.set(f.groupId, f.group);
        const c = conv(key);
        c.name = f.group.name;
        delete c.removed;
        if (change.action === "created" || (change.action === "added" && change.user === me)) {
          c.touched = Date.now();
          c.closed = false;
        }
      } else {
        groups.delete(f.groupId);
        if (convs.has(key)) conv(key).removed = { action: change.action === "left" ? "left" : "removed", by: change.by ?? null };
      }
      store.save();
      emit({ type: "convs" });
    },

    /** Conversations to list, most recent first. Groups show only while the user is a member. */
    conversations() {
      const out = [];
      for (const c of convs.values()) {
        if (c.closed || (c.kind === "g" && groupsLoaded && !groups.has(c.peer))) continue;
        out.push(c);
      }
      const when = (c) => Math.max(c.touched, store.lastMessage(c)?.ts ?? 0);
      return out.sort((a, b) => when(b) - when(a));
    },

    totalUnread() {
      let n = 0;
      for (const c of store.conversations()) n += store.unread(c);
      return n;
    },

    save() {
      if (saveTimer) return;
      saveTimer = setTimeout(store.flush, 200);
    },

    flush() {
      if (saveTimer) clearTimeout(saveTimer);
      saveTimer = null;
      if (!canSave()) return;
      for (const keep of [KEEP_PER_CONV, 50]) {
        try {
          storage.setItem(storageKey, JSON.stringify(snapshot(keep)));
          return;
        } catch {
          // quota: retry with less
        }
      }
      try {
        storage.setItem(storageKey, JSON.stringify({ v: STATE_VERSION, cursor: null, convs: [] }));
      } catch {}
    },

    load() {
      let s;
      try {
        s = JSON.parse(storage.getItem(storageKey) ?? "null");
      } catch {
        s = null;
      }
      // Version 1 kept no positions: its acked messages keep their saved order at the start of
      // the stream until sync or history brings their own positions.
      if (!s || (s.v !== STATE_VERSION && s.v !== 1)) return false;
      cursor = typeof s.cursor === "string" ? s.cursor : null;
      for (const sc of s.convs ?? []) {
        if (typeof sc?.key !== "string") continue;
        const c = conv(sc.key);
        c.readTs = Number(sc.readTs) || 0;
        if (sc.read && typeof sc.read === "object") c.read = sc.read;
        c.touched = Number(sc.touched) || 0;
        c.closed = sc.closed === true;
        if (typeof sc.name === "string") c.name = sc.name;
        if (sc.removed && typeof sc.removed === "object") c.removed = { action: sc.removed.action === "left" ? "left" : "removed", by: typeof sc.removed.by === "string" ? sc.removed.by : null };
        if (typeof sc.draft === "string") c.draft = sc.draft;
        for (const m of sc.messages ?? []) {
          if (typeof m?.body !== "string") continue;
          if (m.msgId && byMsgId.has(m.msgId)) continue;
          const e = { ...m, conv: sc.key, key: m.msgId ? `m:${m.msgId}` : `c:${m.id}`, error: m.error ?? null };
          if (m.msgId && !parseCursor(m.cursor) && !parseCursor(m.anchor)) e.anchor = "0";
          if (!Number.isSafeInteger(e.seq)) e.seq = seq + 1;
          seq = Math.max(seq, e.seq);
          insert(c, e);
          index(e);
        }
      }
      emit({ type: "convs" });
      return true;
    },

    /** Forgets this user's saved state (on log out); nothing is saved after this. */
    clear() {
      clearTimeout(saveTimer);
      saveTimer = null;
      store.save = store.flush = () => {};
      try {
        storage.removeItem(storageKey);
      } catch {}
    },
  };

  /** Whether `m` is at or before the conversation's read marker (a cache of version 1: its time). */
  function isRead(c, m) {
    if (c.read) return compareMessages(m, c.read) <= 0;
    return m.ts <= c.readTs;
  }

  function lastReceived(c) {
    for (let i = c.messages.length - 1; i >= 0; i--) {
      const m = c.messages[i];
      if (m.msgId && m.from !== me && !m.notice) return m;
    }
    return null;
  }

  function snapshot(keep) {
    const out = [];
    for (const c of convs.values()) {
      const acked = c.messages.filter((m) => m.msgId);
      const kept = acked.slice(-keep).concat(c.messages.filter((m) => !m.msgId));
      out.push({
        key: c.key,
        readTs: c.readTs,
        read: c.read,
        touched: c.touched,
        closed: c.closed || undefined,
        name: c.name,
        removed: c.removed,
        draft: c.draft || undefined,
        messages: kept.map(({ msgId, id, from, to, group, body, ts, status, error, cursor: at, anchor, seq: n, editedAt, deletedAt, notice }) => ({
          msgId, id, from, to, group, body, ts, status, error, cursor: at, anchor, seq: n, editedAt, deletedAt, notice,
        })),
      });
    }
    return { v: STATE_VERSION, cursor, convs: out };
  }

  return store;
}
