import type { Db } from "../../shared/db/index.ts";
import { historyToShare } from "../../shared/db/messages.ts";
import { newEvent } from "../../shared/events/registry.ts";
import type { Logger } from "../../shared/log.ts";
import type { GroupRole, GroupView } from "../../shared/protocol.ts";
import type { Delivery as StreamDelivery } from "./delivery.ts";
import type { Pipeline } from "./pipeline.ts";
import type { Router } from "./router.ts";
import * as store from "./store.ts";

/** How many of the group's latest messages a new member is given (docs/api.md). */
export const SHARED_HISTORY = 100;

/**
 * Group membership, as the HTTP routes change it. Each change is committed, then:
 * - a member who was added gets the group's latest SHARED_HISTORY messages (those the member who
 *   added them holds) in their own stream, in their order, before anything else is told;
 * - a `member` stream event (shared/events/members.ts) records it in the streams of the members at
 *   the time and of a member who left or was removed: the notice, ordered with the messages;
 * - a `group` frame with the group as it now is goes to every connection of every member (and of a
 *   member who left or was removed, with `group: null`), on every instance.
 * Each step is done before the route answers.
 * Refusals throw store.GroupRefused.
 */
export function createGroups(opts: { db: Db; pipeline: Pipeline; router: Router; stream: StreamDelivery; log: Logger }) {
  const { db } = opts;

  /**
   * The notice of each change, in order, in the streams of the members at the time (and of the
   * member who left or was removed). Never rejects: the change is committed whatever happens to
   * its notice (a queue outage loses the notice, not the change).
   */
  async function notify(groupId: string, { changes, group }: store.MembershipOutcome) {
    for (const change of changes) {
      const data: Record<string, unknown> = { action: change.action, user: change.user };
      if (change.action === "role") data.role = change.role;
      const rcpt = [...new Set([...group.members, change.user])];
      const e = newEvent({ kind: "member", from: change.by, key: crypto.randomUUID(), group: groupId, data });
      await opts.pipeline.send({ ...e, rcpt }).catch((err) => opts.log.warn("a membership notice could not be sent", { err, groupId, change }));
    }
  }

  /**
   * The `group` frame of each change, with the group as the change left it (and its version), to
   * every connection of its members, and of a member who is gone (`group: null`).
   */
  async function announce(groupId: string, { changes, group }: store.MembershipOutcome) {
    const { version, members } = group;
    for (const change of changes) {
      await opts.router.push(members, { type: "group", groupId, version, change, group });
      if (!members.includes(change.user) && change.action !== "role") {
        await opts.router.push([change.user], { type: "group", groupId, version, change, group: null });
      }
    }
  }

  const changed = async (groupId: string, outcome: store.MembershipOutcome) => {
    await notify(groupId, outcome);
    await announce(groupId, outcome);
  };

  /** Never rejects: a member added is a member even if their history could not be shared. */
  async function shareHistory(groupId: string, user: string, by: string) {
    try {
      await opts.stream.awaitWritten(by);
      const ms = await historyToShare(db, by, user, `g:${groupId}`, SHARED_HISTORY);
      await opts.pipeline.share(
        ms.map(({ position: _, ...m }) => m),
        user,
      );
    } catch (err) {
      opts.log.warn("could not share a group's history with a new member", { err, groupId, user });
    }
  }

  return {
    async create(creator: string, name: string, members: string[]): Promise<GroupView> {
      const id = "g_" + crypto.randomUUID().replaceAll("-", "").slice(0, 20);
      const g = await store.createGroup(db, id, name, creator, members);
      await changed(id, { changes: [{ action: "created", user: creator, by: creator }], group: g });
      return g;
    },
    async add(groupId: string, user: string, by: string): Promise<void> {
      const outcome = await store.addMember(db, groupId, user, by);
      if (outcome.changes.length) await shareHistory(groupId, user, by);
      await changed(groupId, outcome);
    },
    async remove(groupId: string, user: string, by: string): Promise<void> {
      await changed(groupId, await store.removeMember(db, groupId, user, by));
    },
    async setRole(groupId: string, user: string, role: GroupRole, by: string): Promise<void> {
      await changed(groupId, await store.setRole(db, groupId, user, role, by));
    },
  };
}
export type Groups = ReturnType<typeof createGroups>;
