import { migrateDatabase } from "../shared/db/index.ts";
import { startCluster, type Cluster } from "./cluster.ts";
import { startInfra, type Infra, type InfraService } from "./infra.ts";

export interface Stack {
  infra: Infra | null;
  cluster: Cluster;
  env: { REDIS_URL: string; AMQP_URL: string; DATABASE_URL: string };
  stop(): Promise<void>;
}

/**
 * The distributed topology on this machine: Redis, RabbitMQ and PostgreSQL from the given URLs or
 * started from local binaries, migrations applied, then discover, `ws` gateways and persist.
 */
export async function startStack(opts: { ws?: number; log?: (line: string) => void } = {}): Promise<Stack> {
  const missing = (["redis", "rabbit", "postgres"] as InfraService[]).filter(
    (s) => !process.env[{ redis: "REDIS_URL", rabbit: "AMQP_URL", postgres: "DATABASE_URL" }[s]],
  );
  const infra = missing.length ? await startInfra({ only: missing, log: opts.log }) : null;
  const env = {
    REDIS_URL: process.env.REDIS_URL ?? infra!.redis.url,
    AMQP_URL: process.env.AMQP_URL ?? infra!.rabbit.url,
    DATABASE_URL: process.env.DATABASE_URL ?? infra!.postgres.url,
  };
  Object.assign(process.env, env);
  try {
    await migrateDatabase(env.DATABASE_URL);
    const cluster = await startCluster({ ws: opts.ws ?? 2 });
    return {
      infra,
      cluster,
      env,
      async stop() {
        await cluster.stop();
        await infra?.stop();
      },
    };
  } catch (err) {
    await infra?.stop();
    throw err;
  }
}
