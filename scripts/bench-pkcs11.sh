#!/usr/bin/env bash
# The HSM path against the software path, in one run of paired rounds (ROUNDS, 3). Each round
# measures, one after another on the same machine:
#   - in-process on SoftHSMv2 (criterion, benches/pkcs11.rs: sequential calls on an idle
#     process, so time per call = CPU per call): the raw C_Encrypt (cryptoki's single-part
#     encrypt: C_EncryptInit, C_Encrypt for the length, C_Encrypt), the raw request (the whole
#     PKCS#11 sequence of one keygate encrypt with the key cached: C_GenerateRandom for the IV
#     and the raw C_Encrypt) and KeyBackend::encrypt (the same through keygate's backend);
#   - keygate on the software backend: encrypt and health requests at 16 and 64 connections;
#   - keygate on SoftHSMv2: encrypt at 16 and 64 connections;
#   - with KRYOPTIC_MODULE=PATH (a Kryoptic PKCS#11 module, scripts/kryoptic.sh builds one):
#     the same in-process benches and keygate encrypts on a fresh Kryoptic token (sqlite
#     store), a second token implementation next to SoftHSMv2;
#   - with DB_MODULE=PATH (a SoftHSMv2 built with the SQLite object store,
#     scripts/softhsm2-db.sh prints its path): the same on a fresh db-store token
#     (softhsm2-db), next to Debian's file store;
# (scripts/bench-load.sh: HTTPS, embedded default policy, decision log on; server CPU =
# utime+stime of the server process / requests served). It prints the medians over the rounds
# and the goals of the HSM path as pass/fail, each from the median of the per-round values:
#   - CPU per encrypt on SoftHSMv2 <= software CPU + 1.5 x raw C_Encrypt (16 and 64);
#   - requests/s on SoftHSMv2 at 16 connections >= 75% of the software path's;
#   - p99 on SoftHSMv2 at 64 connections <= 2x the software path's;
# and, for the software path, encrypt CPU - health CPU (the goal: <= 25 µs). For each token it
# also splits the CPU an encrypt costs over the software path into the raw request (the
# token's own work, in-process) and the rest (keygate's PKCS#11 path and what the token does
# to the server around the calls: allocator contention, lock waits, system calls under load).
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
#   KRYOPTIC_MODULE=target/kryoptic/libkryoptic_pkcs11-1.5.4.so SLOW=0 scripts/bench-pkcs11.sh
#   DB_MODULE=$(scripts/softhsm2-db.sh) SLOW=0 scripts/bench-pkcs11.sh   # file vs db store
#
# Writes the report to OUT (bench-pkcs11.md). Environment: ROUNDS, DURATION (8s per load run),
# SLOW, SLOW_SESSIONS, DELAY_US, OBJECTSTORE (SoftHSMv2's objectstore.backend, file), KEYGATE_BIN,
# KRYOPTIC_MODULE, DB_MODULE (and DB_UTIL, default DB_MODULE's ../../bin/softhsm2-util).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/softhsm2.sh
. scripts/lib/softhsm2.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
SLOW=${SLOW:-1}
SLOW_SESSIONS=${SLOW_SESSIONS:-4}
DELAY_US=${DELAY_US:-2000}
OUT=${OUT:-bench-pkcs11.md}
command -v jq >/dev/null || { echo "bench-pkcs11: jq is required (apt-get install jq)" >&2; exit 1; }
tokens="softhsm2"
if [ -n "${KRYOPTIC_MODULE:-}" ]; then
  KRYOPTIC_MODULE=$(realpath "$KRYOPTIC_MODULE")
  [ -f "$KRYOPTIC_MODULE" ] || { echo "bench-pkcs11: no Kryoptic module at $KRYOPTIC_MODULE" >&2; exit 1; }
  command -v pkcs11-tool >/dev/null || { echo "bench-pkcs11: Kryoptic needs pkcs11-tool (apt-get install -y opensc)" >&2; exit 1; }
  export KRYOPTIC_MODULE
  tokens="softhsm2 kryoptic"
fi
if [ -n "${DB_MODULE:-}" ]; then
  DB_MODULE=$(realpath "$DB_MODULE")
  DB_UTIL=${DB_UTIL:-$(dirname "$(dirname "$(dirname "$DB_MODULE")")")/bin/softhsm2-util}
  [ -f "$DB_MODULE" ] && [ -x "$DB_UTIL" ] || { echo "bench-pkcs11: no $DB_MODULE or $DB_UTIL" >&2; exit 1; }
  tokens="$tokens softhsm2-db"
fi
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

