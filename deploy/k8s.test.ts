// Checks deploy/k8s/ against the code: every manifest parses (Bun.YAML), every container runs the
// project's image (the one compose.yaml builds), the container ports are the --port flags, the
// probes hit /health on that port, the gateways have a PodDisruptionBudget, a Service and time to
// drain, and every environment variable is a ConfigSchema key whose value (literal, from the
// ConfigMap or Secret here, or from an operator's generated Secret) the schema accepts, with each
// service's required keys present, and each service runs with the runtime settings the launchers
// give it (scripts/cluster.ts RUNTIME_ENV; compose.yaml too). Each check is also run against a broken copy that it must reject.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigSchema } from "../shared/config.ts";
import { RUNTIME_ENV } from "../scripts/cluster.ts";

const ROOT = join(import.meta.dir, "..");
const DIR = join(import.meta.dir, "k8s");
// biome-ignore lint: manifests are untyped YAML
type Doc = Record<string, any>;
interface Manifest {
  file: string;
  doc: Doc;
}

/** A sample pod IP for `status.podIP` (TEST-NET-1, documentation only). */
const SAMPLE_POD_IP = "192.0.2.10";
/** Secrets the operators generate (not in the manifests): `<Cluster>-app` of CloudNativePG, key uri. */
const OPERATOR_SECRETS: Array<{ kind: string; suffix: string; key: string; setting: string }> = [
  { kind: "Cluster", suffix: "-app", key: "uri", setting: "DATABASE_URL" },
];

export function loadManifests(dir = DIR): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const parsed = Bun.YAML.parse(readFileSync(join(dir, file), "utf8"));
    const docs = (Array.isArray(parsed) ? parsed : [parsed]).filter((d) => d != null);
    for (const doc of docs) out.push({ file, doc: doc as Doc });
  }
  return out;
}

/** The image compose.yaml builds from the Dockerfile: the project's one image. */
function projectImage(): string {
  const compose = Bun.YAML.parse(readFileSync(join(ROOT, "compose.yaml"), "utf8")) as Doc;
  return compose["x-app"].image;
}

