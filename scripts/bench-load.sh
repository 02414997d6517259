#!/usr/bin/env bash
# Load benchmark: starts a release keygate (HTTPS, embedded default policy, decision log on,
# software backend unless BACKEND=softhsm2, kryoptic or openbao) and drives it with
# `keygate load` at 1, 16 and 64 connections for each operation, then writes a markdown table
# with throughput, latency percentiles, errors and the server's CPU time per request
# (utime+stime of the server process from /proc/PID/stat, before and after each run, divided
# by the requests served).
#
# The load generator runs on the same machine and competes with the server for the CPUs.
#
#   scripts/bench-load.sh
#   DURATION=30s OPS=encrypt CONNECTIONS="16 64" BACKEND=softhsm2 scripts/bench-load.sh
#   BACKEND=openbao OPS=encrypt scripts/bench-load.sh
#
# With BACKEND=openbao the table gains the bao server's own CPU per request, and the same
# runs on the software backend come first, so the two sit side by side in one file.
#
# Environment: DURATION (10s per run), CONNECTIONS ("1 16 64"),
# OPS ("encrypt decrypt metadata health"), OUT (bench-load.md), and the server settings of
# scripts/lib/bench-server.sh (SCHEME, BACKEND, DECISION_LOG, AUDIT, POLICY_DIR, PORT,
# KEYGATE_BIN). RUNS_DIR: also keep each run's `keygate load --json` report there as
# OP-CONNECTIONS.json. With the decision log on, the table is followed by the CPU each
# decision-log thread used per line written (writer, digests, upload).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
OPS=${OPS:-"encrypt decrypt metadata health"}
OUT=${OUT:-bench-load.md}
command -v jq >/dev/null || { echo "bench-load: jq is required (apt-get install jq)" >&2; exit 1; }
if [ "${BACKEND:-software}" = openbao ] && [ -z "${BENCH_NESTED:-}" ]; then
  [ -n "${KEYGATE_BIN:-}" ] || { cargo build --release --locked >&2; export KEYGATE_BIN=target/release/keygate; }
  BENCH_NESTED=1 BACKEND=software OUT="$OUT.software" "$0"
  BENCH_NESTED=1 BACKEND=openbao OUT="$OUT.openbao" "$0"
  cat "$OUT.software" <(echo) "$OUT.openbao" >"$OUT" && rm -f "$OUT.software" "$OUT.openbao"
  echo "bench-load: wrote $OUT (software, then openbao)" >&2
  exit 0
fi

# shellcheck source=lib/bench-server.sh
. scripts/lib/bench-server.sh

ticks=$(getconf CLK_TCK)
{
  echo "| op | connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU µs/request | bao CPU µs/request |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$work/table.md"

judged=0
for op in $OPS; do
  for c in $CONNECTIONS; do
    before=$(server_cpu_ticks)
    bao_before=$(bao_cpu_ticks)
    KEYGATE_SECRET="$secret" "$BIN" load --url "$url" --prefix "$prefix" \
      --access-key-id "$access_key_id" "${tls_flags[@]}" --op "$op" --connections "$c" \
      --duration "$DURATION" --json >"$work/run.json" 2>"$work/run.err" || true
    after=$(server_cpu_ticks)
    bao_after=$(bao_cpu_ticks)
    [ -s "$work/run.json" ] || { cat "$work/run.err" >&2; exit 1; }
    [ -z "${RUNS_DIR:-}" ] || cp "$work/run.json" "$RUNS_DIR/$op-$c.json"
    [ "$op" = health ] || judged=$((judged + $(jq '.requests + .setup_requests' "$work/run.json")))
    jq -r --argjson ticks "$ticks" --argjson cpu "$((after - before))" --argjson bao "$((bao_after - bao_before))" --arg backend "$BACKEND" '
      def f(n): (n * 1000 | round) / 1000;
      def per(t): if .requests > 0 then (t / $ticks / .requests * 1e6 * 10 | round) / 10 else "-" end;
      "| \(.op) | \(.connections) | \(.throughput | round) | \(f(.latency_ms.p50)) | \(f(.latency_ms.p90)) | \(f(.latency_ms.p99)) | \(f(.latency_ms.max)) | \(.errors) | \(per($cpu)) | \(if $backend == "openbao" then per($bao) else "-" end) |"
    ' "$work/run.json" | tee -a "$work/table.md" >&2
  done
done

log_note="decision log off"
threads=""
if [ -n "$decision_log" ]; then
  sleep 2
  lines=$(wc -l <"$decision_log")
  log_note="decision log on: $lines lines for $judged judged requests"
  if [ "${AUDIT:-0}" = 1 ]; then
    log_note="$log_note; signed digests and upload on ($(wc -l <"$work/collected.log") lines at the collector)"
  fi
  # CPU of each decision-log thread over the whole benchmark, per line written.
  threads=$(decision_log_thread_ticks | awk -v t="$ticks" -v l="$lines" \
    '{printf "%s%s %.2f µs/line", (NR > 1 ? ", " : ""), $1, $2 / t / l * 1e6}')
fi
{
  echo "keygate load benchmark: $(nproc) CPUs, $SCHEME, $BACKEND backend, ${POLICY_DIR:-embedded default} policy, $log_note; $DURATION per run, load generator on the same machine."
  [ -z "$threads" ] || echo "Decision-log threads: $threads."
  echo
  cat "$work/table.md"
} >"$OUT"
echo "bench-load: wrote $OUT ($log_note)" >&2
