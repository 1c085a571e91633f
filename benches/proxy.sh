#!/usr/bin/env bash
# mdgate proxy benchmark: the same requests sent (a) straight to the access.md
# emulator, (b) through mdgate's public TLS listener and (c) through nginx
# doing the same TLS termination and proxying, in one run.
#
#   bash benches/proxy.sh                       # full run, about 10 minutes
#   DURATION=5 ROUNDS=1 bash benches/proxy.sh   # quicker
#
# Knobs (environment):
#   DURATION=10     seconds recorded per phase (after the warm-up)
#   WARMUP=3        seconds of load on the same connections before recording
#   RATES="1000 5000"  fixed rates (req/s) measured with RATE_CONNS connections
#   SAT_CONNS=32    keep-alive connections of the saturated phase
#   RATE_CONNS=16   keep-alive connections of the fixed-rate phases
#   IDLE_CONNS=1000 idle TLS keep-alive connections held for the memory figure
#   ROUNDS=1        repetitions of the whole load matrix (medians are reported)
#   TARGETS="direct mdgate nginx"   REQUESTS="codes patient"
#   LOADGEN_CPU=0   SERVER_CPU=1    cores for oha and for the servers
#   OHA_THREADS=2   oha --worker-threads (all on LOADGEN_CPU)
#   QUIET_MAX=300   seconds to wait for the cores to go quiet before a phase
#                   (other processes using > QUIET_BUSY% of a core); 0: don't wait
#   QUIET_BUSY=10
#   FOREIGN_MAX=5   a phase whose window saw other processes use more than this
#   RETRIES=3       % of either core is run again, up to RETRIES times
#   NGINX_ACCESS_LOG=1  nginx writes Debian's default access log (off by default,
#                   as mdgate logs no line per request at level warn)
#   OUT=bench-out/proxy-<date>   where raw JSON, oha databases and the table go
#   SKIP_BUILD=1    use the existing release binaries
#
# Needs: cargo, oha, nginx, openssl, taskset, python3 (with sqlite3), curl.
# Missing ones are installed (apt-get / cargo install) when possible.
set -euo pipefail
# 1,000 idle connections plus oha need more than the usual 1024 descriptors.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

export DURATION="${DURATION:-10}" WARMUP="${WARMUP:-3}" RATES="${RATES:-1000 5000}"
export SAT_CONNS="${SAT_CONNS:-32}" RATE_CONNS="${RATE_CONNS:-16}" IDLE_CONNS="${IDLE_CONNS:-1000}"
export ROUNDS="${ROUNDS:-1}" TARGETS="${TARGETS:-direct mdgate nginx}" REQUESTS="${REQUESTS:-codes patient}"
export LOADGEN_CPU="${LOADGEN_CPU:-0}" SERVER_CPU="${SERVER_CPU:-1}" OHA_THREADS="${OHA_THREADS:-2}"
export QUIET_MAX="${QUIET_MAX:-300}" QUIET_BUSY="${QUIET_BUSY:-10}"
export FOREIGN_MAX="${FOREIGN_MAX:-5}" RETRIES="${RETRIES:-3}"
export OUT="${OUT:-bench-out/proxy-$(date -u +%Y%m%dT%H%M%SZ)}"

log() { printf '[proxy.sh] %s\n' "$*" >&2; }

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
    fi
}

# --- prerequisites ---------------------------------------------------------
need_apt taskset util-linux
need_apt openssl openssl
need_apt python3 python3
need_apt curl curl
# nginx lives in /usr/sbin, which may not be on a user's PATH.
NGINX="$(command -v nginx || true)"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
    need_apt nginx nginx-light
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
fi
# Debian's nginx package enables and starts a system service on port 80; we
# never use it, and start our own instance with its own prefix and config.
python3 -c 'import sqlite3' 2>/dev/null || need_apt sqlite3 libsqlite3-0
OHA="$(command -v oha || true)"
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
if [ -z "$OHA" ]; then
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked
    OHA="$HOME/.cargo/bin/oha"
fi
export OHA NGINX

# --- binaries --------------------------------------------------------------
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    cargo build --release --bin mdgate --bin accessmd-emulator
fi
export MDGATE_BIN="$target_dir/release/mdgate" EMULATOR_BIN="$target_dir/release/accessmd-emulator"
for b in "$MDGATE_BIN" "$EMULATOR_BIN"; do
    [ -x "$b" ] || { log "missing $b (build it or unset SKIP_BUILD)"; exit 1; }
done

# --- scratch directory and certificates -----------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mdgate-bench.XXXXXX")"
export WORK
trap 'rm -rf "$WORK"' EXIT
log "scratch directory $WORK"

. "$here/certs.sh"
make_bench_certs "$WORK"

mkdir -p "$OUT"
log "results in $OUT"
# The driver starts the servers pinned to SERVER_CPU, runs every phase with
# oha pinned to LOADGEN_CPU, stops what it started and prints the table.
python3 "$here/proxy_bench.py" &
driver=$!
trap 'kill -TERM "$driver" 2>/dev/null || true; wait "$driver" 2>/dev/null || true; rm -rf "$WORK"' EXIT INT TERM
wait "$driver"
