// The account dialog (the header's "Account" button): log out everywhere, change the password.

import { ApiError } from "./api.js";
import { $ } from "./dom.js";
import { api, ctx } from "./state.js";

export const SIGNED_OUT_HERE_AND_EVERYWHERE = "You signed out on all devices.";

const PASSWORD_FIELDS = ["password-current", "password-new", "password-confirm"];

let logoutFn = (_message) => {};

function clearMessages() {
  $("password-error").textContent = "";
  $("password-done").textContent = "";
  $("logout-all-error").textContent = "";
}

function busy(on) {
  for (const id of ["logout-all", "password-submit"]) $(id).disabled = on;
}

function errorText(e, what) {
  const s = e instanceof ApiError ? e.status : 0;
  return (
    s === 429 ? "Too many attempts. Wait a moment and try again." :
    s === 0 ? "Can't reach the server. Try again." : // it may or may not have arrived
    s >= 500 ? `The server could not do it right now. ${what} Try again.` :
    `${what} (${e.message || `HTTP ${s}`})`
  );
}

async function logoutEverywhere() {
  const me = ctx.session?.userId;
  if (!me) return;
  clearMessages();
  busy(true);
  // This tab's socket is about to be closed with 4401 as well: that is expected, not news.
  ctx.conn?.stop();
  try {
    await api.logoutAll();
  } catch (e) {
    if (ctx.session?.userId === me) {
      ctx.conn?.start();
      $("logout-all-error").textContent = errorText(e, "Nobody was signed out.");
    }
    return;
  } finally {
    busy(false);
  }
  if (ctx.session?.userId === me) logoutFn(SIGNED_OUT_HERE_AND_EVERYWHERE);
}

/** The form's error, or "" when it may be sent. */
function passwordFormError(current, next, confirm) {
  if (!current) return "Enter your current password.";
  if (next.length < 8 || next.length > 128) return "A new password is 8 to 128 characters.";
  if (next !== confirm) return "The new passwords do not match.";
  if (next === current) return "The new password is the same as the current one.";
  return "";
}

async function changePassword() {
  const [current, next, confirm] = PASSWORD_FIELDS.map((id) => $(id).value);
  clearMessages();
  const invalid = passwordFormError(current, next, confirm);
  if (invalid) {
    $("password-error").textContent = invalid;
    return;
  }
  const me = ctx.session?.userId;
  busy(true);
  try {
    // The answer is a new session: api.js stores it as it stores a refreshed one (every tab follows).
    await api.changePassword(current, next);
    PASSWORD_FIELDS.forEach((id) => ($(id).value = ""));
    $("password-done").textContent = "Password changed. Your other devices were signed out.";
  } catch (e) {
    if (ctx.session?.userId !== me) return; // the session ended meanwhile: the login form says so
    const s = e instanceof ApiError ? e.status : 0;
    $("password-error").textContent =
      s === 403 ? "Wrong current password." :
      s === 400 ? `Not accepted: ${e.message}` :
      errorText(e, "The password was not changed.");
    if (s === 403) $("password-current").select();
  } finally {
    busy(false);
  }
}

/** Closes the dialog and forgets what was typed in it (log out). */
export function resetAccount() {
  const d = $("account-dialog");
  if (d.open) d.close();
  PASSWORD_FIELDS.forEach((id) => ($(id).value = ""));
  clearMessages();
  busy(false);
}

/** `logout(message)` ends this tab's session, showing `message` on the login form. */
export function initAccount({ logout }) {
  logoutFn = logout;
  const d = $("account-dialog");
  $("account").addEventListener("click", () => {
    clearMessages();
    d.showModal();
  });
  $("account-close").addEventListener("click", () => d.close());
  // The browser returns the focus to the "Account" button; nothing typed is kept.
  d.addEventListener("close", () => PASSWORD_FIELDS.forEach((id) => ($(id).value = "")));
  // A click on the backdrop (outside the dialog's box) closes it too.
  d.addEventListener("click", (e) => {
    if (e.target !== d) return;
    const r = d.getBoundingClientRect();
    if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) d.close();
  });
  $("logout-all").addEventListener("click", logoutEverywhere);
  $("password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    changePassword();
  });
}
