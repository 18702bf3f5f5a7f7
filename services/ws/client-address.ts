import { isIP } from "node:net";

export class BadForwardedFor extends Error {}

/**
 * The client's address for throttling. With `trustedHops` 0 it is the socket's peer. With N > 0,
 * N reverse proxies are trusted to each append the address they received from to
 * X-Forwarded-For, so the address is the N-th entry from the right of [...X-Forwarded-For, peer]
 * minus the peer — entries further left were written by the client and are never believed. A
 * request that passed fewer proxies gets the leftmost entry those proxies wrote (or the peer).
 * A malformed entry in the trusted part throws BadForwardedFor.
 *
 * IPv4-mapped IPv6 addresses count as their IPv4 address; other IPv6 addresses count by their /64
 * (one host usually holds a whole /64).
 */
export function clientAddress(peer: string, forwardedFor: string | null | undefined, trustedHops: number): string {
  let chosen = peer;
  if (trustedHops > 0) {
    const chain = [...(forwardedFor ?? "").split(",").map((s) => s.trim()).filter((s) => s !== ""), peer];
    chosen = chain[Math.max(0, chain.length - 1 - trustedHops)]!;
  }
  const a = normalize(chosen);
  if (a === null) {
    if (chosen === peer) return peer; // the socket's own (not an IP in tests without a socket)
    throw new BadForwardedFor(`bad X-Forwarded-For entry ${JSON.stringify(chosen.slice(0, 64))}`);
  }
  return a;
}

function normalize(raw: string): string | null {
  let s = raw;
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const kind = isIP(s);
  if (kind === 4) return s;
  if (kind !== 6) return null;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(s);
  if (mapped) return mapped[1]!;
  return `${expand6(s).slice(0, 4).join(":")}::/64`;
}

/** The eight groups of an IPv6 address (embedded IPv4 tails are rare here and kept as written). */
function expand6(s: string): string[] {
  const [head, tail] = s.toLowerCase().split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return groups.map((g) => g.replace(/^0+(?=.)/, ""));
}
