#!/usr/bin/env bash
# The operator as users run it, on the local node: its image built without Docker
# (e2e/build-image.sh) and imported into the node's containerd, the chart installed with Helm
# into a namespace that enforces the Pod Security `restricted` level. Checks, in order:
#   - two replicas Running and Ready, one leader (the Lease names a pod), the NetworkPolicy;
#   - each pod runs as 65532 on a read-only root filesystem and wrote nothing to it;
#   - an identity issued; a workload pod mounts its Secret (kubelet's `..data` link);
#   - /metrics scraped through the chart's Service;
#   - the leader, deleted (SIGTERM to PID 1), exits within the grace period and releases the
#     Lease: the other pod leads at once, not after the lease expires;
#   - `helm upgrade` with a changed value rolls both pods without issuing anything twice;
#   - the leader force-deleted during a burst of 200 identities: all Ready, no Secret ever held
#     a second serial;
#   - the mtls_echo server and client in pods talk across renewals of 60 s certificates and a
#     CA rotation with no failure (kubelet's volume updates, the reload library);
#   - a `subPath` mount keeps its first certificate (kubelet never updates it) while the agent
#     sidecar's directory follows every renewal;
#   - `helm uninstall` leaves no operator pod.
# Each check prints `ok - NAME` or `not ok - NAME`; the last line is `N passed, M failed`.
#
#   e2e/test-node-install.sh
#
# Needs: the local control plane with its node (e2e/cluster.sh up as root), the CRDs installed,
# KUBECONFIG (default $NHI_CLUSTER_DIR/kubeconfig). Uses namespaces nhi-system-test,
# nhi-node-workload, nhi-node-upgrade and nhi-node-burst, deleted at the end.
# NHI_NODE_CONTINUITY_SECONDS (default 210) sets how long the echo client calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}
SYSTEM=nhi-system-test
APP=nhi-node-workload
UPGRADE=nhi-node-upgrade
BURST=nhi-node-burst
RELEASE=nhi
DEPLOYMENT=$RELEASE-nhi-operator
work=$(mktemp -d)
passed=0
failed=0

# shellcheck source=e2e/tap.sh
. e2e/tap.sh

