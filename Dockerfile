# syntax=docker/dockerfile:1
# keygate container image.
#
#   docker build -t keygate .                      # the production image (default target)
#   docker build -t keygate:softhsm --target softhsm .   # + SoftHSMv2 for trials, never production
#
# Both run as the unprivileged user 10001 and read /etc/keygate/keygate.toml. Vendor HSM
# client libraries (CloudHSM, Luna, nShield) are not redistributable: build FROM this image
# and add them (see deploy/examples/).

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and build cache between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin keygate \
 && install -D -m 0755 target/release/keygate /out/keygate

FROM debian:${DEBIAN}-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 keygate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/keygate --shell /usr/sbin/nologin keygate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/keygate \
 && install -d -m 0755 /etc/keygate
COPY --from=build /out/keygate /usr/local/bin/keygate
# 8443: XKS (TLS, behind an NLB listening on 443); 9090: admin (/ping /healthz /readyz /metrics).
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve", "--config", "/etc/keygate/keygate.toml", "--admin-listen", "0.0.0.0:9090"]

# Trials only: SoftHSMv2 with its token directory in /var/lib/keygate/softhsm (mount a volume
# there to keep tokens). Initialise a token as user 10001:
#   softhsm2-util --init-token --free --label keygate --so-pin ... --pin ...
FROM base AS softhsm
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 opensc \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/keygate/softhsm/tokens
COPY deploy/examples/softhsm2.conf /etc/keygate/softhsm2.conf
ENV SOFTHSM2_CONF=/etc/keygate/softhsm2.conf
USER 10001:10001

# The default target: the plain production image.
FROM base AS runtime
USER 10001:10001
