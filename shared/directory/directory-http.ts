import { backoffDelay, sleep } from "../backoff.ts";
import { splitList } from "../config.ts";
import { DirectoryUnavailable, type Claim, type Directory, type InstanceInfo, type Ledger } from "./directory.ts";

/** discover writes a comment this often on an idle feed; a feed silent for 3 times as long is dead. */
export const FEED_KEEPALIVE_MS = 15_000;

/** The most ids one request to services/discover may carry; the client splits larger calls. */
export const DIRECTORY_MAX_BATCH = 10_000;

export type FetchLike = (url: string, init: RequestInit) => Promise<Response> | Response;

export interface HttpDirectoryOptions {
  /** One base URL, or several discover instances (a list, or DISCOVER_URL's comma-separated form). */
  baseUrl: string | string[];
  secret: string;
  fetch?: FetchLike;
  /** Per request; a slower answer counts as unavailable. */
  timeoutMs?: number;
}

/** A 4xx answer: the request itself was wrong (a bug or a wrong INTERNAL_SECRET), retrying will not help. */
export class DirectoryRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Directory and Ledger as a client of services/discover. With several discover instances, a
 * request goes to the one that answered last; a network error, timeout or 5xx answer moves it on to
 * the next, and only when every instance failed does it throw DirectoryUnavailable. 4xx answers
 * throw DirectoryRequestError at once.
 */
export function createHttpDirectory(opts: HttpDirectoryOptions): Directory & Ledger {
  const bases = (typeof opts.baseUrl === "string" ? splitList(opts.baseUrl) : opts.baseUrl).map((b) => b.replace(/\/+$/, ""));
  if (!bases.length) throw new Error("createHttpDirectory needs at least one base URL");
  let preferred = 0;
  const doFetch: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  const timeoutMs = opts.timeoutMs ?? 3000;
  const headers = { authorization: `Bearer ${opts.secret}`, "content-type": "application/json" };

  async function request<T = void>(method: string, path: string, body?: unknown): Promise<T> {
    let last: unknown;
    for (let i = 0; i < bases.length; i++) {
      const k = (preferred + i) % bases.length;
      try {
        const r = await requestOne<T>(bases[k]!, method, path, body);
        preferred = k;
        return r;
      } catch (e) {
        if (!(e instanceof DirectoryUnavailable)) throw e;
        last = e;
      }
    }
    throw last;
  }

  async function requestOne<T>(base: string, method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    let text: string;
    try {
      res = await doFetch(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await res.text();
    } catch (e) {
      throw new DirectoryUnavailable(`directory ${method} ${path}: ${(e as Error).message}`, { cause: e });
    }
    if (res.status >= 500) throw new DirectoryUnavailable(`directory ${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
    if (res.status >= 400) throw new DirectoryRequestError(res.status, `directory ${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new DirectoryUnavailable(`directory ${method} ${path}: unreadable answer`, { cause: e });
    }
  }

  const chunks = <T>(xs: T[]): T[][] => {
    const out: T[][] = [];
    for (let i = 0; i < xs.length; i += DIRECTORY_MAX_BATCH) out.push(xs.slice(i, i + DIRECTORY_MAX_BATCH));
    return out;
  };

  const instancePath = (id: string) => `/v1/instances/${encodeURIComponent(id)}`;

  return {
    async heartbeat(instance, ttlMs) {
      const r = await request<{ known: boolean }>("PUT", instancePath(instance.id), { url: instance.url, ttlMs: Math.round(ttlMs) });
      return r.known === true;
    },

    async setPresence(instanceId, online, offline) {
      if (!online.length && !offline.length) return;
      if (online.length <= DIRECTORY_MAX_BATCH && offline.length <= DIRECTORY_MAX_BATCH)
        return request("POST", `${instancePath(instanceId)}/presence`, { online, offline });
      for (const part of chunks(offline)) await request("POST", `${instancePath(instanceId)}/presence`, { online: [], offline: part });
      for (const part of chunks(online)) await request("POST", `${instancePath(instanceId)}/presence`, { online: part, offline: [] });
    },

    async lookup(users) {
      const parts = await Promise.all(
        chunks([...new Set(users)]).map((part) => request<{ users: Record<string, InstanceInfo[]> }>("POST", "/v1/lookup", { users: part })),
      );
      return Object.fromEntries(parts.flatMap((r) => Object.entries(r.users)));
    },

    async removeInstance(instanceId) {
      await request("DELETE", instancePath(instanceId));
    },

    watch(onChange) {
      // GET /v1/changes is a server-sent event stream: `ready` once discover's own feed is live,
      // `down` when it is not, `change` with a JSON array of users. Reconnects (to the next
      // instance) with backoff; every (re)connection and drop reports onChange(null).
      let live = false;
      let stopped = false;
      let abort: AbortController | null = null;
      const stopping = new AbortController();
      const setLive = (v: boolean) => {
        if (live !== v || v) onChange(null);
        live = v;
      };
      const handle = (event: string, data: string) => {
        if (event === "ready") setLive(true);
        else if (event === "down") setLive(false);
        else if (event === "change" && live) {
          try {
            onChange(JSON.parse(data) as string[]);
          } catch {
            setLive(false);
          }
        }
      };
      void (async () => {
        for (let attempt = 0, k = preferred; !stopped; k = (k + 1) % bases.length) {
          abort = new AbortController();
          let silent: ReturnType<typeof setTimeout> | undefined;
          const quiet = () => {
            clearTimeout(silent);
            silent = setTimeout(() => abort?.abort(), 3 * FEED_KEEPALIVE_MS);
          };
          try {
            quiet();
            const res = await doFetch(bases[k]! + "/v1/changes", { method: "GET", headers: { authorization: headers.authorization, accept: "text/event-stream" }, signal: abort.signal });
            if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
            attempt = 0;
            const dec = new TextDecoder();
            let buf = "";
            for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
              quiet();
              buf += dec.decode(chunk, { stream: true });
              let end: number;
              while ((end = buf.indexOf("\n\n")) >= 0) {
                const block = buf.slice(0, end);
                buf = buf.slice(end + 2);
                let event = "message";
                let data = "";
                for (const line of block.split("\n")) {
                  if (line.startsWith("event:")) event = line.slice(6).trim();
                  else if (line.startsWith("data:")) data += line.slice(5).trim();
                }
                handle(event, data);
              }
            }
          } catch {
            // dropped, refused or silent: reconnect below
          } finally {
            clearTimeout(silent);
          }
          if (live) setLive(false);
          if (!stopped) await sleep(backoffDelay(attempt++, { baseMs: 100, capMs: 2000 }), stopping.signal).catch(() => {});
        }
      })();
      return {
        live: () => live && !stopped,
        stop() {
          stopped = true;
          live = false;
          abort?.abort();
          stopping.abort();
        },
      };
    },

    async claim(msgIds) {
      const parts = await Promise.all(
        chunks([...new Set(msgIds)]).map((part) => request<{ claims: Record<string, Claim> }>("POST", "/v1/claims", { msgIds: part })),
      );
      return Object.fromEntries(parts.flatMap((r) => Object.entries(r.claims)));
    },

    async complete(done) {
      await Promise.all(chunks(done).map((part) => request("POST", "/v1/claims/complete", { done: part })));
    },

    async release(msgIds) {
      await Promise.all(chunks(msgIds).map((part) => request("POST", "/v1/claims/release", { msgIds: part })));
    },
  };
}
