#!/usr/bin/env bash
# Builds the operator's container image without Docker or a registry: the static musl binary, as
# the Dockerfile's build stage makes it, in an image carrying what the Dockerfile's final stage
# declares (USER, EXPOSE, ENTRYPOINT, CMD, LABEL, read from the Dockerfile itself) and the
# nonroot user distroless has, written by nhi-image (go-containerregistry) as an image tarball
# that e2e/node.sh imports into the node's containerd. Prints the tarball's path.
#
#   e2e/build-image.sh [--release]     debug build by default (the tests'), release for the demo
#   e2e/build-image.sh --echo [--release]   the mtls_echo example instead (the reload library's
#                                           mTLS server and client) and a static busybox, as
#                                           nhi.dev/mtls-echo:dev
#
# The image is nhi.dev/nhi-operator:dev. e2e/test-install.sh compares its config with the
# Dockerfile, so the two cannot drift.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
profile=debug
cargo_profile=()
echo=false
for arg in "$@"; do
  case $arg in
    --release) profile=release; cargo_profile=(--release) ;;
    --echo) echo=true ;;
    *) echo "usage: $0 [--echo] [--release]" >&2; exit 2 ;;
  esac
done
target=x86_64-unknown-linux-musl
bin_dir=$(e2e/build-binaries.sh)
if $echo; then
  cargo build --quiet --locked --target "$target" "${cargo_profile[@]}" -p nhi-identity \
    --example mtls_echo >&2
  out=target/mtls-echo-image-$profile.tar
  # Debian's static busybox beside it, so `kubectl exec ... -- /bin/busybox ls -la DIR` shows
  # the identity directory kubelet keeps (the ..data link).
  busybox=$(e2e/debian-unpack.sh busybox-static)/bin/busybox
  "$bin_dir/nhi-image" build --out "$out" --tag nhi.dev/mtls-echo:dev --passwd \
    --file "target/$target/$profile/examples/mtls_echo:/mtls_echo:0755" \
    --file "$busybox:/bin/busybox:0755" \
    --user 65532:65532 --entrypoint /mtls_echo
  echo "$PWD/$out"
  exit 0
fi
cargo build --quiet --locked --target "$target" "${cargo_profile[@]}" --bin nhi-operator >&2
binary=target/$target/$profile/nhi-operator
mapfile -t flags < <(python3 e2e/dockerfile-final-stage.py Dockerfile --flags)
out=target/nhi-operator-image-$profile.tar
"$bin_dir/nhi-image" build --out "$out" --tag nhi.dev/nhi-operator:dev --passwd \
  --file "$binary:/nhi-operator:0755" "${flags[@]}"
echo "$PWD/$out"
