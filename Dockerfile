# oidc-bff container image: the gateway, the demo API (examples/demo-api) and
# the demo SPA (examples/spa, in /srv/spa).
#
#   docker build -t oidc-bff .
#   docker run -v $PWD/oidc-bff.toml:/etc/oidc-bff/oidc-bff.toml:ro -p 8080:8080 oidc-bff
#
# docker-compose.yml builds it for the Keycloak developer stack.

# ---- build -----------------------------------------------------------------
# Same Debian release as the runtime stage, so the glibc matches.
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer that only changes with Cargo.toml or
# Cargo.lock: build them against placeholder sources. The placeholders cover
# every target Cargo.toml names.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src examples/demo-api tests/e2e \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > examples/demo-api/main.rs \
 && echo 'fn main() {}' > tests/e2e/main.rs \
 && cargo build --release --locked --bin oidc-bff --example demo-api

# The real sources. COPY keeps their (older) modification times, so touch
# the crate roots or cargo would take the placeholder build as up to date.
# The context has no .git: pass the revision for `oidc-bff --version` with
#   docker build --build-arg OIDC_BFF_GIT_REV=$(git rev-parse --short HEAD) .
ARG OIDC_BFF_GIT_REV=""
ENV OIDC_BFF_GIT_REV=${OIDC_BFF_GIT_REV}
COPY build.rs ./
COPY src ./src
COPY templates ./templates
COPY examples ./examples
RUN touch src/main.rs src/lib.rs examples/demo-api/main.rs \
 && cargo build --release --locked --bin oidc-bff --example demo-api \
 && install -D -m 0755 target/release/oidc-bff /out/oidc-bff \
 && install -D -m 0755 target/release/examples/demo-api /out/demo-api

# ---- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="oidc-bff" \
      org.opencontainers.image.description="OAuth2/OpenID Connect backend-for-frontend gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: the system CA trust store, for TLS connections.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 oidc-bff \
 && useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin oidc-bff \
 && mkdir -p /etc/oidc-bff /srv/spa

COPY --from=builder /out/oidc-bff /out/demo-api /usr/local/bin/
COPY examples/spa/ /srv/spa/

# Mount the configuration (and secrets, e.g. under /run/secrets) read-only;
# the image holds none. OIDC_BFF_CONFIG lets `docker exec … oidc-bff
# sessions stats` (or check-config) find it without --config.
ENV OIDC_BFF_CONFIG=/etc/oidc-bff/oidc-bff.toml
# Give memory freed after a load spike (e.g. a slowloris attempt) back to the
# system at once instead of keeping it for reuse (docs/operations.md, Memory).
ENV MIMALLOC_PURGE_DELAY=0 MIMALLOC_PURGE_DECOMMITS=1
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["oidc-bff", "healthcheck", "--url", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["oidc-bff"]
CMD ["serve", "--config", "/etc/oidc-bff/oidc-bff.toml"]