cleanup() {
  local p ns mi
  [ ! -f "$work/watchers" ] || xargs -r kill <"$work/watchers" 2>/dev/null || true
  helm uninstall "$RELEASE" -n "$SYSTEM" --wait --timeout 60s >/dev/null 2>&1 || true
  for ns in "$APP" "$UPGRADE" "$BURST"; do
    for mi in $(k get machineidentities -n "$ns" -o name 2>/dev/null); do
      k patch -n "$ns" "$mi" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  done
  k delete namespace "$SYSTEM" "$APP" "$UPGRADE" "$BURST" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

summary() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# note LINE: a number worth reporting; printed (as `# ...` lines) after the checks.
note() { echo "$*" | tee -a "$work/notes"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
operator_pods() { k get pods -n "$SYSTEM" -l app.kubernetes.io/name=nhi-operator -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }
holder() { k get lease nhi-operator -n "$SYSTEM" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
pod_ip() { k get pod -n "$SYSTEM" "$1" -o jsonpath='{.status.podIP}'; }
pod_metrics() { curl -fsS --max-time 5 "http://$(pod_ip "$1"):8080/metrics"; }
# metric_sum POD NAME [LABEL]: the sum of a metric's samples on one operator pod (those whose
# labels hold LABEL, e.g. controller="machineidentity").
metric_sum() {
  pod_metrics "$1" | awk -v m="$2" -v l="${3:-}" '($1 == m || index($1, m "{") == 1) && index($1, l) { s += $2 } END { printf "%d\n", s }'
}
# serial_of: the serial of the PEM certificate on stdin.
serial_of() { openssl x509 -noout -serial | cut -d= -f2; }
secret_serial() { k get secret -n "$1" "$2" -o jsonpath='{.data.tls\.crt}' | base64 -d | serial_of; }

# watch_serials NS FILE: records every version of every Secret in NS (name and certificate) in
# FILE until the script ends (checks run in subshells: the pids are kept in $work/watchers for
# cleanup); one_serial_each FILE COUNT checks that COUNT Secrets were seen and
# that none ever held a second certificate serial.
watch_serials() {
  kubectl get secrets -n "$1" --watch -o jsonpath='{.metadata.name}{" "}{.data.tls\.crt}{"\n"}' >"$2" 2>"$2.err" &
  echo $! >>"$work/watchers"
}
one_serial_each() {
  python3 - "$1" "$2" <<'PYEND'
import base64, sys
from cryptography import x509
seen = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) != 2:
        continue
    name, pem = parts
    cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
    seen.setdefault(name, set()).add(format(cert.serial_number, "X"))
twice = {n: s for n, s in seen.items() if len(s) > 1}
print(f"{len(seen)} Secrets with a certificate, {sum(len(s) for s in seen.values())} serials seen")
for n, s in sorted(twice.items()):
    print(f"{n} held {len(s)} serials: {', '.join(sorted(s))}")
sys.exit(0 if len(seen) == int(sys.argv[2]) and not twice else 1)
PYEND
}

image() {
  local tar echo
  tar=$(e2e/build-image.sh | tail -n 1)
  echo=$(e2e/build-image.sh --echo | tail -n 1)
  e2e/node.sh import "$tar" "$echo"
}
check "operator and mtls_echo images built (e2e/build-image.sh) and imported into the node" image
[ "$failed" -eq 0 ] || { summary; exit 1; }

restricted() {
  k create namespace "$SYSTEM"
  k label namespace "$SYSTEM" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest pod-security.kubernetes.io/warn=restricted
  # Enforced: a pod that is not restricted is refused.
  if k run -n "$SYSTEM" not-restricted --image=nhi.dev/busybox:local --image-pull-policy=Never \
    --restart=Never --privileged -- /bin/busybox true >"$work/psa" 2>&1; then
    echo "a privileged pod was admitted"
    return 1
  fi
  grep 'violates PodSecurity "restricted' "$work/psa"
}
check "the operator's namespace enforces Pod Security restricted (a privileged pod is refused)" restricted

install() {
  helm install "$RELEASE" charts/nhi-operator -n "$SYSTEM" \
    --set image.repository=nhi.dev/nhi-operator --set image.tag=dev --set image.pullPolicy=Never \
    --set identity.minTTL=30s --set ca.rotation.propagation=30s --set ca.rotation.spread=10s \
    --wait --timeout 120s 2>&1 | tee "$work/install"
  # No Pod Security warning either.
  ! grep -i 'warning.*podsecurity\|would violate' "$work/install"
}
check "helm install with the local image, admitted under restricted" install
two_ready() {
  k rollout status -n "$SYSTEM" "deployment/$DEPLOYMENT" --timeout=120s &&
    k wait -n "$SYSTEM" --for=condition=Ready pod -l app.kubernetes.io/name=nhi-operator --timeout=60s &&
    [ "$(k get pods -n "$SYSTEM" -l app.kubernetes.io/name=nhi-operator --field-selector=status.phase=Running -o name | wc -l)" -eq 2 ]
}
check "two operator pods Running and Ready" two_ready
# wait_leader [NOT]: waits until the Lease names a Ready operator pod (other than NOT); prints it.
wait_leader() {
  local h
  for _ in $(seq 1 120); do
    h=$(holder)
    if [ -n "$h" ] && [ "$h" != "${1:-}" ] &&
      [ "$(k get pod "$h" -n "$SYSTEM" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; then
      echo "$h"
      return 0
    fi
    sleep 0.25
  done
  return 1
}
one_leader() { echo "leader: $(wait_leader)"; }
check "one leader: the Lease names an operator pod" one_leader
network_policy() {
  k get networkpolicy -n "$SYSTEM" "$DEPLOYMENT" -o jsonpath='{.spec.podSelector.matchLabels}{" "}{.spec.ingress[0].ports[0].port}' |
    tee /dev/stderr | grep '"app.kubernetes.io/name":"nhi-operator".* 8080' >/dev/null
}
check "the chart's NetworkPolicy admitted, selecting the operator's pods (port 8080 only)" network_policy

# container_pid POD: the host pid of the operator process in POD (found by the pod's UID in its
# cgroup path, so a pod of another cluster on this machine cannot match).
container_pid() {
  local uid p
  uid=$(k get pod -n "$SYSTEM" "$1" -o jsonpath='{.metadata.uid}')
  for p in $(pgrep -f '^/nhi-operator run'); do
    grep -q "pod${uid//-/_}\|pod$uid" "/proc/$p/cgroup" 2>/dev/null && { echo "$p"; return 0; }
  done
  echo "no process of pod $1 ($uid) found" >&2
  return 1
}
# only_mount_points UPPER MOUNTINFO: every entry of an overlay upper layer is a mount point of
# the container (or a directory on the way to one), empty and owned by root.
only_mount_points() {
  python3 - "$1" "$2" <<'PYEND'
import os, sys
upper, mountinfo = sys.argv[1], sys.argv[2]
points = {line.split()[4] for line in open(mountinfo)}
entries, bad = 0, []
for dirpath, dirs, files in os.walk(upper):
    for name in dirs + files:
        entries += 1
        path = os.path.join(dirpath, name)
        inside = "/" + os.path.relpath(path, upper)
        st = os.lstat(path)
        on_the_way = any(p.startswith(inside + "/") for p in points)
        if st.st_uid != 0 or (inside not in points and not on_the_way) or \
                (os.path.isfile(path) and st.st_size > 0):
            bad.append(f"{inside} (uid {st.st_uid}, {st.st_size} bytes)")
print("written: " + ", ".join(bad) if bad else f"upper layer: {entries} entries, all mount points")
sys.exit(1 if bad else 0)
PYEND
}
read_only_root() {
  local pod pid root upper holder_pid
  holder_pid=$(cat "$NHI_CLUSTER_DIR/node/node-holder.pid")
  for pod in $(operator_pods); do
    pid=$(container_pid "$pod")
    grep -q '^Uid:[[:space:]]*65532[[:space:]]' "/proc/$pid/status"
    # The container's root mount: read-only.
    root=$(awk '$5 == "/"' "/proc/$pid/mountinfo" | tail -n 1)
    note "read-only root: $pod (pid $pid, uid 65532): $(cut -d' ' -f6 <<<"$root") $(grep -o ' - [^ ]*' <<<"$root")"
    [[ $(cut -d' ' -f6 <<<"$root") == ro* ]]
    # Nothing written to it: its overlay upper layer (seen from the node's mount namespace) holds
    # only what the runtime made before making it read-only, the mount points of the container's
    # volumes and files (/etc/hosts, /var/run/secrets/...: empty, owned by root).
    upper=$(grep -o 'upperdir=[^,]*' <<<"$root" | cut -d= -f2 || true)
    [ -z "$upper" ] || only_mount_points "/proc/$holder_pid/root$upper" "/proc/$pid/mountinfo"
  done
}
check "each operator pod runs as 65532 on a read-only root filesystem and wrote nothing to it" read_only_root

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
  openssl x509 -in "$work/tls.crt" -noout -ext subjectAltName | grep "spiffe://cluster.local/ns/$APP/mi/web" >/dev/null
}
check "a workload pod mounts the identity Secret (kubelet's ..data link) and holds the SPIFFE ID" mounted

metrics() {
  local ip
  ip=$(k get service -n "$SYSTEM" "$DEPLOYMENT-metrics" -o jsonpath='{.spec.clusterIP}')
  curl -fsS --max-time 5 "http://$ip:8080/metrics" >"$work/metrics"
  grep -m1 '^nhi_identities_with_certificate' "$work/metrics"
}
check "metrics scraped through the chart's Service" metrics

# The leader deleted as Kubernetes deletes pods: SIGTERM to PID 1, SIGKILL after the grace period.
sigterm() {
  local leader grace t0 took gone next
  leader=$(wait_leader)
  grace=$(k get pod -n "$SYSTEM" "$leader" -o jsonpath='{.spec.terminationGracePeriodSeconds}')
  kubectl logs -n "$SYSTEM" -f "$leader" >"$work/leader.log" 2>&1 &
  echo $! >>"$work/watchers"
  for _ in $(seq 1 100); do [ -s "$work/leader.log" ] && break; sleep 0.1; done
  t0=$(now)
  k delete pod -n "$SYSTEM" "$leader" --wait=false
  next=$(wait_leader "$leader")
  took=$(since "$t0")
  k wait -n "$SYSTEM" --for=delete "pod/$leader" --timeout=$((grace + 30))s
  gone=$(since "$t0")
  note "SIGTERM: deleted $leader (grace ${grace}s): $next leads after ${took}s, the pod was gone after ${gone}s"
  grep -m1 'shutdown requested' "$work/leader.log"
  grep -m1 'released the Lease' "$work/leader.log"
  # Released: the standby took over before the 15 s lease could expire; exited on SIGTERM, not
  # killed at the end of the grace period.
  python3 -c "import sys; sys.exit(0 if float('$took') < 10 and float('$gone') < $grace - 5 else 1)"
  two_ready
}
check "the leader deleted: exits on SIGTERM within the grace period and releases the Lease" sigterm

# helm upgrade with a changed value rolls both pods; no identity is issued twice, whether it was
# issued before the upgrade or while the pods rolled.
upgrade() {
  local before after mi pod leader issued reconciled count
  before=$(k get machineidentities -n "$APP" -o jsonpath='{range .items[*]}{.metadata.name}={.status.serialNumber}{"\n"}{end}' | sort)
  k create namespace "$UPGRADE"
  watch_serials "$UPGRADE" "$work/upgrade-serials"
  helm upgrade "$RELEASE" charts/nhi-operator -n "$SYSTEM" --reuse-values --set logFormat=text \
    --wait --timeout 180s >"$work/upgrade" 2>&1 &
  local helm_pid=$!
  for i in $(seq 1 20); do
    k apply -n "$UPGRADE" -f - >/dev/null <<EOF
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: during-$i}
spec: {owner: {team: node-test}, secretName: during-$i-identity}
EOF
    sleep 0.5
  done
  wait "$helm_pid" || { cat "$work/upgrade"; return 1; }
  two_ready
  for pod in $(operator_pods); do
    [ "$(k get pod -n "$SYSTEM" "$pod" -o jsonpath='{.spec.containers[0].env[?(@.name=="NHI_LOG_FORMAT")].value}')" = text ]
  done
  leader=$(wait_leader)
  k wait -n "$UPGRADE" --for=condition=Ready machineidentity --all --timeout=120s
  # The new leader has reconciled every identity of the cluster since it started...
  count=$(k get machineidentities -A -o name | wc -l)
  for _ in $(seq 1 60); do
    reconciled=$(metric_sum "$leader" nhi_reconciles_total 'controller="machineidentity"')
    [ "$reconciled" -ge "$count" ] && break
    sleep 0.5
  done
  [ "$reconciled" -ge "$count" ]
  # ...and what it issued were only the new identities not issued before it led.
  issued=$(metric_sum "$leader" nhi_certificates_issued_total)
  after=$(k get machineidentities -n "$APP" -o jsonpath='{range .items[*]}{.metadata.name}={.status.serialNumber}{"\n"}{end}' | sort)
  note "helm upgrade: new leader $leader: $reconciled reconciles of $count identities, $issued certificates issued"
  [ "$before" = "$after" ] || { echo "serials changed: $before -> $after"; return 1; }
  [ "$issued" -le 20 ]
  one_serial_each "$work/upgrade-serials" 20
}
check "helm upgrade with a changed value rolls the pods without a double issuance" upgrade

# The leader force-deleted (no SIGTERM, no Lease release) while it issues 200 identities.
burst() {
  local leader next t0 took i issued
  k create namespace "$BURST"
  watch_serials "$BURST" "$work/burst-serials"
  for i in $(seq 1 200); do
    cat <<EOF
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: burst-$i}
spec: {owner: {team: node-test}, secretName: burst-$i-identity}
---
EOF
  done >"$work/burst.yaml"
  leader=$(wait_leader)
  t0=$(now)
  # Created one by one (kubectl apply) while the leader issues them as they come: the leader
  # goes once the watch has seen ten Secrets with a certificate.
  k apply -n "$BURST" -f "$work/burst.yaml" >"$work/burst-apply" 2>&1 &
  local apply_pid=$!
  for _ in $(seq 1 600); do
    issued=$(grep -c ' ..' "$work/burst-serials" || true)
    [ "$issued" -ge 10 ] && break
    sleep 0.05
  done
  k delete pod -n "$SYSTEM" "$leader" --grace-period=0 --force
  note "burst: $leader force-deleted $(since "$t0")s after the burst began, $issued Secrets issued, $(grep -c created "$work/burst-apply" || true) of 200 identities created"
  wait "$apply_pid" || { cat "$work/burst-apply"; return 1; }
  next=$(wait_leader "$leader")
  note "burst: $next leads $(since "$t0")s after the burst began"
  k wait -n "$BURST" --for=condition=Ready machineidentity --all --timeout=300s >/dev/null
  took=$(since "$t0")
  note "burst: all 200 Ready after ${took}s"
  # The watch has seen every Secret's last version before this is counted.
  for _ in $(seq 1 40); do
    [ "$(awk 'NF == 2 { print $1 }' "$work/burst-serials" | sort -u | wc -l)" -ge 200 ] && break
    sleep 0.25
  done
  one_serial_each "$work/burst-serials" 200 | tee -a "$work/notes"
  [ -z "$(k get machineidentities -n "$BURST" -o jsonpath='{.items[*].status.previousCertificates}')" ]
  two_ready
  # The 200 identities go before the CA rotation below would re-issue them all.
  k delete namespace "$BURST" --timeout=180s >/dev/null
}
check "the leader force-deleted during a burst of 200 identities: all Ready, no Secret held two serials" burst

