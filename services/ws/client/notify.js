// Error texts, the toast, and the connection status in the sidebar header.

import { $ } from "./dom.js";

export const ERROR_TEXT = {
  bad_request: "Rejected by the server",
  too_large: "Too long (4096 characters at most)",
  forbidden: "Not allowed here",
  rate_limited: "Sending too fast",
  unavailable: "Server busy, not sent",
  not_found: "That message no longer exists",
  too_old: "Too old to change",
};
export const RETRYABLE = new Set(["unavailable", "rate_limited"]);

let toastTimer = null;
export function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 5000);
}

let statusTick = null;
export function renderConnStatus(state, detail) {
  const el = $("conn-status");
  clearInterval(statusTick);
  el.dataset.state = state;
  const paint = () => {
    el.textContent =
      state === "open" ? "Connected" :
      state === "connecting" ? "Connecting…" :
      state === "waiting" ? `Reconnecting in ${Math.max(1, Math.ceil((detail.at - Date.now()) / 1000))} s…` :
      state === "offline" ? "Offline — waiting for network" : "Disconnected";
  };
  paint();
  if (state === "waiting") statusTick = setInterval(paint, 500);
}
