# Sourced by scripts/kryoptic.sh and scripts/softhsm2-db.sh: what both do around a PKCS#11
# token they build and make (messages, the build lock, packages, a temp dir, a keygate config
# with dev certificates and a fresh credential, the summary) and keygate's checks on it.

# token_script NAME: say and die print "NAME: ..." on stderr.
token_script() {
  TOKEN_SCRIPT=$1
}
say() { printf '%s: %s\n' "$TOKEN_SCRIPT" "$*" >&2; }
die() {
  say "$*"
  exit 1
}

# The heavy steps hold flock(1) on $BUILD_LOCK when it is set; times are taken inside it.
lock_take() { if [ -n "${BUILD_LOCK:-}" ]; then exec 9>>"$BUILD_LOCK" && flock 9; fi; }
lock_release() { if [ -n "${BUILD_LOCK:-}" ]; then exec 9>&-; fi; }
rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# need_packages PKG...: installs the Debian packages that are missing (apt-get, with sudo when
# not root).
need_packages() {
  local need=() p sudo=""
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ "${#need[@]}" -gt 0 ] || return 0
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# token_workdir: a temp dir in $work, removed at exit unless KEEP=1 or the script failed (a
# failed run keeps its token, config and logs, test-only PINs, for a look); a keygate still
# running ($server_pid) is stopped first.
token_workdir() {
  work=$(mktemp -d)
  server_pid=""
  trap token_cleanup EXIT
}
token_cleanup() {
  local rc=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then say "kept $work"; else rm -rf "$work"; fi
}

# token_config MODULE TOKEN_LABEL NAME PREFIX [PKCS11_LINE...]: dev certificates in
# $work/certs, a fresh credential (access_key_id, secret, exported as KEYGATE_TOKEN_SECRET) and
# $work/keygate.toml (in $config) for a pkcs11 key store NAME at /PREFIX on the token, with the
# PIN in $work/pin and each PKCS11_LINE added to [backend.pkcs11]; checked with `config check`.
token_config() {
  local module=$1 token_label=$2 name=$3 prefix=$4
  shift 4
  "$BIN" certs dev "$work/certs" >/dev/null
  access_key_id=$(head -c 64 /dev/urandom | base32 | tr -dc 'A-Z2-7' | head -c 24)
  secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
  export KEYGATE_TOKEN_SECRET="$secret"
  config="$work/keygate.toml"
  {
    cat <<TOML
[server]
listen = "127.0.0.1:0"
region = "us-east-1"

[tls]
cert_chain = "certs/server.pem"
key = "certs/server.key"

[backend]
kind = "pkcs11"
health_key = "keygate-health"

[backend.pkcs11]
module = "$module"
token_label = "$token_label"
pin_file = "pin"
TOML
    printf '%s\n' "$@"
    cat <<TOML

[decision_log]
path = "decisions.log"

[[keystore]]
name = "$name"
uri_prefix = "/$prefix"
keys = ["foo", "encrypt-only", "decrypt-only", "no-usage"]
[[keystore.credential]]
access_key_id = "$access_key_id"
secret_env = "KEYGATE_TOKEN_SECRET"
TOML
  } >"$config"
  "$BIN" config check "$config" >&2
}

# token_summary TITLE MODULE BUILT_BY: what token_suite found, and the times (build_secs,
# empty when the build was cached; run_secs); exits 1 when anything failed.
token_summary() {
  echo
  echo "$1"
  echo "  module:              $2"
  if [ -n "$build_secs" ]; then
    echo "  build:               ${build_secs}s ($3, this run)"
  else
    echo "  build:               cached"
  fi
  echo "  keygate conformance: ${conformance:-no result}"
  echo "  AWS XKS test client: ${aws_client:-no result}"
  echo "  key lifecycle:       $lifecycle"
  echo "  decision log:        $lines lines, $(tail -1 "$work/verify.out")"
  echo "  token, keys, tests:  ${run_secs}s"
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
  fi
  echo "all passed"
}

