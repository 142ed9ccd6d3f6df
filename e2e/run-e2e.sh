#!/usr/bin/env bash
# Runs the end-to-end tests against the local control plane: the control plane's own tests, then
# the operator's (cargo test --test e2e). With --own-cluster the control plane is started when it
# is not running, and stopped again at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

own=false
[ "${1:-}" = "--own-cluster" ] && own=true

bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"

started=false
if ! e2e/cluster.sh status >/dev/null 2>&1; then
  e2e/cluster.sh up
  started=true
fi
if $own && $started; then
  trap 'e2e/cluster.sh down >/dev/null 2>&1 || true' EXIT
fi

export KUBECONFIG=$PWD/e2e/.cluster/kubeconfig
export NHI_E2E_KUBECTL=$bin_dir/kubectl

echo "== control plane tests"
e2e/test-cluster.sh

echo "== installing CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null

# kube-controller-manager's garbage collector learns of new resource types on its periodic
# discovery resync (every 30 s): until it has, objects owned by a MachineIdentity are not
# collected. Wait until it collects a probe, so the tests time the operator, not that resync.
echo "== waiting for the garbage collector to watch MachineIdentities"
e2e/wait-gc-ready.sh

echo "== operator end-to-end tests"
# The example relying service the entitlement tests talk mTLS to, and the mTLS echo pair of the
# continuity test.
cargo build --bins --example relying_service --example mtls_echo
cargo test --test e2e -- --test-threads="${NHI_E2E_THREADS:-3}"

echo "== install tests: Helm chart, kustomize, Dockerfile"
e2e/test-install.sh

echo "== the chart's RBAC: exactly what it lists, and enough for the operator"
e2e/test-chart-rbac.sh
