#!/usr/bin/env bash
# KMS v2 benchmark: starts a release keygate serving both front doors (XKS over HTTPS and the
# KMS v2 plugin on a Unix socket; embedded default policy, decision log on; software backend
# unless BACKEND=softhsm2), then for each number of concurrent callers drives Encrypt through
# the KMS v2 socket (benches/kms_v2.rs: one gRPC connection, as the kube-apiserver keeps) and,
# for comparison in the same run, XKS Encrypt with `keygate load`. Writes a markdown table:
# calls/s, latency and the server's CPU per call (utime+stime of the server process from
# /proc/PID/stat around each run, divided by the calls served).
#
# The load generators run on the same machine and compete with the server for the CPUs.
#
#   scripts/bench-kms-v2.sh
#   BACKEND=softhsm2 CALLERS="1 16" DURATION=10 scripts/bench-kms-v2.sh
#
# Environment: DURATION (seconds per run, 10), CALLERS ("1 16"), OUT (bench-kms-v2.md), and
# the server settings of scripts/lib/bench-server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CALLERS=${CALLERS:-"1 16"}
OUT=${OUT:-bench-kms-v2.md}
command -v jq >/dev/null || { echo "bench-kms-v2: jq is required (apt-get install jq)" >&2; exit 1; }
gen=$(cargo bench --bench kms_v2 --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.executable != null and .target.name == "kms_v2") | .executable' | tail -1)
[ -x "$gen" ] || { echo "bench-kms-v2: cannot build benches/kms_v2.rs" >&2; exit 1; }

export KMS_V2=1
# shellcheck source=lib/bench-server.sh
. scripts/lib/bench-server.sh
for _ in $(seq 100); do
  grep -q "KMS v2 plugin listening" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done

ticks=$(getconf CLK_TCK)
{
  echo "| door | callers | calls/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU µs/call |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$work/table.md"
cpu_per_call() { # ticks_before ticks_after calls
  awk -v b="$1" -v a="$2" -v n="$3" -v t="$ticks" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / t / n * 1e6; else print "-" }'
}
for c in $CALLERS; do
  before=$(server_cpu_ticks)
  KMS_SOCKET="$kms_socket" CALLERS="$c" DURATION_SECS="$DURATION" "$gen" >"$work/kms.json"
  after=$(server_cpu_ticks)
  cpu=$(cpu_per_call "$before" "$after" "$(jq .calls "$work/kms.json")")
  jq -r --arg cpu "$cpu" 'def f(n): (n * 1000 | round) / 1000;
    "| KMS v2 (Unix socket, gRPC) | \(.callers) | \(.calls_per_s | round) | \(f(.p50_ms)) | \(f(.p90_ms)) | \(f(.p99_ms)) | \(f(.max_ms)) | \(.errors) | \($cpu) |"' \
    "$work/kms.json" | tee -a "$work/table.md" >&2
  before=$(server_cpu_ticks)
  KEYGATE_SECRET="$secret" "$BIN" load --url "$url" --prefix "$prefix" \
    --access-key-id "$access_key_id" "${tls_flags[@]}" --op encrypt --connections "$c" \
    --duration "${DURATION}s" --json >"$work/xks.json" 2>"$work/xks.err" || true
  after=$(server_cpu_ticks)
  [ -s "$work/xks.json" ] || { cat "$work/xks.err" >&2; exit 1; }
  cpu=$(cpu_per_call "$before" "$after" "$(jq .requests "$work/xks.json")")
  jq -r --arg cpu "$cpu" 'def f(n): (n * 1000 | round) / 1000;
    "| XKS (HTTPS, SigV4) | \(.connections) | \(.throughput | round) | \(f(.latency_ms.p50)) | \(f(.latency_ms.p90)) | \(f(.latency_ms.p99)) | \(f(.latency_ms.max)) | \(.errors) | \($cpu) |"' \
    "$work/xks.json" | tee -a "$work/table.md" >&2
done
{
  echo "keygate KMS v2 vs XKS Encrypt: $(nproc) CPUs, $BACKEND backend, embedded default policy, decision log on; ${DURATION} s per run, load generators on the same machine."
  echo
  cat "$work/table.md"
} >"$OUT"
echo "bench-kms-v2: wrote $OUT" >&2
