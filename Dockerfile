# One image for every service: the repository's TypeScript run directly by Bun (no build step).
# The command picks the service, e.g.
#   bun run services/ws/index.ts --port 3001
#   bun run services/persist/index.ts --port 3003
#   bun run services/discover/index.ts --port 3000
#   bun run scripts/migrate.ts                      (applies drizzle/ migrations to DATABASE_URL)
# persist and discover also get MIMALLOC_PURGE_DELAY=-1 from compose.yaml / deploy/k8s, not from
# here: the image is the gateways' too, and they keep the allocator's default (docs/operations.md).
FROM oven/bun:1
WORKDIR /app
# dependencies first (a layer that changes only with the lock file); patches/ is applied by install
COPY package.json bun.lock bunfig.toml ./
COPY patches ./patches
RUN bun install --frozen-lockfile --production
COPY . .
ENV NODE_ENV=production HOST=0.0.0.0
USER bun
EXPOSE 3000 3001 3003
CMD ["bun", "run", "services/ws/index.ts", "--port", "3001"]
