#!/usr/bin/env bash
# Tests of the local control plane started by e2e/cluster.sh up (the one in $NHI_CLUSTER_DIR,
# default e2e/.cluster): each prints `ok - NAME` or
# `not ok - NAME` (followed by its output as `# ` lines), then one summary line
# `N passed, M failed`; the exit status is non-zero when any test failed.
#
#   e2e/test-cluster.sh            run every test
#   e2e/test-cluster.sh PATTERN    run the tests whose name contains PATTERN
# shellcheck disable=SC2317 # helpers are called indirectly (wait_for, run)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/env.sh
. "$here/env.sh"
STATE=$NHI_CLUSTER_DIR
export KUBECONFIG=$STATE/kubeconfig
CA=$STATE/pki/ca.crt
filter=${1:-}
suffix=$$-$RANDOM
passed=0
failed=0

if [ ! -s "$KUBECONFIG" ] || [ ! -f "$STATE/cluster.env" ]; then
  echo "not ok - cluster is up (no $KUBECONFIG; run e2e/cluster.sh up first)"
  echo "0 passed, 1 failed"
  exit 1
fi
# shellcheck source=/dev/null
. "$STATE/cluster.env"
KUBECTL=${BIN:-${NHI_BIN_CACHE:-$HOME/.cache/nhi-operator/bin}/current}/kubectl
SERVER=https://127.0.0.1:$APISERVER_PORT

k() { "$KUBECTL" --request-timeout=20s "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.5 s until it succeeds.
wait_for() {
  local timeout=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - start)) -lt "$timeout" ] || fail "timed out after ${timeout} s waiting for $what"
    sleep 0.5
  done
  echo "$what after $((SECONDS - start)) s"
}

# token_kubeconfig FILE TOKEN / cert_kubeconfig FILE CERT KEY: kubeconfigs with only those
# credentials (so the admin client certificate is not sent along).
token_kubeconfig() {
  KUBECONFIG=$1 "$KUBECTL" config set-cluster nhi-e2e --server="$SERVER" --certificate-authority="$CA" --embed-certs >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config set-credentials user --token="$2" >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config set-context nhi-e2e --cluster=nhi-e2e --user=user >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config use-context nhi-e2e >/dev/null
}
cert_kubeconfig() {
  KUBECONFIG=$1 "$KUBECTL" config set-cluster nhi-e2e --server="$SERVER" --certificate-authority="$CA" --embed-certs >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config set-credentials user --client-certificate="$2" --client-key="$3" --embed-certs >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config set-context nhi-e2e --cluster=nhi-e2e --user=user >/dev/null
  KUBECONFIG=$1 "$KUBECTL" config use-context nhi-e2e >/dev/null
}

# run NAME FUNCTION: run FUNCTION in a subshell with `set -e`; its EXIT trap does the cleanup.
# (Tests run in their own subshell, so the names their traps use are plain globals: a trap
# runs after the function returned, when its locals are gone.)
run() {
  local name=$1 fn=$2 out rc
  [ -z "$filter" ] || [[ $name == *"$filter"* ]] || return 0
  out=$(mktemp)
  (
    set -e
    "$fn"
  ) >"$out" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "ok - $name"
    passed=$((passed + 1))
  else
    echo "not ok - $name"
    sed 's/^/#   /' "$out"
    failed=$((failed + 1))
  fi
  rm -f "$out"
}

# ---------------------------------------------------------------------------------------------

test_readyz() {
  local out
  out=$(k get --raw /readyz)
  [ "$out" = ok ] || fail "/readyz answered '$out'"
}

test_garbage_collection() {
  local uid
  owner=nhi-gc-owner-$suffix child=nhi-gc-child-$suffix
  trap 'k delete configmap -n default "$owner" "$child" --ignore-not-found --wait=false >/dev/null 2>&1' EXIT
  k create configmap "$owner" -n default --from-literal=role=owner
  uid=$(k get configmap "$owner" -n default -o jsonpath='{.metadata.uid}')
  [ -n "$uid" ] || fail "owner has no uid"
  k apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $child
  namespace: default
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: $owner
    uid: $uid
data:
  role: child
EOF
  k get configmap "$child" -n default >/dev/null
  # Background propagation: the API server deletes only the owner; the child is removed by
  # the garbage collector in kube-controller-manager.
  k delete configmap "$owner" -n default --cascade=background
  child_gone() { ! k get configmap "$child" -n default >/dev/null 2>&1; }
  wait_for 30 "child deleted by the garbage collector" child_gone
}

