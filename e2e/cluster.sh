#!/usr/bin/env bash
# A local Kubernetes control plane made of real binaries on 127.0.0.1 (the way envtest runs
# them, plus kube-controller-manager so that garbage collection, namespace deletion, service
# account tokens and CSR signing actually happen, and kube-scheduler to place pods).
#
#   e2e/cluster.sh up       build/fetch the binaries (cached), generate certificates, start etcd,
#                           kube-apiserver, kube-controller-manager and kube-scheduler;
#                           idempotent
#   e2e/cluster.sh down     stop the recorded processes (and the demo's operator, when `make demo`
#                           left one running) and delete the state folder
#   e2e/cluster.sh status   show the components; exit 0 when running, 3 when not
#   e2e/cluster.sh env      print `export KUBECONFIG=... PATH=...` lines for eval
#
# State (certificates, kubeconfigs, etcd data, logs, pids, ports) lives in $NHI_CLUSTER_DIR
# (default e2e/.cluster/; `make test` uses e2e/.cluster-test/), locked by $NHI_CLUSTER_DIR.lock;
# the admin kubeconfig is $NHI_CLUSTER_DIR/kubeconfig (user "admin", group system:masters).
# Control planes with different state folders run side by side, each on its own ports.
#
# Environment: NHI_CLUSTER_DIR (see env.sh); NHI_BIN_CACHE (see build-binaries.sh);
# NHI_ETCD_PORT, NHI_ETCD_PEER_PORT, NHI_APISERVER_PORT, NHI_KCM_PORT, NHI_SCHEDULER_PORT to pin
# ports (default: free
# ports chosen at random); NHI_READY_TIMEOUT (seconds per component, default 60);
# NHI_KCM_CONTROLLERS to override the controller list.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/env.sh
. "$here/env.sh"
STATE=$NHI_CLUSTER_DIR
LOCK=$STATE.lock
KUBECONFIG_PATH=$STATE/kubeconfig
READY_TIMEOUT=${NHI_READY_TIMEOUT:-60}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
# PodCertificateRequest and ClusterTrustBundle are GA (certificates.k8s.io/v1, on by default) from
# Kubernetes 1.37; on 1.36 (KUBE_VERSION=v1.36.3 e2e/build-binaries.sh, the fallback) they are
# beta and need these gates and the v1beta1 API.
BETA_FEATURE_GATES=PodCertificateRequest=true,ClusterTrustBundle=true,ClusterTrustBundleProjection=true
BETA_RUNTIME_CONFIG=certificates.k8s.io/v1beta1/clustertrustbundles=true,certificates.k8s.io/v1beta1/podcertificaterequests=true
SA_ISSUER=https://kubernetes.default.svc.cluster.local
KCM_CONTROLLERS=${NHI_KCM_CONTROLLERS:-garbage-collector-controller,namespace-controller,node-lifecycle-controller,taint-eviction-controller,endpointslice-controller,replicaset-controller,deployment-controller,pod-garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,certificatesigningrequest-signing-controller,certificatesigningrequest-approving-controller,certificatesigningrequest-cleaner-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,podcertificaterequest-cleaner-controller,kube-apiserver-serving-clustertrustbundle-publisher-controller}

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

# alive NAME: the recorded process exists and is still ours (its command line mentions a path
# inside the state folder), so a recycled pid, or another state folder's component, is never
# mistaken for one of this folder's.
alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  ps -p "$pid" -o args= 2>/dev/null | grep -qF -- "$STATE/"
}

# stop_demo_operator: stop the operator `make demo` left running on this control plane.
stop_demo_operator() {
  local pid
  pid=$(nhi_demo_operator_pid) || return 0
  log "stopping the demo's operator (pid $pid)"
  stop_pid "$pid" demo-operator
}

# stop NAME: TERM the recorded process if it is alive and ours, wait up to 10 s, then KILL.
stop() {
  local name=$1
  alive "$name" || return 0
  log "stopping $name (pid $(pid_of "$name"))"
  stop_pid "$(pid_of "$name")" "$name"
}

# stop_pid PID NAME: TERM PID, wait up to 10 s for it to exit, then KILL.
stop_pid() {
  local pid=$1 name=$2 deadline
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      log "$name (pid $pid) did not exit 10 s after TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
}

