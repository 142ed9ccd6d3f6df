#!/usr/bin/env bash
# `make bench [N=1000] [MODE=pod-certificates]`: builds the operator in release mode and runs
# examples/bench against the local control plane in $NHI_CLUSTER_DIR (started when not
# running), or the cluster in $KUBECONFIG. MODE=pod-certificates times N PodCertificateRequests
# to Issued against the Secret path instead (no node needed: the requests are created directly);
# MODE=delegation times children signed over the delegation endpoint against the signing floor;
# MODE=steady applies new identities at 50/s over N in place (p50/p99 to Ready, against the burst).
#
#   e2e/bench.sh N [pod-certificates|delegation|steady]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
n=${1:-1000}
mode=()
case ${2:-} in
  "") ;;
  pod-certificates) mode=(--pod-certificates) ;;
  delegation) mode=(--delegation) ;;
  steady) mode=(--steady) ;;
  *) echo "bench: unknown MODE '$2' (pod-certificates, delegation, steady, or none)" >&2; exit 2 ;;
esac
bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"
if [ -z "${KUBECONFIG:-}" ]; then
  e2e/cluster.sh status >/dev/null 2>&1 || e2e/cluster.sh up
  export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
fi
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
cargo build --release --quiet --bin nhi-operator --example bench
target/release/examples/bench "$n" --operator target/release/nhi-operator "${mode[@]}"
