import { and, eq, gt, inArray, isNull, lt, sql } from "drizzle-orm";
import { executePrepared, type Db } from "../../shared/db/index.ts";
import { rowsOf } from "../../shared/db/messages.ts";
import { groupMembers, groups, refreshTokens, users } from "../../shared/db/schema.ts";
import type { GroupRole, GroupView, MemberChange } from "../../shared/protocol.ts";

export type { GroupRole, GroupView, MemberChange };

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

/** Sets the hash only if it is still `old` (a rehash at login must not undo a password change that raced it). */
export async function replacePasswordHash(db: Db, id: string, old: string, passwordHash: string): Promise<boolean> {
  const rows = await db.update(users).set({ passwordHash }).where(and(eq(users.id, id), eq(users.passwordHash, old))).returning({ id: users.id });
  return rows.length > 0;
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

/** A membership change the caller may not make: the HTTP status and the reason. */
export class GroupRefused extends Error {
  constructor(
    readonly status: 400 | 403 | 404,
    message: string,
  ) {
    super(message);
  }
}

export async function createGroup(db: Db, id: string, name: string, creator: string, members: string[]): Promise<GroupView> {
  const all = [...new Set([creator, ...members])];
  await db.transaction(async (tx) => {
    await tx.insert(groups).values({ id, name, creator });
    await tx.insert(groupMembers).values(all.map((userId) => ({ groupId: id, userId, role: userId === creator ? "owner" : "member" })));
  });
  return { groupId: id, name, members: all.sort(), creator, owner: creator, admins: [], version: 0 };
}

const viewOf = (g: { groupId: string; name: string; creator: string; version: number }, rows: Array<{ member: string; role: string }>): GroupView => ({
  ...g,
  members: rows.map((r) => r.member),
  owner: rows.find((r) => r.role === "owner")?.member ?? null,
  admins: rows.filter((r) => r.role === "admin").map((r) => r.member),
});

export async function groupsOf(db: Db, user: string): Promise<GroupView[]> {
  const mine = db.select({ g: groupMembers.groupId }).from(groupMembers).where(eq(groupMembers.userId, user));
  const rows = await db
    .select({ groupId: groups.id, name: groups.name, creator: groups.creator, version: groups.version, member: groupMembers.userId, role: groupMembers.role })
    .from(groups)
    .innerJoin(groupMembers, eq(groupMembers.groupId, groups.id))
    .where(inArray(groups.id, mine))
    .orderBy(groups.createdAt, groups.id, groupMembers.userId);
  const byGroup = new Map<string, typeof rows>();
  for (const r of rows) {
    let l = byGroup.get(r.groupId);
    if (!l) byGroup.set(r.groupId, (l = []));
    l.push(r);
  }
  return [...byGroup.values()].map((l) => viewOf(l[0]!, l));
}

/** One group as its members see it, or null when it does not exist. */
export async function groupView(db: Db, id: string): Promise<GroupView | null> {
  const [g] = await db.select({ groupId: groups.id, name: groups.name, creator: groups.creator, version: groups.version }).from(groups).where(eq(groups.id, id));
  if (!g) return null;
  const rows = await db
    .select({ member: groupMembers.userId, role: groupMembers.role })
    .from(groupMembers)
    .where(eq(groupMembers.groupId, id))
    .orderBy(groupMembers.userId);
  return viewOf(g, rows);
}

export async function groupInfo(db: Db, id: string): Promise<{ creator: string; members: string[] } | null> {
  return groupView(db, id);
}

type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];

/** What a membership change did, and the group right after it (read in the same transaction). */
export interface MembershipOutcome {
  changes: MemberChange[];
  group: GroupView;
}

/**
 * Runs `fn` on the group's members (in joining order) with the group's row locked: membership
 * changes of one group are serialised (two owners leaving at once still leave exactly one owner),
 * and each one that changes something increments the group's version. 404 for no group.
 */
async function withMembers(db: Db, groupId: string, fn: (tx: Tx, roles: Map<string, GroupRole>) => Promise<MemberChange[]>): Promise<MembershipOutcome> {
  return db.transaction(async (tx) => {
    const [g] = await tx
      .select({ groupId: groups.id, name: groups.name, creator: groups.creator, version: groups.version })
      .from(groups)
      .where(eq(groups.id, groupId))
      .for("update");
    if (!g) throw new GroupRefused(404, "no such group");
    const rows = await tx
      .select({ u: groupMembers.userId, role: groupMembers.role })
      .from(groupMembers)
      .where(eq(groupMembers.groupId, groupId))
      .orderBy(groupMembers.joinedAt, groupMembers.userId);
    const changes = await fn(tx, new Map(rows.map((r) => [r.u, r.role as GroupRole])));
    if (changes.length > 0) {
      g.version++;
      await tx.update(groups).set({ version: g.version }).where(eq(groups.id, groupId));
    }
    const after = await tx
      .select({ member: groupMembers.userId, role: groupMembers.role })
      .from(groupMembers)
      .where(eq(groupMembers.groupId, groupId))
      .orderBy(groupMembers.userId);
    return { changes, group: viewOf(g, after) };
  });
}

