// The message composer, with one unsent draft per conversation (kept in the store's cache).

import { $ } from "./dom.js";
import { ERROR_TEXT, toast } from "./notify.js";
import { pump } from "./outbox.js";
import { ctx } from "./state.js";
import { noteSent, noteTyping } from "./typing.js";

const MAX_BODY = 4096;

export const draftOf = (key) => (key && ctx.store?.hasConv(key) ? ctx.store.conv(key).draft ?? "" : "");

export function syncComposer() {
  const input = $("composer-input");
  const n = input.value.trim().length;
  const limit = $("composer-limit");
  limit.hidden = n <= MAX_BODY;
  if (n > MAX_BODY) limit.textContent = `${n} characters: a message holds ${MAX_BODY} at most. Shorten it to send.`;
  $("composer-send").disabled = input.disabled || !n || n > MAX_BODY;
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

export function initComposer() {
  $("composer-input").addEventListener("input", () => {
    if (ctx.activeKey) ctx.store.setDraft(ctx.activeKey, $("composer-input").value);
    if ($("composer-input").value.trim()) noteTyping(ctx.activeKey);
    else noteSent(ctx.activeKey);
    syncComposer();
  });
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("composer-input");
    const body = input.value.trim();
    const key = ctx.activeKey;
    if (!key || !body || input.disabled) return;
    if (body.length > MAX_BODY) {
      toast(ERROR_TEXT.too_large);
      return;
    }
    ctx.store.addOutgoing(key, body);
    noteSent(key);
    pump();
    input.value = "";
    ctx.store.setDraft(key, "");
    syncComposer();
    input.focus();
  });
}
