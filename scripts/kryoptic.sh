#!/usr/bin/env bash
# keygate on a second PKCS#11 implementation: Kryoptic, a PKCS#11 soft token in Rust.
#
# 1. Installs what it needs when missing (apt-get: libclang-dev, libssl-dev, libsqlite3-dev,
#    pkg-config, opensc, curl, jq, xxd, uuid-runtime) and builds Kryoptic's PKCS#11 module
#    from its crates.io source (the crate's own Cargo.lock, --locked) into $KRYOPTIC_CACHE
#    (default target/kryoptic), reusing the module when it is already there.
# 2. Makes a fresh token in a temp dir (its own Kryoptic config, sqlite storage), initialises
#    it with OpenSC's pkcs11-tool (random SO and user PINs), writes a keygate config for a
#    pkcs11 key store on it, creates the keys with `keygate keys create` and checks
#    `keys disable`, `enable` and `rotate` on the token.
# 3. Serves it over HTTPS and runs `keygate conformance` and AWS's XKS test client (`-a`:
#    also the encrypt-only, decrypt-only and no-usage keys) against it, then stops keygate
#    and checks its decision log with `keygate audit verify`.
# 4. Prints a summary with the build and run times; exits non-zero when anything failed.
#
#   scripts/kryoptic.sh
#   BUILD_LOCK=/path/to/lock scripts/kryoptic.sh     # cargo builds under flock(1) on it
#
# Environment:
#   KRYOPTIC_CACHE=DIR   where the module is built and kept (default target/kryoptic)
#   KEYGATE_BIN=PATH     keygate binary to test (default: cargo build --locked, target/debug)
#   XKS_TEST_CLIENT=DIR  AWS's XKS test client (default ../shared/aws-xks-test-client)
#   IV_MODE=MODE         keygate's iv_mode for the token (default random)
#   BUILD_LOCK=FILE      run each cargo build (and the test run) under `flock FILE`
#   KEEP=1               keep the temp dir (token, config, logs) and print its path; a
#                        failed run always keeps it
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/token-suite.sh
. scripts/lib/token-suite.sh

KRYOPTIC_VERSION=1.5.4
KRYOPTIC_FEATURES="minimal,kryoptic-lib/dynamic"
KRYOPTIC_CACHE=${KRYOPTIC_CACHE:-target/kryoptic}
XKS_TEST_CLIENT=${XKS_TEST_CLIENT:-../shared/aws-xks-test-client}
IV_MODE=${IV_MODE:-random}
LABEL=keygate-kryoptic

token_script kryoptic

# --- 1. packages -------------------------------------------------------------------------
need_packages libclang-dev libssl-dev libsqlite3-dev pkg-config opensc curl jq xxd uuid-runtime
[ -d "$XKS_TEST_CLIENT" ] || die "AWS's XKS test client not found in $XKS_TEST_CLIENT (set XKS_TEST_CLIENT)"

# --- 1. the Kryoptic module ----------------------------------------------------------------
mkdir -p "$KRYOPTIC_CACHE"
KRYOPTIC_CACHE=$(realpath "$KRYOPTIC_CACHE")
module="$KRYOPTIC_CACHE/libkryoptic_pkcs11-$KRYOPTIC_VERSION.so"
build_secs=""
if [ -f "$module" ]; then
  say "reusing $module"
else
  # The crate's source as cargo fetches it: a throwaway package that depends on it, and
  # cargo metadata for the path of the unpacked source.
  fetch="$KRYOPTIC_CACHE/fetch"
  mkdir -p "$fetch"
  cat >"$fetch/Cargo.toml" <<TOML
[package]
name = "kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
kryoptic = { version = "=$KRYOPTIC_VERSION", default-features = false }

[workspace]
TOML
  : >"$fetch/lib.rs"
  manifest=$(cargo metadata --format-version 1 --manifest-path "$fetch/Cargo.toml" |
    jq -r --arg v "$KRYOPTIC_VERSION" '.packages[] | select(.name == "kryoptic" and .version == $v) | .manifest_path')
  [ -f "$manifest" ] || die "cargo did not fetch kryoptic $KRYOPTIC_VERSION"
  src="$KRYOPTIC_CACHE/src-$KRYOPTIC_VERSION"
  rm -rf "$src"
  cp -r "$(dirname "$manifest")" "$src"
  # Its own workspace root, so that no Cargo.toml above the cache dir is taken for one.
  printf '\n[workspace]\n' >>"$src/Cargo.toml"
  say "building kryoptic $KRYOPTIC_VERSION ($KRYOPTIC_FEATURES)"
  lock_take
  start=$SECONDS
  cargo build --release --locked --manifest-path "$src/Cargo.toml" \
    --no-default-features --features "$KRYOPTIC_FEATURES" --target-dir "$KRYOPTIC_CACHE/target" >&2
  build_secs=$((SECONDS - start))
  lock_release
  cp "$KRYOPTIC_CACHE/target/release/libkryoptic_pkcs11.so" "$module.tmp"
  mv "$module.tmp" "$module"
  say "built $module in ${build_secs}s"
fi

# --- keygate -----------------------------------------------------------------------------
if [ -z "${KEYGATE_BIN:-}" ]; then
  lock_take
  cargo build --locked --bin keygate >&2
  lock_release
  KEYGATE_BIN=target/debug/keygate
fi
BIN=$(realpath "$KEYGATE_BIN")

# --- 2. a token and a key store on it ------------------------------------------------------
lock_take
run_start=$SECONDS
token_workdir

# Kryoptic reads its configuration from the file KRYOPTIC_CONF names, when the module is
# initialised; every process that opens the token has it in its environment.
cat >"$work/kryoptic.conf" <<TOML
[[slots]]
slot = 1
description = "keygate Kryoptic test slot"
dbtype = "sqlite"
dbargs = "$work/token.sql"
TOML
export KRYOPTIC_CONF="$work/kryoptic.conf"
so_pin=$(rand_hex 16)
pin=$(rand_hex 16)
pkcs11-tool --module "$module" --slot 1 --init-token --label "$LABEL" --so-pin "$so_pin" >/dev/null
pkcs11-tool --module "$module" --token-label "$LABEL" --login --login-type so --so-pin "$so_pin" \
  --init-pin --pin "$pin" >/dev/null 2>&1
(umask 077 && printf '%s' "$pin" >"$work/pin")
unset so_pin pin

token_config "$module" "$LABEL" kryoptic kryoptic "iv_mode = \"$IV_MODE\""
failed=()
token_suite Kryoptic kryoptic
run_secs=$((SECONDS - run_start))
lock_release

# --- 4. summary ----------------------------------------------------------------------------
token_summary "Kryoptic $KRYOPTIC_VERSION ($KRYOPTIC_FEATURES), iv_mode = \"$IV_MODE\"" "$module" \
  "cargo build --release"
