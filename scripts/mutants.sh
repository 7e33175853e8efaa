#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the core's circuit breaker, retry
# budget, rate limiter and bulkhead: every mutant must make a test fail.
#
#   scripts/mutants.sh                 # all four modules
#   scripts/mutants.sh bulkhead        # one of: circuit_breaker, budget, rate_limiter, bulkhead
#   JOBS=2 scripts/mutants.sh          # parallel builds (default 1)
#   ITERATE=1 scripts/mutants.sh       # test again only what the last run missed
#
# Needs cargo-mutants (`cargo install cargo-mutants --locked`). Results go to
# target/mutants/<module>/mutants.out (caught.txt, missed.txt, timeout.txt,
# unviable.txt). Not part of scripts/test.sh: a full run takes hours of CPU
# (one build and test run per mutant).
#
# Only the tests that exercise these modules run (the unit tests and the
# test binaries listed in tests_of), in a debug build without debug info
# (linking dominates each mutant's build).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-mutants >/dev/null 2>&1; then
    echo "error: cargo-mutants is not installed (cargo install cargo-mutants --locked)" >&2
    exit 1
fi

files_of() {
    case "$1" in
        circuit_breaker) echo "crates/ripcord/src/circuit_breaker/*.rs" ;;
        budget) echo "crates/ripcord/src/retry/budget.rs" ;;
        rate_limiter) echo "crates/ripcord/src/rate_limiter/*.rs" ;;
        bulkhead) echo "crates/ripcord/src/bulkhead/*.rs" ;;
        *) echo "error: unknown module '$1' (circuit_breaker, budget, rate_limiter, bulkhead)" >&2; return 1 ;;
    esac
}

# The test binaries (besides the unit tests) that exercise a module.
tests_of() {
    case "$1" in
        circuit_breaker) echo "--test breaker --test fleet --test model --test registry --test pipeline" ;;
        *) echo "--test retry --test fleet --test rate_limiter --test bulkhead --test pipeline" ;;
    esac
}

modules=("$@")
if [[ ${#modules[@]} -eq 0 ]]; then
    modules=(circuit_breaker budget rate_limiter bulkhead)
fi

export CARGO_PROFILE_DEV_DEBUG=0
status=0
for module in "${modules[@]}"; do
    files=$(files_of "$module")
    echo "==> mutants of $module ($files)"
    mkdir -p "target/mutants/$module"
    iterate=()
    [[ -n "${ITERATE:-}" ]] && iterate=(--iterate)
    cargo mutants -p ripcord --jobs "${JOBS:-1}" --timeout "${TIMEOUT:-180}" "${iterate[@]}" \
        -f "$files" --output "target/mutants/$module" \
        -- --lib $(tests_of "$module") \
        || status=$?
    out="target/mutants/$module/mutants.out"
    count() { if [[ -f "$out/$1.txt" ]]; then wc -l <"$out/$1.txt"; else echo 0; fi; }
    caught=$(count caught)
    missed=$(count missed)
    timeout=$(count timeout)
    unviable=$(count unviable)
    viable=$((caught + missed + timeout))
    echo "$module: caught $caught, missed $missed, timed out $timeout (of $viable viable; $unviable unviable)"
    [[ "$missed" -gt 0 ]] && sed 's/^/  missed: /' "$out/missed.txt"
done
exit "$status"
