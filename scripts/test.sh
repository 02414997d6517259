#!/usr/bin/env bash
# Runs every keygate test. Installs what the tests need when it is missing (SoftHSMv2 and
# OpenSC for the PKCS#11 tests, curl for the curl --aws-sigv4 tests, openssl for the TLS and digest tests,
# Python's jsonschema for the decision-log event schema test), then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
python3 -c 'import jsonschema' >/dev/null 2>&1 || need+=(python3 python3-jsonschema)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing test dependencies: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --all-targets --locked "$@"
