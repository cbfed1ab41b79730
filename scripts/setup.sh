#!/usr/bin/env bash
# Installs what Ocellus needs to build and test, and puts the sample clip and the default model
# in place. Idempotent: a second run checks and does nothing.
#
#   scripts/setup.sh            packages + assets
#   scripts/setup.sh --assets   assets only (no apt)
#   OCELLUS_SETUP_TESTS=1 scripts/setup.sh   also what the tests need (Chromium, chromedriver)
#
# Assets come from ../shared when it is there (the team's machines), otherwise from upstream;
# either way their sha256 is checked.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

packages=(libopencv-dev clang libclang-dev pkg-config curl ca-certificates)
# The dashboard's browser test drives Debian's headless Chromium.
test_packages=(chromium chromium-driver)

install_packages() {
    local missing=()
    local wanted=("${packages[@]}")
    [ "${OCELLUS_SETUP_TESTS:-0}" = 1 ] && wanted+=("${test_packages[@]}")
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

. "$root/scripts/fetch-lib.sh"

install_assets() {
    fetch media/vtest.avi \
        45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf \
        "$root/../shared/media/vtest.avi" \
        https://raw.githubusercontent.com/opencv/opencv/4.6.0/samples/data/vtest.avi
    models/fetch.sh
}

if [ "${1:-}" != "--assets" ]; then
    install_packages
fi
install_assets
