#!/usr/bin/env bash
# mdgate federation listener: full and resumed mutual-TLS handshakes per
# second, and requests per second on kept-alive connections, beside nginx
# and HAProxy (Debian's packages) doing mTLS with a CA file, in one run.
#
#   bash benches/handshake.sh                 # 3 rounds, about 12 minutes
#   ROUNDS=1 DURATION=5 bash benches/handshake.sh
#
# Targets, all pinned to SERVER_CPU, each answering GET /federation/v1/identity
# (mdgate) or the same 63-byte JSON body (nginx, HAProxy):
#   mdgate-dns  mdgate, [federation.trust] dns = true: the peer's key must be
#               published in its DNS (a loopback authoritative server run by
#               the load generator binary); the cache is warm after the first
#               connection, so this measures the cached DNS check.
#   mdgate-ca   mdgate, [federation.trust] ca_file only: no DNS check.
#   mdgate-pin  mdgate, [federation.trust] pinned_spki_sha256 = the peer's key:
#               the handshake does what mdgate-dns's does (identity, dates,
#               signature; no chain), but trust is decided without DNS, so
#               mdgate-dns / mdgate-pin is the cost of the cached DNS check.
#   nginx       ssl_verify_client on + ssl_client_certificate (CA file).
#   haproxy     bind ... ssl verify required ca-file.
# All: one worker/thread, TLS 1.3 only, X25519, ECDSA P-256 certificates from
# one test CA, session tickets and a session cache on. The load generator
# (examples/handshake_load.rs, rustls + tokio, one thread) runs on LOADGEN_CPU.
#
# Knobs (environment):
#   ROUNDS=3        repetitions of the whole matrix (medians are reported)
#   DURATION=10     seconds recorded per phase, after WARMUP=2 seconds of load
#   CONNS=32        concurrent connections of the handshake phases
#   KA_CONNS=32     kept-alive connections of the keepalive phase
#   PHASES="full resumed keepalive"
#   TARGETS="mdgate-dns mdgate-ca mdgate-pin nginx haproxy"
#   UNKNOWN_S=35    seconds of the unknown-key phase against mdgate-dns (0: skip)
#   DNS_TTL=20      TTL of the published records (mdgate's min_ttl is set to 5s),
#                   short so that background refreshes happen during the run
#   SERVER_CPU=1 LOADGEN_CPU=0
#   QUIET_MAX=300 QUIET_BUSY=10 FOREIGN_MAX=5 RETRIES=3   (see docs/benchmarks.md)
#   OUT=bench-out/handshake-<date>   SKIP_BUILD=1
#
# Needs: cargo, openssl, taskset, curl, nginx, haproxy (installed with apt-get
# when missing). Stops only the processes it started.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-10}" WARMUP="${WARMUP:-2}"
CONNS="${CONNS:-32}" KA_CONNS="${KA_CONNS:-32}" PHASES="${PHASES:-full resumed keepalive}"
TARGETS="${TARGETS:-mdgate-dns mdgate-ca mdgate-pin nginx haproxy}" UNKNOWN_S="${UNKNOWN_S:-35}"
DNS_TTL="${DNS_TTL:-20}" SERVER_CPU="${SERVER_CPU:-1}" LOADGEN_CPU="${LOADGEN_CPU:-0}"
QUIET_MAX="${QUIET_MAX:-300}" QUIET_BUSY="${QUIET_BUSY:-10}" FOREIGN_MAX="${FOREIGN_MAX:-5}" RETRIES="${RETRIES:-3}"
OUT="${OUT:-bench-out/handshake-$(date -u +%Y%m%dT%H%M%SZ)}"
FED=fed.bench.mdgate.test PEER=peer.bench.mdgate.test ZONE=bench.mdgate.test
BODY="{\"peer\":\"$PEER\",\"server\":\"$FED\"}"

log() { printf '[handshake.sh] %s\n' "$*" >&2; }

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$1" ] && return 0
    log "installing $2 (for $1)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
}
need_apt taskset util-linux
need_apt openssl openssl
need_apt curl curl
need_apt python3 python3
need_apt nginx nginx-light
need_apt haproxy haproxy
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building mdgate and the load generator (release)"
    # Two commands: building them together would build mdgate with the
    # dev-dependencies' features (the example's), unlike a release install.
    cargo build --release --bin mdgate
    cargo build --release --example handshake_load
