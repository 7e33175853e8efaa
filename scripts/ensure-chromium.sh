#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is installed for the dashboard test
# (crates/ripcord-proxy/tests/dashboard.rs): installs Debian's `chromium`
# (and fonts, so pages render text) when no Chromium is found and this runs
# as root. Prints the path of the binary; fails when there is none. Set
# RIPCORD_CHROMIUM to use a specific binary.
set -euo pipefail
ENSURE_TOOL_EXTRAS="fonts-dejavu-core" exec bash "$(dirname "$0")/ensure-tool.sh" \
    RIPCORD_CHROMIUM chromium chromium chromium-browser google-chrome-stable google-chrome
