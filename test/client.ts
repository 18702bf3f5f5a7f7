import { sign } from "hono/jwt";

/** A WebSocket test client that records every frame and waits on frames, never on time. */

export type Frame = Record<string, any> & { type: string };

export function mintToken(user: string, secret: string, extra: Record<string, unknown> = {}): Promise<string> {
  return sign({ sub: user, ...extra }, secret, "HS256");
}

export function uniqueUser(prefix = "u"): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 12)}`;
}

export class TestClient {
  readonly frames: Frame[] = [];
  private waiters: Array<{ pred: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];
  closed: Promise<{ code: number; reason: string }>;

  private constructor(
    readonly ws: WebSocket,
    readonly user: string,
  ) {
    this.closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
    ws.addEventListener("message", (e) => {
      const f = JSON.parse(String(e.data)) as Frame;
      this.frames.push(f);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(f)) return true;
        w.resolve(f);
        return false;
      });
    });
  }

  static async connect(baseUrl: string, user: string, token: string): Promise<TestClient> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, "ws")}/ws?token=${encodeURIComponent(token)}`);
    const c = new TestClient(ws, user);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`could not connect ${user} to ${baseUrl}`)), { once: true });
    });
    return c;
  }

  send(frame: unknown) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** The first frame (already received or future) matching `pred`. */
  waitFor(pred: (f: Frame) => boolean, what = "frame", timeoutMs = 10_000): Promise<Frame> {
    const have = this.frames.find(pred);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.user}: timed out waiting for ${what}; got ${JSON.stringify(this.frames.slice(-5))}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (f) => (clearTimeout(t), resolve(f)) });
    });
  }

  /** A frame matching `pred` that arrives after this call. */
  next(pred: (f: Frame) => boolean, what = "frame", timeoutMs = 10_000): Promise<Frame> {
    const start = this.frames.length;
    return this.waitFor((f) => this.frames.indexOf(f) >= start && pred(f), what, timeoutMs);
  }

  async sendMessage(to: { to: string } | { group: string }, body: string, id: string = crypto.randomUUID()): Promise<Frame> {
    this.send({ type: "send", id, body, ...to });
    return this.waitFor((f) => (f.type === "ack" || f.type === "error") && f.id === id, `ack of ${id}`);
  }

  /** Sends sync and resolves with the message frames of the answer and the synced cursor. */
  async sync(after?: string): Promise<{ messages: Frame[]; cursor: string }> {
    const start = this.frames.length;
    this.send(after === undefined ? { type: "sync" } : { type: "sync", after });
    const end = await this.waitFor((f) => this.frames.indexOf(f) >= start && (f.type === "synced" || (f.type === "error" && !f.id)), "synced", 20_000);
    if (end.type === "error") throw new Error(`sync failed: ${end.message}`);
    const messages = this.frames.slice(start, this.frames.indexOf(end)).filter((f) => f.type === "message");
    return { messages, cursor: end.cursor };
  }

  messages(): Frame[] {
    return this.frames.filter((f) => f.type === "message");
  }

  close() {
    this.ws.close();
  }
}
