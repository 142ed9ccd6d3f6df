#!/usr/bin/env bash
# Prints a folder holding Debian's PACKAGE unpacked (never installed: no maintainer script runs,
# no service starts), ~/.cache/nhi-operator/debian/PACKAGE-VERSION, downloaded with
# `apt-get download` once per version. Used for nginx (the interop matrix) and busybox-static
# (the node's test image).
#
#   e2e/debian-unpack.sh PACKAGE
set -euo pipefail
pkg=${1:?usage: $0 PACKAGE}
command -v apt-get >/dev/null 2>&1 || { echo "debian-unpack: no apt-get to fetch $pkg" >&2; exit 1; }
candidate() { apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}'; }
version=$(candidate)
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  apt-get update -qq >&2 || true
  version=$(candidate)
fi
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "debian-unpack: Debian has no $pkg package here" >&2
  exit 1
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/nhi-operator/debian/$pkg-${version//:/_}
if [ ! -d "$cache" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q "$pkg=$version" >/dev/null 2>&1) ||
    { echo "debian-unpack: apt-get download $pkg=$version failed" >&2; exit 1; }
  mkdir -p "$cache.partial"
  dpkg-deb -x "$tmp"/*.deb "$cache.partial"
  rm -rf "$cache"
  mv "$cache.partial" "$cache"
fi
echo "$cache"
