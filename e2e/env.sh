# shellcheck shell=bash
# Sourced (not run) by the Makefile and the e2e scripts: the environment they share.
#
# PATH: the folders where the set-up puts tools that a fresh shell may not have on PATH (Go's
# tarball, rustup's cargo, pip's scripts), appended when missing, so that what e2e/prereqs.sh
# installs is found by every later step, whichever shell runs it.
#
# NHI_CLUSTER_DIR: the local control plane's state folder (default e2e/.cluster; `make test`
# uses e2e/.cluster-test), made absolute (a relative one is taken from the repository's root).
# Scripts derive everything of one control plane from it: kubeconfig, pids, logs, ports, lock.

nhi_path_append() {
  case ":$PATH:" in
    *":$1:"*) ;;
    *) PATH=$PATH:$1 ;;
  esac
}
nhi_path_append /usr/local/go/bin
nhi_path_append "${CARGO_HOME:-$HOME/.cargo}/bin"
nhi_path_append "$HOME/.local/bin"
# pip's scripts folders (e.g. pyenv's version folder, whose shims appear only after a rehash).
if command -v python3 >/dev/null 2>&1; then
  for nhi_dir in $(python3 -c 'import os, sysconfig
print(sysconfig.get_path("scripts"))
print(sysconfig.get_path("scripts", os.name + "_user"))' 2>/dev/null); do
    nhi_path_append "$nhi_dir"
  done
  unset nhi_dir
fi
export PATH
unset -f nhi_path_append

nhi_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NHI_CLUSTER_DIR=${NHI_CLUSTER_DIR:-e2e/.cluster}
case $NHI_CLUSTER_DIR in
  /*) ;;
  *) NHI_CLUSTER_DIR=$nhi_root/$NHI_CLUSTER_DIR ;;
esac
NHI_CLUSTER_DIR=${NHI_CLUSTER_DIR%/}
export NHI_CLUSTER_DIR
unset nhi_root

# nhi_demo_operator_pid: prints the pid of the operator `make demo` left running on the control
# plane in $NHI_CLUSTER_DIR (recorded in demo-operator.pid, and still that process: its
# environment names this folder's kubeconfig); fails when there is none.
nhi_demo_operator_pid() {
  local pid
  pid=$(cat "$NHI_CLUSTER_DIR/demo-operator.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
    grep -qxF -- "KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig" || return 1
  echo "$pid"
}

# nhi_kubectl_type API_VERSION KIND: the resource type kubectl takes for a workloadRef
# (Deployment.v1.apps for apps/v1 Deployment; ServiceAccount for v1 ServiceAccount).
nhi_kubectl_type() {
  case $1 in
    */*) echo "$2.${1#*/}.${1%%/*}" ;;
    *) echo "$2" ;;
  esac
}
