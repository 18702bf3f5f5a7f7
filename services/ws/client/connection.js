// The WebSocket to `/ws` (CONTRACT.md section 3): reconnects with capped exponential backoff and
// jitter, pings every 5 s and drops a connection that does not answer within 5 s (at once when
// the browser reports the network gone), and dispatches each frame to the handler named by its
// `type` (unknown types are ignored).

const BASE_MS = 500;
const CAP_MS = 10_000;
// A silent connection (the network frozen, no close) is noticed within PING_EVERY_MS + PONG_WITHIN_MS.
const PING_EVERY_MS = 5_000;
const PONG_WITHIN_MS = 5_000;

export function backoffDelay(attempt) {
  const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(attempt, 20));
  const floor = Math.min(BASE_MS / 2, ceiling);
  return floor + Math.random() * (ceiling - floor);
}

/**
 * status(state, detail): state is "connecting" | "open" | "waiting" (detail.at: next try, ms epoch)
 * | "offline" | "stopped". onOpen() runs on every (re)connection, before any frame is received.
 * onRefused() runs when a connection closed before it ever opened; it may call stop().
 * onRevoked() runs when the server closed an open connection with 4401 (its token was revoked):
 * no retry is scheduled then; the caller renews the session and calls retryNow(), or stops.
 */
export function createConnection({ url, handlers, onOpen, onStatus, onRefused, onRevoked }) {
  let ws = null;
  let attempt = 0;
  let running = false;
  let retryTimer = null;
  let pingTimer = null;
  let pongTimer = null;

  function status(state, detail = {}) {
    onStatus?.(state, detail);
  }

  function clearTimers() {
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    clearTimeout(pongTimer);
    retryTimer = pingTimer = pongTimer = null;
  }

  function drop() {
    if (!ws) return;
    const old = ws;
    ws = null;
    old.onopen = old.onmessage = old.onclose = old.onerror = null;
    try {
      old.close();
    } catch {}
  }

  function connect() {
    clearTimers();
    drop();
    if (!running) return;
    status("connecting");
    let opened = false;
    const sock = new WebSocket(url());
    ws = sock;
    sock.onopen = () => {
      opened = true;
      status("open");
      pingTimer = setInterval(ping, PING_EVERY_MS);
      onOpen?.();
    };
    sock.onmessage = (ev) => {
      clearTimeout(pongTimer);
      pongTimer = null;
      attempt = 0;
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!f || typeof f.type !== "string" || !Object.hasOwn(handlers, f.type)) return;
      try {
        handlers[f.type](f);
      } catch (err) {
        console.error(`handler for ${f.type} failed`, err);
      }
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      if (opened && ev.code === 4401 && onRevoked) {
        clearTimers();
        status("connecting");
        onRevoked();
        return;
      }
      if (!opened) onRefused?.();
      scheduleRetry();
    };
    sock.onerror = () => {};
  }

  function ping() {
    if (!send({ type: "ping" })) return;
    clearTimeout(pongTimer);
    pongTimer = setTimeout(() => {
      // No frame at all since the ping: the connection is dead even if the socket has not noticed.
      drop();
      scheduleRetry();
    }, PONG_WITHIN_MS);
  }

  function scheduleRetry() {
    clearTimers();
    if (!running) return;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      status("offline");
      return;
    }
    const delay = backoffDelay(attempt++);
    status("waiting", { at: Date.now() + delay });
    retryTimer = setTimeout(connect, delay);
  }

  // The browser knows the network is gone: drop the socket now instead of waiting for pings.
  function onOffline() {
    if (!running) return;
    drop();
    clearTimers();
    status("offline");
  }

  function onOnline() {
    if (running && !ws) {
      attempt = 0;
      connect();
    }
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  return {
    start() {
      if (running) return;
      running = true;
      attempt = 0;
      addEventListener("online", onOnline);
      addEventListener("offline", onOffline);
      connect();
    },
    stop() {
      running = false;
      removeEventListener("online", onOnline);
      removeEventListener("offline", onOffline);
      clearTimers();
      drop();
      status("stopped");
    },
    /** Connects now instead of waiting out the backoff. */
    retryNow() {
      if (running && !ws) {
        attempt = 0;
        connect();
      }
    },
    send,
    get isOpen() {
      return !!ws && ws.readyState === WebSocket.OPEN;
    },
  };
}
