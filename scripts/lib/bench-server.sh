# Sourced by scripts/bench-load.sh and scripts/soak.sh: starts a release keygate the way
# production runs it and sets the variables a `keygate load` run needs.
#
# Environment:
#   SCHEME=https|http     https (default): a fresh development CA and server certificate for
#                         127.0.0.1 from `keygate certs dev`
#   BACKEND=software|softhsm2|kryoptic|openbao
#                         softhsm2: a fresh SoftHSMv2 token (needs softhsm2-util), keys made
#                         with `keygate keys`, non-extractable and sensitive; SESSIONS
#                         (session_pool_size, 8), PKCS11_MODULE (a module to serve through
#                         instead of SoftHSMv2's own, e.g. a shim that forwards to it) and
#                         OBJECTSTORE (SoftHSMv2's objectstore.backend, file), SOFTHSM2_UTIL
#                         (the softhsm2-util that makes the token, e.g. the one of a db
#                         build: it has its own object store code), QUEUE_WAIT_MS
#                         (queue_wait_ms, 50)
#                         kryoptic: a fresh Kryoptic token (sqlite store, its own KRYOPTIC_CONF),
#                         initialised with OpenSC's pkcs11-tool, keys made with `keygate keys`;
#                         the module from KRYOPTIC_MODULE (default
#                         target/kryoptic/libkryoptic_pkcs11-1.5.4.so, scripts/kryoptic.sh
#                         builds it); SESSIONS and QUEUE_WAIT_MS as for softhsm2
#                         openbao: a fresh `bao server -dev` on 127.0.0.1:BAO_PORT (18200), the
#                         keys made with `keygate keys` as root, keygate on a token limited to
#                         them (bao from KEYGATE_BAO, PATH or .venv/bin/bao; POOL connections, 32)
#   DECISION_LOG=1|0      1 (default): every judged request is written to the decision log
#   AUDIT=0|1             1: also signed digests (an Ed25519 key file, default interval) and
#                         shipping to examples/opa-collector.py on loopback every second
#   KMS_V2=1|0            1: also serve the KMS v2 plugin on $work/kms.sock (key foo)
#   POLICY_DIR=DIR        policies to serve (default: the embedded default policy)
#   PORT=18443            listen port on 127.0.0.1
#   KEYGATE_BIN=PATH      binary to use (default: cargo build --release, target/release/keygate)
#
# Sets: BIN work url prefix access_key_id secret server_pid decision_log tls_flags (array),
# kms_socket (with KMS_V2=1), softhsm_env (array, the environment of commands that touch the
# token: SOFTHSM2_CONF or KRYOPTIC_CONF), bao_pid
# (openbao). Installs an EXIT trap that stops
# the server and removes $work unless KEEP=1.
# shellcheck source=scripts/lib/softhsm2.sh
. scripts/lib/softhsm2.sh

SCHEME=${SCHEME:-https}
BACKEND=${BACKEND:-software}
DECISION_LOG=${DECISION_LOG:-1}
PORT=${PORT:-18443}

if [ -z "${KEYGATE_BIN:-}" ]; then
  cargo build --release --locked >&2
  KEYGATE_BIN=target/release/keygate
fi
BIN=$(realpath "$KEYGATE_BIN")

work=$(mktemp -d)
server_pid=""
collector_pid=""
bench_server_cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$collector_pid" ]; then
    kill "$collector_pid" 2>/dev/null || true
    wait "$collector_pid" 2>/dev/null || true
  fi
  if [ -n "${bao_pid:-}" ]; then
    kill "$bao_pid" 2>/dev/null || true
    wait "$bao_pid" 2>/dev/null || true
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap bench_server_cleanup EXIT

access_key_id=$(head -c 64 /dev/urandom | base32 | tr -dc 'A-Z2-7' | head -c 24)
secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
prefix=/bench
url="$SCHEME://127.0.0.1:$PORT"
config="$work/keygate.toml"
decision_log=""
tls_flags=()
softhsm_env=()

{
  echo "[server]"
  echo "listen = \"127.0.0.1:$PORT\""
  echo "region = \"us-east-1\""
  echo
} >"$config"

if [ "$SCHEME" = https ]; then
  "$BIN" certs dev "$work/certs" >/dev/null
  printf '[tls]\ncert_chain = "certs/server.pem"\nkey = "certs/server.key"\n\n' >>"$config"
  tls_flags=(--cacert "$work/certs/ca.pem")
