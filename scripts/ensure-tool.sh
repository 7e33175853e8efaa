#!/usr/bin/env bash
# Makes sure a program a test needs is installed, from Debian's packages.
#
#   scripts/ensure-tool.sh ENV_VAR PACKAGE NAME [NAME...]
#
# Prints the path of the program: `$ENV_VAR` when it names an executable,
# else the first NAME found on PATH. When there is none, installs Debian's
# PACKAGE with apt-get if this runs as root, then looks again. Fails (exit
# 1, with a message saying what to do) when there is still none: the tests
# that need the program fail without it, they never skip.
#
# Extra packages to install alongside (best effort) can be given in
# ENSURE_TOOL_EXTRAS, space-separated.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 ENV_VAR PACKAGE NAME [NAME...]" >&2
    exit 2
fi
env_var=$1
package=$2
shift 2

find_tool() {
    local forced=${!env_var:-}
    if [[ -n "$forced" && -x "$forced" ]]; then
        echo "$forced"
        return 0
    fi
    local candidate
    for candidate in "$@"; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if path=$(find_tool "$@"); then
    echo "$path"
    exit 0
fi

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tool: no $1 found and cannot install Debian's $package (needs root and apt-get);" \
        "install it, or set $env_var to the program" >&2
    exit 1
fi

echo "ensure-tool: installing Debian's $package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$package" >/dev/null; }

if [[ -n "${ENSURE_TOOL_EXTRAS:-}" ]]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $ENSURE_TOOL_EXTRAS >/dev/null 2>&1 || true
fi

if path=$(find_tool "$@"); then
    echo "$path"
else
    echo "ensure-tool: apt-get installed $package but no $1 was found on PATH" >&2
    exit 1
fi
