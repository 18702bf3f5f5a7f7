import type { Redis } from "../../shared/redis.ts";
import type { RevocationEvent, Revocations } from "./revocations.ts";

/**
 * Revocations in Redis: `<prefix>rv:v:<user>` holds a version (INCR), `<prefix>rv:t:<id>` a denied
 * token until its expiry; events go over the channel `<prefix>revocations`. `subscriber` is a
 * connection of its own (Redis puts a subscribing connection in a mode that runs nothing else);
 * ioredis subscribes again after a reconnect.
 */
export function createRedisRevocations(redis: Redis, subscriber: Redis, opts: { prefix?: string } = {}): Revocations & { close(): Promise<void> } {
  const prefix = opts.prefix ?? "chat:";
  const channel = `${prefix}revocations`;
  const listeners = new Set<(e: RevocationEvent) => void>();
  let subscribed: Promise<unknown> | null = null;
  const listen = () => subscriber.subscribe(channel).catch(() => {});
  const onMessage = (ch: string, raw: string) => {
    if (ch !== channel) return;
    let e: RevocationEvent;
    try {
      e = JSON.parse(raw);
    } catch {
      return;
    }
    for (const fn of listeners) fn(e);
  };
  const publish = (e: RevocationEvent) => redis.publish(channel, JSON.stringify(e));
  return {
    async version(user) {
      return Number((await redis.get(`${prefix}rv:v:${user}`)) ?? 0);
    },
    async bump(user) {
      const v = await redis.incr(`${prefix}rv:v:${user}`);
      await publish({ user, version: v });
      return v;
    },
    async revokeToken(user, tokenId, untilMs) {
      const key = `${prefix}rv:t:${tokenId}`;
      if (untilMs === null) await redis.set(key, user);
      else if (untilMs > Date.now()) await redis.set(key, user, "PXAT", untilMs);
      await publish({ user, tokenId });
    },
    async isRevoked(tokenId) {
      return (await redis.exists(`${prefix}rv:t:${tokenId}`)) === 1;
    },
    async subscribe(fn) {
      if (!subscribed) {
        subscriber.on("message", onMessage);
        subscriber.on("ready", listen);
        subscribed = subscriber.status === "ready" ? listen() : Promise.resolve();
      }
      listeners.add(fn);
      await subscribed;
      return () => void listeners.delete(fn);
    },
    async close() {
      listeners.clear();
      subscriber.off("message", onMessage);
      subscriber.off("ready", listen);
      if (subscribed) await subscriber.unsubscribe(channel).catch(() => {});
    },
  };
}
