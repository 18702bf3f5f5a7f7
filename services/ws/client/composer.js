// The message composer, with one unsent draft per conversation (this page only).

import { $ } from "./dom.js";
import { ERROR_TEXT, toast } from "./notify.js";
import { pump } from "./outbox.js";
import { ctx } from "./state.js";

const drafts = new Map();
export const draftOf = (key) => (key ? drafts.get(key) ?? "" : "");

export function syncComposer() {
  const input = $("composer-input");
  $("composer-send").disabled = input.disabled || !input.value.trim();
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

export function initComposer() {
  $("composer-input").addEventListener("input", () => {
    if (ctx.activeKey) drafts.set(ctx.activeKey, $("composer-input").value);
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
    if (body.length > 4096) {
      toast(ERROR_TEXT.too_large);
      return;
    }
    ctx.store.addOutgoing(key, body);
    pump();
    input.value = "";
    drafts.delete(key);
    syncComposer();
    input.focus();
  });
}
