#!/usr/bin/env bash
# `make demo`: starts the local control plane unless KUBECONFIG names a reachable cluster,
# installs the CRDs, runs the operator in the background, applies config/samples/ and shows the
# identities being issued with their decoded certificates.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"
state=e2e/.cluster
if [ -n "${KUBECONFIG:-}" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "== using the cluster in KUBECONFIG=$KUBECONFIG"
else
  echo "== starting the local control plane"
  e2e/cluster.sh up
  export KUBECONFIG=$PWD/$state/kubeconfig
fi
mkdir -p "$state"

echo "== building the operator"
cargo build --quiet --bins

echo "== installing CRDs"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
kubectl create namespace nhi-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

if [ -f "$state/demo-operator.pid" ] && kill -0 "$(cat "$state/demo-operator.pid")" 2>/dev/null; then
  kill "$(cat "$state/demo-operator.pid")" && sleep 1
fi
echo "== running the operator (log: $state/demo-operator.log)"
nohup target/debug/nhi-operator run --operator-namespace nhi-system --http-addr 127.0.0.1:0 \
  >"$state/demo-operator.log" 2>&1 &
echo $! >"$state/demo-operator.pid"

echo "== applying config/samples/"
kubectl apply -k config/samples/
names=$(kubectl get -k config/samples/ -o name)
if ! kubectl wait --for=condition=Ready --timeout=60s $names; then
  echo "identities did not become Ready; operator log:" >&2
  tail -n 40 "$state/demo-operator.log" >&2
  exit 1
fi

echo
kubectl get machineidentities,entitlements -o wide
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
if [ -x target/debug/kubectl-nhi ]; then
  echo
  echo "== kubectl nhi list"
  target/debug/kubectl-nhi list
fi
echo
echo "The operator keeps running (pid $(cat "$state/demo-operator.pid")); stop it with: kill \$(cat $state/demo-operator.pid)"
echo "Use the cluster with: export KUBECONFIG=$KUBECONFIG"
