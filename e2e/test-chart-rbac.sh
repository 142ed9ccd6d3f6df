#!/usr/bin/env bash
# Proves the Helm chart's RBAC is enough and no broader than charts/nhi-operator/README.md lists:
# installs the chart (its objects only: nothing runs pods here), checks every listed and unlisted
# permission of its ServiceAccount with `kubectl auth can-i`, then runs the end-to-end tests that
# exercise those permissions (listed below, each with what it covers) with the operator
# authenticated by a token of that ServiceAccount (`kubectl create token`).
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
yes get pods $OTHER
no  list pods $OTHER
no  create pods $OTHER
no  delete pods $OTHER
yes get podcertificaterequests.certificates.k8s.io $OTHER
yes list podcertificaterequests.certificates.k8s.io *
yes watch podcertificaterequests.certificates.k8s.io *
no  create podcertificaterequests.certificates.k8s.io $OTHER
no  delete podcertificaterequests.certificates.k8s.io $OTHER
yes patch podcertificaterequests.certificates.k8s.io/status $OTHER
no  update podcertificaterequests.certificates.k8s.io/status $OTHER
yes sign signers.certificates.k8s.io * nhi.dev/identity
yes attest signers.certificates.k8s.io * nhi.dev/identity
no  sign signers.certificates.k8s.io * kubernetes.io/kube-apiserver-client-pod
no  sign signers.certificates.k8s.io * example.com/other
no  attest signers.certificates.k8s.io * kubernetes.io/kube-apiserver-serving
yes create clustertrustbundles.certificates.k8s.io * nhi.dev:identity:roots
yes patch clustertrustbundles.certificates.k8s.io * nhi.dev:identity:roots
no  patch clustertrustbundles.certificates.k8s.io * kubernetes.io:kube-apiserver-serving:x
no  delete clustertrustbundles.certificates.k8s.io * nhi.dev:identity:roots
no  create serviceaccounts/token $OTHER
no  get serviceaccounts $OTHER
no  create serviceaccounts $OTHER
no  bind clusterroles.rbac.authorization.k8s.io *
no  escalate roles.rbac.authorization.k8s.io $OTHER
no  impersonate users *
no  update customresourcedefinitions.apiextensions.k8s.io *
no  delete namespaces *
yes watch identitypolicies.nhi.dev *
no  patch identitypolicies.nhi.dev *
yes list namespaces *
no  patch namespaces *
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

# The tests that exercise what the chart grants, run with the operator authenticated as its
# ServiceAccount: each needs the permissions listed beside it, and fails when one is missing (the
# operator's calls are refused, and the test waits in vain for their effect). Not exercised here,
# so checked by the matrix above only: patching Events (the kube-rs Recorder patches an Event that
# repeats on an unchanged object, which no test arranges deterministically), updating
# machineidentities/finalizers (only the OwnerReferencesPermissionEnforcement admission plugin
# asks for it, and this control plane does not enable it), and listing and watching Roles and
# RoleBindings (see below).
chart_tests=(
  # MachineIdentities get/list/watch, machineidentities/status patch, Secrets create/get/list/
  # watch (the CA Secret and the identity's), Events create (Issued).
  issuance::identity_becomes_ready_within_5s_with_a_verifiable_certificate
  # Secrets watch and patch (a corrupted Secret is re-issued in place), create (a deleted one).
  issuance::deleted_or_corrupted_secret_is_reissued_within_5s
  # Entitlements get/list/watch, entitlements/status patch (the bindings).
  entitlements::a_granted_identity_is_authorized_over_mtls_until_the_entitlement_goes
  # MachineIdentities patch (the revoking finalizer, server-side apply) and delete (a lapsed
  # identity), Deployments list/watch, the nhi-trust CRL.
  lifecycle::a_missing_workload_past_its_grace_period_is_revoked_and_deleted_and_one_that_returns_is_kept
  # list/watch of every workload kind in lifecycle.workloadKinds: Deployments, StatefulSets,
  # DaemonSets, Jobs, CronJobs, ServiceAccounts.
  lifecycle::identities_find_their_workload_of_every_kind_the_chart_lists
  # ConfigMaps create; nhi-trust get/list/watch, patch (put right), delete (no identity left).
  lifecycle::trust_configmaps_follow_the_namespaces_with_identities_and_are_put_right
  # The revocation record, nhi-revocations: create, update, get (read back after a restart).
  lifecycle::a_restart_between_recording_and_publishing_loses_no_revocation
  # CertificateSigningRequests create/get/delete, their approval update, approve for the
  # kube-apiserver-client signer; Roles and RoleBindings create/patch/delete; the grantable rule
  # (configmaps get/list).
  kubernetes_access::an_identity_uses_the_api_with_exactly_the_permissions_of_its_entitlement
  # Roles and RoleBindings patch (a change by someone else is put back) and their watch, which
  # sees the change within milliseconds. Without list or watch the operator's retries still put
  # it back within about a second, inside this test's bound: the matrix above holds those two.
  kubernetes_access::roles_and_bindings_changed_by_someone_else_are_put_right
  # No escalate or bind: a Role granting what the chart does not (Pods) is refused.
  kubernetes_access::a_role_the_operator_cannot_grant_is_refused_with_the_apiservers_message
  # Leases create, and get/update of the one Lease named nhi-operator, in the release namespace
  # (NHI_E2E_LEASE_NAMESPACE puts this test's Lease there).
  leader::a_leader_stopped_with_sigterm_hands_over_at_once
)

# Every listed test exists (a name that matches nothing would pass by running nothing).
listed=$(cargo test --test e2e -- --list 2>/dev/null | sed -n 's/: test$//p')
for t in "${chart_tests[@]}"; do
  grep -qxF "$t" <<<"$listed" || { echo "not ok - no e2e test named $t"; exit 1; }
done

echo "== ${#chart_tests[@]} end-to-end tests, the operator running as $SA"
NHI_E2E_OPERATOR_KUBECONFIG=$work/kubeconfig NHI_E2E_LEASE_NAMESPACE=$NS \
  cargo test --test e2e -- --exact "${chart_tests[@]}" --test-threads="${NHI_E2E_THREADS:-3}" \
  | tee "$work/tests.log"
grep -q "test result: ok. ${#chart_tests[@]} passed" "$work/tests.log" \
  || { echo "not ok - expected ${#chart_tests[@]} tests to pass"; exit 1; }
