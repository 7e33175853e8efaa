#!/usr/bin/env bash
# Makes sure a Prometheus server is installed for the scrape test
# (crates/ripcord-proxy/tests/prometheus.rs): installs Debian's `prometheus`
# when none is found and this runs as root. Prints the path of the binary;
# fails when there is none. Set RIPCORD_PROMETHEUS to use a specific binary.
#
# Debian's package may start a system-wide server (on :9090) when a service
# manager runs; the test starts its own on a free port and never uses it.
set -euo pipefail
exec bash "$(dirname "$0")/ensure-tool.sh" RIPCORD_PROMETHEUS prometheus prometheus
