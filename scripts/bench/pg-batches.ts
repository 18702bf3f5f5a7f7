import { conversationKey, type StreamEntry } from "../../shared/db/messages.ts";
import type { ChatMessage } from "../../shared/protocol.ts";

const BODY = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";

/**
 * Batches of direct messages as persist stores them (pg-insert.ts, pg-inline.ts): each call gives
 * the next `size` messages among 1,000 users, each message with its sender's and its recipient's
 * entry at the message's number in epoch 1.
 */
export function directMessageBatches(size: number) {
  let n = 0;
  return (): { ms: ChatMessage[]; es: StreamEntry[] } => {
    const ms: ChatMessage[] = [];
    const es: StreamEntry[] = [];
    for (let i = 0; i < size; i++) {
      n++;
      const from = `user-${n % 1000}`;
      const to = `user-${(n + 500) % 1000}`;
      const m: ChatMessage = { msgId: `m-${n}-${crypto.randomUUID()}`, id: `c${n}`, from, to, body: `${BODY} ${n}`, ts: Date.now() };
      const conv = conversationKey(m);
      ms.push(m);
      es.push({ user: from, position: { epoch: 1, pos: n }, msgId: m.msgId, conv }, { user: to, position: { epoch: 1, pos: n }, msgId: m.msgId, conv });
    }
    return { ms, es };
  };
}
