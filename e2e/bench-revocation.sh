#!/usr/bin/env bash
# `make bench-revocation [N=20000] [LOOP=10000] [CONCURRENCY=64]`: builds the operator in release mode and runs
# examples/revocation_bench.rs against the local control plane in $NHI_CLUSTER_DIR (started when
# not running; its etcd's /metrics give the write counts), or the cluster in $KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
n=${1:-20000}
loops=${2:-10000}
concurrency=${3:-64}
bin_dir=$(e2e/build-binaries.sh)
export PATH="$bin_dir:$PATH"
etcd=()
if [ -z "${KUBECONFIG:-}" ]; then
  e2e/cluster.sh status >/dev/null 2>&1 || e2e/cluster.sh up
  export KUBECONFIG=$NHI_CLUSTER_DIR/kubeconfig
  # shellcheck disable=SC1091
  . "$NHI_CLUSTER_DIR/cluster.env"
  etcd=(--etcd "http://127.0.0.1:$ETCD_PORT")
fi
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=30s -f crds/ >/dev/null
cargo build --release --quiet --bin nhi-operator --example revocation_bench
target/release/examples/revocation_bench --identities "$n" --loop "$loops" \
  --loop-concurrency "$concurrency" \
  --operator target/release/nhi-operator "${etcd[@]}"
