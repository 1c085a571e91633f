# Sourced by benches/handshake.sh and benches/handshake_profile.sh: a scratch
# directory (removed on exit, with every process in $pids stopped), the test
# PKI, the peer's DNS server, and start_mdgate. Expects $LOAD, $MDGATE,
# $SERVER_CPU, $LOADGEN_CPU, $DNS_TTL, $FED, $PEER, $ZONE and log().
# MDGATE_WRAP (e.g. a valgrind command line) runs mdgate under a tool;
# WAIT_S bounds how long a server may take to come up.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mdgate-handshake.XXXXXX")"
pids=()
cleanup() {
    local p
    # The driver first (its tasks stop), then the servers.
    for p in $(printf '%s\n' "${pids[@]}" | tac); do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # Keep the servers' own logs (and the DNS server's query counts).
    if [ -d "${OUT:-}" ]; then
        mkdir -p "$OUT/logs"
        cp "$WORK/dns.log" "$OUT/logs/" 2>/dev/null || true
        for d in mdgate-dns mdgate-ca mdgate-pin nginx haproxy; do
            for f in "$WORK/$d"/*log* "$WORK/$d/stderr"; do
                [ -f "$f" ] && cp "$f" "$OUT/logs/$d-$(basename "$f")" || true
            done
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log "scratch directory $WORK"

# --- certificates: one CA, the server's, the peer's, and the peer's name
# with a key its DNS does not publish. ECDSA P-256 everywhere.
cert() { # name cn eku key-file
    local n="$1" cn="$2" eku="$3" key="$4"
    [ -f "$key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key" 2>/dev/null
    openssl req -new -key "$key" -subj "/CN=$cn" -out "$WORK/$n.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:$cn" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=$eku" >"$WORK/$n.ext"
    openssl x509 -req -in "$WORK/$n.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/$n.ext" -out "$WORK/$n.crt" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" -days 2 -subj "/CN=mdgate handshake bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
cert server "$FED" serverAuth "$WORK/server.key"
cert peer "$PEER" clientAuth "$WORK/peer.key"
cert unknown "$PEER" clientAuth "$WORK/unknown.key"
chmod 600 "$WORK"/*.key
cat "$WORK/server.crt" "$WORK/server.key" >"$WORK/server.pem"
# The peer's key as [federation.trust] pinned_spki_sha256 takes it.
PEER_PIN="$(openssl x509 -in "$WORK/peer.crt" -noout -pubkey | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # what command...
    local what="$1"; shift
    local tries=$(( ${WAIT_S:-10} * 20 ))
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    log "$what did not come up"; return 1
}

# --- the peer's DNS: publishes the key of peer.crt (not of unknown.crt).
taskset -c "$LOADGEN_CPU" "$LOAD" dns --zone "$ZONE" --publish "$PEER=$WORK/peer.crt" \
    --ttl "$DNS_TTL" --addr-file "$WORK/dns.addr" 2>"$WORK/dns.log" &
pids+=($!)
wait_for "the DNS server" test -s "$WORK/dns.addr"
DNS_ADDR="$(cat "$WORK/dns.addr")"

# --- mdgate, twice: DNS trust and CA trust.
start_mdgate() { # name trust-lines
    local n="$1" trust="$2" fed adm pub
    fed=$(port) adm=$(port) pub=$(port)
    mkdir -p "$WORK/$n"
    cat >"$WORK/$n/mdgate.toml" <<TOML
[server]
fqdn = "$FED"
[upstream]
# Nothing is proxied in this benchmark; the readiness probe's failures are
# harmless (one refused connect per second).
url = "http://127.0.0.1:9"
[public]
listen = "127.0.0.1:$pub"
plain_http = true
[federation]
listen = "127.0.0.1:$fed"
[federation.tls]
cert_file = "$WORK/server.crt"
key_file = "$WORK/server.key"
[federation.trust]
$trust
[admin]
listen = "127.0.0.1:$adm"
[store]
path = "$WORK/$n/mdgate.db"
[log]
filter = "warn"
[runtime]
workers = 1
[dns]
nameservers = ["$DNS_ADDR"]
min_ttl = "5s"
TOML
    # shellcheck disable=SC2086 # MDGATE_WRAP is a command line
    taskset -c "$SERVER_CPU" ${MDGATE_WRAP:-} "$MDGATE" serve -c "$WORK/$n/mdgate.toml" >"$WORK/$n/log" 2>&1 &
    local pid=$!
    pids+=($pid)
    wait_for "$n" curl -sf "http://127.0.0.1:$adm/live" || { cat "$WORK/$n/log" >&2; exit 1; }
    args+=(--target "name=$n,addr=127.0.0.1:$fed,pid=$pid,admin=127.0.0.1:$adm")
    ADMIN_ADDR="127.0.0.1:$adm" MDGATE_PID=$pid
}
