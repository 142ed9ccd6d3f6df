#!/usr/bin/env bash
# The demo's pod-certificate workload on the local node (make demo runs it after the echo
# workload): config/samples/echo-pod-certificates in NAMESPACE, the mTLS echo pair with keys the
# kubelet makes and the operator's signer certifies (no Secret mounted). Shows the requests the
# kubelet made and their answers, the pod's identity directory, the certificate's SPIFFE ID and
# the client's first counts. Refreshes come from 10 minutes on (left running: the client's log
# shows each new serial).
#
#   e2e/demo-pod-certificates.sh NAMESPACE   (KUBECONFIG set, the chart installed, Kubernetes 1.37)
set -euo pipefail
cd "$(dirname "$0")/.."
ns=${1:?usage: e2e/demo-pod-certificates.sh NAMESPACE}

die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

echo
echo "== pod certificates (config/samples/echo-pod-certificates): keys made on the node, signed by nhi.dev/identity"
e2e/samples-for.sh "$ns" config/samples/echo-pod-certificates | kubectl apply -n "$ns" -f -
kubectl wait -n "$ns" --for=condition=Ready --timeout=60s machineidentity/echo-pc-server machineidentity/echo-pc-client
kubectl rollout status -n "$ns" deployment/echo-pc-server deployment/echo-pc-client --timeout=120s ||
  die "the pod-certificate echo pair did not start; kubectl describe pods -n $ns -l app=echo-pc-client"
echo
echo "== the PodCertificateRequests the kubelet made, and the signer's answers"
kubectl get podcertificaterequests -n "$ns" \
  -o custom-columns='REQUEST:.metadata.name,POD:.spec.podName,STATE:.status.conditions[0].type,NOT-AFTER:.status.notAfter,REFRESH-AT:.status.beginRefreshAt'
dir=/var/run/secrets/nhi.dev/identity
echo
echo "== kubectl exec deploy/echo-pc-server -- /bin/busybox ls -la $dir   (no Secret: the kubelet's files)"
kubectl exec -n "$ns" deploy/echo-pc-server -- /bin/busybox ls -la "$dir"
echo
echo "== its certificate"
kubectl exec -n "$ns" deploy/echo-pc-server -- /bin/busybox cat "$dir/tls.crt" |
  openssl x509 -noout -subject -serial -startdate -enddate -ext subjectAltName
for _ in $(seq 1 90); do
  line=$(kubectl logs -n "$ns" deploy/echo-pc-client 2>/dev/null | grep '^progress' | tail -n 1 || true)
  [ -n "$line" ] && break
  sleep 1
done
[ -n "$line" ] || die "the pod-certificate echo client reported nothing in 90 s: kubectl logs -n $ns deploy/echo-pc-client"
echo
echo "== the client on pod certificates: $line"
case $line in
  *" failed_requests=0 failed_handshakes=0 "*) ;;
  *) die "the pod-certificate echo client failed: kubectl logs -n $ns deploy/echo-pc-client" ;;
esac
