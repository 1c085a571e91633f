#!/usr/bin/env bash
# Where mdgate's federation listener spends its CPU per mutual-TLS
# handshake: mdgate runs under valgrind's callgrind, examples/handshake_load
# keeps CONNS connections doing full (or resumed) handshakes with one
# GET /federation/v1/identity each, instrumentation is switched on after a
# warm-up (so the start-up and the first DNS fetch are not counted), and
# the instructions per handshake (mdgate's own connection counter gives the
# count) and the inclusive cost of the busiest functions are printed.
#
#   bash benches/handshake_profile.sh                 # DNS trust, full handshakes
#   TRUST=ca PHASE=resumed bash benches/handshake_profile.sh
#
# TOOL=perf samples mdgate at full speed instead (perf record -g, kernel
# included), and prints the share of samples per function.
#
# Knobs: TOOL=callgrind|perf, TRUST=dns|ca, PHASE=full|resumed|keepalive (keepalive: per request),
# WARM_S=5, REC_S=20, CONNS=16, TOP=60, OUT=bench-out/hsprofile-<trust>-<phase>-<date>,
# SKIP_BUILD=1. Needs valgrind, openssl, curl, python3. Instructions are not
# time (no cache misses, no kernel), but they are stable on a busy machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
TOOL="${TOOL:-callgrind}" TRUST="${TRUST:-dns}" PHASE="${PHASE:-full}" WARM_S="${WARM_S:-5}" REC_S="${REC_S:-20}"
CONNS="${CONNS:-16}" TOP="${TOP:-60}" DNS_TTL="${DNS_TTL:-300}"
OUT="${OUT:-bench-out/hsprofile-$TOOL-$TRUST-$PHASE-$(date -u +%Y%m%dT%H%M%SZ)}"
SERVER_CPU="${SERVER_CPU:-1}" LOADGEN_CPU="${LOADGEN_CPU:-0}"
FED=fed.bench.mdgate.test PEER=peer.bench.mdgate.test ZONE=bench.mdgate.test
log() { printf '[handshake_profile.sh] %s\n' "$*" >&2; }

if [ "$TOOL" = perf ]; then
    command -v perf >/dev/null || { log "installing perf"; apt-get update -qq && apt-get install -y -qq linux-perf; }
else
    command -v valgrind >/dev/null || { log "installing valgrind"; apt-get update -qq && apt-get install -y -qq valgrind; }
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ -z "${SKIP_BUILD:-}" ]; then
    # Separately, so that mdgate is built without the dev-dependencies' features.
    cargo build --release --bin mdgate
    cargo build --release --example handshake_load
fi
MDGATE="$target_dir/release/mdgate" LOAD="$target_dir/release/examples/handshake_load"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if [ "$TOOL" = perf ]; then
    MDGATE_WRAP="" WAIT_S=10
else
    MDGATE_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT/callgrind.out.%p"
    WAIT_S=120
fi
args=()
. "$here/handshake_common.sh"
case "$TRUST" in
    dns) start_mdgate mdgate-dns 'dns = true' ;;
    ca) start_mdgate mdgate-ca "ca_file = \"$WORK/ca.crt\"" ;;
    *) log "TRUST must be dns or ca"; exit 64 ;;
esac

if [ "$PHASE" = keepalive ]; then
    series='mdgate_requests_total{listener="federation"'
else
    series='mdgate_connections_total{listener="federation"'
fi
metric() { curl -sf "http://$ADMIN_ADDR/metrics" | awk -v s="$series" 'index($0, s) == 1 {n += $NF} END {print n + 0}'; }

# One load run long enough for the warm-up and the recording; its own
# figures are meaningless under valgrind and are thrown away.
taskset -c "$LOADGEN_CPU" "$LOAD" run "${args[@]}" \
    --ca "$WORK/ca.crt" --cert "$WORK/peer.crt" --key "$WORK/peer.key" --sni "$FED" \
    --phases "$PHASE" --conns "$CONNS" --ka-conns "$CONNS" --warmup 0 \
    --duration "$((WARM_S + REC_S + 10))" --rounds 1 --unknown-duration 0 --quiet-max 0 \
    --retries 0 --server-cpu "$SERVER_CPU" --loadgen-cpu "$LOADGEN_CPU" --out "$OUT/load" \
    >"$OUT/load.log" 2>&1 &
load=$!
pids+=("$load")
log "warm-up ${WARM_S}s (uninstrumented), then ${REC_S}s recorded"
sleep "$WARM_S"
unit=$([ "$PHASE" = keepalive ] && echo request || echo handshake)
if [ "$TOOL" = perf ]; then
    c1=$(metric)
    t1=$(awk '{print $14 + $15}' "/proc/$MDGATE_PID/stat")
    perf record -q -g -p "$MDGATE_PID" -o "$OUT/perf.data" -- sleep "$REC_S" 2>"$OUT/perf.log"
    t2=$(awk '{print $14 + $15}' "/proc/$MDGATE_PID/stat")
    c2=$(metric)
    kill -TERM "$load" 2>/dev/null || true
    n=$((c2 - c1))
    [ "$n" -gt 0 ] || { log "nothing counted while recording"; exit 1; }
    echo "$TRUST/$PHASE: $n ${unit}s in ${REC_S}s, mdgate CPU $(( (t2 - t1) * 10000 / n )) µs per $unit (perf running)" | tee "$OUT/summary.txt"
    perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -n "$TOP" | tee "$OUT/self.txt"
    perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' >"$OUT/children.txt" || true
    log "inclusive shares: $OUT/children.txt; perf report -i $OUT/perf.data"
    exit 0
fi
callgrind_control -i on "$MDGATE_PID" >/dev/null
c1=$(metric)
sleep "$REC_S"
c2=$(metric)
callgrind_control -d "$MDGATE_PID" >/dev/null
callgrind_control -i off "$MDGATE_PID" >/dev/null
kill -TERM "$load" 2>/dev/null || true
n=$((c2 - c1))
[ "$n" -gt 0 ] || { log "nothing counted while recording"; cat "$OUT/load.log" >&2; exit 1; }
f=$(ls "$OUT"/callgrind.out.*.1 2>/dev/null | head -1)
[ -n "$f" ] || f=$(ls "$OUT"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",","",$1); t = $1} END {print t}')
echo "$TRUST/$PHASE: instructions: $total while $n ${unit}s were counted: $((total / n)) per $unit" | tee "$OUT/summary.txt"
# Inclusive cost per operation of each function; callgrind_annotate lists
# a function once per source file its inlined code comes from, and the
# largest entry is its whole inclusive cost.
callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$f" 2>/dev/null \
    | python3 -c '
import collections, re, sys
n = int(sys.argv[1])
tot = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    name = re.sub(r" \[[^]]*\]$", "", m.group(2))
    name = name.split(":", 1)[1] if re.match(r"^[^:]*\.(rs|c|h|S|s)\:|^\?\?\?:", name) else name
    tot[name] = max(tot[name], int(m.group(1).replace(",", "")))
for name, ir in tot.most_common():
    print(f"{ir / n:9.0f}  {name}")
' "$n" >"$OUT/inclusive.txt" || true
head -n "$TOP" "$OUT/inclusive.txt"
log "full profile: callgrind_annotate --inclusive=yes $f"
