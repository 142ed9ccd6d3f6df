#!/usr/bin/env bash
# Prints the path of an nginx binary for the interop matrix: the one on PATH, else Debian's
# package unpacked (never installed: installing it would start a server on port 80) into
# ~/.cache/nhi-operator/nginx-<version>, downloaded with `apt-get download` once per version.
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
  command -v nginx
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "nginx: not on PATH and no apt-get to fetch Debian's package; install nginx" >&2
  exit 1
}
version=$(apt-cache policy nginx 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  apt-get update -qq >&2 || true
  version=$(apt-cache policy nginx | awk '/Candidate:/ {print $2}')
fi
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "nginx: Debian has no nginx package here" >&2
  exit 1
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/nhi-operator/nginx-$version
if [ ! -x "$cache/usr/sbin/nginx" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q "nginx=$version" >&2 2>/dev/null) ||
    { echo "nginx: apt-get download nginx=$version failed" >&2; exit 1; }
  mkdir -p "$cache.partial"
  dpkg-deb -x "$tmp"/nginx_*.deb "$cache.partial"
  rm -rf "$cache"
  mv "$cache.partial" "$cache"
fi
"$cache/usr/sbin/nginx" -v >/dev/null 2>&1 || {
  echo "nginx: $cache/usr/sbin/nginx does not run (a missing library?)" >&2
  exit 1
}
echo "$cache/usr/sbin/nginx"
