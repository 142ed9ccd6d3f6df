#!/usr/bin/env bash
# Waits until kube-controller-manager's garbage collector collects an object owned by a
# MachineIdentity: a ConfigMap owned by a probe identity must disappear once the identity is
# deleted. Needs the CRDs installed, and KUBECONFIG (default $NHI_CLUSTER_DIR/kubeconfig); no
# operator has to run.
set -euo pipefail
# shellcheck source=e2e/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}
ns=nhi-gc-probe
timeout=${1:-120}
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
cleanup() { kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT
start=$(date +%s)
while :; do
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: probe}
spec: {owner: {team: probe}, secretName: probe-id}
YAML
  uid=$(kubectl -n "$ns" get machineidentity probe -o jsonpath='{.metadata.uid}')
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: probe-dependent
  ownerReferences:
  - {apiVersion: nhi.dev/v1alpha1, kind: MachineIdentity, name: probe, uid: "$uid"}
YAML
  kubectl -n "$ns" delete machineidentity probe --wait=true >/dev/null
  for _ in $(seq 10); do
    if ! kubectl -n "$ns" get configmap probe-dependent >/dev/null 2>&1; then
      echo "garbage collector ready after $(( $(date +%s) - start )) s"
      exit 0
    fi
    sleep 1
  done
  kubectl -n "$ns" delete configmap probe-dependent --ignore-not-found >/dev/null
  if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
    echo "wait-gc-ready: the garbage collector did not collect a MachineIdentity's dependent within ${timeout} s" >&2
    exit 1
  fi
done
