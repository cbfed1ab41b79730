#!/usr/bin/env bash
# Installs what Ocellus needs to build and test, and puts the sample clip, the default model and
# ONNX Runtime's library (vendor/onnxruntime/) in place. Idempotent: a second run checks and does nothing.
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

# unzip: ONNX Runtime's library comes out of its Python wheel (scripts/fetch-onnxruntime.sh).
# python3-onnx: models/fetch.sh converts the default model, NanoDet-g, from TF.js to ONNX.
# GStreamer: the packet path (recording) reads each camera's compressed stream through it: the
# headers to build, and at run time parsebin/appsink/decodebin (base), rtspsrc and the MP4
# demuxer (good), h264parse (bad), a software decoder (libav). ffmpeg makes the demo's H.264 copy
# of the sample clip.
packages=(libopencv-dev clang libclang-dev pkg-config curl ca-certificates unzip python3-onnx
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav ffmpeg)
# The dashboard's browser test drives Debian's headless Chromium; the RTSP tests run GStreamer's
# RTSP server (through python3-gi) on an H.264 clip that ffmpeg encodes; the journal test runs
# systemd-journald and journalctl (package systemd; the checks use systemd-analyze too) and
# unshare (util-linux); the MQTT tests run Mosquitto; the TLS tests make their certificates with
# openssl; the package check lints with lintian and
# derives dependencies with dpkg-shlibdeps (dpkg-dev); the GStreamer camera test decodes H.264
# in software with avdec_h264 (gstreamer1.0-libav), what a Pi's v4l2h264dec or a Jetson's
# nvv4l2decoder replaces (docs/deployment.md).
test_packages=(chromium chromium-driver ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-libav systemd
    util-linux mosquitto lintian dpkg-dev openssl)

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
    # The clip's public ground truth (PETS09-S2L1, MOTChallenge format), for the event-truth
    # test and benchmark; CC BY-NC-SA 3.0, so it is fetched, never shipped.
    fetch media/pets09-s2l1/gt.txt \
        9759f51a2429b17e1f4dfdd76cf9731ca02097069298914b51d35bb9045baf1d \
        "$root/../shared/media/pets09-s2l1/gt.txt" \
        https://raw.githubusercontent.com/gonzalocarreteroh/MASA-OA/ff2036cf4ddee289aec4d9e5cc03bdd734580b7a/benchmarks/MOT15/PETS09-S2L1/gt/gt.txt
    models/fetch.sh
    scripts/fetch-onnxruntime.sh
    demo_h264
}

# The demo camera records: an H.264 copy of the sample clip as a camera would send it (a key
# frame every 2 s, no B-frames), made once with Debian's ffmpeg.
demo_h264() {
    local out=media/vtest-h264.mp4
    [ -s "$out" ] && return 0
    if ! command -v ffmpeg >/dev/null 2>&1; then
        echo "setup: ffmpeg missing; $out not made (run scripts/setup.sh without --assets)" >&2
        return 0
    fi
    ffmpeg -loglevel error -y -i media/vtest.avi -c:v libx264 -preset medium -crf 23 -g 20 -bf 0 \
        -pix_fmt yuv420p -an -movflags +faststart -f mp4 "$out.part"
    mv "$out.part" "$out"
}

if [ "${1:-}" != "--assets" ]; then
    install_packages
fi
install_assets