fi
MDGATE="$target_dir/release/mdgate" LOAD="$target_dir/release/examples/handshake_load"
for b in "$MDGATE" "$LOAD"; do
    [ -x "$b" ] || { log "missing $b (build it or unset SKIP_BUILD)"; exit 1; }
done

. "$here/handshake_common.sh"

# --- nginx and HAProxy: the same job with a CA file.
start_nginx() {
    local p; p=$(port)
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process on;
user nobody nogroup;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    server_tokens off;
    server {
        listen 127.0.0.1:$p ssl;
        server_name $FED;
        ssl_certificate $WORK/server.crt;
        ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_client_certificate $WORK/ca.crt;
        ssl_verify_client on;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 12h;
        ssl_session_tickets on;
        location / {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
NGINX
    taskset -c "$SERVER_CPU" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/stderr" 2>&1 &
    local pid=$!
    pids+=($pid)
    wait_for nginx python3 -c "import socket; socket.create_connection(('127.0.0.1', $p))" || { cat "$WORK/nginx/stderr" >&2; exit 1; }
    args+=(--target "name=nginx,addr=127.0.0.1:$p,pid=$pid")
}

start_haproxy() {
    local p; p=$(port)
    mkdir -p "$WORK/haproxy"
    cat >"$WORK/haproxy/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.3
    tune.ssl.cachesize 20000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fed
    bind 127.0.0.1:$p ssl crt $WORK/server.pem ca-file $WORK/ca.crt verify required curves X25519 alpn http/1.1
    http-request return status 200 content-type application/json string '$BODY'
HAPROXY
    taskset -c "$SERVER_CPU" "$HAPROXY" -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/log" 2>&1 &
    local pid=$!
    pids+=($pid)
    wait_for haproxy python3 -c "import socket; socket.create_connection(('127.0.0.1', $p))" || { cat "$WORK/haproxy/log" >&2; exit 1; }
    args+=(--target "name=haproxy,addr=127.0.0.1:$p,pid=$pid")
}

args=()
for t in $TARGETS; do
    case "$t" in
        mdgate-dns) start_mdgate mdgate-dns 'dns = true' ;;
        mdgate-ca) start_mdgate mdgate-ca "ca_file = \"$WORK/ca.crt\"" ;;
        mdgate-pin) start_mdgate mdgate-pin "pinned_spki_sha256 = [\"$PEER_PIN\"]" ;;
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
        *) log "unknown target $t"; exit 1 ;;
    esac
done

mkdir -p "$OUT"
{
    echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc: $(rustc -V 2>/dev/null || echo unknown); mdgate: release profile, workers = 1"
    echo "nginx: $("$NGINX" -V 2>&1 | grep -E 'nginx version|OpenSSL' | tr '\n' ' ')"
    echo "haproxy: $("$HAPROXY" -vv 2>&1 | grep -E 'HAProxy version|Running on OpenSSL' | tr '\n' ' ')"
    echo "cores: servers on $SERVER_CPU, load generator on $LOADGEN_CPU; DNS TTL ${DNS_TTL}s"
} >"$OUT/facts.txt"

log "results in $OUT"
# In the background, so that a signal reaches the trap (and the cleanup) at once.
taskset -c "$LOADGEN_CPU" "$LOAD" run "${args[@]}" \
    --ca "$WORK/ca.crt" --cert "$WORK/peer.crt" --key "$WORK/peer.key" \
    --unknown-cert "$WORK/unknown.crt" --unknown-key "$WORK/unknown.key" \
    --sni "$FED" --phases "$PHASES" --conns "$CONNS" --ka-conns "$KA_CONNS" \
    --duration "$DURATION" --warmup "$WARMUP" --rounds "$ROUNDS" --unknown-duration "$UNKNOWN_S" \
    --server-cpu "$SERVER_CPU" --loadgen-cpu "$LOADGEN_CPU" --quiet-max "$QUIET_MAX" \
    --quiet-busy "$QUIET_BUSY" --foreign-max "$FOREIGN_MAX" --retries "$RETRIES" \
    --facts "$OUT/facts.txt" --out "$OUT" &
driver=$!
pids+=("$driver")
wait "$driver"
