#!/usr/bin/env bash
# The operator as users run it, on the local node: its image built without Docker
# (e2e/build-image.sh) and imported into the node's containerd, the chart installed with Helm.
# Checks: two replicas Running and Ready, one leader (the Lease names a pod); an identity issued;
# a workload pod mounts the identity Secret (kubelet's `..data` link) and reads the certificate;
# /metrics scraped through the chart's Service; the mtls_echo server and client in pods talk
# across renewals of 60 s certificates and a CA rotation with no failure (kubelet's volume
# updates, the reload library); `helm uninstall` leaves no operator pod. Each check
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
  local tar echo
  tar=$(e2e/build-image.sh | tail -n 1) && echo=$(e2e/build-image.sh --echo | tail -n 1) &&
    e2e/node.sh import "$tar" "$echo"
}
check "operator and mtls_echo images built (e2e/build-image.sh) and imported into the node" image
[ "$failed" -eq 0 ] || { summary; exit 1; }

install() {
  helm install "$RELEASE" charts/nhi-operator -n "$SYSTEM" --create-namespace \
    --set image.repository=nhi.dev/nhi-operator --set image.tag=dev --set image.pullPolicy=Never \
    --set identity.defaultTTL=60s --set identity.minTTL=30s --set identity.maxTTL=60s \
    --set ca.rotation.propagation=30s --set ca.rotation.spread=10s \
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

# Continuity on the node: the mtls_echo server and client (the reload library) in pods, each
# mounting its identity Secret and nhi-trust's crl.pem as one projected volume, kept current by
# kubelet; the client calls for CALL_SECONDS across identity renewals (60 s certificates) and a
# CA rotation started meanwhile, and must not see one failed handshake or request.
CALL_SECONDS=${NHI_NODE_CONTINUITY_SECONDS:-210}
echo_pod() {
  local name=$1 identity=$2
  shift 2
  local args=""
  local a
  for a in "$@"; do args="$args, \"$a\""; done
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $name, labels: {app: $name}}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: echo
    image: nhi.dev/mtls-echo:dev
    imagePullPolicy: Never
    args: [${args#, }]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: identity, mountPath: /var/run/secrets/nhi.dev/identity, readOnly: true}]
  volumes:
  - name: identity
    projected:
      sources:
      - secret: {name: $identity}
      - configMap: {name: nhi-trust, items: [{key: crl.pem, path: crl.pem}]}
EOF
}
continuity() {
  local dir=/var/run/secrets/nhi.dev/identity
  k apply -n "$APP" -f - <<EOF
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: echo-server}
spec:
  owner: {team: node-test}
  secretName: echo-server-identity
  certificate: {dnsNames: [echo.$APP.svc]}
---
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: echo-client}
spec:
  owner: {team: node-test}
  secretName: echo-client-identity
  certificate: {usages: [client]}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo-server}
  ports: [{port: 8443, targetPort: 8443}]
EOF
  k wait -n "$APP" --for=condition=Ready machineidentity/echo-server machineidentity/echo-client --timeout=60s
  for _ in $(seq 1 60); do k get configmap nhi-trust -n "$APP" >/dev/null 2>&1 && break; sleep 0.5; done
  echo_pod echo-server echo-server-identity serve --identity-dir "$dir" --addr 0.0.0.0:8443 |
    k apply -n "$APP" -f -
  k wait -n "$APP" --for=condition=Ready pod/echo-server --timeout=60s
  local ip
  ip=$(k get service echo -n "$APP" -o jsonpath='{.spec.clusterIP}')
  # The Service routes once kube-proxy has the server's endpoint.
  for _ in $(seq 1 60); do timeout 1 bash -c "</dev/tcp/$ip/8443" 2>/dev/null && break; sleep 0.5; done
  echo_pod echo-client echo-client-identity call --identity-dir "$dir" --addr "$ip:8443" \
    --server-name "echo.$APP.svc" --duration "${CALL_SECONDS}s" --interval 250ms |
    k apply -n "$APP" -f -
  k wait -n "$APP" --for=condition=Ready pod/echo-client --timeout=60s
  # A CA rotation while the client talks.
  sleep 20
  local asked
  asked=$(date -u +%FT%TZ)
  k annotate secret nhi-ca -n "$SYSTEM" "nhi.dev/rotate-ca=$asked" --overwrite
  local phase deadline=$((SECONDS + CALL_SECONDS + 60))
  while :; do
    phase=$(k get pod echo-client -n "$APP" -o jsonpath='{.status.phase}')
    case $phase in Succeeded | Failed) break ;; esac
    [ $SECONDS -lt $deadline ] || break
    sleep 2
  done
  [ "$phase" = Succeeded ] || { echo "the client's pod: $phase"; k logs -n "$APP" echo-client | tail -20; return 1; }
  k logs -n "$APP" echo-client >"$work/client.log"
  k logs -n "$APP" echo-server >"$work/server.log"
  local summary servers clients answered switched completed
  summary=$(grep '^summary' "$work/client.log")
  count() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$summary" | tr ',' '\n' | grep -c . || true; }
  servers=$(count server_serials)
  clients=$(count client_serials)
  answered=$(k get secret nhi-ca -n "$SYSTEM" -o jsonpath='{.metadata.annotations.nhi\.dev/ca-rotation-answered}')
  switched=$(k get secret nhi-ca -n "$SYSTEM" -o jsonpath='{.metadata.annotations.nhi\.dev/ca-rotation-switched-at}')
  completed=$(k get secret nhi-ca -n "$SYSTEM" -o jsonpath='{.metadata.annotations.nhi\.dev/ca-rotation-completed-at}')
  {
    echo "$summary"
    echo "server certificates seen by the client: $servers; client certificates the server saw: $clients"
    echo "CA rotation asked $asked, answered ${answered:-no}, switched ${switched:-no}, completed ${completed:-not yet}"
  } | tee "$work/continuity.txt"
  [[ $summary == *" failed_requests=0 "* ]] && [[ $summary == *" failed_handshakes=0 "* ]] &&
    [ "$servers" -ge 4 ] && [ "$clients" -ge 4 ] && [ "$answered" = "$asked" ] &&
    { [ -n "$switched" ] || [ -n "$completed" ]; }
}
check "continuity in pods: no failed handshake or request across renewals and a CA rotation" continuity
if [ -f "$work/continuity.txt" ]; then sed 's/^/# /' "$work/continuity.txt"; fi

uninstall() {
  helm uninstall "$RELEASE" -n "$SYSTEM" --wait --timeout 60s
  k wait -n "$SYSTEM" --for=delete pod -l app.kubernetes.io/name=nhi-operator --timeout=60s
  [ -z "$(k get pods -n "$SYSTEM" -o name)" ]
}
check "helm uninstall leaves no operator pod" uninstall

summary