/** The keys each service demands (its requireKeys call), read from its entry file. */
function requiredKeys(entry: string): string[] {
  const src = readFileSync(join(ROOT, entry), "utf8");
  const m = /requireKeys\([^[]*\[([^\]]*)\]/.exec(src);
  return m ? [...m[1]!.matchAll(/"([A-Z_]+)"/g)].map((x) => x[1]!) : [];
}

const matches = (selector: Doc | undefined, labels: Doc | undefined) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Where `env` lacks a runtime setting that `entry` is launched with everywhere (scripts/cluster.ts RUNTIME_ENV). */
function runtimeProblems(entry: string, env: Record<string, unknown>): string[] {
  return Object.entries(RUNTIME_ENV[entry] ?? {})
    .filter(([k, v]) => env[k] !== v)
    .map(([k, v]) => `${k} is ${env[k] === undefined ? "unset" : JSON.stringify(env[k])}, but ${entry} runs with ${k}=${JSON.stringify(v)} (scripts/cluster.ts RUNTIME_ENV)`);
}

/** compose.yaml's services checked the same way: each runs with its entry's runtime settings. */
export function checkCompose(compose: Doc): string[] {
  const problems: string[] = [];
  for (const [name, svc] of Object.entries<Doc>(compose.services ?? {})) {
    const cmd: string[] = svc.command ?? [];
    if (cmd[0] !== "bun" || cmd[1] !== "run") continue;
    for (const p of runtimeProblems(cmd[2]!, svc.environment ?? {})) problems.push(`compose service ${name}: ${p}`);
  }
  return problems;
}

export function checkManifests(all: Manifest[], image = projectImage()): string[] {
  const problems: string[] = [];
  const find = (kind: string, name: string) => all.find((m) => m.doc.kind === kind && m.doc.metadata?.name === name)?.doc;
  const shape = ConfigSchema.shape as Record<string, unknown>;

  // kustomization: lists exactly the other files
  const kust = all.find((m) => m.doc.kind === "Kustomization");
  const files = new Set(all.map((m) => m.file).filter((f) => f !== kust?.file));
  if (!kust) problems.push("no kustomization.yaml");
  else {
    const listed = new Set<string>(kust.doc.resources ?? []);
    for (const f of files) if (!listed.has(f)) problems.push(`kustomization.yaml does not list ${f}`);
    for (const f of listed) if (!files.has(f)) problems.push(`kustomization.yaml lists ${f}, which is not a manifest here`);
  }

  const workloads = all.filter((m) => ["Deployment", "StatefulSet", "Job", "DaemonSet"].includes(m.doc.kind));
  const services: Record<string, Manifest[]> = {};
  for (const w of workloads) {
    const name = `${w.doc.kind}/${w.doc.metadata?.name}`;
    const pod = w.doc.spec?.template?.spec ?? {};
    const podLabels = w.doc.spec?.template?.metadata?.labels;
    if (w.doc.kind !== "Job" && !matches(w.doc.spec?.selector?.matchLabels, podLabels)) problems.push(`${name}: selector does not match the pod labels`);
    for (const c of pod.containers ?? []) {
      const where = `${name} container ${c.name}`;
      if (c.image !== image) problems.push(`${where}: image ${c.image}, not the project's image ${image}`);
      const cmd: string[] = c.command ?? [];
      const entry = cmd[0] === "bun" && cmd[1] === "run" ? cmd[2] : undefined;
      if (!entry) {
        problems.push(`${where}: command must be bun run <entry file>`);
        continue;
      }
      if (!Bun.file(join(ROOT, entry)).size) problems.push(`${where}: ${entry} does not exist`);
      const service = /^services\/(\w+)\/index\.ts$/.exec(entry)?.[1];

      // ports and probes
      const pi = cmd.indexOf("--port");
      const port = pi >= 0 ? Number(cmd[pi + 1]) : undefined;
      const ports: Doc[] = c.ports ?? [];
      const resolve = (p: unknown) => (typeof p === "string" ? ports.find((x) => x.name === p)?.containerPort : p);
      if (service) {
        (services[service] ??= []).push(w);
        if (port === undefined || !Number.isInteger(port) || port <= 0) problems.push(`${where}: no --port flag`);
        else {
          if (!ports.some((p) => p.containerPort === port)) problems.push(`${where}: containerPort ${ports.map((p) => p.containerPort).join(",") || "none"} but --port ${port}`);
          const probe = c.readinessProbe?.httpGet;
          if (!probe) problems.push(`${where}: no readinessProbe httpGet`);
          else {
            if (probe.path !== "/health") problems.push(`${where}: readinessProbe path ${probe.path}, not /health`);
            if (resolve(probe.port) !== port) problems.push(`${where}: readinessProbe port ${probe.port} is not --port ${port}`);
          }
          for (const kind of ["livenessProbe", "startupProbe"] as const) {
            const g = c[kind]?.httpGet;
            if (g && (g.path !== "/health" || resolve(g.port) !== port)) problems.push(`${where}: ${kind} must hit /health on ${port}`);
          }
        }
        if ((pod.terminationGracePeriodSeconds ?? 30) < 15) problems.push(`${where}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < 15 (a service drains within 10 s)`);
      }

      // environment: names are ConfigSchema keys, values parse
      const env: Record<string, string> = {};
      const fromOperator = new Set<string>();
      const setVar = (k: string, v: string | undefined, src: string) => {
        if (!(k in shape)) problems.push(`${where}: ${k} (${src}) is not a setting of shared/config.ts`);
        if (v !== undefined) env[k] = v;
      };
      for (const ef of c.envFrom ?? []) {
        if (ef.configMapRef) {
          const cm = find("ConfigMap", ef.configMapRef.name);
          if (!cm) problems.push(`${where}: envFrom ConfigMap ${ef.configMapRef.name} is not in the manifests`);
          for (const [k, v] of Object.entries(cm?.data ?? {})) setVar(k, String(v), `ConfigMap ${ef.configMapRef.name}`);
        } else if (ef.secretRef) {
          const s = find("Secret", ef.secretRef.name);
          if (!s) problems.push(`${where}: envFrom Secret ${ef.secretRef.name} is not in the manifests`);
          for (const [k, v] of Object.entries(s?.stringData ?? {})) setVar(k, String(v), `Secret ${ef.secretRef.name}`);
        } else problems.push(`${where}: envFrom must name a ConfigMap or a Secret`);
      }
      for (const e of c.env ?? []) {
        const vf = e.valueFrom;
        if (e.value !== undefined) {
          const value = String(e.value).replace(/\$\((\w+)\)/g, (_, v: string) => {
            if (env[v] === undefined) problems.push(`${where}: ${e.name} refers to $(${v}), not defined before it`);
            return env[v] ?? "";
          });
          setVar(e.name, value, "value");
        } else if (vf?.fieldRef) {
          if (vf.fieldRef.fieldPath !== "status.podIP") problems.push(`${where}: ${e.name} from fieldRef ${vf.fieldRef.fieldPath} (only status.podIP is known)`);
          setVar(e.name, SAMPLE_POD_IP, "fieldRef");
        } else if (vf?.secretKeyRef) {
          const { name: sName, key } = vf.secretKeyRef;
          const s = find("Secret", sName);
          if (s) {
            const v = s.stringData?.[key];
            if (v === undefined) problems.push(`${where}: ${e.name} refers to key ${key} missing from Secret ${sName}`);
            setVar(e.name, v, `Secret ${sName}`);
          } else {
            const op = OPERATOR_SECRETS.find((o) => sName.endsWith(o.suffix) && find(o.kind, sName.slice(0, -o.suffix.length)));
            if (!op) problems.push(`${where}: ${e.name} refers to Secret ${sName}, neither in the manifests nor generated by an operator here`);
            else if (op.key !== key || op.setting !== e.name) problems.push(`${where}: ${e.name} from ${sName}/${key}; the operator's ${sName}/${op.key} holds ${op.setting}`);
            setVar(e.name, undefined, "operator secret");
            fromOperator.add(e.name);
          }
        } else problems.push(`${where}: ${e.name} has neither a value nor a known valueFrom`);
      }
      const parsed = ConfigSchema.safeParse(env);
      if (!parsed.success)
        for (const i of parsed.error.issues) problems.push(`${where}: ${String(i.path[0])}=${JSON.stringify(env[String(i.path[0])])}: ${i.message}`);
      const need = service ? requiredKeys(entry) : entry === "scripts/migrate.ts" ? requiredKeys(entry) : [];
      for (const k of need) if (env[k] === undefined && !fromOperator.has(k)) problems.push(`${where}: ${k} is required by ${entry} but not set`);
      for (const problem of runtimeProblems(entry, env)) problems.push(`${where}: ${problem}`);
      if (service === "ws" && env.PUBLIC_URL === undefined) problems.push(`${where}: a gateway needs PUBLIC_URL (its own pod's address)`);
      if (service === "ws" && env.PUBLIC_URL !== undefined && port !== undefined && new URL(env.PUBLIC_URL).port !== String(port))
        problems.push(`${where}: PUBLIC_URL ${env.PUBLIC_URL} is not on --port ${port}`);
    }
  }

  // each service runs; gateways and discover have a Service, gateways a PodDisruptionBudget, persist several replicas
  const svcObjects = all.filter((m) => m.doc.kind === "Service").map((m) => m.doc);
  const pdbs = all.filter((m) => m.doc.kind === "PodDisruptionBudget").map((m) => m.doc);
  for (const s of ["ws", "persist", "discover"]) if (!services[s]?.length) problems.push(`no workload runs services/${s}`);
  for (const s of ["ws", "discover"])
    for (const w of services[s] ?? []) {
      const labels = w.doc.spec.template.metadata?.labels;
      const svc = svcObjects.find((x) => matches(x.spec?.selector, labels));
      if (!svc) problems.push(`${w.doc.metadata.name}: no Service selects its pods`);
    }
  for (const w of services.ws ?? []) {
    const labels = w.doc.spec.template.metadata?.labels;
    const pdb = pdbs.find((p) => matches(p.spec?.selector?.matchLabels, labels));
    if (!pdb) problems.push(`${w.doc.metadata.name}: no PodDisruptionBudget selects the gateways`);
    else if (pdb.spec.maxUnavailable === undefined && pdb.spec.minAvailable === undefined) problems.push(`${pdb.metadata.name}: neither maxUnavailable nor minAvailable`);
  }
  for (const w of services.persist ?? []) if (w.doc.kind === "Deployment" && (w.doc.spec.replicas ?? 1) < 2) problems.push(`${w.doc.metadata.name}: persist should run several replicas`);
  // DISCOVER_URL names a Service here, on one of its ports
  const cm = all.filter((m) => m.doc.kind === "ConfigMap").flatMap((m) => Object.entries(m.doc.data ?? {}));
  for (const [k, v] of cm)
    if (k === "DISCOVER_URL")
      for (const u of String(v).split(",")) {
        const url = new URL(u.trim());
        const svc = svcObjects.find((x) => x.metadata?.name === url.hostname);
        if (!svc || !(svc.spec?.ports ?? []).some((p: Doc) => String(p.port) === (url.port || "80"))) problems.push(`DISCOVER_URL ${u}: no Service ${url.hostname} with port ${url.port}`);
      }
  return problems;
}

describe("deploy/k8s manifests", () => {
  const manifests = loadManifests();

  test("every file parses and the checks find nothing wrong", () => {
    expect(manifests.length).toBeGreaterThan(10);
    expect(checkManifests(manifests)).toEqual([]);
  });

  test("the operators' resources are there: Redis Cluster, RabbitMQ cluster, CloudNativePG with a synchronous standby", () => {
    const kinds = (k: string) => manifests.filter((m) => m.doc.kind === k).map((m) => m.doc);
    const redis = kinds("RedisCluster")[0]!;
    expect(redis.spec.clusterSize).toBeGreaterThanOrEqual(3);
    expect(redis.spec.redisFollower.replicas).toBeGreaterThanOrEqual(redis.spec.clusterSize);
    // leaders and followers run with the project's Redis settings (scripts/infra.ts REDIS_TUNING)
    for (const role of [redis.spec.redisLeader, redis.spec.redisFollower]) {
      const cm = kinds("ConfigMap").find((c) => c.metadata.name === role.redisConfig?.additionalRedisConfig);
      expect(cm?.data?.["redis-additional.conf"]).toContain("hash-max-listpack-entries 16");
    }
    expect(kinds("RabbitmqCluster")[0]!.spec.replicas).toBeGreaterThanOrEqual(3);
    const pg = kinds("Cluster")[0]!;
    expect(pg.apiVersion).toStartWith("postgresql.cnpg.io/");
    expect(pg.spec.instances).toBeGreaterThanOrEqual(2);
    expect(pg.spec.minSyncReplicas).toBeGreaterThanOrEqual(1);
  });

  // Each broken copy must be rejected with the expected problem.
  const broken: Array<[string, (all: Manifest[]) => void, RegExp]> = [
    ["another image", (a) => (dep(a, "relay-gateway").spec.template.spec.containers[0].image = "oven/bun:1"), /not the project's image/],
    ["a containerPort unlike --port", (a) => (dep(a, "relay-persist").spec.template.spec.containers[0].ports[0].containerPort = 3004), /containerPort 3004 but --port 3003/],
    ["a probe path other than /health", (a) => (dep(a, "relay-discover").spec.template.spec.containers[0].readinessProbe.httpGet.path = "/healthz"), /path \/healthz, not \/health/],
    ["a probe on another port", (a) => (dep(a, "relay-discover").spec.template.spec.containers[0].readinessProbe.httpGet.port = 3001), /readinessProbe port 3001 is not --port 3000/],
    ["no readiness probe", (a) => delete dep(a, "relay-gateway").spec.template.spec.containers[0].readinessProbe, /no readinessProbe/],
    ["an unknown variable", (a) => dep(a, "relay-gateway").spec.template.spec.containers[0].env.push({ name: "LOGLEVEL", value: "info" }), /LOGLEVEL \(value\) is not a setting/],
    ["a value the schema rejects", (a) => (doc(a, "ConfigMap", "relay-chat").data.LOG_LEVEL = "loud"), /LOG_LEVEL="loud"/],
    ["a short secret", (a) => (doc(a, "Secret", "relay-chat").stringData.JWT_SECRET = "short"), /JWT_SECRET="short": must be at least 16/],
    ["a missing required setting", (a) => delete doc(a, "ConfigMap", "relay-chat").data.DISCOVER_URL, /DISCOVER_URL is required by services\/ws\/index.ts/],
    ["an unknown secret", (a) => (dep(a, "relay-persist").spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name = "pg-app"), /Secret pg-app, neither/],
    ["a short grace period", (a) => (dep(a, "relay-gateway").spec.template.spec.terminationGracePeriodSeconds = 5), /terminationGracePeriodSeconds 5 < 15/],
    ["no PodDisruptionBudget", (a) => a.splice(a.findIndex((m) => m.doc.kind === "PodDisruptionBudget"), 1), /no PodDisruptionBudget/],
    ["PUBLIC_URL on another port", (a) => (dep(a, "relay-gateway").spec.template.spec.containers[0].env[1].value = "http://$(HOST):80"), /PUBLIC_URL http:\/\/192.0.2.10:80 is not on --port 3001/],
    ["persist without its allocator setting", (a) => dep(a, "relay-persist").spec.template.spec.containers[0].env.pop(), /MIMALLOC_PURGE_DELAY is unset, but services\/persist\/index.ts runs with MIMALLOC_PURGE_DELAY="-1"/],
    ["discover with another purge delay", (a) => (dep(a, "relay-discover").spec.template.spec.containers[0].env.find((e: Doc) => e.name === "MIMALLOC_PURGE_DELAY").value = "100"), /MIMALLOC_PURGE_DELAY is "100", but services\/discover/],
    ["a purge delay the schema rejects", (a) => dep(a, "relay-gateway").spec.template.spec.containers[0].env.push({ name: "MIMALLOC_PURGE_DELAY", value: "never" }), /MIMALLOC_PURGE_DELAY="never"/],
    ["DISCOVER_URL naming no Service", (a) => (doc(a, "ConfigMap", "relay-chat").data.DISCOVER_URL = "http://discover:3000"), /no Service discover/],
  ];
  for (const [what, breakIt, expected] of broken)
    test(`rejects ${what}`, () => {
      const copy: Manifest[] = structuredClone(manifests);
      breakIt(copy);
      const problems = checkManifests(copy);
      expect(problems.some((p) => expected.test(p)), `${expected} among:\n${problems.join("\n")}`).toBe(true);
    });
});

describe("compose.yaml", () => {
  const compose = Bun.YAML.parse(readFileSync(join(ROOT, "compose.yaml"), "utf8")) as Doc;
  test("each service runs with its runtime settings, like the launchers and the manifests", () => {
    expect(checkCompose(compose)).toEqual([]);
    expect(compose.services.persist2.environment.MIMALLOC_PURGE_DELAY).toBe("-1");
  });
  test("rejects a persist without its allocator setting", () => {
    const copy: Doc = structuredClone(compose);
    delete copy.services.persist2.environment.MIMALLOC_PURGE_DELAY;
    expect(checkCompose(copy)).toEqual([expect.stringMatching(/^compose service persist2: MIMALLOC_PURGE_DELAY is unset/)]);
  });
});

function doc(all: Manifest[], kind: string, name: string): Doc {
  const d = all.find((m) => m.doc.kind === kind && m.doc.metadata?.name === name)?.doc;
  if (!d) throw new Error(`${kind}/${name} not found`);
  return d;
}
const dep = (all: Manifest[], name: string) => doc(all, "Deployment", name);
