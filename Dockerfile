# qlik-sse-js: the JavaScript SSE plugin for Qlik, as a container.
#
#   docker build -t qlik-sse-js .
#   docker run -d --name qlik-sse-js -p 50051:50051 --stop-timeout 30 \
#     --restart on-failure --memory 4g --ulimit core=0 \
#     --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp qlik-sse-js
#   # mutual TLS: mount the plugin's certificate folder and a client folder for the health probe
#   docker run -d -p 50051:50051 --stop-timeout 30 --restart on-failure --memory 4g --ulimit core=0 \
#     -v /srv/sse-certs/server:/certs/server:ro -v /srv/sse-certs/client:/certs/client:ro \
#     -e SSE_TLS_DIR=/certs/server \
#     --health-cmd 'node dist/src/ops/healthcheck.js /certs/client' qlik-sse-js
#
# Scripts cannot end the container: a sandbox process that crashes, hangs or passes its memory fence
# (SSE_SANDBOX_MEMORY_MB) is replaced by the front. A restart policy is still advised for the front itself
# (--restart on-failure; compose `restart: on-failure`; Kubernetes restarts by default); Docker does not
# restart a container for being unhealthy. --memory is a backstop above the plugin's bound (docs/operations.md,
# "Memory": ~2.0 GB for 4 workers at the defaults); --ulimit core=0 keeps a crashing sandbox process or
# front from writing row values and the TLS key to disk.
#
# See docs/operations.md, "Configuration", for every variable. Node 22 (20, 22 and 24 are supported; Node 20 reached
# its end of life in April 2026): docs/operations.md, "Node versions".

# ---- build: compile TypeScript, then keep only the production dependencies ----
FROM node:22-bookworm-slim AS build
WORKDIR /app
# isolated-vm downloads a prebuilt binary; these let it compile from source when none matches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
COPY workers ./workers
# The libraries scripts may require are bundled from node_modules (workers/libraries/build.ts).
RUN npx tsc -p tsconfig.json && node dist/workers/libraries/build.js && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: no compiler, no dev dependencies, an unprivileged user ----
FROM node:22-bookworm-slim
ENV NODE_ENV=production \
    SSE_HOST=0.0.0.0 \
    SSE_METRICS_HOST=0.0.0.0 \
    SSE_PORT=50051
WORKDIR /app
# Owned by root and read-only for the service user: a script escaping the sandbox still cannot
# change the plugin.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/proto ./proto
COPY --from=build /app/dist ./dist
# The starter library: SSE_FUNCTIONS_DIR=/app/functions to use it, or mount your own folder
# (read-only: -v /srv/sse-functions:/functions:ro -e SSE_FUNCTIONS_DIR=/functions).
COPY examples/functions ./functions
# The node image's unprivileged user (uid 1000), for the front and the sandbox processes alike: the
# container is the boundary (no SSE_SANDBOX_USER, which would need root and CAP_SETUID/CAP_SETGID in the
# container; security.md, "Running it safely"). util-linux (setpriv, prlimit, unshare) is in the base
# image: the plugin adds no-new-privileges and no core dumps to its sandbox processes, and logs which
# layers hold.
USER node
# 50051: gRPC (qlik.sse.Connector and grpc.health.v1.Health). 9464: /metrics when SSE_METRICS_PORT=9464.
EXPOSE 50051 9464
# Plaintext probe; with SSE_TLS_DIR set, pass a client certificate folder (see the top of this file).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "dist/src/ops/healthcheck.js"]
# SIGTERM: refuse new calls, finish the calls in flight (SSE_SHUTDOWN_GRACE_MS, default 10 s), exit 0.
# Give `docker stop` more than that (--stop-timeout 30 or compose stop_grace_period: 30s).
STOPSIGNAL SIGTERM
# The same command as `npm start`. Exec form, so the front itself receives SIGTERM; it starts the sandbox
# processes as its children and ends them after draining (they also end at once if the front dies).
CMD ["node", "--no-node-snapshot", "--no-concurrent-recompilation", "--initial-old-space-size=128", "dist/src/main.js"]
