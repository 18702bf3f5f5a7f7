import { and, desc, eq, inArray, isNull, ne, notInArray, or } from "drizzle-orm";
import type { Db } from "../../shared/db/index.ts";
import { pushSubscriptions } from "../../shared/db/schema.ts";

/** A browser's Web Push subscription (the JSON of its `PushSubscription`, keys base64url). */
export interface PushSubscription {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** Subscriptions a user may keep; subscribing past it drops their oldest. */
export const MAX_SUBSCRIPTIONS_PER_USER = 20;

/**
 * Saves `sub` for `user`, made in the sign-in `sessionId` (the token's `sid`; null for a token
 * without one). The endpoint names one browser, so an existing row (any user's) is replaced.
 */
export async function saveSubscription(db: Db, user: string, sessionId: string | null, sub: PushSubscription): Promise<void> {
  const row = { endpoint: sub.endpoint, userId: user, p256dh: sub.keys.p256dh, auth: sub.keys.auth, sessionId };
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

/** A session was logged out: the browsers subscribed in it get no more of the user's notifications. */
export async function dropSessionSubscriptions(db: Db, user: string, sessionId: string): Promise<void> {
  await db.delete(pushSubscriptions).where(and(eq(pushSubscriptions.userId, user), eq(pushSubscriptions.sessionId, sessionId)));
}

/**
 * Every session of the user ended (logout-all, password change): their subscriptions go, except,
 * with `keep`, those of the caller's session, which move to the session that replaces it.
 */
export async function dropUserSubscriptions(db: Db, user: string, keep?: { sessionId: string | null; movedTo: string }): Promise<void> {
  const mine = eq(pushSubscriptions.userId, user);
  if (!keep?.sessionId) return void (await db.delete(pushSubscriptions).where(mine));
  await db.delete(pushSubscriptions).where(and(mine, or(isNull(pushSubscriptions.sessionId), ne(pushSubscriptions.sessionId, keep.sessionId))));
  await db.update(pushSubscriptions).set({ sessionId: keep.movedTo }).where(and(mine, eq(pushSubscriptions.sessionId, keep.sessionId)));
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