fi

case "$BACKEND" in
  software)
    printf '[backend]\nkind = "software"\nhealth_key = "keygate-health"\n[backend.software]\nkey_file = "keys.json"\n\n' >>"$config"
    ;;
  softhsm2)
    softhsm2_util=${SOFTHSM2_UTIL:-softhsm2-util}
    command -v "$softhsm2_util" >/dev/null || { echo "BACKEND=softhsm2 needs softhsm2-util (apt-get install -y softhsm2)" >&2; exit 1; }
    mkdir -p "$work/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = %s\nlog.level = ERROR\n' "$work/tokens" \
      "${OBJECTSTORE:-file}" >"$work/softhsm2.conf"
    softhsm_env=(env "SOFTHSM2_CONF=$work/softhsm2.conf")
    pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    "${softhsm_env[@]}" "$softhsm2_util" --init-token --free --label bench \
      --so-pin "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" --pin "$pin" >/dev/null
    (umask 077 && printf '%s' "$pin" >"$work/pin")
    module=${PKCS11_MODULE:-$(softhsm2_module)} || exit 1
    printf '[backend]\nkind = "pkcs11"\nhealth_key = "keygate-health"\n[backend.pkcs11]\nmodule = "%s"\ntoken_label = "bench"\npin_file = "pin"\nsofthsm2_conf = "softhsm2.conf"\nsession_pool_size = %s\nqueue_wait_ms = %s\n\n' \
      "$module" "${SESSIONS:-8}" "${QUEUE_WAIT_MS:-50}" >>"$config"
    ;;
  kryoptic)
    command -v pkcs11-tool >/dev/null || { echo "BACKEND=kryoptic needs pkcs11-tool (apt-get install -y opensc)" >&2; exit 1; }
    module=$(realpath "${KRYOPTIC_MODULE:-target/kryoptic/libkryoptic_pkcs11-1.5.4.so}")
    [ -f "$module" ] || { echo "no Kryoptic module at $module (scripts/kryoptic.sh builds it)" >&2; exit 1; }
    printf '[[slots]]\nslot = 1\ndescription = "keygate bench"\ndbtype = "sqlite"\ndbargs = "%s"\n' \
      "$work/token.sql" >"$work/kryoptic.conf"
    softhsm_env=(env "KRYOPTIC_CONF=$work/kryoptic.conf")
    so_pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    pin=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    "${softhsm_env[@]}" pkcs11-tool --module "$module" --slot 1 --init-token --label bench \
      --so-pin "$so_pin" >/dev/null
    "${softhsm_env[@]}" pkcs11-tool --module "$module" --token-label bench --login --login-type so \
      --so-pin "$so_pin" --init-pin --pin "$pin" >/dev/null 2>&1
    (umask 077 && printf '%s' "$pin" >"$work/pin")
    unset so_pin
    printf '[backend]\nkind = "pkcs11"\nhealth_key = "keygate-health"\n[backend.pkcs11]\nmodule = "%s"\ntoken_label = "bench"\npin_file = "pin"\nsession_pool_size = %s\nqueue_wait_ms = %s\n\n' \
      "$module" "${SESSIONS:-8}" "${QUEUE_WAIT_MS:-50}" >>"$config"
    ;;
  openbao)
    bao_bin=${KEYGATE_BAO:-$(command -v bao || echo .venv/bin/bao)}
    [ -x "$bao_bin" ] || { echo "BACKEND=openbao needs bao (scripts/test.sh installs it into .venv)" >&2; exit 1; }
    bao_root=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    bao_url="http://127.0.0.1:${BAO_PORT:-18200}"
    if curl -s "$bao_url/v1/sys/health" >/dev/null 2>&1; then
      echo "something already listens on $bao_url; set BAO_PORT" >&2
      exit 1
    fi
    "$bao_bin" server -dev -dev-no-store-token -dev-listen-address="127.0.0.1:${BAO_PORT:-18200}" \
      -dev-root-token-id="$bao_root" >"$work/bao.log" 2>&1 &
    bao_pid=$!
    for _ in $(seq 200); do
      curl -sf "$bao_url/v1/sys/health" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -sf "$bao_url/v1/sys/health" >/dev/null || { cat "$work/bao.log" >&2; exit 1; }
    bao_api() { curl -sf -H "X-Vault-Token: $bao_root" "$@"; }
    bao_api -X POST -d '{"type":"transit"}' "$bao_url/v1/sys/mounts/keygate" >/dev/null
    printf '[backend]\nkind = "openbao"\nhealth_key = "keygate-health"\n[backend.openbao]\naddress = "%s"\nmount = "keygate"\ntoken_file = "bao.token"\npolicy = "keygate-bench"\npool_size = %s\n\n' \
      "$bao_url" "${POOL:-32}" >>"$config"
    # keygate keys (as root) creates the keys and grants them in policy keygate-bench; the
    # token keygate serves with has that policy only.
    (umask 077 && printf '%s' "$bao_root" >"$work/bao.token")
    export BAO_TOKEN=$bao_root
    ;;
  *) echo "BACKEND must be software, softhsm2, kryoptic or openbao" >&2; exit 1 ;;
