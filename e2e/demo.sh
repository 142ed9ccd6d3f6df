#!/usr/bin/env bash
# `make demo`: starts the local control plane unless KUBECONFIG names a reachable cluster,
# installs the CRDs and the operator, applies config/samples/ and shows the identities being
# issued with their decoded certificates.
#
# On the local control plane with its node (as root: e2e/cluster.sh up starts one), the operator
# is installed as users install it: its image and the mtls_echo workload's built here
# (e2e/build-image.sh) and imported into the node, the Helm chart installed (release nhi in
# nhi-system, two replicas, one leader), and config/samples/echo runs an mTLS echo server and
# client whose identities rotate every 80 s while they talk: the demo waits for a rotation on
# both sides and shows the client's counts (zero failures). Otherwise (a given cluster, or no
# node) the operator runs here as a background process. State, the operator's pid and log are in
# $NHI_CLUSTER_DIR (default e2e/.cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

RELEASE=nhi
SYSTEM=nhi-system
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
on_node=false
if [ "$KUBECONFIG" = "$state/kubeconfig" ] && [ -s "$state/node/kubelet.pid" ]; then
  on_node=true
fi

echo "== installing CRDs"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null

# The operator an earlier `make demo` left running as a process (still that process: its
# command line).
old=$(cat "$state/demo-operator.pid" 2>/dev/null || true)
if [ -n "$old" ] && ps -p "$old" -o args= 2>/dev/null | grep -q '^target/debug/nhi-operator run '; then
  echo "== stopping the operator an earlier demo left running (pid $old)"
  kill "$old" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$old" 2>/dev/null || die "the earlier demo's operator (pid $old) did not exit 10 s after TERM"
fi
rm -f "$state/demo-operator.pid"