# One bench-load run; appends its rows, tagged with the round and backend.
load() {
  local round=$1 token=$2 ops=$3 backend=$2 extra=()
  if [ "$token" = softhsm2-db ]; then
    backend=softhsm2
    extra=(PKCS11_MODULE="$DB_MODULE" SOFTHSM2_UTIL="$DB_UTIL" OBJECTSTORE=db)
  fi
  env "${extra[@]}" BACKEND="$backend" OPS="$ops" CONNECTIONS="16 64" DURATION="$DURATION" OUT="$work/load.md" \
    scripts/bench-load.sh 2>"$work/load.err" || { cat "$work/load.err" >&2; exit 1; }
  # bench-load rows: | op | connections | requests/s | p50 | p90 | p99 | max | errors | cpu | bao |
  awk -F'|' -v r="$round" -v b="$token" '$3 ~ /^ *[0-9]+ *$/ {
    gsub(/ /, ""); print r "\t" b "\t" $2 "\t" $3 "\t" $4 "\t" $7 "\t" $10 "\t" $9
  }' "$work/load.md" >>"$rows"
}

# The in-process benches on one token; appends rows "round TOKEN BENCH 1 - - µs 0".
raw() {
  local round=$1 token=$2 env=()
  if [ "$token" = kryoptic ]; then
    # A fresh token each round: the bench creates its key "bench" on it.
    local dir="$work/kryoptic-$round" so_pin pin
    mkdir -p "$dir"
    printf '[[slots]]\nslot = 1\ndescription = "keygate bench"\ndbtype = "sqlite"\ndbargs = "%s"\n' \
      "$dir/token.sql" >"$dir/kryoptic.conf"
    so_pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    KRYOPTIC_CONF="$dir/kryoptic.conf" pkcs11-tool --module "$KRYOPTIC_MODULE" --slot 1 \
      --init-token --label bench --so-pin "$so_pin" >/dev/null
    KRYOPTIC_CONF="$dir/kryoptic.conf" pkcs11-tool --module "$KRYOPTIC_MODULE" --token-label bench \
      --login --login-type so --so-pin "$so_pin" --init-pin --pin "$pin" >/dev/null 2>&1
    (umask 077 && printf '%s' "$pin" >"$dir/pin")
    env=(env "KRYOPTIC_CONF=$dir/kryoptic.conf" "KEYGATE_PKCS11_BENCH_MODULE=$KRYOPTIC_MODULE"
      KEYGATE_PKCS11_BENCH_LABEL=bench "KEYGATE_PKCS11_BENCH_PIN_FILE=$dir/pin"
      KEYGATE_PKCS11_BENCH_NAME=kryoptic)
  elif [ "$token" = softhsm2-db ]; then
    # A fresh db-store token each round, made by that build's own softhsm2-util.
    local dir="$work/softhsm2-db-$round" pin
    mkdir -p "$dir/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = db\nlog.level = ERROR\n' \
      "$dir/tokens" >"$dir/softhsm2.conf"
    pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    SOFTHSM2_CONF="$dir/softhsm2.conf" "$DB_UTIL" --init-token --free --label bench \
      --so-pin "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" --pin "$pin" >/dev/null
    (umask 077 && printf '%s' "$pin" >"$dir/pin")
    env=(env "SOFTHSM2_CONF=$dir/softhsm2.conf" "KEYGATE_PKCS11_BENCH_MODULE=$DB_MODULE"
      KEYGATE_PKCS11_BENCH_LABEL=bench "KEYGATE_PKCS11_BENCH_PIN_FILE=$dir/pin"
      KEYGATE_PKCS11_BENCH_NAME=softhsm2-db)
  fi
  "${env[@]}" cargo bench --locked --bench pkcs11 -- --warm-up-time 1 --measurement-time 4 \
    >"$work/raw.out" 2>&1 || { cat "$work/raw.out" >&2; exit 1; }
  local bench
  for bench in raw_c_encrypt raw_request backend_encrypt; do
    jq -r --arg r "$round" --arg t "$token" --arg b "$bench" \
      '"\($r)\t\($t)\t\($b)\t1\t-\t-\t\(.median.point_estimate / 1000)\t0"' \
      "target/criterion/$token/$bench/new/estimates.json" >>"$rows"
  done
}

for round in $(seq "$ROUNDS"); do
  echo "bench-pkcs11: round $round of $ROUNDS" >&2
  for token in $tokens; do raw "$round" "$token"; done
  load "$round" software "encrypt health"
  for token in $tokens; do load "$round" "$token" encrypt; done
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

