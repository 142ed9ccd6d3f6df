# Sourced (not run) by the Makefile and the e2e scripts: the environment they share.
#
# PATH: the folders where the set-up puts tools that a fresh shell may not have on PATH (Go's
# tarball, rustup's cargo, pip's scripts), appended when missing, so that what e2e/prereqs.sh
# installs is found by every later step, whichever shell runs it.

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