test_csr_signing() {
  local out user
  csr=nhi-test-csr-$suffix role=nhi-cm-reader-$suffix tmp=$(mktemp -d)
  trap 'k delete csr "$csr" --ignore-not-found >/dev/null 2>&1; k delete rolebinding,role -n default "$role" --ignore-not-found >/dev/null 2>&1; rm -rf "$tmp"' EXIT
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/user.key" 2>/dev/null
  openssl req -new -key "$tmp/user.key" -subj "/CN=nhi-test-user" -out "$tmp/user.csr" 2>/dev/null
  k apply -f - <<EOF
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: $csr
spec:
  request: $(base64 <"$tmp/user.csr" | tr -d '\n')
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: 600
  usages: [client auth]
EOF
  k certificate approve "$csr"
  signed() { [ -n "$(k get csr "$csr" -o jsonpath='{.status.certificate}')" ]; }
  wait_for 30 "certificate issued by the csrsigning controller" signed
  k get csr "$csr" -o jsonpath='{.status.certificate}' | base64 -d >"$tmp/user.crt"
  openssl verify -CAfile "$CA" "$tmp/user.crt"
  openssl x509 -in "$tmp/user.crt" -noout -subject -dates

  cert_kubeconfig "$tmp/kubeconfig" "$tmp/user.crt" "$tmp/user.key"
  user=$(KUBECONFIG=$tmp/kubeconfig k auth whoami -o jsonpath='{.status.userInfo.username}')
  [ "$user" = nhi-test-user ] || fail "auth whoami says '$user', expected nhi-test-user"
  echo "whoami: $user"

  if out=$(KUBECONFIG=$tmp/kubeconfig k get pods -n default 2>&1); then
    fail "listing pods was allowed without any RBAC grant: $out"
  fi
  echo "$out" | grep -qi forbidden || fail "listing pods failed, but not as Forbidden: $out"
  echo "pods: $out"

  k create role "$role" -n default --verb=get,list --resource=configmaps
  k create rolebinding "$role" -n default --role="$role" --user=nhi-test-user
  can_list() { KUBECONFIG=$tmp/kubeconfig k get configmaps -n default; }
  wait_for 10 "configmaps listable after the RoleBinding" can_list
}

test_service_account_token() {
  local token user
  ns=nhi-sa-$suffix tmp=$(mktemp -d)
  trap 'k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1; rm -rf "$tmp"' EXIT
  k create namespace "$ns"
  has_default_sa() { k get serviceaccount default -n "$ns"; }
  wait_for 30 "ServiceAccount $ns/default created" has_default_sa
  token=$(k create token default -n "$ns" --duration=10m)
  [ -n "$token" ] || fail "kubectl create token printed nothing"
  token_kubeconfig "$tmp/kubeconfig" "$token"
  user=$(KUBECONFIG=$tmp/kubeconfig k auth whoami -o jsonpath='{.status.userInfo.username}')
  [ "$user" = "system:serviceaccount:$ns:default" ] ||
    fail "token authenticates as '$user', expected system:serviceaccount:$ns:default"
  echo "whoami: $user"
}

test_namespace_deletion() {
  ns=nhi-ns-$suffix
  trap 'k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1' EXIT
  k create namespace "$ns"
  k create configmap content -n "$ns" --from-literal=a=b
  k delete namespace "$ns" --wait=false
  ns_gone() { ! k get namespace "$ns" >/dev/null 2>&1; }
  wait_for 60 "namespace emptied and finalized by the namespace controller" ns_gone
}

test_certificates_apis() {
  local out
  ctb=nhi-test-ctb-$suffix
  trap 'k delete clustertrustbundle "$ctb" --ignore-not-found >/dev/null 2>&1' EXIT
  out=$(k api-resources --api-group=certificates.k8s.io -o name)
  echo "$out"
  echo "$out" | grep -qx 'clustertrustbundles.certificates.k8s.io' || fail "clustertrustbundles not served"
  echo "$out" | grep -qx 'podcertificaterequests.certificates.k8s.io' || fail "podcertificaterequests not served"
  k get podcertificaterequests -A
  # GA (certificates.k8s.io/v1) from 1.37; v1beta1 on the 1.36 fallback.
  local version=v1
  k get --raw /apis/certificates.k8s.io/v1 | grep -q '"clustertrustbundles"' || version=v1beta1
  echo "ClusterTrustBundle served as certificates.k8s.io/$version"
  # A ClusterTrustBundle round trip, to show the storage really works.
  k apply -f - <<EOF
apiVersion: certificates.k8s.io/$version
kind: ClusterTrustBundle
metadata:
  name: $ctb
spec:
  trustBundle: |
$(sed 's/^/    /' "$CA")
EOF
  k get clustertrustbundle "$ctb" -o jsonpath='{.spec.trustBundle}' | grep -q 'BEGIN CERTIFICATE' ||
    fail "ClusterTrustBundle $ctb has no trust bundle"
}