const setRoleRow = (tx: Tx, groupId: string, userId: string, role: GroupRole) =>
  tx.update(groupMembers).set({ role }).where(and(eq(groupMembers.groupId, groupId), eq(groupMembers.userId, userId)));

/** Any member may add (the contract); adding a member again changes nothing (no change returned). */
export async function addMember(db: Db, groupId: string, userId: string, by: string): Promise<MembershipOutcome> {
  return withMembers(db, groupId, async (tx, roles) => {
    if (!roles.has(by)) throw new GroupRefused(403, "only members may add members");
    if (roles.has(userId)) return [];
    await tx.insert(groupMembers).values({ groupId, userId, role: "member" });
    return [{ action: "added", user: userId, by }];
  });
}

/**
 * A member may leave; the owner may remove anyone, an admin only plain members. When the owner
 * leaves, the longest-standing admin (else the longest-standing member; ties by user id) becomes
 * the owner: a second change says so.
 */
export async function removeMember(db: Db, groupId: string, userId: string, by: string): Promise<MembershipOutcome> {
  return withMembers(db, groupId, async (tx, roles) => {
    const target = roles.get(userId);
    if (userId !== by) {
      const mine = roles.get(by);
      if (mine !== "owner" && mine !== "admin") throw new GroupRefused(403, "only the group's owner or an admin may remove others");
      if (mine === "admin" && target !== undefined && target !== "member") throw new GroupRefused(403, "an admin may remove members only, not the owner or other admins");
    }
    if (target === undefined) throw new GroupRefused(404, "not a member");
    await tx.delete(groupMembers).where(and(eq(groupMembers.groupId, groupId), eq(groupMembers.userId, userId)));
    const changes: MemberChange[] = [{ action: userId === by ? "left" : "removed", user: userId, by }];
    roles.delete(userId);
    if (target === "owner") {
      // roles is in joining order
      const next = [...roles].find(([, r]) => r === "admin")?.[0] ?? roles.keys().next().value;
      if (next !== undefined) {
        await setRoleRow(tx, groupId, next, "owner");
        changes.push({ action: "role", user: next, role: "owner", by });
      }
    }
    return changes;
  });
}

/**
 * The owner makes a member an admin or a plain member again, or hands ownership on ("owner": the
 * caller becomes an admin). Setting the role a member has changes nothing.
 */
export async function setRole(db: Db, groupId: string, userId: string, role: GroupRole, by: string): Promise<MembershipOutcome> {
  return withMembers(db, groupId, async (tx, roles) => {
    if (roles.get(by) !== "owner") throw new GroupRefused(403, "only the group's owner may change roles");
    const current = roles.get(userId);
    if (current === undefined) throw new GroupRefused(404, "not a member");
    if (userId === by) throw new GroupRefused(400, "the owner hands ownership on by making another member the owner");
    if (current === role) return [];
    await setRoleRow(tx, groupId, userId, role);
    const changes: MemberChange[] = [{ action: "role", user: userId, role, by }];
    if (role === "owner") {
      await setRoleRow(tx, groupId, by, "admin");
      changes.push({ action: "role", user: by, role: "admin", by });
    }
    return changes;
  });
}

/**
 * Members of many groups in one query (every tick with group sends or typing): the ids as one JSON
 * parameter, so the statement's text is the same for any number of groups and it runs prepared.
 */
export async function membersOf(db: Db, groupIds: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(groupIds.map((g) => [g, []]));
  if (groupIds.length === 0) return out;
  const rows = rowsOf<{ g: string; u: string }>(
    await executePrepared(db, sql`select group_id as g, user_id as u from group_members
      where group_id in (select value from json_array_elements_text(${JSON.stringify(groupIds)}::json))`),
  );
  for (const r of rows) out.get(r.g)?.push(r.u);
  return out;
}

/** The names of the groups among `ids` that exist. */
export async function groupNames(db: Db, ids: string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const rows = await db.select({ id: groups.id, name: groups.name }).from(groups).where(inArray(groups.id, ids));
  return new Map(rows.map((r) => [r.id, r.name]));
}
