#!/usr/bin/env bash
# Soak test (not run in CI): keygate under twice KMS's per-key-store rate (3,600 requests/s)
# of mixed encrypt/decrypt/metadata for 10 minutes, driven by `keygate load`.
# Reports: errors (must be 0), latency percentiles per operation, RSS every 10 s (must stay
# within 10% after warm-up) and, when a decision log is configured, that it has one line per
# judged request. Exits non-zero when a check fails.
#
#   scripts/soak.sh                      # 10 minutes, 3,600 requests/s, release build
#   DURATION=2m RATE=1800 scripts/soak.sh
#   KEYGATE_BIN=/path/to/keygate DECISION_LOG=/path/to/decisions.jsonl scripts/soak.sh
#
# Environment: DURATION (10m), RATE (3600, split evenly over the three operations),
# CONNECTIONS (8 per operation), WARMUP_SECS (60), PORT (18443), KEYGATE_BIN,
# DECISION_LOG (the decision log file of the served config, when the policy engine logs).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
RATE=${RATE:-3600}
CONNECTIONS=${CONNECTIONS:-8}
WARMUP_SECS=${WARMUP_SECS:-60}
PORT=${PORT:-18443}
BIN=${KEYGATE_BIN:-target/release/keygate}

if [ -z "${KEYGATE_BIN:-}" ]; then
  cargo build --release --locked
fi
"$BIN" load --help >/dev/null 2>&1 || {
  echo "soak: $BIN has no 'load' command (it comes with the client work)" >&2
  exit 1
}

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# A dev config: software keys, a generated key store and credential. Request lines are not
# logged (3,600 lines/s would measure the log, not keygate).
RUST_LOG="warn,keygate::cli=info" "$BIN" serve --dev --data-dir "$work/dev" --listen "127.0.0.1:$PORT" \
  >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "keygate listening" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "keygate listening" "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }

config="$work/dev/keygate.toml"
prefix=$(sed -n 's/^uri_prefix = "\(.*\)"$/\1/p' "$config" | head -1)
access_key_id=$(sed -n 's/^access_key_id = "\(.*\)"$/\1/p' "$config" | head -1)
secret=$(cat "$work/dev/keystore.secret")
url="http://127.0.0.1:$PORT"
per_op=$((RATE / 3))

echo "soak: $DURATION at $RATE requests/s ($per_op each of encrypt, decrypt, metadata) against pid $server_pid"

# RSS every 10 s.
echo "elapsed_s,rss_kib" >"$work/rss.csv"
(
  start=$(date +%s)
  while kill -0 "$server_pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$rss" >>"$work/rss.csv"
    sleep 10
  done
) &
sampler_pid=$!

load_pids=()
for op in encrypt decrypt metadata; do
  # The secret goes by environment, not argv (argv is visible to every user in ps).
  KEYGATE_SECRET="$secret" "$BIN" load --url "$url" --prefix "$prefix" --access-key-id "$access_key_id" \
    --op "$op" --connections "$CONNECTIONS" --duration "$DURATION" --rate "$per_op" --json \
    >"$work/load-$op.json" 2>"$work/load-$op.err" &
  load_pids+=("$!")
done
status=0
for pid in "${load_pids[@]}"; do
  wait "$pid" || status=1
done
kill "$sampler_pid" 2>/dev/null || true
[ "$status" -eq 0 ] || { echo "soak: a load generator failed:" >&2; cat "$work"/load-*.err >&2; }

python3 - "$work" "$WARMUP_SECS" "${DECISION_LOG:-}" <<'PY' || status=1
import csv, json, os, sys
work, warmup, decision_log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok = True
total = 0
for op in ("encrypt", "decrypt", "metadata"):
    with open(os.path.join(work, f"load-{op}.json")) as f:
        r = json.load(f)
    requests = r.get("requests", r.get("total", 0))
    errors = r.get("errors", r.get("failed", None))
    lat = r.get("latency_ms", r.get("latency", {}))
    total += requests
    print(f"{op:9} requests {requests}  errors {errors}  latency {json.dumps(lat)}")
    if errors != 0:
        ok = False
        print(f"FAIL: {op} had errors: {errors}")
rows = [(int(e), int(k)) for e, k in csv.reader(open(os.path.join(work, "rss.csv"))) if e.isdigit()]
print("RSS over time (s, KiB):", " ".join(f"{e}:{k}" for e, k in rows))
after = [k for e, k in rows if e >= warmup]
if len(after) >= 2:
    lo, hi = min(after), max(after)
    growth = (hi - lo) / lo
    print(f"RSS after {warmup} s warm-up: min {lo} KiB, max {hi} KiB, spread {growth:.1%}")
    if growth > 0.10:
        ok = False
        print("FAIL: RSS not flat within 10% after warm-up")
else:
    print("FAIL: too few RSS samples after warm-up")
    ok = False
if decision_log:
    lines = sum(1 for _ in open(decision_log))
    print(f"decision log lines {lines}, judged requests {total}")
    if lines != total:
        ok = False
        print("FAIL: decision log lines differ from judged requests")
else:
    print("decision log: not checked (set DECISION_LOG to the served config's decision log)")
sys.exit(0 if ok else 1)
PY
echo "soak: output kept in $work"
exit "$status"
