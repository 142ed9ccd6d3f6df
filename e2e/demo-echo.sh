#!/usr/bin/env bash
# The demo's workload on the local node (make demo runs it after installing the chart):
# config/samples/echo in NAMESPACE, an mTLS echo server and client mounting their identity
# Secrets; shows kubelet's identity directory in the server's pod, then waits until both
# identities have rotated under the running client (2-minute certificates: a renewal every 80 s,
# delivered by kubelet's volume sync) and shows the client's log: the new serials on either side
# and its counts, which must hold no failure.
#
#   e2e/demo-echo.sh NAMESPACE      (KUBECONFIG set, the chart installed with identity.minTTL<=2m)
set -euo pipefail
cd "$(dirname "$0")/.."
ns=${1:?usage: e2e/demo-echo.sh NAMESPACE}
ROTATION_TIMEOUT=${NHI_DEMO_ROTATION_TIMEOUT:-360}

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

echo
echo "== the echo workload (config/samples/echo): mTLS server and client reloading their identities"
e2e/samples-for.sh "$ns" config/samples/echo | kubectl apply -n "$ns" -f -
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s machineidentity/echo-server machineidentity/echo-client
# Started afresh, so the client's counts are this demo's (an earlier demo's client may have run
# for hours, through a time without an operator): the server first, the client once the old
# server is gone (its long-lived connection is to the new one), each old pod gone before the
# next step (`kubectl logs deploy/...` then reads the new one).
restart() {
  local old
  old=$(kubectl get pods -n "$ns" -l "app=$1" -o name)
  kubectl rollout restart -n "$ns" "deployment/$1"
  kubectl rollout status -n "$ns" "deployment/$1" --timeout=120s
  # shellcheck disable=SC2086  # one pod name per word
  [ -z "$old" ] || kubectl wait -n "$ns" --for=delete --timeout=90s $old >/dev/null
}
restart echo-server
restart echo-client
dir=/var/run/secrets/nhi.dev/identity
echo
echo "== kubectl exec deploy/echo-server -- /bin/busybox ls -la $dir   (kubelet's ..data link)"
kubectl exec -n "$ns" deploy/echo-server -- /bin/busybox ls -la "$dir"

# progress: the client's last progress line (counts so far), empty before its first.
progress() { kubectl logs -n "$ns" deploy/echo-client 2>/dev/null | grep '^progress' | tail -n 1 || true; }
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }
echo
echo "== waiting for both identities to rotate under the running client (certificates of 2 min, renewed at 80 s; up to ${ROTATION_TIMEOUT} s)"
start=$SECONDS
line=""
while :; do
  line=$(progress)
  if [ -n "$line" ] && [ "$(field server_serials "$line")" -ge 2 ] && [ "$(field client_serials "$line")" -ge 2 ]; then
    break
  fi
  [ $((SECONDS - start)) -lt "$ROTATION_TIMEOUT" ] || {
    kubectl logs -n "$ns" deploy/echo-client | tail -n 20 >&2
    die "no rotation on both sides within ${ROTATION_TIMEOUT} s"
  }
  printf '   %3d s: %s\n' $((SECONDS - start)) "${line:-(the client has not reported yet)}"
  sleep 15
done
echo
echo "== kubectl logs deploy/echo-client (every new serial on either side, counts every 30 s)"
kubectl logs -n "$ns" deploy/echo-client | grep -v '^waiting for the server' | tail -n 30
if [ "$(field failed_requests "$line")" != 0 ] || [ "$(field failed_handshakes "$line")" != 0 ]; then
  die "the client saw failures: $line"
fi
echo "   both identities rotated while the client called: $(field requests "$line") requests, $(field handshakes "$line") handshakes, 0 failed"
echo "   server serial now: $(kubectl get machineidentity -n "$ns" echo-server -o jsonpath='{.status.serialNumber}'), client serial now: $(kubectl get machineidentity -n "$ns" echo-client -o jsonpath='{.status.serialNumber}')"
