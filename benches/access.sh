#!/usr/bin/env bash
# mdgate access benchmark: authorized federated reads (site two's egress ->
# site one's federation listener -> emulator) against the emulator alone,
# mdgate's own pass-through and nginx doing mutual TLS without any
# authorization, in one run; plus the data path's checks alone and the
# audit append alone. See docs/benchmarks.md, "Access: authorized
# federated reads", and examples/access_bench.rs for what each part does.
#
#   bash benches/access.sh                          # full run, about 12 minutes
#   ROUNDS=1 DURATION=5 bash benches/access.sh      # quicker
#
# Knobs (environment):
#   DURATION=10   seconds recorded per phase        WARMUP=2
#   CONNS=32      keep-alive connections, saturated mode: enough for the
#                 authorized reads to keep the server core busy while a
#                 group of audit entries is flushed (at 8 the core idled
#                 8% of the time); the proxy benchmark of benches/proxy.sh
#                 uses 32 too. Site two's egress pool reuses them (the
#                 `new fed. conns` column shows any it had to open).
#   RATE=1000     requests/s of the fixed-rate mode  RATE_CONNS=8
#   ROUNDS=3      repetitions of the load matrix (tables show medians)
#   TARGETS="direct,passthrough,authorized,nginx"   MODES="saturated,rate"
#   LOAD_CPU=0    SERVER_CPU=1   cores of the load generator and the servers
#   FOREIGN_MAX=5 RETRIES=3      rerun a phase when other processes used more
#                                than FOREIGN_MAX % of a core in its window
#   QUIET_MAX=120 QUIET_BUSY=10  wait before a phase for the cores to go quiet
#   PLAIN_PUBLIC=1 site one's public listener (the `passthrough` baseline)
#                 over plain HTTP instead of TLS; the federation listener
#                 of `authorized` always has mutual TLS
#   STORE_DIR=    where the testbed's sites (and SQLite stores) live; default
#                 a temporary directory under $TMPDIR (ext4 here). Pointing it
#                 at /dev/shm shows what the audit's fsync costs.
#   PERF=1        also profile the server core (perf record -C SERVER_CPU)
#                 during one extra saturated phase each of `passthrough`
#                 and `authorized` (perf-<target>.data and summaries);
#                 PERF_FREQ=499 samples per second; PERF=flat records
#                 no call graphs (cheaper: the load core stays unsaturated);
#                 PERF=fp records call graphs by frame pointers, as cheap,
#                 for a build made with RUSTFLAGS="-C force-frame-pointers=yes"
#                 (use its own CARGO_TARGET_DIR, e.g. target-fp);
#                 PERF_EVENTS=a,b records every one of those events instead
#                 of CPU time (e.g. uprobes on libc's malloc and free, to
#                 count allocations per request by thread; with PERF=flat,
#                 as with call graphs perf loses events)
#   SKIP_BUILD=1  use the existing release build
#   OUT=bench-out/access-<date>
#
# Needs: cargo, nginx (Debian's nginx-light), taskset; perf for PERF=1.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"

DURATION="${DURATION:-10}" WARMUP="${WARMUP:-2}" CONNS="${CONNS:-32}"
RATE="${RATE:-1000}" RATE_CONNS="${RATE_CONNS:-8}" ROUNDS="${ROUNDS:-3}"
TARGETS="${TARGETS:-direct,passthrough,authorized,nginx}" MODES="${MODES:-saturated,rate}"
LOAD_CPU="${LOAD_CPU:-0}" SERVER_CPU="${SERVER_CPU:-1}"
FOREIGN_MAX="${FOREIGN_MAX:-5}" RETRIES="${RETRIES:-3}"
QUIET_MAX="${QUIET_MAX:-120}" QUIET_BUSY="${QUIET_BUSY:-10}"
OUT="${OUT:-bench-out/access-$(date -u +%Y%m%dT%H%M%SZ)}"
log() { printf '[access.sh] %s\n' "$*" >&2; }

need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
}
need_apt taskset util-linux
NGINX="$(command -v nginx || true)"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ] && [[ "$TARGETS" == *nginx* ]]; then
    need_apt nginx nginx-light
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
fi
[ -n "${PERF:-}" ] && need_apt perf linux-perf

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building examples/access_bench.rs (release)"
    cargo build --release --example access_bench
fi
BIN="$target_dir/release/examples/access_bench"
[ -x "$BIN" ] || { log "missing $BIN (unset SKIP_BUILD)"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mdgate-access.XXXXXX")"
STORE_DIR="${STORE_DIR:-$WORK/bed-root}"
mkdir -p "$OUT" "$STORE_DIR"
bench_pid=""
cleanup() {
    if [ -n "$bench_pid" ]; then kill -TERM "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; fi
    rm -rf "$WORK"
    case "$STORE_DIR" in "$WORK"/*) ;; *) rm -rf "$STORE_DIR/bed" "$STORE_DIR/audit" "$STORE_DIR/nginx" ;; esac
}
trap cleanup EXIT INT TERM

# Machine facts, next to the figures.
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
    echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); kernel: $(uname -r)"
    echo "rustc: $(rustc -V 2>/dev/null || echo '?'); nginx: $("$NGINX" -v 2>&1 || echo none)"
    echo "store filesystem: $(df --output=fstype,source "$STORE_DIR" | tail -1 | xargs)"
    echo "loadavg: $(cat /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

args=(--out "$OUT" --work "$STORE_DIR" --nginx "${NGINX:-/usr/sbin/nginx}"
      --duration "$DURATION" --warmup "$WARMUP" --conns "$CONNS" --rate "$RATE"
      --rate-conns "$RATE_CONNS" --rounds "$ROUNDS" --targets "$TARGETS" --modes "$MODES"
      --load-cpu "$LOAD_CPU" --server-cpu "$SERVER_CPU" --foreign-max "$FOREIGN_MAX"
      --retries "$RETRIES" --quiet-max "$QUIET_MAX" --quiet-busy "$QUIET_BUSY")
[ -n "${PERF:-}" ] && args+=(--perf-cpu "$SERVER_CPU" --perf-freq "${PERF_FREQ:-499}")
[ "${PERF:-}" = flat ] && args+=(--perf-flat)
[ "${PERF:-}" = fp ] && args+=(--perf-fp)
[ -n "${PERF:-}" ] && [ -n "${PERF_EVENTS:-}" ] && args+=(--perf-events "$PERF_EVENTS")
[ "${PLAIN_PUBLIC:-0}" != 0 ] && args+=(--plain-public)
# The driver pins its own threads (see the module docs of access_bench.rs).
"$BIN" "${args[@]}" &
bench_pid=$!
wait "$bench_pid"
bench_pid=""
if [ -n "${PERF:-}" ]; then
    for t in passthrough authorized; do
        data="$OUT/perf-$t.data"
        [ -f "$data" ] || continue
        log "perf summaries of $t in $OUT/perf-$t-*.txt"
        perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null \
            | grep -v '^#' | grep -v '^$' > "$OUT/perf-$t-by-thread.txt" || true
        perf report -i "$data" --no-children --sort comm,dso --stdio 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -40 > "$OUT/perf-$t-by-dso.txt" || true
        perf report -i "$data" --children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null \
            | grep -v '^$' | head -150 > "$OUT/perf-$t-inclusive.txt" || true
    done
fi
log "results: $OUT/results.md, $OUT/results.json, $OUT/machine.txt"
