# config-sidecar: one image for the server, the agent and the webhook.
#
#   docker build -t config-sidecar:0.1.0 .
#   docker run --rm config-sidecar:0.1.0 --help
#
# Stages: `build` compiles TypeScript to dist/ with the dev dependencies;
# `deps` installs production dependencies only; the runtime stage gets
# dist/ + those node_modules, runs as a non-root user, and has no npm and no
# HEALTHCHECK (Kubernetes probes /healthz and /readyz). Every COPY names its
# files, since the repository has no .dockerignore.
# test/dockerfile-build.test.ts runs the same steps without Docker.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (the build) needs the sources, copied below; the
# `node` devDependency's download is not needed, the image has Node 24.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# The runtime runs node only: drop the package managers and their attack surface.
RUN rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /opt/yarn* /usr/local/bin/yarn /usr/local/bin/yarnpkg
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
RUN chmod 0755 dist/cli/main.js \
 && ln -s /app/dist/cli/main.js /usr/local/bin/config-sidecar
# 65532: the uid/gid the injector and the manifests run the agent, server and webhook as.
USER 65532:65532
ENTRYPOINT ["config-sidecar"]
CMD ["--help"]
