#!/usr/bin/env bash
# The node's holder (started by e2e/node.sh inside the node's network namespace and a private
# mount namespace of its own): prepares that mount namespace, then keeps it, doing nothing, until
# it is killed. containerd, kubelet and kube-proxy join both namespaces (nsenter --target).
#
#   node-holder.sh NODE_DIR
#
# - /sys: the network namespace's own sysfs (as `ip netns exec` makes), with the host's cgroup
#   hierarchies bound back in (kubelet and runc need them).
# - Host paths containerd, runc, CNI and kubelet write to and that cannot be configured (runc's
#   and the shims' state, the NRI socket, CNI results, kubelet's /var/log/containers links,
#   containerd's /opt) get a tmpfs of the node's own: nothing of the node lands on the host, and
#   two nodes never share them.
# - The kernel settings kubelet would set host-wide (kernel.panic, panic_on_oops, overcommit,
#   keyring quotas) are shown to it with kubelet's values already, on files bound over
#   /proc/sys in this namespace only: the host's stay as they are.
# Writes NODE_DIR/holder.ready once done.
set -euo pipefail
node=$1
mkdir -p "$node/cgroup-keep" "$node/sysctl"
mount --rbind /sys/fs/cgroup "$node/cgroup-keep"
mount -t sysfs sysfs /sys
mount --move "$node/cgroup-keep" /sys/fs/cgroup
for d in /run/containerd /run/nri /var/lib/cni /var/log/containers /opt/containerd; do
  mkdir -p "$d"
  mount -t tmpfs -o mode=0755 tmpfs "$d"
done
# kubelet's values (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables).
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${kv%%=*}
  file=$node/sysctl/${key//\//.}
  printf '%s\n' "${kv#*=}" >"$file"
  mount --bind "$file" "/proc/sys/$key"
done
touch "$node/holder.ready"
while :; do sleep 3600; done
