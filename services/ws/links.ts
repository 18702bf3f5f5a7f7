import type { ServerWebSocket } from "bun";
import { z } from "zod";
import type { Logger } from "../../shared/log.ts";
import { TypingEvent, UserId } from "../../shared/protocol.ts";
import type { Delivery, Ephemeral } from "./router.ts";

// Forwards between gateways (docs/architecture.md, "Forwards over a link"). A forward is a body
// {deliveries, ephemeral?}; it goes over a WebSocket each gateway keeps open to each peer it
// forwards to (`GET /internal/link`, served by Hono like the rest of /internal), one frame per
// forward, or as `POST /internal/deliver` when no link can be opened (a peer of an older version,
// a proxy in between). Either way it is best effort: what a peer does not get, its gap repair
// reads from storage (docs/delivery.md).

/** A parsed forward: what the peer asked this instance to deliver. */
export interface Forward {
  deliveries: Delivery[];
  ephemeral: Ephemeral[];
}

/**
 * A frame on a link stays below this many UTF-16 units, so at most ~63 KB of UTF-8: under the
 * client port's frame limit (MAX_FRAME_BYTES), which also serves links when there is no separate
 * internal port. A larger forward is split over several frames.
 */
export const LINK_FRAME_CHARS = 20_000;
/** A link whose unsent bytes pass this (a peer that stopped reading) drops further frames. */
export const LINK_MAX_BUFFERED = 16 << 20;
/** A link not open after this long is given up (a peer that accepts but never answers). */
export const LINK_OPEN_TIMEOUT_MS = 2000;
/** After a link could not be opened, forwards to that peer go over HTTP for this long. */
export const LINK_RETRY_MS = 10_000;

const POSITION_RE = /^[0-9]{1,16}\.[0-9]{1,16}$/;
/** Ephemeral frames in a forward (rare next to messages: a schema is affordable). */
const EphemeralList = z.array(z.object({ users: z.array(UserId).max(100_000), frame: TypingEvent })).max(10_000).optional();

/**
 * A forward's body, or null when it is malformed. It comes from a peer holding INTERNAL_SECRET,
 * whose messages were validated at their own boundary; a structural check (much cheaper than a
 * schema per message on this hot path) keeps malformed bodies out.
 */
export function parseForward(raw: unknown): Forward | null {
  const ds = (raw as { deliveries?: unknown } | null)?.deliveries;
  if (!Array.isArray(ds) || ds.length > 10_000) return null;
  const str = (v: unknown) => typeof v === "string";
  for (const d of ds as Array<Record<string, any>>) {
    const m = d?.message;
    const ps = d?.positions;
    if (typeof m !== "object" || m === null || typeof ps !== "object" || ps === null || Array.isArray(ps)) return null;
    if (!Object.values(ps).every((p) => str(p) && POSITION_RE.test(p as string))) return null;
    if (!str(m.msgId) || !str(m.id) || !str(m.from) || !str(m.body) || typeof m.ts !== "number") return null;
    if ((m.kind !== undefined && !str(m.kind)) || (m.ref !== undefined && !str(m.ref))) return null;
    if (m.data !== undefined && (typeof m.data !== "object" || m.data === null || Array.isArray(m.data))) return null;
    if (str(m.to) === str(m.group)) return null;
  }
  const ephemeral = EphemeralList.safeParse((raw as { ephemeral?: unknown }).ephemeral);
  if (!ephemeral.success) return null;
  return { deliveries: ds as Delivery[], ephemeral: (ephemeral.data ?? []) as Ephemeral[] };
}

export const FORWARD_SHAPE = 'expected {deliveries:[{message, positions:{user:"epoch.pos"}}], ephemeral?:[{users, frame}]}';

/**
 * The bodies of one forward: one when `maxChars` is Infinity (HTTP), else as many as it takes to
 * keep each below `maxChars`, in order. An item too large for any frame comes back in `tooLarge`
 * (the caller sends it over HTTP).
 */
export function forwardBodies(deliveries: Delivery[], ephemeral: Ephemeral[], maxChars = Infinity): { bodies: ForwardBody[]; tooLarge: Forward } {
  if (maxChars === Infinity) return { bodies: [{ body: JSON.stringify(ephemeral.length ? { deliveries, ephemeral } : { deliveries }), n: deliveries.length }], tooLarge: { deliveries: [], ephemeral: [] } };
  const bodies: ForwardBody[] = [];
  const tooLarge: Forward = { deliveries: [], ephemeral: [] };
  let ds: string[] = [];
  let es: string[] = [];
  let size = 0;
  const OVERHEAD = 32;
  const close = () => {
    if (ds.length + es.length === 0) return;
    bodies.push({ body: `{"deliveries":[${ds.join(",")}]${es.length ? `,"ephemeral":[${es.join(",")}]` : ""}}`, n: ds.length });
    ds = [];
    es = [];
    size = 0;
  };
  const add = <T>(item: T, into: () => string[], big: T[]) => {
    const s = JSON.stringify(item);
    if (s.length + OVERHEAD > maxChars) return void big.push(item);
    if (size + s.length + 1 + OVERHEAD > maxChars) close();
    into().push(s);
    size += s.length + 1;
  };
  for (const d of deliveries) add(d, () => ds, tooLarge.deliveries);
  for (const e of ephemeral) add(e, () => es, tooLarge.ephemeral);
  close();
  return { bodies, tooLarge };
}

/** A forward's serialized body and how many deliveries it carries. */
export interface ForwardBody {
  body: string;
  n: number;
}

/** What a link's receiver answers (only when there is something to say). */
export type LinkReply = { missing: number } | { error: string };

