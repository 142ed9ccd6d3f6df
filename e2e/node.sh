#!/usr/bin/env bash
# One Kubernetes node for the local control plane in $NHI_CLUSTER_DIR: containerd (CRI), runc,
# the CNI plugins bridge/host-local/loopback/portmap, kubelet and kube-proxy (iptables mode),
# all built from their Go modules by e2e/build-binaries.sh. Run by e2e/cluster.sh (up, down);
# needs root on Linux.
#
#   e2e/node.sh up       start the node (the control plane must be running) and wait until Ready
#   e2e/node.sh down     stop it: every process in it, its mounts, cgroups and network go away
#   e2e/node.sh import IMAGE_TAR...   load image tarballs into the node's containerd (k8s.io)
#
# Isolation: the node lives in a network namespace of its own (nhi-<id>, <id> from the state
# folder), so its bridge, pod addresses and kube-proxy's iptables rules never touch the host's,
# and two control planes (the demo's and the tests') each run a node side by side. A veth pair
# joins it to the host on a private /30; the host routes the node's pod and Service ranges to it,
# so tests on the host reach pods and ClusterIPs directly. containerd, kubelet and kube-proxy
# share one mount namespace (what `ip netns exec` makes): their mounts (overlay filesystems,
# Secret volumes) never appear on the host and vanish with the node.
#
# Addresses (per control plane, NODE_NET from cluster.env): pods 10.NODE_NET.0.0/24 on bridge
# nhi0 (10.NODE_NET.0.1), Services 10.NODE_NET.128.0/24, node 10.NODE_NET.255.2 (host side
# .255.1). The node reaches the apiserver, which listens on 127.0.0.1 only, through a forwarder:
# a unix socket in the state folder crosses the namespaces (socat on both sides); pods reach it
# through the `kubernetes` Service (10.NODE_NET.128.1:443 -> 10.NODE_NET.255.2:6443).
#
# Cgroups: the host runs cgroup v1 (hybrid); kubelet 1.37 refuses v1 unless failCgroupV1 is
# false, which its configuration here sets (cgroup v1 is deprecated, not removed; switching this
# shared machine's hierarchy to v2 would need a reboot with other kernel parameters). Pods go
# under /nhi-<id> in each hierarchy, removed at `down`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/env.sh
. "$here/env.sh"
STATE=$NHI_CLUSTER_DIR
NODE=$STATE/node
NODE_NAME=nhi-node
READY_TIMEOUT=${NHI_READY_TIMEOUT:-60}

log() { printf 'node: %s\n' "$*" >&2; }
die() { printf 'node: error: %s\n' "$*" >&2; exit 1; }

# shellcheck source=/dev/null
[ -f "$STATE/cluster.env" ] && . "$STATE/cluster.env"
: "${NODE_NET:?no NODE_NET in $STATE/cluster.env: start the control plane with e2e/cluster.sh up}"
ID=$(printf '%s' "$STATE" | sha256sum | cut -c1-8)
NETNS=nhi-$ID
HOST_VETH=nhih$ID
NODE_IP=10.$NODE_NET.255.2
HOST_IP=10.$NODE_NET.255.1
POD_CIDR=10.$NODE_NET.0.0/24
SERVICE_CIDR=10.$NODE_NET.128.0/24
CGROUP_ROOT=/nhi-$ID
SOCKET=$NODE/containerd.sock
COMPONENTS=(node-holder apiserver-forward-host apiserver-forward-node containerd kubelet kube-proxy)

pid_of() { cat "$NODE/$1.pid" 2>/dev/null || true; }
alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= 2>/dev/null | grep -qF -- "$STATE/"
}

# start NAME COMMAND...: detached, log to $NODE/NAME.log, pid (kept through exec) to NAME.pid.
start() {
  local name=$1
  shift
  rm -f "$NODE/$name.pid"
  # shellcheck disable=SC2016
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$NODE/$name.pid" "$@" \
    >"$NODE/$name.log" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$NODE/$name.pid" ] && return 0
    sleep 0.1
  done
  die "$name did not start"
}

# in_node COMMAND...: COMMAND in the node's network and mount namespaces.
in_node() { nsenter --target "$(pid_of node-holder)" --net --mount -- "$@"; }

wait_for() {
  local what=$1 start=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    local dead=
    for c in "${COMPONENTS[@]}"; do
      if [ -s "$NODE/$c.pid" ] && ! alive "$c"; then dead=$c; fi
    done
    if [ -n "$dead" ] || [ $((SECONDS - start)) -ge "$READY_TIMEOUT" ]; then
      local c
      for c in "${COMPONENTS[@]}"; do
        [ -f "$NODE/$c.log" ] && { printf -- '----- %s (last 15 lines)\n' "$c" >&2; tail -n 15 "$NODE/$c.log" >&2; }
      done
      [ -z "$dead" ] || die "$dead exited while waiting for $what; logs in $NODE"
      die "timed out after ${READY_TIMEOUT} s waiting for $what; logs in $NODE"
    fi
    sleep 0.3
  done
  log "$what ($((SECONDS - start)) s)"
}

