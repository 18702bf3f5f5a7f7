// Which user ids belong to registered accounts (GET /api/users), and their registered spelling:
// usernames are unique regardless of case, so "Bob" finds "bob".

import { api } from "./state.js";

const known = new Map(); // lower-cased id -> { registered: true, userId } | { registered: false }

export function resetUsers() {
  known.clear();
}

/** What is known of `id` so far: { registered, userId? }, or undefined before any answer. */
export function userInfo(id) {
  return known.get(id.toLowerCase());
}

/**
 * Asks the server about `ids` (unregistered ones are asked again: they may have registered since).
 * Resolves to a Map id -> { registered, userId? }; ids the server could not be asked about are
 * missing from it.
 */
export async function lookupUsers(ids) {
  const ask = [...new Set(ids)].filter((u) => !userInfo(u)?.registered);
  if (ask.length) {
    try {
      const r = await api.users(ask.slice(0, 1000));
      for (const [u, info] of Object.entries(r?.users ?? {})) known.set(u.toLowerCase(), info);
    } catch {}
  }
  const out = new Map();
  for (const u of ids) if (userInfo(u)) out.set(u, userInfo(u));
  return out;
}

/** Splits `ids` by what the server said: canonical spellings, unknown ids, and ids it could not check. */
export async function resolveUsers(ids) {
  const info = await lookupUsers(ids);
  const canonical = [];
  const unknown = [];
  for (const u of ids) {
    const i = info.get(u);
    if (i?.registered) canonical.push(i.userId);
    else if (i) unknown.push(u);
    else canonical.push(u); // not checked (offline): the server decides
  }
  return { canonical: [...new Set(canonical)], unknown };
}
