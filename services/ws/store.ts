import { and, eq, gt, inArray, isNull, lt, sql } from "drizzle-orm";
import type { Db } from "../../shared/db/index.ts";
import { groupMembers, groups, refreshTokens, users } from "../../shared/db/schema.ts";

/** Accounts and groups in the database (the gateway is their only writer). */

const lowerId = sql`lower(${users.id})`;

/** False when the id is taken in any letter case (the unique index on lower(id) settles races). */
export async function createUser(db: Db, id: string, passwordHash: string): Promise<boolean> {
  if ((await canonicalIds(db, [id])).size > 0) return false;
  const r = await db.insert(users).values({ id, passwordHash }).onConflictDoNothing().returning({ id: users.id });
  return r.length === 1;
}

/** Registered users matching `ids` regardless of case: lower-cased id -> the id as registered. */
export async function canonicalIds(db: Db, ids: string[]): Promise<Map<string, string>> {
  const lower = [...new Set(ids.map((u) => u.toLowerCase()))];
  if (lower.length === 0) return new Map();
  const rows = await db.select({ id: users.id }).from(users).where(inArray(lowerId, lower));
  return new Map(rows.map((r) => [r.id.toLowerCase(), r.id]));
}

export async function passwordHashOf(db: Db, id: string): Promise<string | null> {
  const [r] = await db.select({ h: users.passwordHash }).from(users).where(eq(users.id, id));
  return r?.h ?? null;
}

export async function setPasswordHash(db: Db, id: string, passwordHash: string): Promise<void> {
  await db.update(users).set({ passwordHash }).where(eq(users.id, id));
}

/** Refresh tokens: the random value goes to the client, only its SHA-256 is stored. */
const hashOf = (token: string) => new Bun.CryptoHasher("sha256").update(token).digest("hex");

export async function addRefreshToken(db: Db, userId: string, familyId: string, ttlMs: number): Promise<string> {
  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
  await db.insert(refreshTokens).values({ tokenHash: hashOf(token), userId, familyId, expiresAt: new Date(Date.now() + ttlMs) });
  // Expired rows are of no use, not even for reuse detection: each user's go when they get a new one.
  await db.delete(refreshTokens).where(and(eq(refreshTokens.userId, userId), lt(refreshTokens.expiresAt, new Date())));
  return token;
}

/** Whose refresh token this is (used or not), or null. */
export async function refreshTokenUser(db: Db, token: string): Promise<string | null> {
  const [r] = await db.select({ u: refreshTokens.userId }).from(refreshTokens).where(eq(refreshTokens.tokenHash, hashOf(token)));
  return r?.u ?? null;
}

export type RefreshOutcome = { ok: true; userId: string; familyId: string } | { ok: false; reused: boolean };

/**
 * Uses a refresh token once: marks it used and answers its user and family. A token used before
 * (a copy, or a replay) revokes its whole family and answers `reused`. Unknown, expired and
 * revoked tokens fail.
 */
export async function useRefreshToken(db: Db, token: string): Promise<RefreshOutcome> {
  const h = hashOf(token);
  const [row] = await db
    .update(refreshTokens)
    .set({ usedAt: new Date() })
    .where(and(eq(refreshTokens.tokenHash, h), isNull(refreshTokens.usedAt), isNull(refreshTokens.revokedAt), gt(refreshTokens.expiresAt, new Date())))
    .returning({ userId: refreshTokens.userId, familyId: refreshTokens.familyId });
  if (row) return { ok: true, ...row };
  const [seen] = await db.select({ familyId: refreshTokens.familyId, usedAt: refreshTokens.usedAt }).from(refreshTokens).where(eq(refreshTokens.tokenHash, h));
  if (seen?.usedAt) {
    await revokeFamily(db, seen.familyId);
    return { ok: false, reused: true };
  }
  return { ok: false, reused: false };
}

export async function revokeFamily(db: Db, familyId: string): Promise<void> {
  await db.update(refreshTokens).set({ revokedAt: new Date() }).where(and(eq(refreshTokens.familyId, familyId), isNull(refreshTokens.revokedAt)));
}

export async function revokeAllRefreshTokens(db: Db, userId: string): Promise<void> {
  await db.update(refreshTokens).set({ revokedAt: new Date() }).where(and(eq(refreshTokens.userId, userId), isNull(refreshTokens.revokedAt)));
}

export interface GroupView {
  groupId: string;
  name: string;
  members: string[];
  /** An addition to the contract's shape: the creator may remove other members. */
  creator: string;
}

export async function createGroup(db: Db, id: string, name: string, creator: string, members: string[]): Promise<GroupView> {
  const all = [...new Set([creator, ...members])];
  await db.transaction(async (tx) => {
    await tx.insert(groups).values({ id, name, creator });
    await tx.insert(groupMembers).values(all.map((userId) => ({ groupId: id, userId })));
  });
  return { groupId: id, name, members: all, creator };
}

export async function groupsOf(db: Db, user: string): Promise<GroupView[]> {
  const mine = db.select({ g: groupMembers.groupId }).from(groupMembers).where(eq(groupMembers.userId, user));
  const rows = await db
    .select({ groupId: groups.id, name: groups.name, creator: groups.creator, member: groupMembers.userId })
    .from(groups)
    .innerJoin(groupMembers, eq(groupMembers.groupId, groups.id))
    .where(inArray(groups.id, mine))
    .orderBy(groups.createdAt, groups.id, groupMembers.userId);
  const out = new Map<string, GroupView>();
  for (const r of rows) {
    let g = out.get(r.groupId);
    if (!g) out.set(r.groupId, (g = { groupId: r.groupId, name: r.name, members: [], creator: r.creator }));
    g.members.push(r.member);
  }
  return [...out.values()];
}

export async function groupInfo(db: Db, id: string): Promise<{ creator: string; members: string[] } | null> {
  const [g] = await db.select({ creator: groups.creator }).from(groups).where(eq(groups.id, id));
  if (!g) return null;
  const ms = await db.select({ u: groupMembers.userId }).from(groupMembers).where(eq(groupMembers.groupId, id));
  return { creator: g.creator, members: ms.map((m) => m.u) };
}

export async function addMember(db: Db, groupId: string, userId: string): Promise<void> {
  await db.insert(groupMembers).values({ groupId, userId }).onConflictDoNothing();
}

export async function removeMember(db: Db, groupId: string, userId: string): Promise<void> {
  await db.delete(groupMembers).where(and(eq(groupMembers.groupId, groupId), eq(groupMembers.userId, userId)));
}

/** Members of many groups in one query. */
export async function membersOf(db: Db, groupIds: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(groupIds.map((g) => [g, []]));
  if (groupIds.length === 0) return out;
  const rows = await db.select({ g: groupMembers.groupId, u: groupMembers.userId }).from(groupMembers).where(inArray(groupMembers.groupId, groupIds));
  for (const r of rows) out.get(r.g)?.push(r.u);
  return out;
}

/** The names of the groups among `ids` that exist. */
export async function groupNames(db: Db, ids: string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const rows = await db.select({ id: groups.id, name: groups.name }).from(groups).where(inArray(groups.id, ids));
  return new Map(rows.map((r) => [r.id, r.name]));
}
