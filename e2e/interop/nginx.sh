#!/usr/bin/env bash
# Prints the path of an nginx binary for the interop matrix: the one on PATH, else Debian's
# package unpacked by e2e/debian-unpack.sh (never installed: installing it would start a server
# on port 80).
set -euo pipefail
if command -v nginx >/dev/null 2>&1; then
  command -v nginx
  exit 0
fi
dir=$("$(dirname "$0")/../debian-unpack.sh" nginx)
"$dir/usr/sbin/nginx" -v >/dev/null 2>&1 || {
  echo "nginx: $dir/usr/sbin/nginx does not run (a missing library?)" >&2
  exit 1
}
echo "$dir/usr/sbin/nginx"