/**
 * The sending side: one WebSocket per peer, opened on the first forward to it. `send` returns
 * false when the caller should use HTTP instead (the link could not be opened lately); frames
 * given while the link opens wait for it, and if it then fails they are handed to `onUnsent`.
 */
export function createPeerLinks(opts: {
  secret: string;
  log: Logger;
  /** What a peer said back about a frame (users it does not hold; a refused frame). */
  onReply: (url: string, reply: LinkReply) => void;
  /** Frames written to a link (`n`: the deliveries they carry). */
  onSent: (url: string, n: number) => void;
  /** Frames that were waiting for a link that did not open (send them another way). */
  onUnsent: (url: string, bodies: ForwardBody[]) => void;
  /** Frames dropped because the peer stopped reading (its gap repair fills them). */
  onDropped: (url: string, bodies: ForwardBody[]) => void;
  retryMs?: number;
  openTimeoutMs?: number;
  maxBuffered?: number;
  /** For tests: how a link is opened. */
  connect?: (url: string, headers: Record<string, string>) => WebSocket;
}) {
  const retryMs = opts.retryMs ?? LINK_RETRY_MS;
  const openTimeoutMs = opts.openTimeoutMs ?? LINK_OPEN_TIMEOUT_MS;
  const maxBuffered = opts.maxBuffered ?? LINK_MAX_BUFFERED;
  // Bun's WebSocket takes headers (the DOM typing does not know them).
  const BunWebSocket = WebSocket as unknown as new (url: string, o: { headers: Record<string, string> }) => WebSocket;
  const connect = opts.connect ?? ((url, headers) => new BunWebSocket(url, { headers }));
  interface Link {
    ws: WebSocket;
    open: boolean;
    waiting: ForwardBody[];
  }
  const links = new Map<string, Link>();
  const downUntil = new Map<string, number>();
  let stopped = false;

  const linkUrl = (peer: string) => peer.replace(/^http/, "ws").replace(/\/$/, "") + "/internal/link";

  function open(peer: string): Link {
    const ws = connect(linkUrl(peer), { authorization: `Bearer ${opts.secret}` });
    const link: Link = { ws, open: false, waiting: [] };
    links.set(peer, link);
    const timeout = setTimeout(() => ws.close(), openTimeoutMs);
    ws.addEventListener("open", () => {
      clearTimeout(timeout);
      link.open = true;
      const waiting = link.waiting;
      link.waiting = [];
      for (const b of waiting) ws.send(b.body);
      opts.onSent(peer, waiting.reduce((n, b) => n + b.n, 0));
    });
    ws.addEventListener("message", (e) => {
      try {
        opts.onReply(peer, JSON.parse(String(e.data)) as LinkReply);
      } catch {
        opts.log.warn("unreadable reply on a link", { peer });
      }
    });
    ws.addEventListener("close", (e) => {
      clearTimeout(timeout);
      if (links.get(peer) === link) links.delete(peer);
      if (!link.open) {
        // Never opened: an older peer without /internal/link, a proxy, a refused secret, or a
        // peer that is down. HTTP for a while (it retries and reports), then try again.
        downUntil.set(peer, Date.now() + retryMs);
        // peers come and go (a restarted gateway has a new address): forget lapsed entries
        if (downUntil.size > 1000) for (const [p, t] of downUntil) if (t <= Date.now()) downUntil.delete(p);
        if (!stopped) opts.log.info("no link to peer; forwarding over HTTP for now", { peer, code: e.code });
        if (link.waiting.length > 0) opts.onUnsent(peer, link.waiting);
        link.waiting = [];
      } else if (!stopped) opts.log.info("link to peer closed", { peer, code: e.code });
    });
    return link;
  }

  return {
    /** Sends a forward's frames to `peer` in order; false: use HTTP for them instead. */
    send(peer: string, bodies: ForwardBody[]): boolean {
      if (stopped) return false;
      const until = downUntil.get(peer);
      if (until !== undefined) {
        if (until > Date.now()) return false;
        downUntil.delete(peer);
      }
      const link = links.get(peer) ?? open(peer);
      if (!link.open) {
        link.waiting.push(...bodies);
        return true;
      }
      if (link.ws.bufferedAmount > maxBuffered) {
        opts.onDropped(peer, bodies);
        return true;
      }
      for (const b of bodies) link.ws.send(b.body);
      opts.onSent(peer, bodies.reduce((n, b) => n + b.n, 0));
      return true;
    },
    /** Peers with an open link. */
    openPeers: () => [...links].filter(([, l]) => l.open).map(([p]) => p),
    stop() {
      stopped = true;
      for (const l of links.values()) l.ws.close(1001, "stopping");
      links.clear();
    },
  };
}
export type PeerLinks = ReturnType<typeof createPeerLinks>;

/** The data of a server-side link socket (told apart from a client connection by `link`). */
export interface LinkData {
  link: true;
}
export const isLinkData = (d: unknown): d is LinkData => (d as LinkData | undefined)?.link === true;

/**
 * The receiving side of links: each frame is a forward, delivered as `POST /internal/deliver`
 * would; the sender hears back only about users not here and malformed frames.
 */
export function createLinkReceiver(opts: { deliver: (f: Forward) => number; log: Logger }) {
  return {
    message(ws: ServerWebSocket<LinkData>, data: string | Buffer) {
      let raw: unknown;
      try {
        raw = JSON.parse(typeof data === "string" ? data : data.toString());
      } catch {
        raw = null;
      }
      const f = parseForward(raw);
      if (!f) {
        opts.log.error("malformed frame on a link", {});
        ws.send(JSON.stringify({ error: FORWARD_SHAPE }));
        return;
      }
      const missing = opts.deliver(f);
      if (missing > 0) ws.send(JSON.stringify({ missing }));
    },
  };
}
