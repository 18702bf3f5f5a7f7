import { DirectoryUnavailable, type Claim, type Directory, type InstanceInfo, type Ledger } from "./directory.ts";

/** The most ids one request to services/discover may carry; the client splits larger calls. */
export const DIRECTORY_MAX_BATCH = 10_000;

export type FetchLike = (url: string, init: RequestInit) => Promise<Response> | Response;

export interface HttpDirectoryOptions {
  baseUrl: string;
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
 * Directory and Ledger as a client of services/discover. Network errors, timeouts and 5xx answers
 * throw DirectoryUnavailable; 4xx answers throw DirectoryRequestError.
 */
export function createHttpDirectory(opts: HttpDirectoryOptions): Directory & Ledger {
  const base = opts.baseUrl.replace(/\/+$/, "");
  const doFetch: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  const timeoutMs = opts.timeoutMs ?? 3000;
  const headers = { authorization: `Bearer ${opts.secret}`, "content-type": "application/json" };

  async function request<T = void>(method: string, path: string, body?: unknown): Promise<T> {
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
