import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel } from "amqplib";
import { backoffDelay, retryForever, sleep } from "./backoff.ts";
import { splitList } from "./config.ts";
import type { Logger } from "./log.ts";

/**
 * One RabbitMQ connection kept alive forever: it connects in the background (a service may start
 * while the broker is down), reconnects with backoffDelay after any loss, and never throws on
 * connection or channel errors. Users hold channels through `keepChannel`, which (re)creates them
 * on every (re)connect and after a channel alone was closed by the broker.
 * `url` may list several comma-separated nodes of one RabbitMQ cluster: each attempt tries the
 * next node in turn, and after a connection loss the next attempt goes to another node first.
 */
export interface AmqpConnection {
  /** True while a connection is open. */
  ready(): boolean;
  /** Resolves once connected; rejects when the connection is closed first or `signal` aborts. */
  whenReady(signal?: AbortSignal): Promise<void>;
  keepChannel(spec: ChannelSpec<Channel>): KeptChannel<Channel>;
  keepConfirmChannel(spec: ChannelSpec<ConfirmChannel>): KeptChannel<ConfirmChannel>;
  /** Stops every kept channel and closes the connection; no reconnect after this. */
  close(): Promise<void>;
}

export interface ChannelSpec<C extends Channel> {
  /** For log lines. */
  name: string;
  /**
   * Runs on every new channel before it counts as open (declare topology, prefetch, consume).
   * A rejection closes the channel and retries after backoffDelay.
   */
  setup(ch: C): Promise<void>;
  /** Called once the channel is set up. */
  onOpen?(ch: C): void;
  /** Called once when an open channel closes, for whatever reason; a new one follows unless stopped. */
  onClose?(ch: C): void;
}

export interface KeptChannel<C extends Channel> {
  /** The open, set-up channel, if any. */
  current(): C | undefined;
  /** Resolves after the first set-up attempt finished (either way), or at once while disconnected. */
  settled(): Promise<void>;
  /** Closes the channel and stops re-creating it. */
  stop(): Promise<void>;
}

export interface AmqpConnectionOptions {
  /** Shown in the broker's connection list. */
  name?: string;
  /** Heartbeat in seconds unless the URL sets one; detects a silent broker. */
  heartbeatSec?: number;
  connectTimeoutMs?: number;
}

interface Keeper {
  kick(): void;
  stop(): Promise<void>;
}

const noop = () => {};

