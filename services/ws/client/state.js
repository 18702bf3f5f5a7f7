// State shared by the views: the session, the store and socket of the logged-in user, the open
// conversation, and the API client.

import { createApi } from "./api.js";

export const ctx = {
  /** { userId, token } while logged in */
  session: null,
  store: null,
  conn: null,
  /** the open conversation's key ("d:user" or "g:group"), or null */
  activeKey: null,
  /** set by app.js: ends the session, showing `message` on the login form */
  logout: (_message) => {},
};

export const api = createApi({
  getToken: () => ctx.session?.token ?? "",
  onUnauthorized: () => ctx.session && ctx.logout("Your session has ended. Please log in again."),
});

export function activeGroup() {
  return ctx.activeKey?.startsWith("g:") ? ctx.store.groups.get(ctx.activeKey.slice(2)) : undefined;
}
