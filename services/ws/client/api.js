// Same-origin HTTP API (CONTRACT.md sections 2 and 4).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * How long a tab whose refresh was refused waits for another tab's new session before signing out:
 * a session another tab saved reaches this tab's localStorage a moment after that tab let go of the
 * refresh lock (Chromium propagates localStorage between tabs asynchronously); 1 s leaves room for a
 * loaded machine, and costs only a sign-out that was going to happen anyway.
 */
export const SESSION_SETTLE_MS = 1000;

async function errorMessage(res) {
  try {
    const j = await res.json();
    const e = j?.error ?? j;
    if (typeof e === "string") return e;
    if (typeof e?.message === "string") return e.message;
    if (typeof e?.code === "string") return e.code;
  } catch {}
  return res.statusText || `HTTP ${res.status}`;
}

/**
 * `getToken()` supplies the bearer token; `onUnauthorized()` runs when an authenticated call gets 401
 * and the session cannot be refreshed. Sessions (docs/api.md, "Accounts"): access tokens are short-lived;
 * on a 401 the API refreshes once with `getRefreshToken()`, hands the new session to `onSession(s)`
 * and repeats the call. Tabs of one browser refresh one at a time (Web Locks, where available): a tab
 * that finds the token already replaced by another tab's refresh just retries with it, so a rotated
 * refresh token is never presented twice (which would end the session everywhere). `syncSession()`
 * runs under that lock before each refresh and password change: it adopts a session another tab
 * saved, so a token it replaced is not used again.
 */
export function createApi({ getToken, onUnauthorized, getRefreshToken = () => null, onSession = () => {}, syncSession = () => {}, settleMs = SESSION_SETTLE_MS }) {
  let refreshing = null;

  /** Whether, within `ms`, syncSession() finds a session that no longer uses `token` (another tab's). */
  async function adoptedWithin(token, ms) {
    for (const until = Date.now() + ms; ; ) {
      syncSession();
      if (getToken() !== token) return true;
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  // Refreshes and password changes replace the session: one at a time across the tabs of a browser.
  const exclusive = (fn) => (globalThis.navigator?.locks ? navigator.locks.request("relay-chat:refresh", fn) : fn());

  function refresh(failedToken = getToken()) {
    const run = async () => {
      // another tab refreshed (or changed the password) meanwhile, and this tab has its session already
      if (await adoptedWithin(failedToken, 0)) return null;
      const refreshToken = getRefreshToken();
      if (!refreshToken) throw new ApiError(401, "not signed in");
      let s;
      try {
        s = await request("POST", "/api/refresh", { refreshToken }, { auth: false });
      } catch (e) {
        // Refused: maybe because another tab replaced the session just now (a password change
        // revokes every refresh token), and its new session, saved before it let go of the lock,
        // has not reached this tab's copy of localStorage yet (a write reaches other tabs later
        // than the lock does). Sign out only if none arrives.
        if (e.status === 401 && (await adoptedWithin(failedToken, settleMs))) return null;
        throw e;
      }
      onSession(s);
      return s;
    };
    refreshing ??= exclusive(run).finally(() => {
      refreshing = null;
    });
    return refreshing;
  }

  async function request(method, path, body, { auth = true, retry = true, notify = true, token = getToken() } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (auth) headers.authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, "Can't reach the server");
    }
    if (res.status === 401 && auth) {
      if (retry && getRefreshToken()) {
        const refreshed = await refresh(token).then(
          () => true,
          (e) => {
            if (e.status !== 401) throw e; // offline or busy: keep the session, fail this call
            return false;
          },
        );
        if (refreshed) return request(method, path, body, { auth, retry: false, notify });
      }
      if (notify) onUnauthorized?.();
    }
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  // Under the refresh lock, so that another tab whose socket was closed by this change (4401)
  // waits for the new session instead of refreshing with a token the change just revoked.
  async function changePassword(current, next) {
    let used = null;
    const attempt = (notify) =>
      exclusive(async () => {
        syncSession();
        used = getToken();
        const s = await request("POST", "/api/password", { current, next }, { retry: false, notify });
        onSession(s);
        return s;
      });
    try {
      return await attempt(false);
    } catch (e) {
      if (e.status !== 401 || !getRefreshToken()) throw e;
    }
    // The access token had expired: refresh it (outside the lock, which refresh takes) and try once more.
    await refresh(used).catch((e) => {
      if (e.status === 401) onUnauthorized?.();
      throw e;
    });
    return attempt(true);
  }

  const q = encodeURIComponent;
  return {
    register: (username, password) => request("POST", "/api/register", { username, password }, { auth: false }),
    login: (username, password) => request("POST", "/api/login", { username, password }, { auth: false }),
    /**
     * A new access token (and refresh token) for the session; rejects with status 401 when it has ended.
     * With `failedToken`: resolves null at once when the session no longer uses that token.
     */
    refresh: (failedToken) => refresh(failedToken),
    /** Ends this session on the server (best effort: a failure changes nothing locally). */
    logout: (token) => request("POST", "/api/logout", undefined, { retry: false, notify: false, token }),
    /** Ends every session of the user, on every device. */
    logoutAll: () => request("POST", "/api/logout-all"),
    /** Answers a new session, already handed to onSession; every other session ends. 403: wrong current password. */
    changePassword,
    groups: () => request("GET", "/api/groups"),
    createGroup: (name, members) => request("POST", "/api/groups", { name, members }),
    addMember: (groupId, userId) => request("POST", `/api/groups/${q(groupId)}/members`, { userId }),
    removeMember: (groupId, userId) => request("DELETE", `/api/groups/${q(groupId)}/members/${q(userId)}`),
    setRole: (groupId, userId, role) => request("PUT", `/api/groups/${q(groupId)}/members/${q(userId)}/role`, { role }),
    history(convKey, before, limit = 50) {
      const kind = convKey[0] === "g" ? "group" : "with";
      let path = `/api/messages?${kind}=${q(convKey.slice(2))}&limit=${limit}`;
      if (before) path += `&before=${q(before)}`;
      return request("GET", path);
    },
    /** Messages matching `text` that this user may read, newest first; `before` from the previous answer. */
    search(text, before, limit = 20) {
      let path = `/api/search?q=${q(text)}&limit=${limit}`;
      if (before) path += `&before=${q(before)}`;
      return request("GET", path);
    },
    /** The conversation list, newest activity first; `before` from the previous page's answer. */
    conversations: (before, limit = 200) => request("GET", `/api/conversations?limit=${limit}${before ? `&before=${q(before)}` : ""}`),
    /** Other participants' read and delivered markers: `{with: user}` or `{group: id}`. */
    receipts: (c) => request("GET", `/api/receipts?${c.group != null ? `group=${q(c.group)}` : `with=${q(c.with)}`}`),
    presence: (users) => request("GET", `/api/presence?users=${users.map(q).join(",")}`),
    users: (ids) => request("GET", `/api/users?ids=${ids.map(q).join(",")}`),
    pushKey: () => request("GET", "/api/push/key", undefined, { notify: false }),
    subscribePush: (subscription) => request("POST", "/api/push/subscriptions", subscription),
    /** With the token given (logout calls it as the session ends). */
    unsubscribePush: (endpoint, token) => request("DELETE", "/api/push/subscriptions", { endpoint }, { retry: false, notify: false, token }),
  };
}
