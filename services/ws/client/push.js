// Web Push: the prompt to enable notifications, and this browser's subscription on the server
// (docs/client.md, "Notifications"). Messages are pushed only while the user has no open
// connection anywhere; sw.js shows them.

import { $ } from "./dom.js";
import { toast } from "./notify.js";
import { api } from "./state.js";

const DISMISSED_KEY = "relay-chat:push-dismissed";

export const pushSupported = () => "serviceWorker" in navigator && "PushManager" in globalThis && "Notification" in globalThis;

let publicKey = null;
/** The running startPush (logout waits for it, so its subscription is not saved after the removal). */
let starting = Promise.resolve();

/** After login: register the worker; subscribe when allowed already, or offer the prompt. */
export function startPush() {
  starting = start().catch(() => {});
  return starting;
}

async function start() {
  $("push-prompt").hidden = true;
  if (!pushSupported()) return;
  try {
    await navigator.serviceWorker.register("/client/sw.js", { scope: "/client/" });
    publicKey = (await api.pushKey()).publicKey;
  } catch {
    return; // push not configured on this server (404), or the worker could not be registered
  }
  if (Notification.permission === "granted") await subscribe().catch(() => {});
  else if (Notification.permission === "default" && localStorage.getItem(DISMISSED_KEY) !== "1") $("push-prompt").hidden = false;
}

/** This browser's subscription, created with the server's key (a subscription to another key is replaced). */
async function subscribe() {
  const reg = await navigator.serviceWorker.ready;
  const key = Uint8Array.from(atob(publicKey.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));
  let sub = await reg.pushManager.getSubscription();
  const has = sub?.options.applicationServerKey && new Uint8Array(sub.options.applicationServerKey);
  if (sub && !(has && has.length === key.length && has.every((b, i) => b === key[i]))) {
    await sub.unsubscribe();
    sub = null;
  }
  sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  await api.subscribePush(sub.toJSON());
}

async function enable() {
  $("push-prompt").hidden = true;
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    if (permission === "denied") toast("Notifications are blocked for this site in the browser's settings");
    return;
  }
  await subscribe().catch((e) => toast(`Could not turn on notifications: ${e.message ?? e}`));
}

/** At logout, with the session's token: this browser stops receiving the user's notifications. */
export async function stopPush(token) {
  $("push-prompt").hidden = true;
  await starting;
  if (!pushSupported() || !publicKey) return;
  publicKey = null;
  const sub = await (await navigator.serviceWorker.getRegistration("/client/"))?.pushManager.getSubscription();
  if (!sub) return;
  await api.unsubscribePush(sub.endpoint, token).catch(() => {});
  await sub.unsubscribe().catch(() => {});
}

export function initPush({ openConv }) {
  $("push-enable").addEventListener("click", () => void enable());
  $("push-dismiss").addEventListener("click", () => {
    localStorage.setItem(DISMISSED_KEY, "1");
    $("push-prompt").hidden = true;
  });
  // A click on a notification while this tab is open (sw.js).
  navigator.serviceWorker?.addEventListener("message", (e) => {
    if (e.data?.type === "open-conversation") openConv(e.data.conv);
  });
}
