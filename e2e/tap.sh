# Sourced by the script tests (test-install.sh, test-samples.sh): TAP-style checks. The sourcing
# script sets `work` (a scratch folder), `passed` and `failed` (counters) first.

# k ARGS...: kubectl with a request timeout, so a hung apiserver fails a check instead of the run.
k() { kubectl --request-timeout=30s "$@"; }

# check NAME COMMAND...: runs COMMAND in a subshell with errexit, so that any failing step of a
# multi-step check fails it (inside an `if`, bash would ignore errexit); reports ok / not ok
# with its output. Variables COMMAND sets do not outlive it: keep what later checks need in
# files under $work.
check() {
  local name=$1 rc
  shift
  set +e
  (
    set -e
    "$@"
  ) >"$work/out" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    echo "ok - $name"
    passed=$((passed + 1))
  else
    echo "not ok - $name"
    sed 's/^/# /' "$work/out" | tail -n 40
    failed=$((failed + 1))
  fi
}