# stop_all: stop the components in reverse start order (clients before etcd, so the
# apiserver can shut down cleanly).
stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[i]}"; done
}

# start NAME COMMAND...: run detached (own session, immune to hangups), stdout+stderr to
# $STATE/NAME.log, pid to $STATE/NAME.pid.
start() {
  local name=$1; shift
  local runner=()
  command -v setsid >/dev/null 2>&1 && runner=(setsid)
  rm -f "$STATE/$name.pid"
  # The inner shell records its own pid and then execs the binary, keeping that pid; fd 9
  # (the lock) is closed so that the component does not hold it.
  # shellcheck disable=SC2016
  ${runner[@]+"${runner[@]}"} nohup bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" \
    >"$STATE/$name.log" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$STATE/$name.pid" ] && return 0
    sleep 0.1
  done
  fail "$name" "did not start (no pid recorded)"
}

# fail NAME MESSAGE: show the component's log tail, stop everything, exit non-zero.
fail() {
  local name=$1 msg=$2
  if [ -f "$STATE/$name.log" ]; then
    printf -- '----- last 40 lines of %s -----\n' "$STATE/$name.log" >&2
    tail -n 40 "$STATE/$name.log" >&2 || true
    printf -- '-----\n' >&2
  fi
  trap - INT TERM
  stop_all
  die "$name $msg; everything started was stopped; logs kept in $STATE (run '$0 down' to remove)"
}

