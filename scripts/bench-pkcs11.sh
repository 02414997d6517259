#!/usr/bin/env bash
# The HSM path against the software path, in one run of paired rounds (ROUNDS, 3). Each round
# measures, one after another on the same machine:
#   - the raw SoftHSMv2 C_Encrypt in-process (criterion, benches/pkcs11.rs: sequential calls on
#     an idle process, so time per call = CPU per call);
#   - keygate on the software backend: encrypt and health requests at 16 and 64 connections;
#   - keygate on SoftHSMv2: encrypt at 16 and 64 connections;
# (scripts/bench-load.sh: HTTPS, embedded default policy, decision log on; server CPU =
# utime+stime of the server process / requests served). It prints the medians over the rounds
# and the goals of the HSM path as pass/fail, each from the median of the per-round values:
#   - CPU per encrypt on SoftHSMv2 <= software CPU + 1.5 x raw C_Encrypt (16 and 64);
#   - requests/s on SoftHSMv2 at 16 connections >= 75% of the software path's;
#   - p99 on SoftHSMv2 at 64 connections <= 2x the software path's;
# and, for the software path, encrypt CPU - health CPU (the goal: <= 25 µs).
#
# With DB_MODULE (a SoftHSMv2 built with the SQLite object store, scripts/softhsm2-db.sh) each
# round also measures that module on a token with objectstore.backend = db, as the path
# softhsm2-db: its raw C_Encrypt and encrypt at 16 and 64 connections, and the same goals
# against the software path (the token is made with the softhsm2-util next to the module).
#
# Then the slow-HSM mode (SLOW=1, default): a PKCS#11 shim (tests/slow-pkcs11/slow_pkcs11.c,
# built here with gcc) forwards to SoftHSMv2 and sleeps DELAY_US (2000) in every C_Encrypt;
# keygate with session_pool_size SLOW_SESSIONS (4) and queue_wait_ms 10 is driven at 64
# connections. It passes when the encrypts served imply SLOW_SESSIONS calls at once (served/s x
# delay, Little's law, at least 80% of the pool) and the surplus is shed with 429
# ThrottlingException and nothing else.
#
#   scripts/bench-pkcs11.sh
#   ROUNDS=1 DURATION=5s SLOW=0 scripts/bench-pkcs11.sh
#   KEYGATE_BIN=/path/to/keygate scripts/bench-pkcs11.sh      # another build, same rounds
#   DB_MODULE=$(scripts/softhsm2-db.sh) SLOW=0 scripts/bench-pkcs11.sh   # file vs db store
#
# Writes the report to OUT (bench-pkcs11.md). Environment: ROUNDS, DURATION (8s per load run),
# SLOW, SLOW_SESSIONS, DELAY_US, OBJECTSTORE (SoftHSMv2's objectstore.backend, file), KEYGATE_BIN,
# DB_MODULE (and DB_UTIL, default DB_MODULE's ../../bin/softhsm2-util).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
SLOW=${SLOW:-1}
SLOW_SESSIONS=${SLOW_SESSIONS:-4}
DELAY_US=${DELAY_US:-2000}
OUT=${OUT:-bench-pkcs11.md}
DB_MODULE=${DB_MODULE:-}
paths="softhsm2"
if [ -n "$DB_MODULE" ]; then
  DB_MODULE=$(realpath "$DB_MODULE")
  DB_UTIL=${DB_UTIL:-$(dirname "$(dirname "$(dirname "$DB_MODULE")")")/bin/softhsm2-util}
  [ -f "$DB_MODULE" ] && [ -x "$DB_UTIL" ] || { echo "bench-pkcs11: no $DB_MODULE or $DB_UTIL" >&2; exit 1; }
  paths="softhsm2 softhsm2-db"
fi
command -v jq >/dev/null || { echo "bench-pkcs11: jq is required (apt-get install jq)" >&2; exit 1; }
if [ "$SLOW" = 1 ]; then
  command -v gcc >/dev/null || { echo "bench-pkcs11: the slow-HSM mode needs gcc" >&2; exit 1; }
fi

if [ -z "${KEYGATE_BIN:-}" ]; then
  cargo build --release --locked >&2
  KEYGATE_BIN=target/release/keygate
fi
export KEYGATE_BIN
cargo bench --locked --bench pkcs11 --no-run >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows="$work/rows.tsv" # round backend op connections requests/s p99 cpu errors

