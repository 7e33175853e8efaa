#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is installed for the dashboard test
# (crates/ripcord-proxy/tests/dashboard.rs): installs Debian's `chromium` with
# apt-get when no Chromium binary is found and this runs as root.
#
# Prints the path of the binary on success. Fails when there is none and it
# cannot install one (not root, no apt-get): the dashboard test needs it and
# fails without it. Set RIPCORD_CHROMIUM to use a specific binary.
set -euo pipefail

find_chromium() {
    if [[ -n "${RIPCORD_CHROMIUM:-}" && -x "${RIPCORD_CHROMIUM}" ]]; then
        echo "$RIPCORD_CHROMIUM"
        return 0
    fi
    local candidate
    for candidate in chromium chromium-browser google-chrome-stable google-chrome; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if path=$(find_chromium); then
    echo "$path"
    exit 0
fi

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no Chromium found and cannot install one (needs root and apt-get);" \
        "the dashboard test needs it: install Debian's chromium or set RIPCORD_CHROMIUM" >&2
    exit 1
fi

echo "ensure-chromium: installing Debian's chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Fonts, so the page and its screenshot render text (best effort).
apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null 2>&1 || true

if path=$(find_chromium); then
    echo "$path"
else
    echo "ensure-chromium: apt-get finished but no chromium binary was found" >&2
    exit 1
fi