# wait_ready NAME WHAT CHECK...: poll CHECK until it succeeds, the process dies, or timeout.
wait_ready() {
  local name=$1 what=$2
  shift 2
  local start=$SECONDS
  while :; do
    if ! alive "$name"; then fail "$name" "exited during startup"; fi
    if "$@" >/dev/null 2>&1; then
      log "$name: $what ($((SECONDS - start)) s)"
      return 0
    fi
    if [ $((SECONDS - start)) -ge "$READY_TIMEOUT" ]; then
      fail "$name" "was not ready within ${READY_TIMEOUT} s (waiting for: $what)"
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# Health checks (need the ports from $STATE/cluster.env)

load_env() {
  # shellcheck source=/dev/null
  [ -f "$STATE/cluster.env" ] && . "$STATE/cluster.env"
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}

apiserver_readyz() {
  curl -sS --max-time 5 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" 2>&1 || true
}
apiserver_ready() { [ "$(apiserver_readyz)" = ok ]; }

kcm_healthy() {
  [ "$(curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz")" = ok ]
}

scheduler_healthy() {
  [ "$(curl -fsSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz")" = ok ]
}

# The controllers really run: the serviceaccount controller created default/default (pods and
# `kubectl create token default` need it).
kcm_working() {
  curl -fsS --max-time 5 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/api/v1/namespaces/default/serviceaccounts/default"
}

# ---------------------------------------------------------------------------------------------
# Ports

# free_ports N: N distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# port_free PORT: whether a listener could bind 127.0.0.1:PORT right now.
port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

choose_ports() {
  local p
  read -r -a p <<<"$(free_ports 5)" || die "python3 is needed to pick free ports"
  ETCD_PORT=${NHI_ETCD_PORT:-${p[0]}}
  ETCD_PEER_PORT=${NHI_ETCD_PEER_PORT:-${p[1]}}
  APISERVER_PORT=${NHI_APISERVER_PORT:-${p[2]}}
  KCM_PORT=${NHI_KCM_PORT:-${p[3]}}
  SCHEDULER_PORT=${NHI_SCHEDULER_PORT:-${p[4]}}
  choose_node_net
  local what port
  for what in "etcd client:$ETCD_PORT" "etcd peer:$ETCD_PEER_PORT" \
    "kube-apiserver:$APISERVER_PORT" "kube-controller-manager:$KCM_PORT" \
    "kube-scheduler:$SCHEDULER_PORT"; do
    port=${what##*:}
    [[ $port =~ ^[0-9]+$ ]] || die "invalid port '$port' for ${what%:*}"
    port_free "$port" || die "port 127.0.0.1:$port chosen for ${what%:*} is already in use; free it or set another port (NHI_*_PORT)"
  done
  [ "$(printf '%s\n' "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT" | sort -u | wc -l)" -eq 5 ] ||
    die "the five ports must be distinct: $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT"
}

# node_net_free N: no route or address of this machine is in 10.N.0.0/16.
node_net_free() { ! ip -o addr 2>/dev/null | grep -q " 10\.$1\." && ! ip route 2>/dev/null | grep -q "^10\.$1\."; }

# choose_node_net: the /16 of this control plane's Services and node (10.NODE_NET.0.0/16), from
# its state folder, moved on while taken (the demo's and the tests' control planes differ).
choose_node_net() {
  local n i
  n=$((0x$(printf '%s' "$STATE" | sha256sum | cut -c1-4) % 100 + 100))
  for ((i = 0; i < 100; i++)); do
    if node_net_free "$n"; then break; fi
    n=$(((n - 100 + 1) % 100 + 100))
  done
  NODE_NET=${NHI_NODE_NET:-$n}
  set_node_addresses
}

set_node_addresses() {
  SERVICE_CIDR=10.$NODE_NET.128.0/24
  SERVICE_IP=10.$NODE_NET.128.1
  NODE_IP=10.$NODE_NET.255.2
}

# ---------------------------------------------------------------------------------------------
# Certificates and kubeconfigs

# ossl ARGS...: openssl with its messages kept in pki/openssl.log and shown on failure.
ossl() {
  openssl "$@" 2>>"$STATE/pki/openssl.log" ||
    die "openssl $1 failed (is openssl installed?): $(tail -n 5 "$STATE/pki/openssl.log" 2>/dev/null)"
}

ec_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

# ca NAME CN: a self-signed CA.
ca() {
  local pki=$STATE/pki
  ec_key "$pki/$1.key"
  ossl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/$1.crt"
}

# leaf NAME SUBJECT EXTENSIONS [CA]: key + certificate signed by CA (default: the cluster CA).
leaf() {
  local name=$1 subj=$2 ext=$3 ca=${4:-ca} pki=$STATE/pki
  ec_key "$pki/$name.key"
  ossl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  ossl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

gen_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki"
  chmod 700 "$pki"
  ca ca nhi-e2e-ca
  # The request-header (front-proxy) CA: lets the apiserver proxy to aggregated API servers,
  # and lets delegating servers (kube-controller-manager) read a complete
  # extension-apiserver-authentication ConfigMap.
  ca front-proxy-ca nhi-e2e-front-proxy-ca
  leaf apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  leaf admin "/O=system:masters/CN=admin" "$client"
  leaf kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  leaf kube-scheduler "/CN=system:kube-scheduler" "$client"
  leaf kubelet "/O=system:nodes/CN=system:node:nhi-node" "$client"
  leaf kube-proxy "/CN=system:kube-proxy" "$client"
  leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  leaf front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  # Service-account token signing key pair (RSA: the most widely accepted JWT algorithm).
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
  ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  local f
  for f in ca.crt front-proxy-ca.crt apiserver.crt admin.crt kube-controller-manager.crt kube-scheduler.crt \
    front-proxy-client.crt sa.key sa.pub; do
    [ -s "$pki/$f" ] || die "generating certificates with openssl failed ($pki/$f missing)"
  done
}

b64() { base64 <"$1" | tr -d '\n'; }

# kubeconfig FILE USER CERT KEY [SERVER]: a kubeconfig with embedded credentials (for the
# apiserver on 127.0.0.1 by default).
write_kubeconfig() {
  local file=$1 user=$2 cert=$3 key=$4 server=${5:-https://127.0.0.1:$APISERVER_PORT}
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nhi-e2e
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$STATE/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(b64 "$cert")
    client-key-data: $(b64 "$key")
contexts:
- name: nhi-e2e
  context:
    cluster: nhi-e2e
    user: $user
current-context: nhi-e2e
EOF
  chmod 600 "$file"
}

# ---------------------------------------------------------------------------------------------
# Subcommands

# binaries: the bin folder from build-binaries.sh (a no-op when everything is cached).
binaries() {
  local out bin b cache=${NHI_BIN_CACHE:-$HOME/.cache/nhi-operator/bin}
  if ! command -v go >/dev/null 2>&1; then
    # Without Go nothing can be built, but a complete cache is still usable.
    for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      [ -x "$cache/current/$b" ] || break
    done
    if [ -x "$cache/current/$b" ]; then
      log "Go is not on PATH; using the cached binaries in $cache/current"
      printf '%s\n' "$cache/current"
      return 0
    fi
  fi
  if ! out=$("$here/build-binaries.sh"); then
    die "building the control plane binaries failed (see the messages above)"
  fi
  bin=$(printf '%s\n' "$out" | tail -n 1)
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$bin/$b" ] || die "build-binaries.sh did not produce $bin/$b"
  done
  printf '%s\n' "$bin"
}

# node_wanted BIN: whether this control plane gets a node (NHI_NODE=on|off|auto; auto: on when
# running as root on Linux with the node's binaries built).
node_wanted() {
  case ${NHI_NODE:-auto} in
    on) return 0 ;;
    off) return 1 ;;
  esac
  [ "$(uname -s)" = Linux ] && [ "$(id -u)" -eq 0 ] && [ -x "$1/kubelet" ]
}

all_alive() {
  local name
  for name in "${COMPONENTS[@]}"; do alive "$name" || return 1; done
}

lock() {
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    flock -w 300 9 || die "another '$0' is still running (lock $LOCK)"
  fi
}

cmd_up() {
  lock
  local t0=$SECONDS
  if [ -d "$STATE" ]; then
    load_env || true
    if all_alive && [ -n "${APISERVER_PORT:-}" ]; then
      local i
      for ((i = 0; i < 20; i++)); do
        if apiserver_ready; then
          echo "cluster already running; KUBECONFIG=$KUBECONFIG_PATH"
          return 0
        fi
        sleep 0.5
      done
      log "recorded processes are alive but /readyz is not ok; restarting the cluster"
    else
      log "stale state in $STATE (components not running); cleaning it"
    fi
    stop_demo_operator
    "$here/node.sh" down 2>/dev/null || true
    stop_all
    rm -rf "$STATE"
  fi

  local bin minor gates=()
  bin=$(binaries)
  minor=$("$bin/kube-apiserver" --version | sed -n 's/^Kubernetes v1\.\([0-9]*\)\..*/\1/p')
  [ -n "$minor" ] || die "cannot read the version of $bin/kube-apiserver"
  if [ "$minor" -lt 37 ]; then gates=(--feature-gates="$BETA_FEATURE_GATES"); fi
  choose_ports
  mkdir -p "$STATE"
  trap 'trap - INT TERM; [ ! -d "$STATE/node" ] || "$here/node.sh" down || true; stop_all; die "interrupted; everything started was stopped"' INT TERM
  gen_pki
  cat >"$STATE/cluster.env" <<EOF
BIN=$bin
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
NODE_NET=$NODE_NET
EOF
  write_kubeconfig "$KUBECONFIG_PATH" admin "$STATE/pki/admin.crt" "$STATE/pki/admin.key"
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager \
    "$STATE/pki/kube-controller-manager.crt" "$STATE/pki/kube-controller-manager.key"
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" system:kube-scheduler \
    "$STATE/pki/kube-scheduler.crt" "$STATE/pki/kube-scheduler.key"
  # The node's components reach the apiserver through the forwarder on the node's address.
  write_kubeconfig "$STATE/kubelet.kubeconfig" system:node:nhi-node \
    "$STATE/pki/kubelet.crt" "$STATE/pki/kubelet.key" "https://$NODE_IP:6443"
  write_kubeconfig "$STATE/kube-proxy.kubeconfig" system:kube-proxy \
    "$STATE/pki/kube-proxy.crt" "$STATE/pki/kube-proxy.key" "https://$NODE_IP:6443"

  local etcd_url=http://127.0.0.1:$ETCD_PORT peer_url=http://127.0.0.1:$ETCD_PEER_PORT
  # Sized as a production control plane is for 100,000 objects of a kind (`make bench
  # N=100000`): etcd's quota at its recommended maximum of 8 GiB (the 2 GiB default fills with
  # 100,000 identities, their Secrets and the revisions between compactions), and the
  # apiserver's in-flight limits (the seats API Priority and Fairness shares out) doubled.
  start etcd "$bin/etcd" \
    --name=nhi-e2e \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="$etcd_url" \
    --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" \
    --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="nhi-e2e=$peer_url" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --quota-backend-bytes=8589934592 \
    --log-level=warn
  wait_ready etcd "/health ok" etcd_healthy

  local pki=$STATE/pki
  # The audit log records who wrote what and when (writes only, metadata only): the chaos and
  # fencing tests read it to show a replica wrote nothing after it lost the Lease.
  cat >"$STATE/audit-policy.yaml" <<'EOF_AUDIT'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: Metadata
EOF_AUDIT
  start kube-apiserver "$bin/kube-apiserver" \
    --audit-policy-file="$STATE/audit-policy.yaml" \
    --audit-log-path="$STATE/audit.log" \
    --audit-log-maxsize=100 \
    --audit-log-maxbackup=3 \
    --etcd-servers="$etcd_url" \
    --max-requests-inflight=800 \
    --max-mutating-requests-inflight=400 \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$STATE/apiserver-certs" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --endpoint-reconciler-type=none \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --allow-privileged=true \
    ${gates[@]+"${gates[@]}"} \
    ${gates[@]+--runtime-config="$BETA_RUNTIME_CONFIG"}
  wait_ready kube-apiserver "/readyz ok" apiserver_ready

  local kcm_kubeconfig=$STATE/kube-controller-manager.kubeconfig
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$kcm_kubeconfig" \
    --authentication-kubeconfig="$kcm_kubeconfig" \
    --authorization-kubeconfig="$kcm_kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$STATE/kcm-certs" \
    --leader-elect=false \
    --controllers="$KCM_CONTROLLERS" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    ${gates[@]+"${gates[@]}"}
  wait_ready kube-controller-manager "/healthz ok" kcm_healthy
  wait_ready kube-controller-manager "controllers running (ServiceAccount default/default exists)" kcm_working

  local sched_kubeconfig=$STATE/kube-scheduler.kubeconfig
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$sched_kubeconfig" \
    --authentication-kubeconfig="$sched_kubeconfig" \
    --authorization-kubeconfig="$sched_kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHEDULER_PORT" \
    --cert-dir="$STATE/scheduler-certs" \
    --leader-elect=false
  wait_ready kube-scheduler "/healthz ok" scheduler_healthy

  if node_wanted "$bin"; then
    "$here/node.sh" up || { trap - INT TERM; "$here/node.sh" down || true; stop_all; die "the node did not come up; everything started was stopped; logs kept in $STATE/node"; }
  fi

  trap - INT TERM
  log "control plane up in $((SECONDS - t0)) s: https://127.0.0.1:$APISERVER_PORT"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  echo "kubectl: $bin/kubectl"
}

cmd_down() {
  lock
  if [ ! -d "$STATE" ]; then
    echo "cluster not running (no state in $STATE)"
    return 0
  fi
  stop_demo_operator
  local node_ok=true
  if [ -f "$STATE/cluster.env" ] && grep -q '^NODE_NET=' "$STATE/cluster.env"; then
    "$here/node.sh" down || node_ok=false
  fi
  stop_all
  $node_ok || die "the node left something behind (above); the control plane is stopped, $STATE kept"
  rm -rf "$STATE"
  echo "cluster stopped; removed $STATE"
}

cmd_status() {
  if [ ! -d "$STATE" ]; then
    echo "cluster not running (no state in $STATE)"
    return 3
  fi
  load_env || true
  local name running=true readyz=
  echo "kubeconfig: $KUBECONFIG_PATH"
  echo "apiserver:  https://127.0.0.1:${APISERVER_PORT:-?}"
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then
      printf '%-24s pid %-8s running\n' "$name" "$(pid_of "$name")"
    else
      printf '%-24s pid %-8s stopped\n' "$name" "$(pid_of "$name")"
      running=false
    fi
  done
  if [ -n "${APISERVER_PORT:-}" ] && alive kube-apiserver; then
    readyz=$(apiserver_readyz | head -n 1)
  fi
  echo "readyz:     ${readyz:-unreachable}"
  local demo
  if demo=$(nhi_demo_operator_pid); then
    echo "the demo's operator runs on it (pid $demo)"
  fi
  if $running && [ "$readyz" = ok ]; then return 0; fi
  return 3
}

cmd_env() {
  load_env || die "cluster not running (no state in $STATE); run '$0 up'"
  echo "export KUBECONFIG='$KUBECONFIG_PATH'"
  echo "export PATH='$BIN':\"\$PATH\""
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
