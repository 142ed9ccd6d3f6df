#!/usr/bin/env bash
# The workload crate (nhi-identity) is what relying services, agents and sidecars link: it must
# never pull in the Kubernetes client, the operator's HTTP server or its CLI parser. Fails when
# `cargo tree -p nhi-identity` (every feature, dev-dependencies included) names one of them, and
# when its default build links prometheus-client (that is the `metrics` feature's).
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(kube|kube-client|kube-core|kube-runtime|kube-derive|k8s-openapi|axum|clap|nhi-api|nhi-core|nhi-operator)$'
tree=$(cargo tree --quiet -p nhi-identity --all-features --prefix none --format '{p}' | awk '{print $1}' | sort -u)
bad=$(printf '%s\n' "$tree" | grep -E "$forbidden" || true)
if [ -n "$bad" ]; then
  echo "nhi-identity must not depend on: $(echo $bad)" >&2
  cargo tree --quiet -p nhi-identity --all-features -i "$(printf '%s\n' "$bad" | head -n1)" >&2 || true
  exit 1
fi
# Without the `metrics` feature, what a workload links has no Prometheus client either.
plain=$(cargo tree --quiet -p nhi-identity -e normal,build --prefix none --format '{p}' | awk '{print $1}' | sort -u)
if printf '%s\n' "$plain" | grep -qx prometheus-client; then
  echo "nhi-identity without features must not depend on prometheus-client (it belongs behind the metrics feature)" >&2
  exit 1
fi
echo "nhi-identity: $(printf '%s\n' "$plain" | wc -l) crates linked by default, $(printf '%s\n' "$tree" | wc -l) crates in its tree (dev-dependencies included), none of kube, k8s-openapi, axum, clap or the operator's crates"
