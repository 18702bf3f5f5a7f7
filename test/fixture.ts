import { afterAll, beforeAll } from "bun:test";
import postgres from "postgres";
import { mintToken, TestClient } from "./client.ts";
import { startCluster, type Cluster } from "../scripts/cluster.ts";

/**
 * One cluster for a test file: started in beforeAll, stopped (with every client it connected and
 * its SQL client) in afterAll.
 */
export function useCluster(opts: { ws?: number; env?: Record<string, string> } = {}) {
  let cluster: Cluster | undefined;
  let sql: postgres.Sql | undefined;
  const clients: TestClient[] = [];
  beforeAll(async () => {
    cluster = await startCluster({ ws: opts.ws ?? 2, env: opts.env });
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await sql?.end();
    await cluster?.stop();
  });
  const the = () => {
    if (!cluster) throw new Error("the cluster is not started (use inside tests)");
    return cluster;
  };
  return {
    get cluster() {
      return the();
    },
    /** The first and second gateway's URL. */
    A: () => the().wsUrls[0]!,
    B: () => the().wsUrls[1]!,
    /** A postgres.js client on DATABASE_URL, opened on first use. */
    sql: () => (sql ??= postgres(process.env.DATABASE_URL!, { max: 2, onnotice: () => {} })),
    /** Closes `c` with the cluster. */
    track: (c: TestClient) => void clients.push(c),
    token: (user: string, extra?: Record<string, unknown>) => mintToken(user, the().jwtSecret, extra),
    /** Creates a group as `creator` (a minted token) on the first gateway; resolves its id. */
    async createGroup(creator: string, members: string[], name = "group"): Promise<string> {
      const res = await fetch(`${the().wsUrls[0]}/api/groups`, {
        method: "POST",
        headers: { authorization: `Bearer ${await mintToken(creator, the().jwtSecret)}`, "content-type": "application/json" },
        body: JSON.stringify({ name, members }),
      });
      if (res.status !== 201) throw new Error(`creating a group answered ${res.status}: ${await res.text()}`);
      return ((await res.json()) as { groupId: string }).groupId;
    },
    /** Connects `user` with a minted token; resolves once a ping was answered, i.e. the directory routes the user here. */
    async connect(url: string, user: string): Promise<TestClient> {
      const c = await TestClient.connect(url, user, await mintToken(user, the().jwtSecret));
      clients.push(c);
      c.send({ type: "ping" });
      await c.next((f) => f.type === "pong", "pong");
      return c;
    },
  };
}
