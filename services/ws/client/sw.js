// The browser client's service worker (registered by push.js, scope /client/): shows each Web Push
// from the server (payload in docs/api.md, "Push notifications") as one notification per
// conversation, and opens that conversation when the notification is clicked.

const CONV_RE = /^[dg]:[A-Za-z0-9_.-]{1,64}$/;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let p = null;
  try {
    p = event.data ? event.data.json() : null;
  } catch {}
  event.waitUntil(show(p));
});

/** One notification per conversation (its tag): a new push replaces it and adds to its count. */
async function show(p) {
  if (!p || p.type !== "message" || !CONV_RE.test(p.conv)) {
    // Browsers require every push to show something.
    return self.registration.showNotification("Relay", { body: "New activity", tag: "relay" });
  }
  const earlier = await self.registration.getNotifications({ tag: p.conv });
  const count = earlier.reduce((n, x) => n + (x.data?.count ?? 0), 0) + (p.count || 1);
  const who = p.group != null ? p.groupName || "Group" : p.from;
  const line = p.group != null ? `${p.from}: ${p.body}` : p.body;
  return self.registration.showNotification(count > 1 ? `${who} (${count} new messages)` : who, {
    body: line,
    tag: p.conv,
    renotify: true,
    timestamp: p.ts,
    data: { conv: p.conv, count },
  });
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openConversation(event.notification.data?.conv));
});

/** Focuses an open client and tells it to open `conv`, or opens a new one at `conv`. */
async function openConversation(conv) {
  const ok = typeof conv === "string" && CONV_RE.test(conv);
  const wins = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const win = wins.find((w) => new URL(w.url).pathname.startsWith("/client/"));
  if (win) {
    if (ok) win.postMessage({ type: "open-conversation", conv });
    return win.focus();
  }
  return self.clients.openWindow(ok ? `/client/#${encodeURIComponent(conv)}` : "/client/");
}
