# Sourced by the bench scripts: writes an ECDSA P-256 CA and a leaf for
# bench.mdgate.test (mdgate requires SNI == Host) into directory $1.
make_bench_certs() {
    local d="$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 -subj "/CN=mdgate bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/leaf.key" -out "$d/leaf.csr" -subj "/CN=bench.mdgate.test" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:bench.mdgate.test" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$d/leaf.ext"
    openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 2 -extfile "$d/leaf.ext" -out "$d/leaf.crt" 2>/dev/null
    chmod 600 "$d"/*.key
}
