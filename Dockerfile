# syntax=docker/dockerfile:1
# The exchange-connections image: one static-ish binary on distroless (glibc, CA certificates, no shell, no
# package manager), running as the unprivileged `nonroot` user (uid/gid 65532) the Helm chart expects.
#
#   docker build -t exchange-connections:0.1.0 .
#   docker run --rm exchange-connections:0.1.0 keygen
#
# The tag is the Cargo package version, which the chart's appVersion follows.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The toolchain comes from the image; rust-toolchain.toml pins the same version.
COPY . .
# Cache mounts keep the registry and target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin exchange-connections \
 && install -D -m 0755 target/release/exchange-connections /out/exchange-connections \
 && /out/exchange-connections --version

# Same Debian release as the build stage, so the binary's glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/exchange-connections /usr/local/bin/exchange-connections
USER 65532:65532
WORKDIR /home/nonroot
# Inside a container the API must listen off loopback; with that, the service refuses to start without real
# secrets (JWT_SECRET or JWT_JWKS_URL, and ENCRYPTION_KEYS) instead of generating development ones.
ENV LISTEN_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json \
    DATA_DIR=/tmp/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/exchange-connections"]
CMD ["serve"]
