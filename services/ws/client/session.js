// The saved session (localStorage), shared by every tab of this origin.

import { USER_ID_RE } from "./store.js";

export const SESSION_KEY = "relay-chat:session";

export function jwtExpired(token) {
  try {
    const p = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof p.exp === "number" && p.exp * 1000 <= Date.now();
  } catch {
    return true;
  }
}

export function readSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
    // An expired access token is fine while a refresh token can renew it.
    if (s && USER_ID_RE.test(s.userId) && typeof s.token === "string" && (!jwtExpired(s.token) || typeof s.refreshToken === "string")) return s;
  } catch {}
  return null;
}

export function saveSession(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

export function forgetSession() {
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {}
}
