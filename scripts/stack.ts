import { parseArgs } from "node:util";
import { startStack } from "./stack-lib.ts";

const HELP = `bun run stack [--ws N]

Starts the distributed topology on this machine: real Redis, RabbitMQ and PostgreSQL (from
REDIS_URL/AMQP_URL/DATABASE_URL when set, else started from local binaries in a temp dir),
migrations, one discover, N ws instances (default 2) and one persist. Ctrl-C stops everything.`;

let ws = 2;
try {
  const { values } = parseArgs({ args: Bun.argv.slice(2), options: { ws: { type: "string" }, help: { type: "boolean" } }, strict: true });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  if (values.ws !== undefined) {
    ws = Number(values.ws);
    if (!Number.isInteger(ws) || ws < 1 || ws > 16) throw new Error(`--ws must be a whole number from 1 to 16 (got ${values.ws})`);
  }
} catch (e) {
  console.error(`stack: ${(e as Error).message}\n\n${HELP}`);
  process.exit(2);
}

const stack = await startStack({ ws });
const c = stack.cluster;
console.log(`
stack is up
  redis      ${stack.env.REDIS_URL}
  rabbitmq   ${stack.env.AMQP_URL}
  postgres   ${stack.env.DATABASE_URL}
  discover   ${c.discoverUrl}
  persist    ${c.persistUrl}
${c.wsUrls.map((u, i) => `  ws${i + 1}        ${u}   (client: ${u}/client/)`).join("\n")}

  JWT_SECRET=${c.jwtSecret}
  INTERNAL_SECRET=${c.internalSecret}
  bench against it: bun run bench --ws ${c.wsUrls.join(",")} --jwt-secret ${c.jwtSecret} --database-url ${stack.env.DATABASE_URL}

Ctrl-C to stop.`);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log("stopping ...");
  await stack.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
