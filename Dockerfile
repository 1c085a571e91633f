# mdgate container image.
#
#   docker build -t mdgate .
#   docker run -d --name mdgate --stop-timeout 45 \
#     --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
#     -v /srv/mdgate/etc:/etc/mdgate:ro -v /srv/mdgate/state:/var/lib/mdgate \
#     -p 443:443 -p 8443:8443 -p 127.0.0.1:9090:9090 mdgate
#
# See docs/operations.md, "Running in a container", for the configuration
# differences (admin listener address, upstream address, key ownership).

# ---- build ------------------------------------------------------------------
# Debian 12 toolchain, so the binary needs exactly the glibc (2.36) that the
# Debian 12 runtime image below provides. Rust 1.89 is the minimum
# (Cargo.toml rust-version); the newest 1.x is used here. Pin a digest in CI
# for reproducible builds.
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, built against stub sources: this layer is reused for
# as long as Cargo.toml and Cargo.lock do not change, so editing mdgate's own
# code does not rebuild the few hundred dependencies. Cargo only needs the
# files of the targets it builds (the mdgate binary and its library).
COPY Cargo.toml Cargo.lock ./
# The build settings (SQLite syncing with fdatasync) apply to the
# dependencies too.
COPY .cargo ./.cargo
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin mdgate \
 && rm -rf src

COPY . .
# If sqlx's compile-time-checked queries are used, check them against the
# committed .sqlx/ data instead of a live database.
ENV SQLX_OFFLINE=true
# COPY keeps the sources' modification times, which can be older than the
# stub build above; touching the crate roots makes cargo rebuild mdgate
# itself instead of shipping the stub.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin mdgate \
 && install -D -m 0755 target/release/mdgate /out/mdgate \
 && install -d -m 0700 /out/state

# ---- runtime ----------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell and no package
# manager, roughly a third of the size of debian:bookworm-slim and with far
# less to patch. mdgate links no OpenSSL (it uses rustls) and embeds SQLite,
# so it needs nothing more. The :nonroot tag runs as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /out/mdgate /usr/local/bin/mdgate
# Every key with its default and meaning. The image has no default
# configuration: mount your own at /etc/mdgate/mdgate.toml. To read this one:
#   id=$(docker create mdgate) && docker cp "$id":/usr/share/doc/mdgate/config.example.toml . && docker rm "$id"
COPY --from=build /src/config.example.toml /usr/share/doc/mdgate/config.example.toml
# The store directory, owned by the runtime user. A new named volume starts
# as a copy of it (owner included); a bind-mounted host directory must be
# chowned to 65532:65532 by hand (docs/operations.md shows both).
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/mdgate/

USER 65532:65532
# Same location as under systemd, so the store path default
# ($STATE_DIRECTORY/mdgate.db) is /var/lib/mdgate/mdgate.db in both.
ENV STATE_DIRECTORY=/var/lib/mdgate
VOLUME ["/var/lib/mdgate"]

# 443 public (HTTPS), 8443 federation (mutual TLS), 9090 admin (/live,
# /ready, /metrics). Docker and Podman let a non-root process bind 443
# inside the container; see docs/operations.md for other runtimes.
EXPOSE 443 8443 9090

# No HEALTHCHECK: it would need curl or a shell, which distroless does not
# have. Let the orchestrator probe the admin listener instead:
# liveness GET /live, readiness GET /ready (503 while the upstream is down,
# the store is closed or mdgate is draining), both on port 9090.

# SIGTERM drains in-flight requests for up to [runtime] drain_timeout
# (default 30s). Docker's default stop timeout is 10s: use
# `docker stop -t 45` or `stop_grace_period: 45s` in Compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mdgate"]
CMD ["serve", "-c", "/etc/mdgate/mdgate.toml"]