# subPath: kubelet never updates a file mounted with subPath. Set up here, checked after the
# continuity run below has seen several renewals: the subPath file keeps its first certificate,
# the Secret volume beside it follows, and so does the directory the agent sidecar keeps (the
# documented way out for a program that needs its files at fixed paths).
# in_subpath FILE: the serial of the certificate FILE in the subpath pod's app container.
in_subpath() { k exec -n "$APP" subpath -c app -- /bin/busybox cat "$1" | serial_of; }
subpath_setup() {
  k apply -n "$APP" -f - <<EOF
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: subpath}
spec:
  owner: {team: node-test}
  secretName: subpath-identity
  certificate: {ttl: 60s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: subpath-agent}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: subpath-agent}
rules:
- {apiGroups: [""], resources: [secrets], resourceNames: [subpath-identity], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [configmaps], resourceNames: [nhi-trust], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: subpath-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: subpath-agent}
subjects: [{kind: ServiceAccount, name: subpath-agent}]
EOF
  k wait -n "$APP" --for=condition=Ready machineidentity/subpath --timeout=60s
  k apply -n "$APP" -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: subpath}
spec:
  serviceAccountName: subpath-agent
  securityContext: {runAsNonRoot: true, runAsUser: 65532, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: app
    image: nhi.dev/busybox:local
    imagePullPolicy: Never
    command: [/bin/busybox, sleep, "3600"]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts:
    - {name: identity, mountPath: /etc/app/tls.crt, subPath: tls.crt, readOnly: true}
    - {name: identity, mountPath: /etc/volume, readOnly: true}
    - {name: agent, mountPath: /etc/agent, readOnly: true}
  - name: agent
    image: nhi.dev/nhi-operator:dev
    imagePullPolicy: Never
    command: [/nhi-operator, agent, --secret, subpath-identity, --dir, /etc/agent]
    env: [{name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: agent, mountPath: /etc/agent}]
  volumes:
  - {name: identity, secret: {secretName: subpath-identity}}
  - {name: agent, emptyDir: {medium: Memory}}
EOF
  k wait -n "$APP" --for=condition=Ready pod/subpath --timeout=60s
  for _ in $(seq 1 40); do [ -n "$(in_subpath /etc/agent/tls.crt 2>/dev/null)" ] && break; sleep 0.25; done
  first=$(secret_serial "$APP" subpath-identity)
  echo "$first" >"$work/subpath-first"
  echo "first serial $first: subPath $(in_subpath /etc/app/tls.crt), volume $(in_subpath /etc/volume/tls.crt), agent $(in_subpath /etc/agent/tls.crt)"
  [ "$(in_subpath /etc/app/tls.crt)" = "$first" ] && [ "$(in_subpath /etc/agent/tls.crt)" = "$first" ]
}
check "a pod mounting its certificate with subPath, its Secret volume and an agent sidecar's directory" subpath_setup

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
  certificate: {ttl: 60s, dnsNames: [echo.$APP.svc]}