k() { "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=20s "$@"; }

write_configs() {
  local pki=$STATE/pki
  mkdir -p "$NODE/cni" "$NODE/kubelet" "$NODE/pods-logs" "$NODE/containerd"
  cat >"$NODE/containerd.toml" <<EOF
version = 3
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCKET"

[ttrpc]
  address = "$SOCKET.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "nhi.dev/pause:local"

[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root lacks CAP_SYS_RESOURCE: no process may lower its OOM score below
  # containerd's own (kubelet asks -998 for sandboxes), so scores are clamped to it.
  restrict_oom_score_adj = true
  # Pod network namespaces are pinned under the state folder, not in the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$BIN/cni"]
    conf_dir = "$NODE/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$BIN/runc"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
EOF
  cat >"$NODE/cni/10-nhi.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "nhi",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "nhi0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE/cni-ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "10.$NODE_NET.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  printf 'nameserver %s\noptions ndots:1\n' "$NODE_IP" >"$NODE/resolv.conf"
  cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCKET
podLogsDir: $NODE/pods-logs
resolvConf: $NODE/resolv.conf
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
syncFrequency: 10s
maxPods: 110
EOF
  cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false}
EOF
}

network_up() {
  ip netns add "$NETNS"
  ip link add "$HOST_VETH" type veth peer name "nhin$ID"
  ip link set "nhin$ID" netns "$NETNS"
  ip addr add "$HOST_IP/30" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link set "nhin$ID" name eth0
  ip -n "$NETNS" addr add "$NODE_IP/30" dev eth0
  ip -n "$NETNS" link set eth0 up
  ip -n "$NETNS" route add default via "$HOST_IP"
  ip netns exec "$NETNS" sysctl -qw net.ipv4.ip_forward=1
  ip route add "$POD_CIDR" via "$NODE_IP"
  ip route add "$SERVICE_CIDR" via "$NODE_IP"
}

cmd_up() {
  [ "$(id -u)" -eq 0 ] || die "the node needs root (network namespaces, mounts, cgroups)"
  local b
  for b in kubelet kube-proxy containerd containerd-shim-runc-v2 ctr runc nhi-pause nhi-image cni/bridge; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run e2e/build-binaries.sh as root"
  done
  for b in ip nsenter socat iptables conntrack; do
    command -v "$b" >/dev/null 2>&1 || die "$b is needed (Debian: iproute2, util-linux, socat, iptables, conntrack)"
  done
  [ ${#SOCKET} -lt 100 ] || die "the state folder's path is too long for a unix socket ($SOCKET)"
  local t0=$SECONDS
  mkdir -p "$NODE"
  write_configs
  network_up
  # The holder keeps the node's namespaces (its network namespace, and a private mount namespace
  # prepared by node-holder.sh); every component joins them once it is ready.
  rm -f "$NODE/holder.ready"
  start node-holder nsenter --net="/run/netns/$NETNS" unshare --mount --propagation private \
    "$here/node-holder.sh" "$NODE"
  wait_for "the node's namespaces prepared" test -f "$NODE/holder.ready"
  start apiserver-forward-host socat "UNIX-LISTEN:$NODE/apiserver.sock,fork,unlink-early" \
    "TCP:127.0.0.1:$APISERVER_PORT"
  start apiserver-forward-node nsenter --target "$(pid_of node-holder)" --net --mount -- \
    socat "TCP-LISTEN:6443,bind=$NODE_IP,fork,reuseaddr" "UNIX-CONNECT:$NODE/apiserver.sock"
  start containerd nsenter --target "$(pid_of node-holder)" --net --mount -- \
    env "PATH=$BIN:$PATH" "$BIN/containerd" --config "$NODE/containerd.toml"
  wait_for "containerd serves CRI" in_node "$BIN/ctr" --address "$SOCKET" version
  import_images
  # kubelet's cgroupRoot, in every hierarchy (cpuset's needs its parent's CPUs and memory nodes).
  local h
  for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    mkdir -p "$h${CGROUP_ROOT#/}"
    if [ -f "${h}cpuset.cpus" ]; then
      cat "${h}cpuset.cpus" >"$h${CGROUP_ROOT#/}/cpuset.cpus"
      cat "${h}cpuset.mems" >"$h${CGROUP_ROOT#/}/cpuset.mems"
    fi
  done
  start kubelet nsenter --target "$(pid_of node-holder)" --net --mount -- \
    env "PATH=$BIN:$PATH" "$BIN/kubelet" --config="$NODE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$NODE/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  start kube-proxy nsenter --target "$(pid_of node-holder)" --net --mount -- \
    env "PATH=$BIN:$PATH" "$BIN/kube-proxy" --config="$NODE/kube-proxy.yaml" --v=1
  # The `kubernetes` Service's endpoint: the forwarder on the node's address.
  k apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-nhi-node
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: nhi-node.sh}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: 6443, protocol: TCP}]
EOF
  wait_for "node $NODE_NAME Ready" node_ready
  log "node up in $((SECONDS - t0)) s: $NODE_NAME ($NODE_IP), pods $POD_CIDR, Services $SERVICE_CIDR"
}

