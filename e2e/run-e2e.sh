#!/usr/bin/env bash
# Runs the end-to-end tests against the local control plane in $NHI_CLUSTER_DIR: the control
# plane's own tests, then the operator's (cargo test --test e2e), the samples, the install
# artifacts and the chart's RBAC, and the interop matrix.
#
#   e2e/run-e2e.sh                 on the control plane in $NHI_CLUSTER_DIR (default e2e/.cluster),
#                                  started when it is not running and left running (make e2e-test);
#                                  refused while the demo's operator (process or Helm release) runs
#                                  on it
#   e2e/run-e2e.sh --own-cluster   on a control plane of its own (NHI_CLUSTER_DIR, default
#                                  e2e/.cluster-test): started fresh (one left by an interrupted run
#                                  is stopped first) and stopped at the end, also on failure
#                                  (make test); a demo on e2e/.cluster is left alone
#
# NHI_E2E_ONLY="filter ..." runs only the operator tests those cargo filters select, one at a
# time, and nothing after them (make chaos).
#
# KUBECONFIG is always set to that control plane's kubeconfig, so no test reaches another cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

own=false
[ "${1:-}" = "--own-cluster" ] && own=true
if $own && [ -z "${NHI_CLUSTER_DIR:-}" ]; then export NHI_CLUSTER_DIR=e2e/.cluster-test; fi
# shellcheck source=e2e/env.sh
. e2e/env.sh

die() { printf 'run-e2e: error: %s\n' "$*" >&2; exit 1; }

bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"

if $own; then
  demo_dir=$PWD/e2e/.cluster
  [ "$NHI_CLUSTER_DIR" != "$demo_dir" ] ||
    die "--own-cluster stops its control plane at the end; give it a state folder of its own (NHI_CLUSTER_DIR=e2e/.cluster-test, as make test does), not e2e/.cluster"
  if [ -d "$NHI_CLUSTER_DIR" ]; then
    echo "== stopping the control plane an earlier run left in $NHI_CLUSTER_DIR"
    e2e/cluster.sh down >/dev/null
  fi
  echo "== starting a control plane of its own in $NHI_CLUSTER_DIR"
  e2e/cluster.sh up
  trap 'e2e/cluster.sh down >/dev/null 2>&1 || true' EXIT
else
  e2e/cluster.sh status >/dev/null 2>&1 || e2e/cluster.sh up
  if demo_pid=$(nhi_demo_operator_pid); then
    die "the demo's operator (pid $demo_pid) runs on the control plane in $NHI_CLUSTER_DIR: it would act on the tests' objects too. Run 'make test' (a control plane of its own), or stop the demo's operator first (kill $demo_pid)"
  fi
  # The demo on the node installs the operator with Helm (release nhi in nhi-system).
  if [ -n "$(kubectl --kubeconfig "$NHI_CLUSTER_DIR/kubeconfig" get deployments -n nhi-system \
    -l app.kubernetes.io/name=nhi-operator -o name 2>/dev/null)" ]; then
    die "the demo's operator (Helm release in nhi-system) runs on the control plane in $NHI_CLUSTER_DIR: it would act on the tests' objects too. Run 'make test' (a control plane of its own), or uninstall it first (helm uninstall nhi -n nhi-system)"
  fi
fi

export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
export NHI_E2E_KUBECTL=$bin_dir/kubectl

echo "== control plane tests"
e2e/test-cluster.sh

echo "== installing CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
echo "== installing the tenant policy (config/policy)"
kubectl apply --server-side --force-conflicts -k config/policy/ >/dev/null

# kube-controller-manager's garbage collector learns of new resource types on its periodic
# discovery resync (every 30 s): until it has, objects owned by a MachineIdentity are not
# collected. Wait until it collects a probe, so the tests time the operator, not that resync.
echo "== waiting for the garbage collector to watch MachineIdentities"
e2e/wait-gc-ready.sh

echo "== operator end-to-end tests"
# The example relying service the entitlement tests talk mTLS to, and the mTLS echo pair of the
# continuity test, and the task agent of the delegation test.
cargo build -p nhi-identity --features delegate --example relying_service --example mtls_echo \
  --example task_agent
cargo build --bins
if [ -n "${NHI_E2E_ONLY:-}" ]; then
  # make chaos: only these tests (NHI_E2E_ONLY, cargo test filters), one at a time, then stop.
  read -r -a only <<<"$NHI_E2E_ONLY"
  cargo test --test e2e -- --test-threads=1 --nocapture --include-ignored "${only[@]}"
  if $own; then
    trap - EXIT
    e2e/cluster.sh down
  fi
  exit 0
fi
cargo test --test e2e -- --test-threads="${NHI_E2E_THREADS:-3}"

echo "== the samples: every workloadRef resolves, nothing lapses soon, the operator issues them"
e2e/test-samples.sh

echo "== the interop matrix: OpenSSL, nginx, PostgreSQL, Python, Go, Node, Java read what we write"
e2e/test-interop.sh

echo "== install tests: Helm chart, kustomize, Dockerfile"
e2e/test-install.sh

echo "== the chart's RBAC: exactly what it lists, and enough for the operator"
e2e/test-chart-rbac.sh

if [ -s "$NHI_CLUSTER_DIR/node/kubelet.pid" ]; then
  echo "== on the node: the image built without Docker, installed with Helm, pods Ready, a workload mounting its identity"
  e2e/test-node-install.sh
  echo "== on the node: pod certificates (signer nhi.dev/identity), keys that never leave the node"
  e2e/test-pod-certificates.sh
fi

if $own; then
  echo "== stopping the control plane and its node: nothing of them is left"
  trap - EXIT
  e2e/cluster.sh down
fi
