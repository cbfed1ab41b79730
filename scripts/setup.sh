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

# fetch DEST SHA256 SHARED_PATH URL
fetch() {
    local dest=$1 sum=$2 shared=$3 url=$4
    if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    local tmp="$dest.part"
    if [ -f "$root/../shared/$shared" ]; then
        cp "$root/../shared/$shared" "$tmp"
        chmod 644 "$tmp"
    else
        echo "setup: downloading $url"
        curl -fsSL --retry 3 -o "$tmp" "$url"
    fi
    if ! echo "$sum  $tmp" | sha256sum -c --status; then
        rm -f "$tmp"
        echo "setup: $dest: checksum mismatch (wanted $sum); not installed" >&2
        exit 1
    fi
    mv "$tmp" "$dest"
    echo "setup: $dest ok"
}

install_assets() {
    fetch media/vtest.avi \
        45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf \
        media/vtest.avi \
        https://raw.githubusercontent.com/opencv/opencv/4.6.0/samples/data/vtest.avi
    models/fetch.sh
}

if [ "${1:-}" != "--assets" ]; then
    install_packages
fi
install_assets
