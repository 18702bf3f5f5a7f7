import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** One Prometheus registry per service process, with process metrics and a `service` label. */
export function createMetrics(service: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    counter: (name: string, help: string, labelNames: string[] = []) => new Counter({ name, help, labelNames, registers: [registry] }),
    gauge: (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [registry] }),
    histogram: (name: string, help: string, buckets: number[], labelNames: string[] = []) =>
      new Histogram({ name, help, buckets, labelNames, registers: [registry] }),
    /** Body and content type for GET /metrics. */
    async render(): Promise<Response> {
      return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
    },
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