node_ready() {
  [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# The node's images, built here, never pulled: the pause image (the pod sandbox) from nhi-pause,
# and nhi.dev/busybox:local (Debian's busybox-static, unpacked) for tests that need a shell, an
# HTTP server or nc in a pod (`/bin/busybox APPLET ...`).
import_images() {
  "$BIN/nhi-image" build --out "$NODE/pause.tar" --tag nhi.dev/pause:local \
    --file "$BIN/nhi-pause:/pause" --entrypoint /pause --user 65535:65535
  local busybox
  busybox=$("$here/debian-unpack.sh" busybox-static)/bin/busybox
  "$BIN/nhi-image" build --out "$NODE/busybox.tar" --tag nhi.dev/busybox:local --passwd \
    --file "$busybox:/bin/busybox" --entrypoint /bin/busybox --cmd sh
  cmd_import "$NODE/pause.tar" "$NODE/busybox.tar"
}

cmd_import() {
  local f
  for f in "$@"; do
    in_node "$BIN/ctr" --address "$SOCKET" -n k8s.io images import "$(realpath "$f")" >"$NODE/ctr.log" 2>&1 ||
      { cat "$NODE/ctr.log" >&2; die "importing $f into containerd failed"; }
  done
}

# cgroup_pids: every process in the node's cgroups (the containers: each pod has a network
# namespace of its own, so they are not all in the node's).
cgroup_pids() {
  local d=/sys/fs/cgroup/pids$CGROUP_ROOT
  [ -d "$d" ] || return 0
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

cmd_down() {
  local pids=() p c
  # Every process of the node (components and shims in its network namespace, containers in its
  # cgroups), then the namespace itself.
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then
    mapfile -t pids < <(ip netns pids "$NETNS" 2>/dev/null || true; cgroup_pids)
    [ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      mapfile -t pids < <(ip netns pids "$NETNS" 2>/dev/null || true; cgroup_pids)
      [ ${#pids[@]} -gt 0 ] || break
      sleep 0.3
    done
    [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
    ip netns del "$NETNS" 2>/dev/null || true
  fi
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then kill -KILL "$(pid_of "$c")" 2>/dev/null || true; fi
  done
  ip link del "$HOST_VETH" 2>/dev/null || true
  ip route del "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_VETH" 2>/dev/null || true
  # Containers left when the namespace was already gone.
  mapfile -t pids < <(cgroup_pids)
  [ ${#pids[@]} -eq 0 ] || { kill -KILL "${pids[@]}" 2>/dev/null || true; sleep 0.3; }
  # The pods' cgroups, deepest first, in every hierarchy.
  for p in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [ -d "$p" ] || continue
    find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Anything still mounted under the node's folder (there should be nothing: the mounts lived
  # in the node's mount namespace).
  { grep -F " $NODE/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  leftovers
  log "node stopped: no process, mount, cgroup, network namespace, link or route of it is left"
}

# leftovers: fails, naming them, when anything of the node is still there.
leftovers() {
  local left=()
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then left+=("network namespace $NETNS"); fi
  if ip link show "$HOST_VETH" >/dev/null 2>&1; then left+=("link $HOST_VETH"); fi
  if ip route show "$POD_CIDR" 2>/dev/null | grep -q .; then left+=("route $POD_CIDR"); fi
  if ip route show "$SERVICE_CIDR" 2>/dev/null | grep -q .; then left+=("route $SERVICE_CIDR"); fi
  local d
  for d in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    if [ -d "$d" ]; then left+=("cgroup $d"); fi
  done
  if grep -qF " $NODE/" /proc/self/mountinfo; then left+=("mounts under $NODE"); fi
  if [ -n "$(cgroup_pids)" ]; then left+=("processes in $CGROUP_ROOT"); fi
  [ ${#left[@]} -eq 0 ] || die "left after stopping the node: ${left[*]}"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  import)
    shift
    cmd_import "$@"
    ;;
  *)
    echo "usage: $0 up|down|import IMAGE_TAR..." >&2
    exit 2
    ;;
esac
