#!/usr/bin/env bash
# Instructions per call of the hot paths, counted by callgrind (the same on
# any x86-64 machine for a given build), then optionally the criterion cases
# they correspond to, side by side with failsafe and recloser.
#
#   scripts/callgrind.sh              # the instruction-count table
#   scripts/callgrind.sh --criterion  # ... and the criterion run of the breaker bench
#   scripts/callgrind.sh CASE...      # only these cases (see `hotpath list`)
#
# Each case runs N calls inside `measure` of benches/examples/hotpath.rs;
# callgrind counts only the instructions executed inside it
# (`--toggle-collect`), so the total divided by N is one call, loop included.
# Built with the `callgrind` profile: the bench profile plus debug info, so
# `callgrind_annotate` can attribute the instructions to source lines
# (the out files are kept in target/callgrind/out/).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
CPU=${CPU_WRAPPER:-}
CRITERION=0
CASES=()
for a in "$@"; do
    case "$a" in
        --criterion) CRITERION=1 ;;
        *) CASES+=("$a") ;;
    esac
done

command -v valgrind >/dev/null || { echo "error: valgrind is not installed" >&2; exit 1; }

$CPU cargo build --quiet --profile callgrind -p ripcord-benches --example hotpath
BIN=target/callgrind/examples/hotpath
OUT=target/callgrind/out
mkdir -p "$OUT"
if [[ ${#CASES[@]} -eq 0 ]]; then
    mapfile -t CASES < <("$BIN" list)
fi

echo "rustc: $(rustc --version)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates benches || echo ' (modified)')"
echo "calls per case: $N"
echo
printf '| %-30s | %12s |\n' case 'instr./call'
printf '|%s|%s|\n' "$(printf -- '-%.0s' {1..32})" "$(printf -- '-%.0s' {1..13}):"
for c in "${CASES[@]}"; do
    f="$OUT/$c.out"
    $CPU valgrind --tool=callgrind --toggle-collect='hotpath::measure*' \
        --callgrind-out-file="$f" "$BIN" "$c" "$N" >/dev/null 2>&1
    ir=$(awk '/^summary:/ {print $2}' "$f")
    printf '| %-30s | %12s |\n' "$c" "$(awk -v ir="$ir" -v n="$N" 'BEGIN { printf "%.1f", ir / n }')"
done

if [[ $CRITERION -eq 1 ]]; then
    echo
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) logical CPUs;" \
        "clock source: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
    $CPU cargo bench --quiet -p ripcord-benches --bench breaker -- 'closed_success|rejection|two_threads' 2>&1 \
        | grep -E '^[a-z_]+/[A-Za-z0-9_]+|time:' | paste - - | awk '{
            name = $1; if (name !~ /\//) next
            for (i = 1; i <= NF; i++) if ($i == "time:") { printf "| %-48s | %s %s |\n", name, $(i+3), $(i+4); break }
        }'
fi
