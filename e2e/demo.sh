#!/usr/bin/env bash
# `make demo`: starts the local control plane unless KUBECONFIG names a reachable cluster,
# installs the CRDs, runs the operator in the background, applies config/samples/ and shows the
# identities being issued with their decoded certificates. The local control plane's state, the
# operator's pid and log are in $NHI_CLUSTER_DIR (default e2e/.cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"
state=$NHI_CLUSTER_DIR
if [ -n "${KUBECONFIG:-}" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "== using the cluster in KUBECONFIG=$KUBECONFIG"
else
  echo "== starting the local control plane"
  e2e/cluster.sh up
  export KUBECONFIG=$state/kubeconfig
fi
mkdir -p "$state"

echo "== building the operator"
cargo build --quiet --bins

echo "== installing CRDs"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
kubectl create namespace nhi-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "== installing the tenant policy (config/policy: the default IdentityPolicy and the admission policies)"
kubectl apply --server-side --force-conflicts -k config/policy/

# The operator an earlier `make demo` left running (still that process: its command line).
old=$(cat "$state/demo-operator.pid" 2>/dev/null || true)
if [ -n "$old" ] && ps -p "$old" -o args= 2>/dev/null | grep -q '^target/debug/nhi-operator run '; then
  echo "== stopping the operator an earlier demo left running (pid $old)"
  kill "$old" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$old" 2>/dev/null || die "the earlier demo's operator (pid $old) did not exit 10 s after TERM"
fi
echo "== running the operator (log: $state/demo-operator.log)"
nohup target/debug/nhi-operator run --operator-namespace nhi-system --http-addr 127.0.0.1:0 \
  >"$state/demo-operator.log" 2>&1 &
echo $! >"$state/demo-operator.pid"

sample_ns=$(kubectl config view --minify -o jsonpath='{..namespace}')
sample_ns=${sample_ns:-default}
echo "== applying config/samples/ to namespace $sample_ns"
e2e/samples-for.sh "$sample_ns" | kubectl apply -n "$sample_ns" -f -
# The identities and entitlements (the samples also hold the workloads they name).
names=$(kubectl get -k config/samples/ -o name | grep '\.nhi\.dev/')
if ! kubectl wait --for=condition=Ready --timeout=60s $names; then
  echo "identities did not become Ready; operator log:" >&2
  tail -n 40 "$state/demo-operator.log" >&2
  exit 1
fi

echo
kubectl get machineidentities,entitlements -o wide

echo
echo "== the workloads the identities serve (spec.workloadRef): present, so no identity lapses"
echo "   (this control plane has no nodes: the pods are never scheduled; the operator needs only the object)"
refs=$(kubectl get -k config/samples/ -o jsonpath='{range .items[?(@.spec.workloadRef)]}{.metadata.name}{" "}{.spec.workloadRef.apiVersion}{" "}{.spec.workloadRef.kind}{" "}{.spec.workloadRef.name}{"\n"}{end}')
while read -r mi api kind name; do
  [ -n "$mi" ] || continue
  kubectl get "$(nhi_kubectl_type "$api" "$kind")" "$name" -o wide ||
    die "$kind/$name, which MachineIdentity $mi serves, does not exist"
  if ! kubectl wait --for=condition=WorkloadFound=True --timeout=30s "machineidentity/$mi" >/dev/null; then
    tail -n 40 "$state/demo-operator.log" >&2
    die "MachineIdentity $mi does not see $kind/$name: $(kubectl get "machineidentity/$mi" -o jsonpath='{.status.conditions[?(@.type=="WorkloadFound")].message}')"
  fi
  echo "   MachineIdentity $mi: WorkloadFound=True ($(kubectl get "machineidentity/$mi" -o jsonpath='{.status.conditions[?(@.type=="WorkloadFound")].message}'))"
done <<<"$refs"
for mi in $(printf '%s\n' $names | grep '^machineidentit'); do
  name=${mi#*/}
  secret=$(kubectl get "$mi" -o jsonpath='{.spec.secretName}')
  echo
  echo "== $name: certificate in Secret $secret"
  kubectl get secret "$secret" -o jsonpath='{.data.tls\.crt}' | base64 -d |
    openssl x509 -noout -subject -serial -startdate -enddate -ext subjectAltName,extendedKeyUsage
  echo "   status: spiffeID=$(kubectl get "$mi" -o jsonpath='{.status.spiffeID}')" \
    "renewalTime=$(kubectl get "$mi" -o jsonpath='{.status.renewalTime}')" \
    "entitlements=$(kubectl get "$mi" -o jsonpath='{.status.entitlements}')"
done
echo
echo "== the published trust: ConfigMap nhi-trust (CA bundle and CRL), ready for relying services"
for _ in $(seq 20); do kubectl get configmap nhi-trust >/dev/null 2>&1 && break; sleep 0.5; done
kubectl get configmap nhi-trust -o jsonpath='{.data.crl\.pem}' | openssl crl -noout -lastupdate -nextupdate -crlnumber
echo
echo "== the tenant policy: IdentityPolicies, and what applies to namespace $sample_ns"
for _ in $(seq 50); do
  [ "$(kubectl get identitypolicy nhi-default -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}')" = InForce ] && break
  sleep 0.2
done
kubectl get identitypolicies
if [ -x target/debug/kubectl-nhi ]; then
  target/debug/kubectl-nhi policy -n "$sample_ns"
  echo
  echo "== kubectl nhi list"
  target/debug/kubectl-nhi list
fi
echo
pid=$(cat "$state/demo-operator.pid")
if [ "$KUBECONFIG" = "$state/kubeconfig" ]; then
  echo "The operator and the control plane keep running (operator pid $pid); stop both with: make cluster-down"
else
  echo "The operator keeps running (pid $pid); stop it with: kill $pid"
fi
echo "Use the cluster with: export KUBECONFIG=$KUBECONFIG"
