import { and, desc, eq, inArray, notInArray } from "drizzle-orm";
import type { Db } from "../../shared/db/index.ts";
import { pushSubscriptions } from "../../shared/db/schema.ts";

/** A browser's Web Push subscription (the JSON of its `PushSubscription`, keys base64url). */
export interface PushSubscription {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** Subscriptions a user may keep; subscribing past it drops their oldest. */
export const MAX_SUBSCRIPTIONS_PER_USER = 20;

/** Saves `sub` for `user`; the endpoint names one browser, so an existing row (any user's) is replaced. */
export async function saveSubscription(db: Db, user: string, sub: PushSubscription): Promise<void> {
  const row = { endpoint: sub.endpoint, userId: user, p256dh: sub.keys.p256dh, auth: sub.keys.auth };
  await db
    .insert(pushSubscriptions)
    .values(row)
    .onConflictDoUpdate({ target: pushSubscriptions.endpoint, set: { ...row, createdAt: new Date() } });
  const keep = db
    .select({ endpoint: pushSubscriptions.endpoint })
    .from(pushSubscriptions)
    .where(eq(pushSubscriptions.userId, user))
    .orderBy(desc(pushSubscriptions.createdAt))
    .limit(MAX_SUBSCRIPTIONS_PER_USER);
  await db.delete(pushSubscriptions).where(and(eq(pushSubscriptions.userId, user), notInArray(pushSubscriptions.endpoint, keep)));
}

/** Removes `user`'s subscription at `endpoint`; false when they had none there. */
export async function removeSubscription(db: Db, user: string, endpoint: string): Promise<boolean> {
  const r = await db
    .delete(pushSubscriptions)
    .where(and(eq(pushSubscriptions.userId, user), eq(pushSubscriptions.endpoint, endpoint)))
    .returning({ endpoint: pushSubscriptions.endpoint });
  return r.length > 0;
}

/** Removes a subscription the push service said is gone (404/410), whoever holds it. */
export async function dropEndpoint(db: Db, endpoint: string): Promise<void> {
  await db.delete(pushSubscriptions).where(eq(pushSubscriptions.endpoint, endpoint));
}

/** Every subscription of each of `users`. */
export async function subscriptionsOf(db: Db, users: string[]): Promise<Map<string, PushSubscription[]>> {
  const out = new Map<string, PushSubscription[]>();
  if (users.length === 0) return out;
  const rows = await db.select().from(pushSubscriptions).where(inArray(pushSubscriptions.userId, users));
  for (const r of rows) {
    let list = out.get(r.userId);
    if (!list) out.set(r.userId, (list = []));
    list.push({ endpoint: r.endpoint, keys: { p256dh: r.p256dh, auth: r.auth } });
  }
  return out;
}