name() { case "$1" in softhsm2) echo SoftHSMv2 ;; softhsm2-db) echo "SoftHSMv2 db" ;; kryoptic) echo Kryoptic ;; *) echo "$1" ;; esac; }
f1() { printf '%.1f' "$1"; }
{
  echo "HSM path against the software path: $ROUNDS paired rounds (medians), $(nproc) CPUs, HTTPS,"
  echo "embedded default policy, decision log on, $DURATION per load run, load generator on the same"
  echo "machine; SoftHSMv2 objectstore.backend = ${OBJECTSTORE:-file}$([ -n "${KRYOPTIC_MODULE:-}" ] && echo "; Kryoptic $(basename "$KRYOPTIC_MODULE"), sqlite")."
  echo
  echo "In-process, sequential calls, µs per call (raw C_Encrypt: C_EncryptInit + 2 C_Encrypt;"
  echo "raw request: C_GenerateRandom + raw C_Encrypt, what keygate issues per encrypt; backend:"
  echo "KeyBackend::encrypt):"
  echo
  echo "| token | raw C_Encrypt | raw request | KeyBackend::encrypt |"
  echo "|---|---:|---:|---:|"
  for t in $tokens; do
    echo "| $(name "$t") | $(f1 "$(median "$t" raw_c_encrypt 1 7)") | $(f1 "$(median "$t" raw_request 1 7)") | $(f1 "$(median "$t" backend_encrypt 1 7)") |"
  done
  echo
  echo "| path | op | connections | requests/s | p99 ms | server CPU µs/request | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for spec in "software encrypt" "software health" $(for t in $tokens; do echo "$t:encrypt"; done); do
    spec=${spec/:/ }
    set -- $spec
    for c in 16 64; do
      errs=$(awk -F'\t' -v b="$1" -v o="$2" -v c="$c" '$2 == b && $3 == o && $4 == c { s += $8 } END { print s + 0 }' "$rows")
      echo "| $1 | $2 | $c | $(median "$1" "$2" "$c" 5) | $(median "$1" "$2" "$c" 6) | $(median "$1" "$2" "$c" 7) | $errs |"
    done
  done
  echo
  echo "| goal (median of the per-round values) | value | goal | |"
  echo "|---|---:|---:|---|"
  for t in $tokens; do
    n=$(name "$t")
    for c in 16 64; do
      margin=$(per_round "print v[\"$t\", \"encrypt\", $c, 7] - v[\"software\", \"encrypt\", $c, 7] - 1.5 * v[\"$t\", \"raw_c_encrypt\", 1, 7]")
      echo "| CPU/encrypt at $c: $n - (software + 1.5 x raw C_Encrypt), µs | $(f1 "$margin") | <= 0 | $(verdict "$margin" "<=" 0) |"
    done
    ratio=$(per_round "print v[\"$t\", \"encrypt\", 16, 5] / v[\"software\", \"encrypt\", 16, 5]")
    echo "| requests/s at 16: $n / software | $(printf '%.2f' "$ratio") | >= 0.75 | $(verdict "$ratio" ">=" 0.75) |"
    ratio=$(per_round "print v[\"$t\", \"encrypt\", 64, 6] / v[\"software\", \"encrypt\", 64, 6]")
    echo "| p99 at 64: $n / software | $(printf '%.2f' "$ratio") | <= 2 | $(verdict "$ratio" "<=" 2) |"
  done
  for c in 16 64; do
    gap=$(per_round "print v[\"software\", \"encrypt\", $c, 7] - v[\"software\", \"health\", $c, 7]")
    echo "| software CPU at $c: encrypt - health, µs | $(f1 "$gap") | <= 25 | $(verdict "$gap" "<=" 25) |"
  done
  echo
  echo "Where an encrypt's extra server CPU goes (medians of the per-round values, µs/request):"
  echo "over software = token encrypt CPU - software encrypt CPU; raw request = the token's own"
  echo "work in-process; keygate in-process = KeyBackend::encrypt - raw request; the rest = what"
  echo "the same calls cost more inside the loaded server (allocator, locks, kernel, cache misses)."
  echo
  echo "| token | connections | over software | raw request | keygate in-process | the rest |"
  echo "|---|---:|---:|---:|---:|---:|"
  for t in $tokens; do
    for c in 16 64; do
      over=$(per_round "print v[\"$t\", \"encrypt\", $c, 7] - v[\"software\", \"encrypt\", $c, 7]")
      own=$(per_round "print v[\"$t\", \"backend_encrypt\", 1, 7] - v[\"$t\", \"raw_request\", 1, 7]")
      rest=$(per_round "print v[\"$t\", \"encrypt\", $c, 7] - v[\"software\", \"encrypt\", $c, 7] - v[\"$t\", \"backend_encrypt\", 1, 7]")
      echo "| $(name "$t") | $c | $(f1 "$over") | $(f1 "$(median "$t" raw_request 1 7)") | $(f1 "$own") | $(f1 "$rest") |"
    done
  done
} >"$work/report.md"

if [ "$SLOW" = 1 ]; then
  echo "bench-pkcs11: slow-HSM mode" >&2
  module=$(softhsm2_module) || exit 1
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
