#!/usr/bin/env bash
# The operator as users run it, on the local node: its image built without Docker
# (e2e/build-image.sh) and imported into the node's containerd, the chart installed with Helm.
# Checks: two replicas Running and Ready, one leader (the Lease names a pod); an identity issued;
# a workload pod mounts the identity Secret (kubelet's `..data` link) and reads the certificate;
# /metrics scraped through the chart's Service; `helm uninstall` leaves no operator pod. Each check
# prints `ok - NAME` or `not ok - NAME`; the last line is `N passed, M failed`.
#
#   e2e/test-node-install.sh
#
# Needs: the local control plane with its node (e2e/cluster.sh up as root), the CRDs installed,
# KUBECONFIG (default $NHI_CLUSTER_DIR/kubeconfig). Uses namespaces nhi-system-test and
# nhi-node-workload, deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}
SYSTEM=nhi-system-test
APP=nhi-node-workload
RELEASE=nhi
work=$(mktemp -d)
passed=0
failed=0

# shellcheck source=e2e/tap.sh
. e2e/tap.sh

cleanup() {
  helm uninstall "$RELEASE" -n "$SYSTEM" --wait --timeout 60s >/dev/null 2>&1 || true
  local mi
  for mi in $(k get machineidentities -n "$APP" -o name 2>/dev/null); do
    k patch -n "$APP" "$mi" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  k delete namespace "$SYSTEM" "$APP" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

summary() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

image() {
  local tar
  tar=$(e2e/build-image.sh | tail -n 1) && e2e/node.sh import "$tar"
}
check "operator image built (e2e/build-image.sh) and imported into the node" image
[ "$failed" -eq 0 ] || { summary; exit 1; }

install() {
  helm install "$RELEASE" charts/nhi-operator -n "$SYSTEM" --create-namespace \
    --set image.repository=nhi.dev/nhi-operator --set image.tag=dev --set image.pullPolicy=Never \
    --wait --timeout 120s
}
check "helm install with the local image" install
pods_ready() {
  k wait -n "$SYSTEM" --for=condition=Ready pod -l app.kubernetes.io/name=nhi-operator --timeout=60s &&
    [ "$(k get pods -n "$SYSTEM" -l app.kubernetes.io/name=nhi-operator --field-selector=status.phase=Running -o name | wc -l)" -eq 2 ]
}
check "two operator pods Running and Ready" pods_ready
one_leader() {
  local holder
  for _ in $(seq 1 60); do
    holder=$(k get lease nhi-operator -n "$SYSTEM" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    if [ -n "$holder" ] && k get pod "$holder" -n "$SYSTEM" >/dev/null 2>&1; then
      echo "leader: $holder"
      return 0
    fi
    sleep 0.5
  done
  return 1
}
check "one leader: the Lease names an operator pod" one_leader

issue() {
  k create namespace "$APP"
  k apply -n "$APP" -f - <<EOF
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: web}
spec:
  owner: {team: node-test}
  secretName: web-identity
EOF
  k wait -n "$APP" --for=condition=Ready machineidentity/web --timeout=60s
}
check "the operator in its pods issues an identity" issue

mounted() {
  k apply -n "$APP" -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: workload}
spec:
  automountServiceAccountToken: false
  containers:
  - name: w
    image: nhi.dev/busybox:local
    imagePullPolicy: Never
    command: [/bin/busybox, sleep, "3600"]
    volumeMounts: [{name: identity, mountPath: /var/run/secrets/nhi.dev/identity, readOnly: true}]
  volumes: [{name: identity, secret: {secretName: web-identity}}]
EOF
  k wait -n "$APP" --for=condition=Ready pod/workload --timeout=60s
  k exec -n "$APP" workload -- /bin/busybox ls -la /var/run/secrets/nhi.dev/identity | tee "$work/ls"
  grep -q -- '..data ->' "$work/ls"
  k exec -n "$APP" workload -- /bin/busybox cat /var/run/secrets/nhi.dev/identity/tls.crt >"$work/tls.crt"
  openssl x509 -in "$work/tls.crt" -noout -ext subjectAltName | grep -q "spiffe://cluster.local/ns/$APP/mi/web"
}
check "a workload pod mounts the identity Secret (kubelet's ..data link) and holds the SPIFFE ID" mounted

metrics() {
  local ip
  ip=$(k get service -n "$SYSTEM" "$RELEASE-nhi-operator-metrics" -o jsonpath='{.spec.clusterIP}')
  curl -fsS --max-time 5 "http://$ip:8080/metrics" | grep -m1 '^nhi_identities_with_certificate'
}
check "metrics scraped through the chart's Service" metrics

uninstall() {
  helm uninstall "$RELEASE" -n "$SYSTEM" --wait --timeout 60s
  k wait -n "$SYSTEM" --for=delete pod -l app.kubernetes.io/name=nhi-operator --timeout=60s
  [ -z "$(k get pods -n "$SYSTEM" -o name)" ]
}
check "helm uninstall leaves no operator pod" uninstall

summary
