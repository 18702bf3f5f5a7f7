import { flagValues, num, UsageError } from "../bench/options.ts";

export { UsageError };

/** Connections one driver process may hold: the open-files limit here is 20,000 per process. */
export const MAX_PER_DRIVER = 19_000;
/** Connections per destination address: the ephemeral port range (32768–60999) is per destination. */
export const MAX_PER_ADDRESS = 25_000;

export const HELP = `bun run bench:conns [options]

Connection benchmark. Starts Redis, RabbitMQ and PostgreSQL (from local binaries), discover, persist
and --gateways gateway processes that share one client port (REUSE_PORT=1, each with its own
internal API port), then opens --connections idle authenticated WebSockets from --drivers driver
processes, spread over the destination addresses 127.0.0.1 … 127.0.0.<--addresses> (the gateways
bind 0.0.0.0; the ephemeral port range is per destination address). Every client does what a real
one does (docs/api.md): connect with a valid token, send \`sync\` (from its last cursor once it has
one), and counts as connected once the \`synced\` answer came (which also means the directory
routes it to its gateway).

Reports: connections held per gateway (its ws_connections gauge), gateway RSS per connection
((RSS after - RSS before) / connections, per process, from /proc; "after" is the lowest RSS sampled
every second over --settle idle seconds once all are connected, so that garbage from the connect
burst that the next collection frees does not count), the time to connect all, and the server CPU
the connects cost: µs per connection, per server process (gateways, discover, persist, Redis,
RabbitMQ, PostgreSQL, each with its children; from /proc, from the drivers' start until the last
client was synced; the drivers are not counted), and the same processes' CPU while the clients
idle over the --settle seconds (ms of CPU per second: thousandths of a core). Without
--storm it then closes every client and reports, per gateway, the RSS that stays (the lowest over
--settle seconds once it holds no connection): kept per former connection ((RSS closed - RSS
before) / connections: memory the connect burst left behind) and held by the connections
((RSS after - RSS closed) / connections).

--storm: then kill -9 the first gateway. Its clients reconnect to the survivors on the shared port
(first attempt at a uniform random moment within --storm-window ms, then capped exponential
backoff with jitter after a failed attempt; a \`rate_limited\` or \`unavailable\` answer to a sync
is retried after a backoff) and sync from their last cursor. Reports the time from the kill until
every client is registered and synced again, the server CPU per reconnected client over that time
(the same processes), and the errors by code (error frames, and
connect_failed for attempts that did not open or closed before their sync was answered).

Bounded: stops by itself after --timeout seconds whatever happens (exit 1), targets only
127.0.0.0/8. Exit 0 when every client connected (and, with --storm, every client came back
without an error frame other than rate_limited), 1 otherwise, 2 on a bad option.

Options:
  --connections C   idle connections, 1..100000 (default 10000)
  --gateways K      gateway processes sharing the client port, 1..16 (default 1; --storm needs 2+)
  --drivers D       driver processes, 1..32 (default: connections / ${MAX_PER_DRIVER}, rounded up);
                    each holds at most ${MAX_PER_DRIVER} connections (open-files limit)
  --addresses A     destination addresses 127.0.0.1..127.0.0.A, 1..250 (default: connections /
                    20000, rounded up); at most ${MAX_PER_ADDRESS} connections per address
  --concurrency N   connection attempts in flight per driver while connecting, 1..10000 (default 500)
  --storm           kill -9 the first gateway after connecting and measure the reconnect storm
  --storm-window MS the window the dropped clients' first reconnects are spread over, 0..60000
                    (default 1000)
  --settle S        idle seconds after connecting over which RSS is sampled, 1..600 (default 15)
  --timeout S       the whole run's bound in seconds, 10..3600 (default 600)
  --json            print the summary as one JSON line too
  --help            this text
`;

export interface ConnsOptions {
  connections: number;
  gateways: number;
  drivers: number;
  addresses: number;
  concurrency: number;
  storm: boolean;
  stormWindowMs: number;
  settleSec: number;
  timeoutSec: number;
  json: boolean;
  help: boolean;
}

/** Parses bench:conns' command line; throws UsageError naming the bad option. */
export function parseConnsOptions(argv: string[]): ConnsOptions {
  const values = flagValues(argv, ["connections", "gateways", "drivers", "addresses", "concurrency", "storm-window", "settle", "timeout"], ["storm", "json", "help"]);
  const s = (k: string) => values[k] as string | undefined;
  const connections = num("connections", s("connections"), 10_000, 1, 100_000);
  const gateways = num("gateways", s("gateways"), 1, 1, 16);
  const drivers = num("drivers", s("drivers"), Math.ceil(connections / MAX_PER_DRIVER), 1, 32);
  const addresses = num("addresses", s("addresses"), Math.ceil(connections / 20_000), 1, 250);
  const concurrency = num("concurrency", s("concurrency"), 500, 1, 10_000);
  const storm = values.storm === true;
  const stormWindowMs = num("storm-window", s("storm-window"), 1000, 0, 60_000);
  const settleSec = num("settle", s("settle"), 15, 1, 600);
  const timeoutSec = num("timeout", s("timeout"), 600, 10, 3600);
  if (Math.ceil(connections / drivers) > MAX_PER_DRIVER)
    throw new UsageError(`--drivers ${drivers} would put ${Math.ceil(connections / drivers)} connections on one driver (at most ${MAX_PER_DRIVER}: open-files limit); give more drivers`);
  if (Math.ceil(connections / addresses) > MAX_PER_ADDRESS)
    throw new UsageError(`--addresses ${addresses} would put ${Math.ceil(connections / addresses)} connections on one destination address (at most ${MAX_PER_ADDRESS}: ephemeral ports); give more addresses`);
  if (drivers > connections) throw new UsageError(`--drivers ${drivers} is more than --connections ${connections}`);
  if (storm && gateways < 2) throw new UsageError("--storm needs --gateways 2 or more (the clients of the killed one reconnect to the others)");
  return { connections, gateways, drivers, addresses, concurrency, storm, stormWindowMs, settleSec, timeoutSec, json: values.json === true, help: values.help === true };
}
