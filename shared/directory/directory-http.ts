import { splitList } from "../config.ts";
import { DirectoryUnavailable, type Claim, type Directory, type InstanceInfo, type Ledger } from "./directory.ts";

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
