// The peer for issue 10: what people run instead of this project. A Socket.IO 4 server on Bun,
// joined to its siblings by @socket.io/redis-adapter over one Redis. Persists nothing.
// SOCKETIO_ENGINE=node (default): Socket.IO's default set-up, engine.io on node:http (Bun's polyfill);
// SOCKETIO_ENGINE=bun: @socket.io/bun-engine on Bun.serve, the engine Socket.IO ships for Bun.
//
// Protocol (what `bun run bench --target socketio` speaks):
// - connect with `?token=<HS256 JWT whose sub is the user>` (JWT_SECRET, the gateway's check);
//   the socket joins the room `u:<user>`; a bad or missing token is refused at the handshake.
// - emit "send" { id, to, body } with an ack callback: the server emits "message"
//   { msgId, id, from, body } to the room `u:<to>` (on every instance, through the adapter) and
//   then acks { msgId }. A malformed send is acked with { error: "bad_request" }.
//
// Entry: `bun run scripts/peer/socketio-server.ts --port P` with REDIS_URL, JWT_SECRET and SOCKETIO_ENGINE;
// prints `listening on http://127.0.0.1:<port>` once it serves (what scripts/cluster.ts spawnService waits for).
import { Server as BunEngine } from "@socket.io/bun-engine";
import { createAdapter } from "@socket.io/redis-adapter";
import Redis from "ioredis";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import { verifyUserToken } from "../../services/ws/auth.ts";

const { values } = parseArgs({ args: Bun.argv.slice(2), options: { port: { type: "string", default: "0" } }, strict: true });
const port = Number(values.port);
const redisUrl = process.env.REDIS_URL;
const jwtSecret = process.env.JWT_SECRET;
const engine = process.env.SOCKETIO_ENGINE ?? "node";
if (!Number.isInteger(port) || port < 0 || port > 65535 || (engine !== "node" && engine !== "bun") || !redisUrl || !jwtSecret) {
  console.error("socketio-server: needs --port 0..65535, REDIS_URL, JWT_SECRET and SOCKETIO_ENGINE node (default) or bun");
  process.exit(2);
}

const pub = new Redis(redisUrl, { lazyConnect: true });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const io = new Server({ transports: ["websocket"], serveClient: false, adapter: createAdapter(pub, sub) });
const tag = `${process.pid.toString(36)}-${Date.now().toString(36)}`;
let seq = 0;

io.use(async (socket, next) => {
  const token = await verifyUserToken(socket.handshake.query.token as string | undefined, jwtSecret);
  if (!token) return next(new Error("unauthorized"));
  socket.data.user = token.user;
  next();
});

io.on("connection", (socket) => {
  const from: string = socket.data.user;
  void socket.join(`u:${from}`);
  socket.on("send", (m: { id?: unknown; to?: unknown; body?: unknown }, ack?: (r: unknown) => void) => {
    if (typeof ack !== "function") return;
    if (!m || typeof m.to !== "string" || typeof m.body !== "string") return ack({ error: "bad_request" });
    const msgId = `${tag}-${seq++}`;
    io.to(`u:${m.to}`).emit("message", { msgId, id: m.id, from, body: m.body });
    ack({ msgId });
  });
});

let url: string;
if (engine === "bun") {
  const eng = new BunEngine({ path: "/socket.io/" });
  io.bind(eng);
  url = Bun.serve({ hostname: "127.0.0.1", port, ...eng.handler() }).url.origin;
} else {
  const http = createServer((_, res) => res.writeHead(404).end());
  io.attach(http);
  await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
  const addr = http.address();
  url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : port}`;
}
console.log(`listening on ${url} (${engine} engine)`);

const stop = () => {
  io.close();
  pub.disconnect();
  sub.disconnect();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
