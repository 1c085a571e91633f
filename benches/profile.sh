#!/usr/bin/env bash
# Where mdgate spends its CPU per proxied request: mdgate runs under
# valgrind's callgrind, oha keeps CONNS keep-alive connections busy through
# its TLS listener to the emulator, instrumentation is switched on after a
# warm-up (so no handshakes are counted), and the instructions per request
# (mdgate's own request counter gives the count) and the inclusive costs of
# the busiest functions are printed.
#
#   bash benches/profile.sh                  # the `patient` request
#   REQUEST=codes bash benches/profile.sh
#
# Knobs: REQUEST=patient|codes, WARM_S=5, REC_S=20 (seconds recorded),
# CONNS=32, TOP=60 functions shown, OUT=bench-out/profile-<request>-<date>,
# SKIP_BUILD=1. Needs valgrind (apt-get install valgrind), oha, openssl.
# Callgrind slows mdgate about 50x; figures are instructions, not time, so
# they are stable on a loaded machine but miss cache and syscall costs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
REQUEST="${REQUEST:-patient}" WARM_S="${WARM_S:-5}" REC_S="${REC_S:-20}" CONNS="${CONNS:-32}" TOP="${TOP:-60}"
OUT="${OUT:-bench-out/profile-$REQUEST-$(date -u +%Y%m%dT%H%M%SZ)}"
log() { printf '[profile.sh] %s\n' "$*" >&2; }

command -v valgrind >/dev/null || { log "installing valgrind"; apt-get update -qq && apt-get install -y -qq valgrind; }
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
[ -x "$OHA" ] || cargo install oha --locked
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bin mdgate --bin accessmd-emulator

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mdgate-profile.XXXXXX")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
. "$here/certs.sh"
make_bench_certs "$WORK"
mkdir -p "$OUT"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EMU=$(port) PUB=$(port) ADM=$(port)
"$target_dir/release/accessmd-emulator" --listen "127.0.0.1:$EMU" --admin-password benchpw >"$WORK/emu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$EMU/api/symptom/codes" && break; sleep 0.1; done
acct="$(python3 "$here/proxy_bench.py" accounts "http://127.0.0.1:$EMU" benchpw)"
cat >"$WORK/mdgate.toml" <<TOML
[server]
fqdn = "bench.mdgate.test"
[upstream]
url = "http://127.0.0.1:$EMU"
[public]
listen = "127.0.0.1:$PUB"
[public.tls]
cert_file = "$WORK/leaf.crt"
key_file = "$WORK/leaf.key"
[admin]
listen = "127.0.0.1:$ADM"
[store]
path = "$WORK/mdgate.db"
[log]
filter = "warn"
[runtime]
workers = 1
TOML
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.%p" \
    "$target_dir/release/mdgate" serve -c "$WORK/mdgate.toml" >"$WORK/mdgate.log" 2>&1 &
mdg=$!
pids+=($mdg)
for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$ADM/ready" && break; sleep 0.2; done
curl -sf -o /dev/null "http://127.0.0.1:$ADM/ready" || { cat "$WORK/mdgate.log"; exit 1; }

if [ "$REQUEST" = codes ]; then
    path=/api/symptom/codes; hdr=(-H "Accept-Encoding: gzip")
else
    pid_=$(printf '%s' "$acct" | python3 -c 'import json,sys; print(json.load(sys.stdin)["patient_id"])')
    ck=$(printf '%s' "$acct" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cookie"])')
    path=/api/doctor/patient/$pid_; hdr=(-H "Accept-Encoding: gzip" -H "Cookie: $ck")
fi
metric() { curl -sf "http://127.0.0.1:$ADM/metrics" | awk '/^mdgate_requests_total\{listener="public"/ {s += $NF} END {print s + 0}'; }
# One oha run on the same keep-alive connections: the handshakes and the
# first requests happen before instrumentation is switched on, and the
# requests counted are those mdgate's own counter saw while it was on.
"$OHA" --no-tui --output-format json -z "$((WARM_S + REC_S + 5))s" -c "$CONNS" "${hdr[@]}" \
    --connect-to "bench.mdgate.test:$PUB:127.0.0.1:$PUB" --cacert "$WORK/ca.crt" \
    "https://bench.mdgate.test:$PUB$path" >"$OUT/load.json" &
oha_pid=$!
pids+=($oha_pid)
log "warm-up ${WARM_S}s (uninstrumented), then ${REC_S}s recorded"
sleep "$WARM_S"
callgrind_control -i on "$mdg" >/dev/null
c1=$(metric)
sleep "$REC_S"
c2=$(metric)
callgrind_control -d "$mdg" >/dev/null
callgrind_control -i off "$mdg" >/dev/null
wait "$oha_pid" || true
python3 - "$OUT/load.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("oha status codes:", d["statusCodeDistribution"], "errors:", d.get("errorDistribution"))
PY
n=$((c2 - c1))
[ "$n" -gt 0 ] || { log "no requests counted while recording"; exit 1; }
f=$(ls "$OUT"/callgrind.out.*.1 | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",","",$1); t = $1} END {print t}')
echo "instructions: $total while $n requests were proxied: $((total / n)) per request (no handshakes)" | tee "$OUT/summary.txt"
# Inclusive cost per request of each function. callgrind_annotate lists a
# function once per source file its inlined instructions come from; the
# largest of those entries is the function's whole inclusive cost (the
# others are parts of it), so that one is kept.
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
' "$n" > "$OUT/inclusive.txt" || true
head -n "$TOP" "$OUT/inclusive.txt"
log "full profile: callgrind_annotate --inclusive=yes $f (or kcachegrind)"
