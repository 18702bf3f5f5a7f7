import type { ServerFrame } from "../../shared/protocol.ts";
import type { Conn } from "./connections.ts";

export function sendFrame(ws: Conn, f: ServerFrame) {
  ws.send(JSON.stringify(f));
}
