#!/usr/bin/env bash
# The samples in config/samples (and the demo's echo workload, config/samples/echo) work as
# `make demo` uses them: applied to a namespace of their own, every object a MachineIdentity's workloadRef names is among them, no review date and no
# Entitlement ends soon, and the operator (watching only that namespace) makes every identity
# Ready with WorkloadFound=True and ReviewDue=False. Each check prints `ok - NAME` or
# `not ok - NAME` (followed by its output as `# ` lines); the last line is `N passed, M failed`.
#
#   e2e/test-samples.sh
#
# Needs: the CRDs installed, kubectl and python3 on PATH, KUBECONFIG (default
# $NHI_CLUSTER_DIR/kubeconfig). Builds the operator (debug). Creates namespace $NS (default
# nhi-samples-test) and deletes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}
NS=${NHI_SAMPLES_TEST_NS:-nhi-samples-test}
# The operator's default --review-warning: a sample within it would show ReviewDue in the demo.
REVIEW_WARNING_DAYS=14
SAMPLES=(config/samples config/samples/echo config/samples/echo-pod-certificates)

work=$(mktemp -d)
passed=0
failed=0
operator_pid=

# shellcheck source=e2e/tap.sh
. e2e/tap.sh

cleanup() {
  if [ -n "$operator_pid" ]; then
    kill "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  # With the operator stopped, identities holding its revoking finalizer would keep the
  # namespace terminating forever.
  local mi
  for mi in $(k get machineidentities -n "$NS" -o name 2>/dev/null); do
    k patch -n "$NS" "$mi" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

summary() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# A namespace left terminating by an earlier run must be gone before it is created again.
fresh_namespace() {
  local deadline=$((SECONDS + 120))
  while k get namespace "$NS" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "namespace $NS still exists"; return 1; }
    sleep 1
  done
  k create namespace "$NS"
}
check "namespace $NS created" fresh_namespace
apply_samples() {
  local dir
  for dir in "${SAMPLES[@]}"; do e2e/samples-for.sh "$NS" "$dir" | k apply -n "$NS" -f -; done
}
check "${SAMPLES[*]} applied to $NS (e2e/samples-for.sh)" apply_samples
[ "$failed" -eq 0 ] || { summary; exit 1; }

# Every sample object, as applied, in one list.
for dir in "${SAMPLES[@]}"; do k get -k "$dir" -n "$NS" -o json; done |
  python3 -c 'import json, sys
d = json.JSONDecoder(); text = sys.stdin.read().strip(); items = []
while text:
    doc, end = d.raw_decode(text); items += doc["items"]; text = text[end:].strip()
json.dump({"items": items}, sys.stdout)' >"$work/samples.json"

# The static checks: dates, and that the samples themselves hold each workload named.
dates_ahead() {
  python3 - "$work/samples.json" "$REVIEW_WARNING_DAYS" <<'PY'
import datetime, json, sys
items = json.load(open(sys.argv[1]))["items"]
warning = datetime.timedelta(days=int(sys.argv[2]))
now = datetime.datetime.now(datetime.timezone.utc)
bad = False
for o in items:
    name = o["kind"] + "/" + o["metadata"]["name"]
    spec = o.get("spec", {})
    if o["kind"] == "MachineIdentity":
        review = spec.get("reviewBy")
        if review:
            # An identity lapses at 00:00 UTC the day after reviewBy; ReviewDue warns before.
            lapses = datetime.datetime.fromisoformat(review).replace(tzinfo=datetime.timezone.utc) + datetime.timedelta(days=1)
            print(f"{name}: reviewBy {review}, lapses in {(lapses - now).days} days")
            if lapses - now <= warning:
                print(f"  {name}: within the {warning.days}-day review warning (or past): move reviewBy forward")
                bad = True
    if o["kind"] == "Entitlement":
        expires = spec.get("expiresAt")
        if expires:
            end = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
            print(f"{name}: expiresAt {expires}")
            if end - now <= datetime.timedelta(days=1):
                print(f"  {name}: expires within a day: move expiresAt forward")
                bad = True
sys.exit(1 if bad else 0)
PY
}
check "no sample's reviewBy is within $REVIEW_WARNING_DAYS days, no Entitlement expires within a day" dates_ahead

python3 - "$work/samples.json" >"$work/refs" <<'PY'
import json, sys
for o in json.load(open(sys.argv[1]))["items"]:
    ref = o.get("spec", {}).get("workloadRef") if o["kind"] == "MachineIdentity" else None
    if ref:
        print(o["metadata"]["name"], ref["apiVersion"], ref["kind"], ref["name"])
PY
workloads_in_samples() {
  python3 - "$work/samples.json" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["items"]
have = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in items}
bad = False
for o in items:
    ref = o.get("spec", {}).get("workloadRef") if o["kind"] == "MachineIdentity" else None
    if not ref:
        continue
    key = (ref["apiVersion"], ref["kind"], ref["name"])
    print(f"{o['metadata']['name']} -> {' '.join(key)}: {'in the samples' if key in have else 'MISSING from the samples'}")
    bad |= key not in have
sys.exit(1 if bad else 0)
PY
}
check "the samples hold every workload a MachineIdentity names ($(wc -l <"$work/refs") named)" workloads_in_samples
while read -r mi api kind name; do
  check "$kind/$name ($mi's workloadRef) exists in $NS" \
    k get -n "$NS" "$(nhi_kubectl_type "$api" "$kind")" "$name" -o name
done <"$work/refs"

# The operator, as the demo runs it, but only for this namespace (its CA Secret lives there too);
# the echo workload's 2-minute certificates need --min-ttl below the default 5m, as the demo
# installs the chart (identity.minTTL=1m).
check "cargo build --bin nhi-operator" cargo build --quiet --bin nhi-operator
[ "$failed" -eq 0 ] || { summary; exit 1; }
target/debug/nhi-operator run --watch-namespace "$NS" --operator-namespace "$NS" \
  --min-ttl 1m --http-addr 127.0.0.1:0 >"$work/operator.log" 2>&1 &
operator_pid=$!

# with_log COMMAND...: COMMAND, and the operator's log tail when it fails.
with_log() {
  "$@" && return 0
  echo "--- operator log (tail)"
  tail -n 30 "$work/operator.log"
  return 1
}
mapfile -t names < <(for dir in "${SAMPLES[@]}"; do k get -k "$dir" -n "$NS" -o name; done | grep '\.nhi\.dev/')
check "every identity and entitlement Ready (${#names[@]})" \
  with_log k wait -n "$NS" --for=condition=Ready --timeout=60s "${names[@]}"
while read -r mi api kind name; do
  check "MachineIdentity $mi: WorkloadFound=True ($kind/$name)" \
    with_log k wait -n "$NS" --for=condition=WorkloadFound=True --timeout=30s "machineidentity/$mi"
done <"$work/refs"
no_review_due() {
  local mi
  for mi in $(k get machineidentities -n "$NS" -o jsonpath='{range .items[?(@.spec.reviewBy)]}{.metadata.name}{"\n"}{end}'); do
    k wait -n "$NS" --for=condition=ReviewDue=False --timeout=30s "machineidentity/$mi" || return 1
  done
}
check "no identity has ReviewDue" with_log no_review_due

summary
