#!/usr/bin/env bash
# PKCS#11 cost benchmark, in one run: the CPU cost of one raw SoftHSMv2 AES-GCM encrypt
# in-process (criterion, benches/pkcs11.rs: sequential C_Encrypt calls on an idle process,
# so time per call = CPU per call) against keygate's server CPU per encrypt request over
# HTTPS with the SoftHSMv2 backend, policy and decision log on, at 16 and 64 connections
# (scripts/bench-load.sh: CPU seconds of the server process / requests served). Prints and
# writes (OUT, default bench-pkcs11.md) the table and the ratio; the goal is at most 2x.
#
#   scripts/bench-pkcs11.sh
#   DURATION=30s CONNECTIONS="16 64" scripts/bench-pkcs11.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"16 64"}
OUT=${OUT:-bench-pkcs11.md}
command -v jq >/dev/null || { echo "bench-pkcs11: jq is required (apt-get install jq)" >&2; exit 1; }

cargo bench --locked --bench pkcs11 -- --warm-up-time 1 --measurement-time 5 raw_c_encrypt >&2
raw_ns=$(jq '.median.point_estimate' target/criterion/softhsm2/raw_c_encrypt/new/estimates.json)

load_md=$(mktemp)
trap 'rm -f "$load_md"' EXIT
BACKEND=softhsm2 OPS=encrypt CONNECTIONS="$CONNECTIONS" DURATION="$DURATION" OUT="$load_md" \
  scripts/bench-load.sh

{
  echo "SoftHSMv2 raw C_Encrypt (in-process, median): $(awk -v n="$raw_ns" 'BEGIN {printf "%.1f", n / 1000}') µs"
  echo
  head -1 "$load_md"
  echo
  echo "| connections | requests/s | p99 ms | errors | server CPU µs/request | ÷ raw C_Encrypt |"
  echo "|---:|---:|---:|---:|---:|---:|"
  # bench-load rows: | op | connections | requests/s | p50 | p90 | p99 | max | errors | cpu |
  awk -F'|' -v raw="$raw_ns" '$2 ~ /encrypt/ {
    cpu = $10 + 0
    printf "| %s | %s | %s | %s | %s | %.2fx |\n", $3 + 0, $4 + 0, $7 + 0, $9 + 0, cpu, cpu * 1000 / raw
  }' "$load_md"
} | tee "$OUT"
