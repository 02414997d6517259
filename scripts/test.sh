#!/usr/bin/env bash
# Runs every keygate test. Installs what the tests need when it is missing (SoftHSMv2 and
# OpenSC for the PKCS#11 tests, curl for the curl --aws-sigv4 tests, openssl for the TLS tests,
# Python grpcio for the KMS v2 tests), then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing test dependencies: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The independent KMS v2 client (tests/it/kms_v2/client.py): Python grpcio with stubs made by
# grpcio-tools, in a venv of the repository's own (.venv, shared with other Python test tools:
# made once, and only what is missing is installed). The tests run $KEYGATE_PYTHON.
venv=.venv
if ! python3 -m venv --help >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py_need=()
"$venv/bin/python" -c "import grpc" 2>/dev/null || py_need+=("grpcio==1.85.1")
"$venv/bin/python" -c "import grpc_tools.protoc" 2>/dev/null || py_need+=("grpcio-tools==1.85.1")
if [ "${#py_need[@]}" -gt 0 ]; then
  echo "installing Python test dependencies into $venv: ${py_need[*]}" >&2
  "$venv/bin/pip" install -q "${py_need[@]}"
fi
export KEYGATE_PYTHON="$PWD/$venv/bin/python"

cargo test --all-targets --locked "$@"
