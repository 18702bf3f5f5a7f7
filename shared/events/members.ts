import { GROUP_ROLES, SendError, USER_ID_RE, type ChatMessage } from "../protocol.ts";
import type { EventKind } from "./kind.ts";

/**
 * Group membership notices (issue 15, item 5): "alice added carol", "bob left", "carol is now the
 * owner". Made by the gateway's group routes after the change is committed (never by a client),
 * with `from` the member who made the change, `group` the group, `data` {action, user, role?}
 * (MemberChange in shared/protocol.ts), and `rcpt` already set to the members at the time of the
 * change, plus the member who left or was removed. Shown in history; nothing else to store
 * (group_members is the state).
 */
const ACTIONS = new Set(["created", "added", "left", "removed", "role"]);

export const memberKind: EventKind = {
  kind: "member",
  inHistory: true,
  async accept(e: ChatMessage) {
    const d = e.data ?? {};
    if (e.group === undefined || !e.rcpt?.length) throw new SendError("bad_request", "membership notices are made by the server");
    if (typeof d.action !== "string" || !ACTIONS.has(d.action)) throw new SendError("bad_request", "data.action is not a membership change");
    if (typeof d.user !== "string" || !USER_ID_RE.test(d.user)) throw new SendError("bad_request", "data.user is not a user id");
    if ((d.action === "role") !== ((GROUP_ROLES as readonly unknown[]).includes(d.role))) throw new SendError("bad_request", "data.role is a role exactly for a role change");
    return e.rcpt;
  },
  frame: (e) => {
    const d = e.data as { action: string; user: string; role?: string };
    return d.role === undefined ? { action: d.action, user: d.user } : { action: d.action, user: d.user, role: d.role };
  },
};