# One bench-load run; appends its rows, tagged with the round and path (software, softhsm2 or
# softhsm2-db: SoftHSMv2 with DB_MODULE and objectstore.backend = db).
load() {
  local round=$1 path=$2 ops=$3 backend=$2 extra=()
  if [ "$path" = softhsm2-db ]; then
    backend=softhsm2
    extra=(PKCS11_MODULE="$DB_MODULE" SOFTHSM2_UTIL="$DB_UTIL" OBJECTSTORE=db)
  fi
  env "${extra[@]}" BACKEND="$backend" OPS="$ops" CONNECTIONS="16 64" DURATION="$DURATION" OUT="$work/load.md" \
    scripts/bench-load.sh 2>"$work/load.err" || { cat "$work/load.err" >&2; exit 1; }
  # bench-load rows: | op | connections | requests/s | p50 | p90 | p99 | max | errors | cpu | bao |
  awk -F'|' -v r="$round" -v b="$path" '$3 ~ /^ *[0-9]+ *$/ {
    gsub(/ /, ""); print r "\t" b "\t" $2 "\t" $3 "\t" $4 "\t" $7 "\t" $10 "\t" $9
  }' "$work/load.md" >>"$rows"
}

raw() {
  local round=$1 path=$2 extra=()
  [ "$path" = softhsm2-db ] &&
    extra=(KEYGATE_BENCH_PKCS11_MODULE="$DB_MODULE" KEYGATE_BENCH_OBJECTSTORE=db)
  env "${extra[@]}" cargo bench --locked --bench pkcs11 -- --warm-up-time 1 --measurement-time 4 \
    raw_c_encrypt >"$work/raw.out" 2>&1 || { cat "$work/raw.out" >&2; exit 1; }
  jq -r --arg r "$round" --arg p "$path" '"\($r)\traw-\($p)\tc_encrypt\t1\t-\t-\t\(.median.point_estimate / 1000)\t0"' \
    target/criterion/softhsm2/raw_c_encrypt/new/estimates.json >>"$rows"
}

for round in $(seq "$ROUNDS"); do
  echo "bench-pkcs11: round $round of $ROUNDS" >&2
  for p in $paths; do raw "$round" "$p"; done
  load "$round" software "encrypt health"
  for p in $paths; do load "$round" "$p" encrypt; done
done

# median(backend, op, connections, column) over the rounds; column 5 rps, 6 p99, 7 cpu.
median() {
  awk -F'\t' -v b="$1" -v o="$2" -v c="$3" -v col="$4" '$2 == b && $3 == o && $4 == c { print $col }' \
    "$rows" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# per_round EXPR: the median over rounds of EXPR, an awk expression of the round's values
# v[path, op, connections, column].
per_round() {
  local r out=()
  for r in $(seq "$ROUNDS"); do
    out+=("$(awk -F'\t' -v r="$r" '$1 == r { v[$2, $3, $4, 5] = $5; v[$2, $3, $4, 6] = $6; v[$2, $3, $4, 7] = $7 }
      END { '"$1"' }' "$rows")")
  done
  printf '%s\n' "${out[@]}" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
verdict() { awk -v v="$1" -v op="$2" -v goal="$3" 'BEGIN { ok = (op == "<=") ? v <= goal : v >= goal; print (ok ? "pass" : "FAIL") }'; }

# The path's name in the report.
name() { case "$1" in softhsm2) echo "SoftHSMv2" ;; softhsm2-db) echo "SoftHSMv2 db" ;; *) echo "$1" ;; esac; }
{
  echo "HSM path against the software path: $ROUNDS paired rounds (medians), $(nproc) CPUs, HTTPS,"
  echo "embedded default policy, decision log on, $DURATION per load run, load generator on the same"
  echo "machine; SoftHSMv2 objectstore.backend = ${OBJECTSTORE:-file}$([ -n "$DB_MODULE" ] && echo "; softhsm2-db: $DB_MODULE, objectstore.backend = db")."
  echo
  for p in $paths; do
    echo "Raw $(name "$p") C_Encrypt (in-process): $(printf '%.1f' "$(median "raw-$p" c_encrypt 1 7)") µs"
  done
  echo
  echo "| path | op | connections | requests/s | p99 ms | server CPU µs/request | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  specs=("software encrypt" "software health")
  for p in $paths; do specs+=("$p encrypt"); done
  for spec in "${specs[@]}"; do
    set -- $spec
    for c in 16 64; do
      errs=$(awk -F'\t' -v b="$1" -v o="$2" -v c="$c" '$2 == b && $3 == o && $4 == c { s += $8 } END { print s + 0 }' "$rows")
      echo "| $1 | $2 | $c | $(median "$1" "$2" "$c" 5) | $(median "$1" "$2" "$c" 6) | $(median "$1" "$2" "$c" 7) | $errs |"
    done
  done
  echo
  echo "| goal (median of the per-round values) | value | goal | |"
  echo "|---|---:|---:|---|"
  for p in $paths; do
    n=$(name "$p")
    for c in 16 64; do
      margin=$(per_round "print v[\"$p\", \"encrypt\", $c, 7] - v[\"software\", \"encrypt\", $c, 7] - 1.5 * v[\"raw-$p\", \"c_encrypt\", 1, 7]")
      echo "| CPU/encrypt at $c: $n - (software + 1.5 x raw), µs | $(printf '%.1f' "$margin") | <= 0 | $(verdict "$margin" "<=" 0) |"
    done
    ratio=$(per_round "print v[\"$p\", \"encrypt\", 16, 5] / v[\"software\", \"encrypt\", 16, 5]")
    echo "| requests/s at 16: $n / software | $(printf '%.2f' "$ratio") | >= 0.75 | $(verdict "$ratio" ">=" 0.75) |"
    ratio=$(per_round "print v[\"$p\", \"encrypt\", 64, 6] / v[\"software\", \"encrypt\", 64, 6]")
    echo "| p99 at 64: $n / software | $(printf '%.2f' "$ratio") | <= 2 | $(verdict "$ratio" "<=" 2) |"
  done
  for c in 16 64; do
    gap=$(per_round "print v[\"software\", \"encrypt\", $c, 7] - v[\"software\", \"health\", $c, 7]")
    echo "| software CPU at $c: encrypt - health, µs | $(printf '%.1f' "$gap") | <= 25 | $(verdict "$gap" "<=" 25) |"
  done
} >"$work/report.md"

