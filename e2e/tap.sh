# Sourced by the script tests (test-install.sh, test-samples.sh): TAP-style checks. The sourcing
# script sets `work` (a scratch folder), `passed` and `failed` (counters) first.

# k ARGS...: kubectl with a request timeout, so a hung apiserver fails a check instead of the run.
k() { kubectl --request-timeout=30s "$@"; }

# check NAME COMMAND...: runs COMMAND, reports ok / not ok with its output.
check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    echo "ok - $name"
    passed=$((passed + 1))
  else
    echo "not ok - $name"
    sed 's/^/# /' "$work/out" | tail -n 40
    failed=$((failed + 1))
  fi
}