esac

if [ -n "${POLICY_DIR:-}" ]; then
  printf '[policy]\ndir = "%s"\n\n' "$(realpath "$POLICY_DIR")" >>"$config"
fi
if [ "$DECISION_LOG" = 1 ]; then
  decision_log="$work/decisions.log"
  # Large enough that a run never rotates, so the line count is the number of decisions.
  printf '[decision_log]\npath = "decisions.log"\nrotate_bytes = 68719476736\n\n' >>"$config"
  if [ "${AUDIT:-0}" = 1 ]; then
    "$BIN" audit keygen --out "$work/digest-key.pem" --public-out "$work/digest-pub.pem" >/dev/null 2>&1
    python3 examples/opa-collector.py 0 "$work/collected.log" >"$work/collector.out" &
    collector_pid=$!
    for _ in $(seq 100); do
      grep -q "listening on" "$work/collector.out" 2>/dev/null && break
      sleep 0.1
    done
    collector=$(sed -n 's/^listening on //p' "$work/collector.out")
    printf '[decision_log.upload]\nurl = "http://%s"\nmin_delay_seconds = 1\nmax_delay_seconds = 1\n' "$collector" >>"$config"
    printf '[decision_log.digest]\ndir = "digests"\nkey_file = "digest-key.pem"\n\n' >>"$config"
  fi
fi
cat >>"$config" <<CONF
[[keystore]]
name = "bench"
uri_prefix = "$prefix"
keys = ["foo"]
[[keystore.credential]]
access_key_id = "$access_key_id"
secret_env = "KEYGATE_BENCH_SECRET"
CONF

if [ "${KMS_V2:-0}" = 1 ]; then
  kms_socket="$work/kms.sock"
  printf '\n[kms_v2]\nsocket = "kms.sock"\nkey = "foo"\n' >>"$config"
fi

export KEYGATE_BENCH_SECRET="$secret"
"${softhsm_env[@]}" "$BIN" keys --config "$config" create foo >/dev/null
"${softhsm_env[@]}" "$BIN" keys --config "$config" create keygate-health >/dev/null
if [ "$BACKEND" = openbao ]; then
  bao_api -X POST -d '{"policies":["keygate-bench"],"ttl":"1h"}' "$bao_url/v1/auth/token/create" |
    jq -r .auth.client_token | (umask 077 && tr -d '\n' >"$work/bao.token")
  unset BAO_TOKEN
fi

# Per-request log lines off: at tens of thousands of requests/s they would measure the log.
RUST_LOG="warn,keygate::serve=info" "${softhsm_env[@]}" \
  "$BIN" serve --config "$config" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 200); do
  grep -q "keygate listening" "$work/server.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "keygate listening" "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }

# utime + stime of the server so far, in clock ticks.
server_cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
# The same for the OpenBao server (0 for other backends).
bao_cpu_ticks() { if [ -n "${bao_pid:-}" ]; then awk '{print $14 + $15}' "/proc/$bao_pid/stat"; else echo 0; fi; }

# "name ticks" for each of the server's decision-log threads (writer, digests, upload).
decision_log_thread_ticks() {
  for t in /proc/"$server_pid"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null) || continue
    case "$name" in decision-log*) awk -v n="$name" '{print n, $14 + $15}' "$t/stat" ;; esac
  done
}