if [ "$SLOW" = 1 ]; then
  echo "bench-pkcs11: slow-HSM mode" >&2
  module=""
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
    [ -f "$m" ] && module=$m && break
  done
  [ -n "$module" ] || { echo "no libsofthsm2.so found" >&2; exit 1; }
  gcc -shared -fPIC -O2 -o "$work/slow.so" tests/slow-pkcs11/slow_pkcs11.c -ldl \
    -DREAL_MODULE="\"$module\"" -DDELAY_US="$DELAY_US"
  mkdir -p "$work/slow-runs"
  BACKEND=softhsm2 PKCS11_MODULE="$work/slow.so" SESSIONS="$SLOW_SESSIONS" QUEUE_WAIT_MS=10 \
    OPS=encrypt CONNECTIONS=64 DURATION="$DURATION" OUT="$work/slow.md" RUNS_DIR="$work/slow-runs" \
    scripts/bench-load.sh 2>"$work/load.err" || { cat "$work/load.err" >&2; exit 1; }
  jq -r --argjson sessions "$SLOW_SESSIONS" --argjson delay "$DELAY_US" '
    .ok as $ok | ($ok / .seconds) as $rate | ($rate * $delay / 1e6) as $at_once
    | (.errors_by_name // {}) as $by
    | ([$by | to_entries[] | select(.key | test("ThrottlingException") | not) | .value] | add // 0) as $other
    | ([$by | to_entries[] | select(.key | test("ThrottlingException")) | .value] | add // 0) as $shed
    | "",
      "Slow HSM: SoftHSMv2 behind a shim that sleeps \($delay) µs in each C_Encrypt; session_pool_size \($sessions), queue_wait_ms 10, 64 connections:",
      "\($ok) encrypts served (\($rate | round)/s, so at least \($at_once * 10 | round / 10) calls at once), \($shed) answered 429 ThrottlingException, \($other) other errors (\($by | tostring)), p99 \(.latency_ms.p99) ms: \(if $at_once >= 0.8 * $sessions and $shed > 0 and $other == 0 then "pass" else "FAIL" end)"
  ' "$work/slow-runs/encrypt-64.json" >>"$work/report.md"
fi

{
  echo
  echo "Per round (round, path, op, connections, requests/s, p99 ms, CPU µs, errors):"
  echo
  echo '```'
  cat "$rows"
  echo '```'
} >>"$work/report.md"
tee "$OUT" <"$work/report.md"
