#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ through cargo-afl (stable Rust).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 300 s, every target
#   scripts/fuzz.sh --list
#
# Runs each target (crates/ripcord-proxy/src/fuzzing/ for the proxy's,
# crates/ripcord-cli/src/fuzzing/ for `ripcord simulate`'s) for SECONDS, starting
# from its checked-in corpus (fuzz/corpus/TARGET/), and prints the executions
# run, the queue size, and the crashes and hangs found. Findings are kept in
# target/fuzz/afl/TARGET/default/{crashes,hangs}/; replay one with
#   target/fuzz/release/TARGET < FILE
# and add it to fuzz/corpus/TARGET/ once fixed (the corpus replay in
# scripts/test.sh then keeps it fixed). Exits non-zero when anything was found.
#
# Installs what it needs: cargo-afl (`cargo install`), and AFL++ built from the
# source cargo-afl ships (`cargo afl config --build`; needs make and a C
# compiler, installed from Debian's packages when missing and run as root).
#
# Environment: FUZZ_KEEP=1 adds to each corpus the queue entries that reached
# new coverage (review the diff before committing it; keep the corpora small).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(h1_response proxy_request proxy_config pipeline_config simulate_config trace_csv trace_jsonl)

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi
SECONDS_EACH="${1:-300}"
shift || true
if [[ $# -gt 0 ]]; then
    SELECTED=("$@")
else
    SELECTED=("${TARGETS[@]}")
fi
for t in "${SELECTED[@]}"; do
    [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "error: unknown target $t (see --list)" >&2; exit 2; }
done

log() { printf '\n==> %s\n' "$*"; }

if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing make and a C compiler (Debian's build-essential)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null; }
    else
        echo "error: AFL++ needs make and a C compiler" >&2
        exit 1
    fi
fi
if ! cargo afl --version >/dev/null 2>&1; then
    log "installing cargo-afl (cargo install)"
    # The same minor version as the `afl` crate in fuzz/Cargo.toml.
    cargo install cargo-afl --version "^0.18" --locked
fi
afl_help="$(cargo afl fuzz -h 2>&1 || true)"
if [[ "$afl_help" != *"Required parameters"* ]]; then
    log "building AFL++ (cargo afl config --build)"
    cargo afl config --build
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz"
log "building the targets with AFL++'s instrumentation"
(cd fuzz && cargo afl build --release --quiet)

dicts_of() { # target: -x arguments
    local shipped
    shipped="$(find "${HOME}/.local/share/afl.rs" -path '*share/afl/dictionaries' -type d 2>/dev/null | head -1)"
    case "$1" in
        h1_response | proxy_request) echo "-x fuzz/dict/http1.dict${shipped:+ -x $shipped/http.dict}" ;;
        proxy_config | pipeline_config | simulate_config) echo "-x fuzz/dict/config.dict${shipped:+ -x $shipped/toml.dict}" ;;
        trace_csv) echo "-x fuzz/dict/trace.dict${shipped:+ -x $shipped/csv.dict}" ;;
        trace_jsonl) echo "-x fuzz/dict/trace.dict${shipped:+ -x $shipped/json.dict}" ;;
    esac
}

stat_of() { # file key
    sed -n "s/^$2 *: *//p" "$1" | head -1
}

FOUND=0
SUMMARY=()
for t in "${SELECTED[@]}"; do
    out="target/fuzz/afl/$t"
    rm -rf "$out"
    mkdir -p "$out"
    log "fuzzing $t for ${SECONDS_EACH}s"
    # shellcheck disable=SC2046 # the -x arguments split on purpose
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_SUPPRESS_MESSAGES=1 \
        cargo afl fuzz -V "$SECONDS_EACH" -t 10000 -m none $(dicts_of "$t") \
        -i "fuzz/corpus/$t" -o "$out" -- "$CARGO_TARGET_DIR/release/$t" >"$out/afl.log" 2>&1 \
        || { echo "afl-fuzz failed for $t:" >&2; tail -30 "$out/afl.log" >&2; exit 1; }
    stats="$out/default/fuzzer_stats"
    execs=$(stat_of "$stats" execs_done)
    speed=$(stat_of "$stats" execs_per_sec)
    corpus=$(stat_of "$stats" corpus_count)
    crashes=$(stat_of "$stats" saved_crashes)
    hangs=$(stat_of "$stats" saved_hangs)
    SUMMARY+=("$(printf '%-16s %12s %10s %8s %8s %6s' "$t" "$execs" "$speed" "$corpus" "$crashes" "$hangs")")
    if [[ "$crashes" != 0 || "$hangs" != 0 ]]; then
        FOUND=1
        ls "$out/default/crashes" "$out/default/hangs" 2>/dev/null | grep -v README || true
    fi
    if [[ "${FUZZ_KEEP:-0}" == 1 ]]; then
        # Up to 50 queue entries that reached new edges, named by their
        # hash, beside the seeds; inputs over 4 KiB are left out.
        kept=0
        for f in "$out/default/queue"/id:*+cov*; do
            [[ -f "$f" && $(stat -c %s "$f") -le 4096 && $kept -lt 50 ]] || continue
            cp "$f" "fuzz/corpus/$t/$(sha1sum "$f" | cut -c1-16)"
            kept=$((kept + 1))
        done
        echo "kept $kept new inputs in fuzz/corpus/$t"
    fi
done

log "executions per target (${SECONDS_EACH}s each)"
printf '%-16s %12s %10s %8s %8s %6s\n' target execs execs/s corpus crashes hangs
printf '%s\n' "${SUMMARY[@]}"
exit "$FOUND"