export function createAmqpConnection(url: string, log: Logger, opts: AmqpConnectionOptions = {}): AmqpConnection {
  const targets = splitList(url).map((u) => {
    const t = new URL(u);
    if (!t.searchParams.has("heartbeat")) t.searchParams.set("heartbeat", String(opts.heartbeatSec ?? 10));
    return t;
  });
  let nextNode = 0;
  const socketOptions = {
    noDelay: true,
    timeout: opts.connectTimeoutMs ?? 5000,
    clientProperties: { connection_name: opts.name ?? "relay-chat" },
  };
  const safe = (t: URL) => `${t.protocol}//${t.host}${t.pathname}`;
  let current = targets[0]!;
  const connectNext = () => {
    current = targets[nextNode++ % targets.length]!;
    return amqp.connect(current.toString(), socketOptions);
  };

  let model: ChannelModel | undefined;
  let closed = false;
  const abort = new AbortController();
  const keepers = new Set<Keeper>();
  const readyWaiters = new Set<{ resolve(): void; reject(err: unknown): void }>();

  const run = (async () => {
    let losses = 0;
    while (!closed) {
      let m: ChannelModel;
      try {
        m = await retryForever(connectNext, {
          signal: abort.signal,
          onError: (err, n) => {
            if (n === 0 || n % 10 === 0) log.warn("amqp connect failed; retrying", { url: safe(current), err, attempt: n });
          },
        });
      } catch {
        break;
      }
      if (closed) {
        await m.close().catch(noop);
        break;
      }
      const lost = new Promise<Error | undefined>((resolve) => m.once("close", resolve));
      m.on("error", (err) => log.warn("amqp connection error", { err }));
      m.on("blocked", (reason) => log.warn("amqp connection blocked by the broker", { reason }));
      m.on("unblocked", () => log.info("amqp connection unblocked"));
      const connectedAt = Date.now();
      model = m;
      log.info("amqp connected", { url: safe(current) });
      for (const w of readyWaiters) w.resolve();
      readyWaiters.clear();
      for (const k of keepers) k.kick();
      const err = await lost;
      model = undefined;
      if (closed) break;
      log.warn("amqp connection lost; reconnecting", { url: safe(current), err });
      if (Date.now() - connectedAt > 10_000) losses = 0;
      // with other nodes to try, the first attempt goes to the next one at once
      if (targets.length === 1 || losses > 0) await sleep(backoffDelay(losses), abort.signal).catch(noop);
      losses++;
    }
  })();

  function keep<C extends Channel>(spec: ChannelSpec<C>, confirm: boolean): KeptChannel<C> {
    let ch: C | undefined;
    let stopped = false;
    let running = false;
    let failures = 0;
    let openedAt = 0;
    const stopSignal = new AbortController();
    let firstSettled: () => void = noop;
    const settled = new Promise<void>((resolve) => (firstSettled = resolve));
    if (!model) firstSettled();

    const loop = async () => {
      if (running || stopped) return;
      running = true;
      try {
        while (!stopped && model && !ch) {
          const m = model;
          let c: C | undefined;
          let open = true;
          try {
            c = (confirm ? await m.createConfirmChannel() : await m.createChannel()) as C;
            const self = c;
            self.on("error", (err) => log.warn("amqp channel error", { channel: spec.name, err }));
            self.once("close", () => {
              open = false;
              onClosed(self);
            });
            await spec.setup(self);
            if (!open) throw new Error("channel closed during setup");
            if (stopped) {
              await self.close().catch(noop);
              break;
            }
            ch = self;
            openedAt = Date.now();
            spec.onOpen?.(self);
            firstSettled();
          } catch (err) {
            if (open) c?.close().catch(noop);
            firstSettled();
            if (stopped) break;
            if (model === m) log.warn("amqp channel setup failed; retrying", { channel: spec.name, err, attempt: failures });
            await sleep(backoffDelay(failures++), stopSignal.signal).catch(noop);
          }
        }
      } finally {
        running = false;
      }
    };

    const onClosed = (c: C) => {
      if (ch !== c) return;
      ch = undefined;
      spec.onClose?.(c);
      if (stopped) return;
      if (Date.now() - openedAt > 5000) failures = 0;
      void sleep(backoffDelay(failures++), stopSignal.signal).then(loop, noop);
    };

    const keeper: Keeper = {
      kick: () => void loop(),
      stop: async () => {
        stopped = true;
        stopSignal.abort();
        keepers.delete(keeper);
        const c = ch;
        ch = undefined;
        if (c) {
          spec.onClose?.(c);
          await c.close().catch(noop);
        }
      },
    };
    keepers.add(keeper);
    void loop();
    return { current: () => ch, settled: () => settled, stop: keeper.stop };
  }

  return {
    ready: () => model !== undefined,
    whenReady: (signal) => {
      if (model) return Promise.resolve();
      if (closed) return Promise.reject(new Error("amqp connection closed"));
      return new Promise<void>((resolve, reject) => {
        const w = {
          resolve: () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          },
          reject: (err: unknown) => {
            signal?.removeEventListener("abort", onAbort);
            reject(err);
          },
        };
        const onAbort = () => {
          readyWaiters.delete(w);
          reject(signal!.reason);
        };
        if (signal?.aborted) return reject(signal.reason);
        signal?.addEventListener("abort", onAbort, { once: true });
        readyWaiters.add(w);
      });
    },
    keepChannel: (spec) => keep(spec, false),
    keepConfirmChannel: (spec) => keep(spec, true),
    close: async () => {
      if (closed) return run;
      closed = true;
      abort.abort();
      for (const w of readyWaiters) w.reject(new Error("amqp connection closed"));
      readyWaiters.clear();
      await Promise.all([...keepers].map((k) => k.stop()));
      const m = model;
      if (m) await m.close().catch(noop);
      await run;
    },
  };
}
