#!/usr/bin/env bash
# Load benchmark: starts keygate (software backend) and drives it with `keygate load` at 1, 16
# and 64 connections for each operation, then writes a markdown table with throughput,
# latency percentiles, errors and the server's CPU time per request (utime+stime of the
# server process from /proc/PID/stat, before and after each run, divided by requests served).
#
# The load generator runs on the same machine and competes with the server for the CPUs.
#
# Environment:
#   DURATION=10s          length of each run
#   CONNECTIONS="1 16 64" connection counts
#   OPS="encrypt decrypt metadata health"
#   PORT=18443            listen port (127.0.0.1)
#   SCHEME=http|https     https needs TLS_CONFIG (below); the client then uses --insecure
#   TLS_CONFIG=FILE       TOML appended to [server] for TLS (may use @CERT@ and @KEY@, which
#                         point at a generated self-signed certificate)
#   EXTRA_CONFIG=FILE     TOML appended to the config (policy, decision log, ...)
#   OUT=bench-load.md     where the table goes
#   KEYGATE_BIN=PATH      binary to use (default: cargo build --release, target/release/keygate)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
OPS=${OPS:-"encrypt decrypt metadata health"}
PORT=${PORT:-18443}
SCHEME=${SCHEME:-http}
OUT=${OUT:-bench-load.md}

if [ -z "${KEYGATE_BIN:-}" ]; then
  cargo build --release --locked >&2
  KEYGATE_BIN=target/release/keygate
fi
BIN=$(realpath "$KEYGATE_BIN")
command -v jq >/dev/null || { echo "bench-load: jq is required (apt-get install jq)" >&2; exit 1; }

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

access_key_id=$(head -c 64 /dev/urandom | base32 | tr -dc 'A-Z2-7' | head -c 24)
secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n')

config="$work/keygate.toml"
cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$PORT"
region = "us-east-1"
EOF
if [ "$SCHEME" = https ]; then
  [ -n "${TLS_CONFIG:-}" ] || { echo "bench-load: SCHEME=https needs TLS_CONFIG" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  sed -e "s#@CERT@#$work/cert.pem#g" -e "s#@KEY@#$work/key.pem#g" "$TLS_CONFIG" >>"$config"
fi
cat >>"$config" <<EOF

[backend]
kind = "software"
health_key = "keygate-health"
[backend.software]
key_file = "keys.json"

[[keystore]]
name = "bench"
uri_prefix = "/bench"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "$access_key_id"
secret = "$secret"
EOF
[ -n "${EXTRA_CONFIG:-}" ] && cat "$EXTRA_CONFIG" >>"$config"
"$BIN" keys --config "$config" create foo >/dev/null
"$BIN" keys --config "$config" create keygate-health >/dev/null

# Per-request log lines off: at tens of thousands of requests/s they would measure the log.
RUST_LOG="warn,keygate::cli=info" "$BIN" serve --config "$config" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "keygate listening" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "keygate listening" "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }

tls_flags=()
[ "$SCHEME" = https ] && tls_flags=(--insecure)
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

{
  echo "| op | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU µs/request |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$work/table.md"

for op in $OPS; do
  for c in $CONNECTIONS; do
    before=$(cpu_ticks)
    KEYGATE_SECRET="$secret" "$BIN" load --url "$SCHEME://127.0.0.1:$PORT" --prefix /bench \
      --access-key-id "$access_key_id" "${tls_flags[@]}" --op "$op" --connections "$c" \
      --duration "$DURATION" --json >"$work/run.json" 2>"$work/run.err" || true
    after=$(cpu_ticks)
    jq -r --argjson ticks "$ticks" --argjson cpu "$((after - before))" '
      def f(n): (n * 1000 | round) / 1000;
      "| \(.op) | \(.connections) | \(.throughput | round) | \(f(.latency_ms.p50)) | \(f(.latency_ms.p90)) | \(f(.latency_ms.p99)) | \(f(.latency_ms.max)) | \(.errors) | \(if .requests > 0 then ($cpu / $ticks / .requests * 1e6 * 10 | round) / 10 else "-" end) |"
    ' "$work/run.json" | tee -a "$work/table.md" >&2
  done
done

{
  echo "keygate load benchmark: $(nproc) CPUs, $SCHEME, software backend, $DURATION per run, load generator on the same machine."
  echo
  cat "$work/table.md"
} >"$OUT"
echo "bench-load: wrote $OUT" >&2
