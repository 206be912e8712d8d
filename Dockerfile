# Herald's container image: a multi-stage build, a small non-root runtime.
#   docker build -t herald --build-arg HERALD_GIT_COMMIT=$(git rev-parse --short HEAD) .
#   docker run -p 8080:8080 -v herald-data:/var/lib/herald herald
# Runs `herald serve` as uid 10001: mount a config and set HERALD_CONFIG (or pass
# `serve --config PATH`); without one, the defaults (embedded log and store under
# /var/lib/herald) with HERALD__SECTION__KEY environment overrides. Probes: GET /healthz
# (liveness), GET /readyz (readiness). See docs/operations.md.

# ---- build ---------------------------------------------------------------------------
FROM rust:1.95-slim-trixie AS build
# librdkafka is built from the rdkafka crate's vendored source: a C toolchain, make, perl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG HERALD_GIT_COMMIT=unknown
ENV HERALD_GIT_COMMIT=${HERALD_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald --bin herald \
 && install -D -m 0755 target/release/herald /out/herald

# ---- runtime -------------------------------------------------------------------------
FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 herald \
 && useradd --system --uid 10001 --gid herald --home-dir /var/lib/herald --shell /usr/sbin/nologin herald \
 && install -d -o herald -g herald -m 0750 /var/lib/herald /etc/herald
COPY --from=build /out/herald /usr/local/bin/herald
USER 10001:10001
ENV HERALD__STORAGE__DATA_DIR=/var/lib/herald \
    HERALD__HTTP__LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/herald"]
# API and /metrics, SMTP submission, bounce MX, tracking.
EXPOSE 8080 2525 2527 8081
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve"]
