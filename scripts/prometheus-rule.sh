#!/usr/bin/env bash
# Writes deploy/kubernetes/monitoring/prometheusrule.yaml, the Prometheus Operator form of the
# rule files deploy/prometheus/*.yml: their groups, indented under spec. Run it after changing
# a rule file; a test (cargo test --test it monitoring::rules) fails while it is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

out=deploy/kubernetes/monitoring/prometheusrule.yaml
{
  cat <<'HEADER'
# keygate's recording and alerting rules for Prometheus Operator, generated from
# deploy/prometheus/*.yml by scripts/prometheus-rule.sh: edit those files, not this one.
# Your Prometheus resource selects PrometheusRules by label (kube-prometheus-stack:
# release=<its release name>): add that label under metadata.labels.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: keygate
spec:
  groups:
HEADER
  for f in deploy/prometheus/*.yml; do
    awk 'found { if ($0 == "") print ""; else print "  " $0 } /^groups:$/ { found = 1 }' "$f"
  done
} >"$out"
echo "wrote $out"
