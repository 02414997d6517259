#!/usr/bin/env bash
# Runs every keygate test. Installs what the tests need when it is missing (SoftHSMv2 and
# OpenSC for the PKCS#11 tests, curl for the curl --aws-sigv4 tests, openssl for the TLS tests,
# Prometheus and promtool for the monitoring tests), then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
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

cargo test --all-targets --locked "$@"
