#!/usr/bin/env bash
# A ten-minute soak of `ripcord proxy` (not run in CI): the proxy binary under
# a fixed request rate, its breaker and rate limiter shared through a Redis
# server of its own that is stopped and started again twice, while the
# upstream flaps between healthy, failing and slow. Passes when every request
# was answered by the upstream or by a policy (none lost, none hung) and the
# proxy's resident memory stayed flat.
#
#   scripts/soak.sh [SECONDS] [RATE]      # defaults: 600 s at 200 requests/s
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
rate="${2:-200}"
redis_server="$(command -v redis-server || true)"
if [[ -z "$redis_server" ]]; then
    echo "soak: redis-server is needed (apt-get install redis-server)" >&2
    exit 2
fi
cargo build --release -p ripcord-cli --bin ripcord --example soak
exec target/release/examples/soak target/release/ripcord "$redis_server" "$seconds" "$rate"