---
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: echo-client}
spec:
  owner: {team: node-test}
  secretName: echo-client-identity
  certificate: {ttl: 60s, usages: [client]}
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
  # kubectl exec shows kubelet's ..data link in the echo server's identity directory.
  k exec -n "$APP" echo-server -- /bin/busybox ls -la "$dir" | tee "$work/echo-ls"
  grep -q -- '..data ->' "$work/echo-ls"
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
  } | tee -a "$work/notes"
  [[ $summary == *" failed_requests=0 "* ]] && [[ $summary == *" failed_handshakes=0 "* ]] &&
    [ "$servers" -ge 4 ] && [ "$clients" -ge 4 ] && [ "$answered" = "$asked" ] &&
    { [ -n "$switched" ] || [ -n "$completed" ]; }
}
check "continuity in pods: no failed handshake or request across renewals and a CA rotation" continuity

subpath_stale() {
  local first now_serial volume agent sub
  first=$(cat "$work/subpath-first")
  now_serial=$(secret_serial "$APP" subpath-identity)
  volume=$(in_subpath /etc/volume/tls.crt)
  sub=$(in_subpath /etc/app/tls.crt)
  # The agent writes each version within moments of the Secret's change.
  for _ in $(seq 1 40); do
    now_serial=$(secret_serial "$APP" subpath-identity)
    agent=$(in_subpath /etc/agent/tls.crt)
    [ "$agent" = "$now_serial" ] && break
    sleep 0.25
  done
  note "subPath: first $first; now: Secret $now_serial, subPath $sub, Secret volume $volume, agent $agent"
  [ "$now_serial" != "$first" ] && [ "$volume" != "$first" ] && [ "$sub" = "$first" ] &&
    [ "$agent" = "$now_serial" ]
}
check "subPath keeps the first certificate (kubelet never updates it); the volume and the agent's directory follow" subpath_stale

uninstall() {
  helm uninstall "$RELEASE" -n "$SYSTEM" --wait --timeout 60s
  k wait -n "$SYSTEM" --for=delete pod -l app.kubernetes.io/name=nhi-operator --timeout=60s
  [ -z "$(k get pods -n "$SYSTEM" -o name)" ]
}
check "helm uninstall leaves no operator pod" uninstall

if [ -f "$work/notes" ]; then sed 's/^/# /' "$work/notes"; fi
summary