# kube-scheduler looks at a new pod: with no node it says so in a FailedScheduling Event.
test_scheduler() {
  sched_ns=nhi-sched-$suffix
  trap 'k delete namespace "$sched_ns" --ignore-not-found --wait=false >/dev/null 2>&1' EXIT
  k create namespace "$sched_ns"
  k create serviceaccount -n "$sched_ns" default 2>/dev/null || true
  k run probe -n "$sched_ns" --image=registry.invalid/none:0 --restart=Never
  seen() {
    k get events -n "$sched_ns" --field-selector reason=FailedScheduling -o name | grep -q . ||
      k get pod probe -n "$sched_ns" -o jsonpath='{.spec.nodeName}' | grep -q .
  }
  wait_for 30 "the scheduler acted on the pod (scheduled, or FailedScheduling)" seen
}

# The node: a pod runs; kubelet mounts its Secret volume (the `..data` link) and updates it; a
# ClusterIP Service routes to the pod from the host; the pod reaches the apiserver through the
# `kubernetes` Service.
test_node() {
  node_ns=nhi-node-$suffix
  trap 'k delete namespace "$node_ns" --ignore-not-found --wait=false >/dev/null 2>&1' EXIT
  k create namespace "$node_ns"
  k create secret generic files -n "$node_ns" --from-literal=greeting=first
  k apply -n "$node_ns" -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  automountServiceAccountToken: false
  containers:
  - name: web
    image: nhi.dev/busybox:local
    imagePullPolicy: Never
    command: [/bin/busybox, httpd, -f, -p, "8080", -h, /files]
    volumeMounts: [{name: files, mountPath: /files, readOnly: true}]
  volumes: [{name: files, secret: {secretName: files}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
  k wait -n "$node_ns" --for=condition=Ready pod/web --timeout=60s
  k exec -n "$node_ns" web -- /bin/busybox ls -la /files | tee /dev/stderr | grep -q -- '..data ->' ||
    fail "no ..data link in the Secret volume"
  local ip
  ip=$(k get service web -n "$node_ns" -o jsonpath='{.spec.clusterIP}')
  served() { [ "$(curl -fsS --max-time 2 "http://$ip/greeting")" = "$1" ]; }
  wait_for 30 "the ClusterIP Service $ip serves the Secret's file from the host" served first
  k create secret generic files -n "$node_ns" --from-literal=greeting=second --dry-run=client -o yaml |
    k apply -f -
  wait_for 90 "kubelet's update of the Secret volume reached the pod" served second
  local api
  api=$(k get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')
  # A TCP connection (busybox's own TLS cannot handshake with the apiserver from a pod, for
  # reasons of its own; the operator's pods, on the node, show the rest).
  k exec -n "$node_ns" web -- /bin/busybox sh -c "/bin/busybox nc -w 5 $api 443 </dev/null" ||
    fail "the pod does not reach the apiserver through the kubernetes Service ($api:443)"
  echo "the pod connects to the apiserver through the kubernetes Service at $api:443"
}

run "apiserver /readyz answers ok" test_readyz
run "kube-scheduler acts on a pod" test_scheduler
run "garbage collector deletes a dependent ConfigMap" test_garbage_collection
run "CSR signed, client cert authenticates, RBAC enforced" test_csr_signing
run "namespace gets default ServiceAccount; its token authenticates" test_service_account_token
run "namespace deletion is finalized" test_namespace_deletion
run "ClusterTrustBundle and PodCertificateRequest APIs are served" test_certificates_apis
if [ -n "${NODE_NET:-}" ] && [ -s "$NHI_CLUSTER_DIR/node/kubelet.pid" ]; then
  run "the node runs a pod: Secret volume (..data, updated), ClusterIP from the host, apiserver from the pod" test_node
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
