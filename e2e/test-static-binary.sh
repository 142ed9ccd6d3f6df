#!/usr/bin/env bash
# The Dockerfile copies a static musl build of nhi-operator into a distroless image that has no
# libc: build the same target here (debug profile, for time; the Dockerfile builds release), and
# check it has no dynamic dependencies and runs with an empty environment.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
bin=target/$target/debug/nhi-operator

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "test-static-binary: the Rust target $target is missing (rustup target add $target)" >&2
  exit 1
fi
cargo build --quiet --locked --target "$target" --bin nhi-operator

fail() { echo "not ok - $1" >&2; exit 1; }
# No interpreter and no shared-library dependency: it runs where there is no libc at all.
headers=$(readelf --wide --program-headers "$bin") || fail "readelf cannot read $bin"
dynamic=$(readelf --wide --dynamic "$bin") || fail "readelf cannot read $bin"
[[ $headers == *LOAD* ]] || fail "readelf shows no program headers for $bin"
if [[ $headers == *INTERP* ]]; then fail "$bin requests a dynamic loader"; fi
if [[ $dynamic == *NEEDED* ]]; then fail "$bin needs shared libraries"; fi
echo "ok - $bin is statically linked"
# It runs with nothing from the environment, and renders the same CRDs as the checked-in ones.
env -i "$bin" --version >/dev/null || fail "$bin --version"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
env -i "$bin" crd --out-dir "$out"
diff -r "$out" crds >/dev/null || fail "the static binary renders different CRDs"
echo "ok - the static binary runs and renders the checked-in CRDs"
