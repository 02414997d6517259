#!/usr/bin/env bash
# Soak test (not run in CI): keygate under twice KMS's per-key-store rate (3,600 requests/s)
# of mixed encrypt/decrypt/metadata for 10 minutes, driven by `keygate load`, over HTTPS with
# the policy engine and the decision log on (scripts/lib/bench-server.sh).
# Reports: errors (must be 0), latency percentiles per operation, RSS every 10 s (must stay
# within 10% after warm-up) and that the decision log has exactly one line per judged
# request. Exits non-zero when a check fails.
#
#   scripts/soak.sh                      # 10 minutes, 3,600 requests/s, release build
#   DURATION=2m RATE=1800 scripts/soak.sh
#   BACKEND=softhsm2 scripts/soak.sh
#
# Environment: DURATION (10m), RATE (3600, split evenly over the three operations),
# CONNECTIONS (8 per operation), WARMUP_SECS (60), and the server settings of
# scripts/lib/bench-server.sh (SCHEME, BACKEND, DECISION_LOG, POLICY_DIR, PORT, KEYGATE_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10m}
RATE=${RATE:-3600}
CONNECTIONS=${CONNECTIONS:-8}
WARMUP_SECS=${WARMUP_SECS:-60}

# shellcheck source=lib/bench-server.sh
. scripts/lib/bench-server.sh
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
    "${tls_flags[@]}" --op "$op" --connections "$CONNECTIONS" --duration "$DURATION" --rate "$per_op" --json \
    >"$work/load-$op.json" 2>"$work/load-$op.err" &
  load_pids+=("$!")
done
status=0
for pid in "${load_pids[@]}"; do
  wait "$pid" || status=1
done
kill "$sampler_pid" 2>/dev/null || true
sleep 1
[ "$status" -eq 0 ] || { echo "soak: a load generator failed:" >&2; cat "$work"/load-*.err >&2; }

python3 - "$work" "$WARMUP_SECS" "$decision_log" <<'PY' || status=1
import csv, json, os, sys
work, warmup, decision_log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok = True
total = 0
for op in ("encrypt", "decrypt", "metadata"):
    with open(os.path.join(work, f"load-{op}.json")) as f:
        r = json.load(f)
    requests = r["requests"]
    setup = r.get("setup_requests", 0)
    errors = r["errors"]
    lat = r["latency_ms"]
    total += requests + setup
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
    print("decision log: off (DECISION_LOG=0), not checked")
sys.exit(0 if ok else 1)
PY
cp "$work/rss.csv" soak-rss.csv
echo "soak: RSS samples in soak-rss.csv"
exit "$status"
