import { parseArgs } from "node:util";
import { HA_HOSTS, startHaStack, startStack } from "./stack-lib.ts";

const HELP = `bun run stack [--ws N] | bun run stack --ha

Starts the distributed topology on this machine: real Redis, RabbitMQ and PostgreSQL (from
REDIS_URL/AMQP_URL/DATABASE_URL when set, else started from local binaries in a temp dir),
migrations, one discover, N ws instances (default 2) and one persist. Ctrl-C stops everything.

--ha starts the clustered topology as three hosts on the loopback addresses ${HA_HOSTS.join(", ")}:
a Redis Cluster (three masters, each with a replica on another host), three clustered RabbitMQ
nodes, PostgreSQL primary with a synchronous standby on another host, migrations, two discovers,
and a gateway and a persist on every host. Always from local binaries (REDIS_URL etc. ignored).`;

type StackArgs = { ha: false; ws: number } | { ha: true };

function parseStackArgs(argv: string[]): StackArgs | "help" {
  const { values } = parseArgs({
    args: argv,
    options: { ws: { type: "string" }, ha: { type: "boolean" }, help: { type: "boolean" } },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return "help";
  if (values.ha) {
    if (values.ws !== undefined) throw new Error("--ws does not apply with --ha (the HA topology runs one gateway on each of three hosts)");
    return { ha: true };
  }
  let ws = 2;
  if (values.ws !== undefined) {
    ws = Number(values.ws);
    if (!Number.isInteger(ws) || ws < 1 || ws > 16) throw new Error(`--ws must be a whole number from 1 to 16 (got ${values.ws})`);
  }
  return { ha: false, ws };
}

let args: StackArgs;
try {
  const parsed = parseStackArgs(Bun.argv.slice(2));
  if (parsed === "help") {
    console.log(HELP);
    process.exit(0);
  }
  args = parsed;
} catch (e) {
  console.error(`stack: ${(e as Error).message}\n\n${HELP}`);
  process.exit(2);
}

let stopFn: (() => Promise<void>) | undefined;
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  console.log("stopping ...");
  await stopFn?.();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

if (args.ha) {
  console.log(`starting the HA topology on ${HA_HOSTS.join(", ")} (takes a minute) ...`);
  const stack = await startHaStack({ log: (l) => console.log(`  ${l}`) });
  stopFn = stack.stop;
  if (stopping) await stack.stop();
  const rows = stack.hosts.flatMap((h) => h.processes.map((p, i) => [i === 0 ? h.ip : "", p.name, p.url]));
  const w = [0, 1].map((c) => Math.max(...rows.map((r) => r[c]!.length), c === 0 ? 4 : 7));
  const line = (r: string[]) => `  ${r[0]!.padEnd(w[0]!)}  ${r[1]!.padEnd(w[1]!)}  ${r[2]}`;
  console.log(`
HA stack is up
${line(["host", "process", "url"])}
${line(["-".repeat(w[0]!), "-".repeat(w[1]!), "---"])}
${rows.map(line).join("\n")}

  REDIS_URL=${stack.env.REDIS_URL}
  AMQP_URL=${stack.env.AMQP_URL}
  DATABASE_URL=${stack.env.DATABASE_URL}
  DISCOVER_URL=${stack.env.DISCOVER_URL}
  JWT_SECRET=${stack.jwtSecret}
  INTERNAL_SECRET=${stack.internalSecret}
  data directory: ${stack.infra.dir} (the operator's promotion: pg_ctl promote -D ${stack.infra.dir}/pg-standby/data)
  browser client: ${stack.gateways[0]!.url}/client/
  bench against it: bun run bench --ws ${stack.gateways.map((g) => g.url).join(",")} --jwt-secret ${stack.jwtSecret} --database-url '${stack.env.DATABASE_URL}'

Ctrl-C to stop.`);
} else {
  const stack = await startStack({ ws: args.ws });
  stopFn = stack.stop;
  if (stopping) await stack.stop();
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
  VAPID_PUBLIC_KEY=${c.vapid.publicKey} (Web Push, generated for this stack)
  bench against it: bun run bench --ws ${c.wsUrls.join(",")} --jwt-secret ${c.jwtSecret} --database-url ${stack.env.DATABASE_URL}

Ctrl-C to stop.`);
}
