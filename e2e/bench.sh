#!/usr/bin/env bash
# `make bench [N=1000] [MODE=pod-certificates]`: builds the operator in release mode and runs
# examples/bench against the local control plane in $NHI_CLUSTER_DIR (started when not
# running), or the cluster in $KUBECONFIG. MODE=pod-certificates times N PodCertificateRequests
# to Issued against the Secret path instead (no node needed: the requests are created directly);
# MODE=delegation times children signed over the delegation endpoint against the signing floor;
# MODE=steady applies new identities at 50/s over N in place (p50/p99 to Ready, against the burst);
# MODE=scale (the mode of any N from 50,000) runs one replica over N identities, restarts it over
# them and revokes 20,000 at once, against the bare client doing the same; each part on a fresh
# control plane of its own (e2e/.cluster-scale, stopped at the end).
#
#   e2e/bench.sh N [pod-certificates|delegation|steady|scale]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
n=${1:-1000}
mode=()
scale_mode=${2:-}
[ -z "$scale_mode" ] && [ "$n" -ge 50000 ] && scale_mode=scale
case $scale_mode in
  "") ;;
  pod-certificates) mode=(--pod-certificates) ;;
  delegation) mode=(--delegation) ;;
  steady) mode=(--steady) ;;
  scale) ;;
  *) echo "bench: unknown MODE '$2' (pod-certificates, delegation, steady, scale, or none)" >&2; exit 2 ;;
esac
bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"
# fresh_control_plane: a new local control plane in e2e/.cluster-scale (the scale mode's two
# parts each get one), stopped at exit.
fresh_control_plane() {
  export NHI_CLUSTER_DIR=$PWD/e2e/.cluster-scale
  e2e/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$NHI_CLUSTER_DIR"
  trap 'e2e/cluster.sh down >/dev/null 2>&1; rm -rf "$NHI_CLUSTER_DIR"' EXIT
  NHI_NODE=off e2e/cluster.sh up
  export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
}

install_crds() {
  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
  kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
}

cargo build --release --quiet --bin nhi-operator --example bench
if [ "$scale_mode" = scale ]; then
  # The bare client's part and the operator's each on a fresh control plane (unless KUBECONFIG
  # names a cluster): 2 N identities and their Secrets on one would take the apiserver past
  # 18 GiB at N = 100,000.
  own=${KUBECONFIG:-}
  baseline=$(mktemp)
  [ -n "$own" ] || fresh_control_plane
  install_crds
  target/release/examples/bench "$n" --scale-baseline "$baseline"
  [ -n "$own" ] || fresh_control_plane
  install_crds
  target/release/examples/bench "$n" --operator target/release/nhi-operator --scale "$baseline"
  rm -f "$baseline"
  exit 0
fi
if [ -z "${KUBECONFIG:-}" ]; then
  e2e/cluster.sh status >/dev/null 2>&1 || e2e/cluster.sh up
  export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
fi
install_crds
target/release/examples/bench "$n" --operator target/release/nhi-operator "${mode[@]}"
