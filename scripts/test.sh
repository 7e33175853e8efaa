#!/usr/bin/env bash
# The whole test suite: fmt check, clippy -D warnings, docs -D warnings, all
# tests (with a real Redis), and the loom model tests.
#
# Redis: uses $REDIS_URL if set, else a server already on 127.0.0.1:6379, else
# starts `redis-server` on a free port (installing Debian's package first when
# it is missing and this runs as root). Tests that kill or restart Redis spawn
# their own servers; this one is never stopped or flushed by the tests.
# Chromium (the dashboard test) and Prometheus (the scrape test) come from
# Debian's packages when missing and this runs as root
# (scripts/ensure-chromium.sh, scripts/ensure-prometheus.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

redis_ping() { # host port
    local reply
    exec 3<>"/dev/tcp/$1/$2" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || true
    exec 3<&- 3>&-
    [[ "$reply" == +PONG* ]]
}

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$(( (RANDOM % 20000) + 30000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

STARTED_REDIS_PID=""
cleanup() {
    if [[ -n "$STARTED_REDIS_PID" ]]; then
        kill "$STARTED_REDIS_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [[ -n "${REDIS_URL:-}" ]]; then
    log "Redis: using REDIS_URL=$REDIS_URL"
elif redis_ping 127.0.0.1 6379; then
    export REDIS_URL="redis://127.0.0.1:6379"
    log "Redis: found a server on 127.0.0.1:6379"
else
    if ! command -v redis-server >/dev/null 2>&1; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "Redis: installing Debian's redis-server"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
        else
            echo "error: no Redis found (set REDIS_URL, run one on 127.0.0.1:6379, or install redis-server)" >&2
            exit 1
        fi
    fi
    port=$(free_port)
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
        --daemonize no --loglevel warning >"$dir/redis.log" 2>&1 &
    STARTED_REDIS_PID=$!
    for _ in $(seq 1 50); do
        redis_ping 127.0.0.1 "$port" && break
        sleep 0.1
    done
    redis_ping 127.0.0.1 "$port" || { echo "error: redis-server did not start" >&2; cat "$dir/redis.log" >&2; exit 1; }
    export REDIS_URL="redis://127.0.0.1:$port"
    log "Redis: started redis-server on port $port"
fi
# Tests that spawn their own servers need the binary on PATH.
export REDIS_SERVER_BIN="${REDIS_SERVER_BIN:-$(command -v redis-server || true)}"

log "cargo fetch: every locked dependency, for every target (the offline steps below read them)"
cargo fetch --locked --quiet

log "MSRV: every locked dependency of the published crates builds on the declared rust-version"
python3 scripts/msrv.py

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

log "cargo clippy -D warnings, core crate without optional features"
cargo clippy -p ripcord --no-default-features --lib -- -D warnings

log "cargo clippy -D warnings, the proxy without its admin listener"
cargo clippy -p ripcord-proxy --no-default-features --all-targets -- -D warnings

log "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

log "cargo package: every published crate packs with its README and licenses, and builds from its .crate alone (offline)"
# Verification unpacks each .crate and builds it against the others through a
# local registry, in dependency order: a file missing from a package (an
# include_str!, a test-only path) fails here, not after publishing.
cargo package --workspace --exclude ripcord-benches --offline --allow-dirty --quiet
for c in ripcord ripcord-tower ripcord-redis ripcord-metrics ripcord-proxy ripcord-cli; do
    listing=$(tar -tzf "target/package/$c-$(cargo pkgid -p "$c" | sed 's/.*[#@]//').crate")
    for f in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/lib.rs; do
        grep -qx "$c-[^/]*/$f" <<<"$listing" || { echo "error: the $c package has no $f" >&2; exit 1; }
    done
done

log "Chromium for the dashboard test, Prometheus for the scrape test"
bash scripts/ensure-chromium.sh
bash scripts/ensure-prometheus.sh

log "cargo test"
cargo test --workspace --all-features

log "fuzz corpora: every fuzz target over its checked-in corpus (no fuzzer needed)"
cargo test --workspace --all-features --test fuzz_corpus

log "cargo test, core crate in release (optimizations must not change a test's meaning)"
cargo test -p ripcord --release --all-features

log "loom model tests"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p ripcord --test loom --test loom_policies --release

log "all checks passed"
