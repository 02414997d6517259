#!/usr/bin/env bash
# Transport floor: what one HTTPS keep-alive request costs on this machine before keygate does
# any work. Starts examples/transport_floor.rs (keygate's TLS configuration, HTTP/1.1 stack and
# runtime, answering every request with a fixed health body: no SigV4, JSON, policy, backend
# or logs) and drives it with `keygate load --op health` at 1, 16 and 64 connections, the way
# scripts/bench-load.sh drives keygate. Compare its server CPU per request with bench-load's.
#
#   scripts/bench-floor.sh
#   DURATION=30s CONNECTIONS=16 scripts/bench-floor.sh
#
# Environment: DURATION (10s per run), CONNECTIONS ("1 16 64"), PORT (18444), OUT (bench-floor.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
PORT=${PORT:-18444}
OUT=${OUT:-bench-floor.md}
command -v jq >/dev/null || { echo "bench-floor: jq is required (apt-get install jq)" >&2; exit 1; }

cargo build --release --locked --bin keygate --example transport_floor >&2
bin=target/release/keygate
work=$(mktemp -d)
floor_pid=""
cleanup() {
  [ -z "$floor_pid" ] || { kill "$floor_pid" 2>/dev/null || true; wait "$floor_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" certs dev "$work/certs" >/dev/null
target/release/examples/transport_floor "127.0.0.1:$PORT" "$work/certs/server.pem" \
  "$work/certs/server.key" 2>"$work/floor.log" &
floor_pid=$!
for _ in $(seq 100); do
  grep -q "listening" "$work/floor.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "listening" "$work/floor.log" || { cat "$work/floor.log" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$floor_pid/stat"; }
{
  echo "Transport floor (examples/transport_floor.rs): $(nproc) CPUs, HTTPS keep-alive, fixed health answer, nothing else; $DURATION per run, load generator on the same machine."
  echo
  echo "| connections | requests/s | p50 ms | p99 ms | errors | server CPU µs/request |"
  echo "|---:|---:|---:|---:|---:|---:|"
} >"$work/table.md"
for c in $CONNECTIONS; do
  before=$(cpu_ticks)
  # The floor checks no signature; the client signs anyway, as it would for keygate.
  KEYGATE_SECRET=floor-secret-not-checked-by-the-floor-server-0000 "$bin" load \
    --url "https://127.0.0.1:$PORT" --prefix /floor --access-key-id FLOORFLOORFLOORFLOOR \
    --cacert "$work/certs/ca.pem" --op health --connections "$c" --duration "$DURATION" \
    --json >"$work/run.json" 2>"$work/run.err" || true
  after=$(cpu_ticks)
  [ -s "$work/run.json" ] || { cat "$work/run.err" >&2; exit 1; }
  jq -r --argjson ticks "$ticks" --argjson cpu "$((after - before))" '
    def f(n): (n * 1000 | round) / 1000;
    "| \(.connections) | \(.throughput | round) | \(f(.latency_ms.p50)) | \(f(.latency_ms.p99)) | \(.errors) | \(if .requests > 0 then ($cpu / $ticks / .requests * 1e6 * 10 | round) / 10 else "-" end) |"
  ' "$work/run.json" >>"$work/table.md"
done
tee "$OUT" <"$work/table.md"
