// State shared by the views: the session, the store and socket of the logged-in user, the open
// conversation, and the API client.

import { createApi } from "./api.js";
import { readSession, saveSession } from "./session.js";

export const ctx = {
  /** { userId, token, refreshToken } while logged in */
  session: null,
  store: null,
  conn: null,
  /** the open conversation's key ("d:user" or "g:group"), or null */
  activeKey: null,
  /** set by app.js: ends the session, showing `message` on the login form */
  logout: (_message) => {},
};

export const SIGNED_OUT_EVERYWHERE = "You were signed out on all devices.";

export const api = createApi({
  getToken: () => ctx.session?.token ?? "",
  getRefreshToken: () => ctx.session?.refreshToken,
  // A refreshed session (rotated refresh token) is kept, and other tabs follow it.
  onSession: (r) => {
    ctx.session = { userId: r.userId, token: r.token, refreshToken: r.refreshToken };
    saveSession(ctx.session);
  },
  // Another tab's session of the same user replaces ours at once (its storage event may come later).
  syncSession: () => {
    const s = readSession();
    if (s && ctx.session && s.userId === ctx.session.userId) ctx.session = s;
  },
  // The refresh token no longer works: logged out everywhere, the password changed, or expired.
  onUnauthorized: () => ctx.session && ctx.logout(SIGNED_OUT_EVERYWHERE),
});

export function activeGroup() {
  return ctx.activeKey?.startsWith("g:") ? ctx.store.groups.get(ctx.activeKey.slice(2)) : undefined;
}