#
# token_suite LABEL PREFIX: with BIN (keygate), config (its config: a key store at /PREFIX
# listing foo, encrypt-only, decrypt-only and no-usage; a decision log at $work/decisions.log),
# work (the temp dir, with certs/ca.pem), access_key_id, secret and XKS_TEST_CLIENT set, it
# creates the keys with `keygate keys create`, checks disable, enable and rotate on a spare key,
# serves the config, runs `keygate conformance` and AWS's XKS test client (-a) against it,
# stops keygate and runs `keygate audit verify` on its decision log. It sets lifecycle,
# conformance, aws_client and lines for the summary, appends what failed to the array failed,
# and keeps server_pid set while keygate runs (for the caller's cleanup).
token_suite() {
  local label=$1 prefix=$2
  keys() { "$BIN" keys --config "$config" "$@"; }
  keys create foo >/dev/null
  keys create encrypt-only --usage encrypt >/dev/null
  keys create decrypt-only --usage decrypt >/dev/null
  keys create no-usage --usage none >/dev/null
  keys create keygate-health >/dev/null
  keys list >&2

  # The key lifecycle on this token: disable and enable rewrite CKA_ID, rotate adds a version.
  status() { keys show spare | awk 'NR == 2 {print $3 " " $4}'; }
  keys create spare >/dev/null
  keys disable spare >/dev/null
  lifecycle="disable: $(status)"
  keys enable spare >/dev/null
  lifecycle="$lifecycle, enable: $(status)"
  keys rotate spare >/dev/null
  lifecycle="$lifecycle, rotate: $(status)"
  [ "$lifecycle" = "disable: DISABLED 1, enable: ENABLED 1, rotate: ENABLED 2" ] || failed+=(lifecycle)

  # 9>&-: the server does not hold the build lock.
  RUST_LOG="warn,keygate::serve=info" "$BIN" serve --config "$config" >"$work/server.out" 2>"$work/server.log" 9>&- &
  server_pid=$!
  addr=""
  for _ in $(seq 300); do
    # The log is JSON lines: {"message":"keygate listening","addr":"127.0.0.1:PORT",...}
    addr=$(sed -n '/keygate listening/s/.*"addr":"\([0-9.]*:[0-9]*\)".*/\1/p' "$work/server.log" | head -1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$work/server.log" >&2; die "keygate did not start"; }
  say "keygate on $label at https://$addr/$prefix"

  conformance_rc=0
  KEYGATE_SECRET="$secret" "$BIN" conformance --url "https://$addr" --prefix "/$prefix" \
    --access-key-id "$access_key_id" --cacert "$work/certs/ca.pem" --key-id foo \
    --encrypt-only-key-id encrypt-only --decrypt-only-key-id decrypt-only \
    --no-usage-key-id no-usage >"$work/conformance.out" 2>&1 || conformance_rc=$?
  conformance=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$work/conformance.out" | tail -1)
  # Every case runs (all four keys are given): a skipped case is a failure too.
  case "$conformance_rc $conformance" in
    "0 "*" passed, 0 failed") ;;
    *) failed+=(conformance) ;;
  esac
  grep -v '^PASS' "$work/conformance.out" >&2 || true

  # The test client exits 0 whatever the result: its closing line says how it went.
  aws_rc=0
  (
    cd "$XKS_TEST_CLIENT"
    XKS_PROXY_HOST="$addr" URI_PREFIX="$prefix" SIGV4_ACCESS_KEY_ID="$access_key_id" \
      SIGV4_SECRET_ACCESS_KEY="$secret" SCHEME=https:// SECURE="--cacert $work/certs/ca.pem" \
      KEY_ID=foo ENCRYPT_ONLY_KEY_ID=encrypt-only DECRYPT_ONLY_KEY_ID=decrypt-only \
      IMPOTENT_KEY_ID=no-usage ANSI_ESCAPE=0 VERBOSE='' ./test-xks-proxy -a
  ) >"$work/aws-client.out" 2>&1 || aws_rc=$?
  aws_client=$(grep -a -E 'tests (PASSED|FAILED)' "$work/aws-client.out" | tail -1 | sed 's/^[^A-Za-z]*//')
  case "$aws_rc $aws_client" in
    "0 All "*" tests PASSED.") ;;
    *)
      failed+=(aws-xks-test-client)
      grep -a -iE 'failed|error' "$work/aws-client.out" | head -40 >&2 || true
      ;;
  esac

  # Stop keygate (it drains and closes the decision log), then check the log's hash chain.
  kill -TERM "$server_pid"
  server_rc=0
  wait "$server_pid" || server_rc=$?
  server_pid=""
  [ "$server_rc" -eq 0 ] || { failed+=("keygate exit $server_rc"); tail -20 "$work/server.log" >&2; }
  lines=$(wc -l <"$work/decisions.log")
  "$BIN" audit verify "$work/decisions.log" >"$work/verify.out" 2>&1 || failed+=("audit verify")
}
