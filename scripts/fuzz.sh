#!/usr/bin/env bash
# Runs every fuzz target (not in CI) for SECONDS each (default 600), JOBS at a time (default 1),
# and prints each target's executions, coverage and crashes. Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it pass
# its instrumentation flags. Crashes land in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                      # every target, 10 minutes each
#   SECONDS_EACH=60 JOBS=2 scripts/fuzz.sh sigv4_verify router_route
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
SECONDS_EACH=${SECONDS_EACH:-600}
JOBS=${JOBS:-1}
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build -s none -O
logs=$(mktemp -d)
run() {
  local t=$1
  mkdir -p "fuzz/corpus/$t"
  cargo fuzz run -s none -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 >"$logs/$t.log" 2>&1 || true
  local execs cov crashes
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1)
  crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
  echo "$t: ${execs:-?} executions in ${SECONDS_EACH}s, ${cov:-cov: ?}, artifacts: $crashes (log $logs/$t.log)"
}
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait
