// Same-origin HTTP API (CONTRACT.md sections 2 and 4).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

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
 * `getToken()` supplies the bearer token; `onUnauthorized()` runs when an authenticated call gets 401.
 */
export function createApi({ getToken, onUnauthorized }) {
  async function request(method, path, body, { auth = true } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (auth) headers.authorization = `Bearer ${getToken()}`;
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, "Can't reach the server");
    }
    if (res.status === 401 && auth) onUnauthorized?.();
    if (!res.ok) throw new ApiError(res.status, await errorMessage(res));
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  const q = encodeURIComponent;
  return {
    register: (username, password) => request("POST", "/api/register", { username, password }, { auth: false }),
    login: (username, password) => request("POST", "/api/login", { username, password }, { auth: false }),
    groups: () => request("GET", "/api/groups"),
    createGroup: (name, members) => request("POST", "/api/groups", { name, members }),
    addMember: (groupId, userId) => request("POST", `/api/groups/${q(groupId)}/members`, { userId }),
    removeMember: (groupId, userId) => request("DELETE", `/api/groups/${q(groupId)}/members/${q(userId)}`),
    history(convKey, before, limit = 50) {
      const kind = convKey[0] === "g" ? "group" : "with";
      let path = `/api/messages?${kind}=${q(convKey.slice(2))}&limit=${limit}`;
      if (before) path += `&before=${q(before)}`;
      return request("GET", path);
    },
    presence: (users) => request("GET", `/api/presence?users=${users.map(q).join(",")}`),
    users: (ids) => request("GET", `/api/users?ids=${ids.map(q).join(",")}`),
  };
}