# install_chart: the images built and imported into the node, the chart installed (or upgraded)
# with them; waits for both replicas and a leader.
install_chart() {
  echo "== building the operator's image and the echo workload's (no Docker: e2e/build-image.sh)"
  local operator echo
  operator=$(e2e/build-image.sh | tail -n 1)
  echo=$(e2e/build-image.sh --echo | tail -n 1)
  echo "== importing them into the node's containerd"
  e2e/node.sh import "$operator" "$echo"
  # The chart carries the tenant policy; a copy config/policy made (an earlier demo without the
  # node, or the tests) would stop Helm from owning it.
  if [ -n "$(kubectl get clusterrole nhi-policy-reader -o jsonpath='{.metadata.name}' --ignore-not-found)" ] &&
    [ "$(kubectl get clusterrole nhi-policy-reader -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" != Helm ]; then
    echo "== removing the tenant policy config/policy applied earlier (the chart installs its own)"
    kubectl delete -k config/policy/ --ignore-not-found >/dev/null
  fi
  kubectl create namespace "$SYSTEM" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$SYSTEM" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
  echo "== helm upgrade --install $RELEASE charts/nhi-operator -n $SYSTEM (the local image; identity.minTTL=1m for the echo workload)"
  helm upgrade --install "$RELEASE" charts/nhi-operator -n "$SYSTEM" \
    --set image.repository=nhi.dev/nhi-operator --set image.tag=dev --set image.pullPolicy=Never \
    --set identity.minTTL=1m --wait --timeout 180s
  kubectl rollout status -n "$SYSTEM" "deployment/$RELEASE-nhi-operator" --timeout=120s >/dev/null
  local leader=""
  for _ in $(seq 120); do
    leader=$(kubectl get lease nhi-operator -n "$SYSTEM" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    [ -n "$leader" ] && kubectl get pod -n "$SYSTEM" "$leader" >/dev/null 2>&1 && break
    leader=""
    sleep 0.5
  done
  [ -n "$leader" ] || die "no operator pod took the Lease"
  kubectl get pods -n "$SYSTEM" -o wide
  echo "   leader (Lease $SYSTEM/nhi-operator): $leader"
}

# run_process: the operator built and run here in the background, with config/policy.
run_process() {
  echo "== building the operator"
  cargo build --quiet --bins
  kubectl create namespace "$SYSTEM" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  echo "== installing the tenant policy (config/policy: the default IdentityPolicy and the admission policies)"
  kubectl apply --server-side --force-conflicts -k config/policy/
  echo "== running the operator (log: $state/demo-operator.log)"
  nohup target/debug/nhi-operator run --operator-namespace "$SYSTEM" --http-addr 127.0.0.1:0 \
    >"$state/demo-operator.log" 2>&1 &
  echo $! >"$state/demo-operator.pid"
}

# operator_log: the operator's recent log lines (for a failure).
operator_log() {
  if $on_node; then
    kubectl logs -n "$SYSTEM" -l app.kubernetes.io/name=nhi-operator --tail=40 --prefix || true
  else
    tail -n 40 "$state/demo-operator.log"
  fi
}

if $on_node; then install_chart; else run_process; fi

sample_ns=$(kubectl config view --minify -o jsonpath='{..namespace}')
sample_ns=${sample_ns:-default}
echo "== applying config/samples/ to namespace $sample_ns"
e2e/samples-for.sh "$sample_ns" | kubectl apply -n "$sample_ns" -f -
# The identities and entitlements (the samples also hold the workloads they name).
names=$(kubectl get -k config/samples/ -o name | grep '\.nhi\.dev/')
if ! kubectl wait --for=condition=Ready --timeout=60s $names; then
  echo "identities did not become Ready; operator log:" >&2
  operator_log >&2
  exit 1
fi

echo
kubectl get machineidentities,entitlements -o wide

echo
echo "== the workloads the identities serve (spec.workloadRef): present, so no identity lapses"
if $on_node; then
  echo "   (payments-api's image, registry.example.com/..., is an example no node can pull: the operator needs only the object)"
else
  echo "   (this control plane has no nodes: the pods are never scheduled; the operator needs only the object)"
fi
refs=$(kubectl get -k config/samples/ -o jsonpath='{range .items[?(@.spec.workloadRef)]}{.metadata.name}{" "}{.spec.workloadRef.apiVersion}{" "}{.spec.workloadRef.kind}{" "}{.spec.workloadRef.name}{"\n"}{end}')
while read -r mi api kind name; do
  [ -n "$mi" ] || continue
  kubectl get "$(nhi_kubectl_type "$api" "$kind")" "$name" -o wide ||
    die "$kind/$name, which MachineIdentity $mi serves, does not exist"
  if ! kubectl wait --for=condition=WorkloadFound=True --timeout=30s "machineidentity/$mi" >/dev/null; then
    operator_log >&2
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
if [ -x target/debug/kubectl-nhi ] || cargo build --quiet --bin kubectl-nhi 2>/dev/null; then
  target/debug/kubectl-nhi policy -n "$sample_ns"
  echo
  echo "== kubectl nhi list"
  target/debug/kubectl-nhi list
fi

if $on_node; then
  e2e/demo-echo.sh "$sample_ns"
  e2e/demo-pod-certificates.sh "$sample_ns"
fi

echo
if $on_node; then
  echo "The operator runs in namespace $SYSTEM (helm release $RELEASE) on the local node; the echo workload keeps calling."
  echo "Follow it with: kubectl logs -n $sample_ns deploy/echo-client -f (and deploy/echo-pc-client, on pod certificates)"
  echo "Stop everything with: make cluster-down"
else
  pid=$(cat "$state/demo-operator.pid")
  if [ "$KUBECONFIG" = "$state/kubeconfig" ]; then
    echo "The operator and the control plane keep running (operator pid $pid); stop both with: make cluster-down"
  else
    echo "The operator keeps running (pid $pid); stop it with: kill $pid"
  fi
fi
echo "Use the cluster with: export KUBECONFIG=$KUBECONFIG"
