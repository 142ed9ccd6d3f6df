#!/usr/bin/env bash
# Proves the Helm chart's RBAC is enough and no broader than charts/nhi-operator/README.md lists:
# installs the chart (its objects only: nothing runs pods here), checks every listed and unlisted
# permission of its ServiceAccount with `kubectl auth can-i`, then runs the core end-to-end tests
# with the operator authenticated by a token of that ServiceAccount (`kubectl create token`).
# Expects helm/kubectl on PATH, as e2e/run-e2e.sh sets them, and KUBECONFIG (admin; default
# $NHI_CLUSTER_DIR/kubeconfig, exported so that the tests' harness uses the same one).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}

NS=nhi-rbac-test
RELEASE=nhi-operator
SA=system:serviceaccount:$NS:$RELEASE
OTHER=default
work=$(mktemp -d)

cleanup() {
  helm uninstall --namespace "$NS" "$RELEASE" >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A namespace left terminating by an earlier run must be gone before it is created again.
for _ in $(seq 60); do
  kubectl get namespace "$NS" >/dev/null 2>&1 || break
  sleep 1
done
kubectl create namespace "$NS" >/dev/null
# Kubernetes access on, with the one permission the end-to-end tests grant identities.
helm install "$RELEASE" charts/nhi-operator --namespace "$NS" --wait=false \
  --set kubernetesAccess.enabled=true \
  --set-json 'kubernetesAccess.grantableRules=[{"apiGroups":[""],"resources":["configmaps"],"verbs":["get","list"]}]' >/dev/null
echo "installed the chart as $RELEASE in $NS"

# expected verb resource namespace [name]: what the ServiceAccount may do (yes) and must not (no).
# Resources with a subresource are written resource/subresource.
matrix() {
  cat <<EOF
yes get machineidentities.nhi.dev $OTHER
yes list machineidentities.nhi.dev $OTHER
yes watch machineidentities.nhi.dev $OTHER
yes list machineidentities.nhi.dev *
no  create machineidentities.nhi.dev $OTHER
no  update machineidentities.nhi.dev $OTHER
yes patch machineidentities.nhi.dev $OTHER
yes delete machineidentities.nhi.dev $OTHER
no  deletecollection machineidentities.nhi.dev $OTHER
yes patch machineidentities.nhi.dev/status $OTHER
no  update machineidentities.nhi.dev/status $OTHER
yes get entitlements.nhi.dev $OTHER
yes list entitlements.nhi.dev *
yes watch entitlements.nhi.dev *
no  create entitlements.nhi.dev $OTHER
no  patch entitlements.nhi.dev $OTHER
no  delete entitlements.nhi.dev $OTHER
yes patch entitlements.nhi.dev/status $OTHER
no  update entitlements.nhi.dev/status $OTHER
yes update machineidentities.nhi.dev/finalizers $OTHER
no  patch machineidentities.nhi.dev/finalizers $OTHER
yes get secrets $OTHER
yes list secrets *
yes watch secrets *
yes create secrets $OTHER
yes patch secrets $OTHER
no  update secrets $OTHER
no  delete secrets $OTHER
no  deletecollection secrets $OTHER
yes create events.events.k8s.io $OTHER
yes patch events.events.k8s.io $OTHER
no  get events.events.k8s.io $OTHER
no  delete events.events.k8s.io $OTHER
no  create events $OTHER
yes create leases.coordination.k8s.io $NS
yes get leases.coordination.k8s.io $NS nhi-operator
yes update leases.coordination.k8s.io $NS nhi-operator
no  get leases.coordination.k8s.io $NS someone-elses
no  update leases.coordination.k8s.io $NS someone-elses
no  delete leases.coordination.k8s.io $NS nhi-operator
no  create leases.coordination.k8s.io $OTHER
no  list leases.coordination.k8s.io $NS
yes get configmaps $OTHER
yes list configmaps $OTHER
no  delete configmaps $OTHER
no  patch configmaps $OTHER
no  update configmaps $OTHER
yes create configmaps $OTHER
yes get configmaps $OTHER nhi-trust
yes patch configmaps $OTHER nhi-trust
yes delete configmaps $OTHER nhi-trust
no  update configmaps $OTHER nhi-trust
yes update configmaps $NS nhi-revocations
no  delete configmaps $NS nhi-revocations
no  patch configmaps $OTHER kube-root-ca.crt
no  delete configmaps $OTHER kube-root-ca.crt
yes list deployments.apps *
yes watch deployments.apps *
no  get deployments.apps $OTHER
yes watch jobs.batch *
yes watch serviceaccounts *
no  list pods *
yes create certificatesigningrequests.certificates.k8s.io *
yes get certificatesigningrequests.certificates.k8s.io *
yes delete certificatesigningrequests.certificates.k8s.io *
no  list certificatesigningrequests.certificates.k8s.io *
yes update certificatesigningrequests.certificates.k8s.io/approval *
no  update certificatesigningrequests.certificates.k8s.io/status *
yes approve signers.certificates.k8s.io * kubernetes.io/kube-apiserver-client
no  approve signers.certificates.k8s.io * kubernetes.io/kubelet-serving
no  approve signers.certificates.k8s.io * kubernetes.io/kube-apiserver-client-kubelet
yes create roles.rbac.authorization.k8s.io $OTHER
yes patch rolebindings.rbac.authorization.k8s.io $OTHER
yes delete rolebindings.rbac.authorization.k8s.io $OTHER
no  escalate roles.rbac.authorization.k8s.io $OTHER
no  bind roles.rbac.authorization.k8s.io $OTHER
no  create clusterrolebindings.rbac.authorization.k8s.io *
no  get pods $OTHER
no  create pods $OTHER
no  create serviceaccounts/token $OTHER
no  get serviceaccounts $OTHER
no  create serviceaccounts $OTHER
no  bind clusterroles.rbac.authorization.k8s.io *
no  escalate roles.rbac.authorization.k8s.io $OTHER
no  impersonate users *
no  update customresourcedefinitions.apiextensions.k8s.io *
no  delete namespaces *
EOF
}

# sar_allowed VERB RESOURCE.GROUP NAME: yes or no, for the ServiceAccount, cluster-wide.
sar_allowed() {
  local group=${2#*.} resource=${2%%.*}
  kubectl create -o jsonpath='{.status.allowed}' -f - <<SAR | sed 's/^true$/yes/; s/^false$/no/'
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: $SA
  groups: ["system:serviceaccounts", "system:serviceaccounts:$NS", "system:authenticated"]
  resourceAttributes: {group: "$group", resource: "$resource", verb: "$verb", name: "$3"}
SAR
}

failed=0
checked=0
while read -r expected verb resource namespace name; do
  args=("$verb")
  if [[ $resource == */* ]]; then
    args+=("${resource%%/*}" "--subresource=${resource#*/}")
  else
    args+=("$resource${name:+/$name}")
  fi
  if [ "$namespace" = "*" ]; then args+=(--all-namespaces); else args+=(--namespace "$namespace"); fi
  if [[ ${name:-} == */* ]]; then
    # kubectl auth can-i splits a resource name at '/' (signer names have one): ask the
    # apiserver directly with a SubjectAccessReview.
    got=$(sar_allowed "$verb" "$resource" "$name")
  else
    got=$(kubectl auth can-i "${args[@]}" --as "$SA" 2>/dev/null || true)
  fi
  checked=$((checked + 1))
  if [ "$got" != "$expected" ]; then
    echo "not ok - can-i ${args[*]}: expected $expected, got ${got:-error}"
    failed=$((failed + 1))
  fi
done < <(matrix)
echo "RBAC: $checked permissions checked, $failed differ from the chart README"
[ "$failed" -eq 0 ] || exit 1

# A kubeconfig that authenticates as the chart's ServiceAccount.
server=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
token=$(kubectl create token "$RELEASE" --namespace "$NS" --duration 2h)
cat >"$work/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: chart-service-account
  user:
    token: $token
contexts:
- name: chart
  context: {cluster: local, user: chart-service-account}
current-context: chart
EOF
chmod 600 "$work/kubeconfig"
whoami=$(KUBECONFIG=$work/kubeconfig kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
[ "$whoami" = "$SA" ] || { echo "not ok - the token authenticates as '$whoami', not $SA"; exit 1; }

# The core tests; the leader-election test is left out because its Lease lives in each test's
# own namespace, and the chart grants Leases only in the release namespace (by design).
echo "== core end-to-end tests, the operator running as $SA"
NHI_E2E_OPERATOR_KUBECONFIG=$work/kubeconfig \
  cargo test --test e2e -- --skip leader:: --test-threads="${NHI_E2E_THREADS:-3}"
