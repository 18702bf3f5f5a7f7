// The login / registration form.

import { ApiError } from "./api.js";
import { $ } from "./dom.js";
import { saveSession } from "./session.js";
import { api, ctx } from "./state.js";
import { USER_ID_RE } from "./store.js";

export function showView(name) {
  $("boot").hidden = true;
  $("auth-view").hidden = name !== "auth";
  $("chat-view").hidden = name !== "chat";
}

export function showAuth(message = "") {
  showView("auth");
  $("auth-error").textContent = message;
  $("auth-password").value = "";
  $("auth-username").focus();
}

async function authenticate(mode, onLoggedIn) {
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const err = $("auth-error");
  err.textContent = "";
  if (!USER_ID_RE.test(username)) {
    err.textContent = "A username is 1 to 64 letters, digits, or _ . -";
    return;
  }
  if (mode === "register" ? password.length < 8 || password.length > 128 : !password) {
    err.textContent = mode === "register" ? "A password is 8 to 128 characters." : "Enter your password.";
    return;
  }
  const buttons = [$("auth-login"), $("auth-register")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const r = mode === "register" ? await api.register(username, password) : await api.login(username, password);
    ctx.session = { userId: r.userId, token: r.token, refreshToken: r.refreshToken };
    saveSession(ctx.session);
    onLoggedIn();
  } catch (e) {
    const s = e instanceof ApiError ? e.status : 0;
    err.textContent =
      s === 401 ? "Wrong username or password." :
      s === 409 ? "That username is taken. Log in instead?" :
      s === 400 ? `Not accepted: ${e.message}` :
      s === 429 ? "Too many attempts. Wait a moment and try again." :
      e.message || "Something went wrong.";
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

/** `onLoggedIn()` runs once `ctx.session` holds the new session. */
export function initAuthView({ onLoggedIn }) {
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    authenticate("login", onLoggedIn);
  });
  $("auth-register").addEventListener("click", () => authenticate("register", onLoggedIn));
}
