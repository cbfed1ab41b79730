#!/usr/bin/env bash
# Checks the Debian package on this machine, as root (CI runs as root on a throwaway machine;
# elsewhere it uses sudo): builds the .deb, lints it, installs it, runs the packaged binary from
# a temporary directory, verifies the installed unit, reinstalls over an edited config, removes
# and purges it, and checks what is left at each step.
#   scripts/check-deb.sh            packages a dev-profile build
#   scripts/check-deb.sh --tested   packages target/debug/ocellus as `cargo test` left it: the
#                                   binary the tests ran (scripts/test.sh). A plain build would
#                                   compile it again: `cargo test` builds the dependencies with
#                                   the dev-dependencies' features added, a build without them.
#   scripts/check-deb.sh --release  packages a release build, as scripts/build-deb.sh does
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profile=dev
build=yes
case "${1:-}" in
    "") ;;
    --release) profile=release ;;
    --tested) build=no ;;
    *) echo "check-deb: unknown option $1 (--tested or --release)" >&2; exit 2 ;;
esac
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "check-deb: needs root (dpkg -i) or sudo" >&2; exit 1; }
    sudo=sudo
fi
if dpkg-query -W -f='${Status}' ocellus 2>/dev/null | grep -q "installed"; then
    echo "check-deb: an ocellus package is already installed here; not touching it" >&2
    exit 1
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
bindir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
if [ "$build" = yes ]; then
    cargo build --locked --profile "$profile" --bin ocellus 2>&1 | tail -1
elif [ ! -x "$bindir/ocellus" ]; then
    echo "check-deb: --tested, but there is no $bindir/ocellus (run cargo test first)" >&2
    exit 1
fi
"$bindir/ocellus" generate-docs target/generated
scripts/fetch-onnxruntime.sh "$(uname -m)" target/deb-onnxruntime >/dev/null
deb=$(cargo deb --no-build --locked --strip --profile "$profile" 2>&1 | tail -1)
[ -f "$deb" ] || { echo "check-deb: cargo deb failed: $deb" >&2; exit 1; }
fail() { echo "check-deb: $*" >&2; exit 1; }

# Lint: no errors (warnings are printed).
lintian --fail-on error "$deb" || fail "lintian found errors"

trap '$sudo dpkg -P ocellus >/dev/null 2>&1 || true' EXIT
$sudo dpkg -i "$deb" >/dev/null || fail "dpkg -i failed"
for f in /usr/bin/ocellus /etc/ocellus/ocellus.toml /usr/lib/systemd/system/ocellus.service \
    /usr/share/ocellus/models/nanodet-g/nanodet-g-384x288-int8.onnx \
    /usr/share/ocellus/models/nanodet-g/nanodet-g-384x288.onnx \
    /usr/share/ocellus/models/nanodet-g/LICENSE.nanodet /usr/share/ocellus/models/nanodet-g/LICENSE.human-models \
    /usr/share/ocellus/models/fastestdet/FastestDet.onnx /usr/share/ocellus/models/fastestdet/LICENSE \
    /usr/lib/ocellus/libonnxruntime.so.1.32.0 /usr/share/man/man1/ocellus.1.gz \
    /usr/share/bash-completion/completions/ocellus; do
    [ -e "$f" ] || fail "$f is not installed"
done
# Enabled the Debian way (deb-systemd-helper; systemd need not be running).
[ -L /etc/systemd/system/multi-user.target.wants/ocellus.service ] || fail "the unit is not enabled"
systemd-analyze verify /usr/lib/systemd/system/ocellus.service || fail "the installed unit does not verify"

# From anywhere, the packaged binary uses the packaged default model on the packaged ONNX
# Runtime (not FastestDet, not HOG, not OpenCV's DNN module), whatever this machine has
# installed by hand: no ORT_DYLIB_PATH, no vendor/ in reach.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; $sudo dpkg -P ocellus >/dev/null 2>&1 || true' EXIT
(cd "$tmp" && env -u ORT_DYLIB_PATH /usr/bin/ocellus replay "$root/media/vtest.avi" > "$tmp/events" 2> "$tmp/summary") ||
    fail "replay failed: $(cat "$tmp/summary")"
grep -q "detector nanodet /usr/share/ocellus/models/nanodet-g/nanodet-g-384x288-int8.onnx 384x288 on onnxruntime 1.32.0" "$tmp/summary" ||
    fail "the replay did not use the packaged model on the packaged ONNX Runtime: $(grep detector "$tmp/summary")"
if grep -q ' WARN ' "$tmp/summary"; then fail "the replay warned: $(grep ' WARN ' "$tmp/summary")"; fi
grep -q "person" "$tmp/summary" || fail "no person events: $(cat "$tmp/summary")"

# The packaged daemon records with the GStreamer plugins the package depends on: a file camera
# (the demo's H.264 copy, continuous) for a few seconds, stopped with SIGTERM, leaves a segment
# that ffprobe reads as H.264.
cat > "$tmp/rec.toml" <<EOF
[storage]
path = "$tmp/rec.db"
[detector]
kind = "none"
[[cameras]]
id = "file"
source = "$root/media/vtest-h264.mp4"
[cameras.record]
mode = "continuous"
EOF
(cd "$tmp" && timeout -s TERM 8 /usr/bin/ocellus run --config "$tmp/rec.toml" --listen 127.0.0.1:0 \
    >/dev/null 2>"$tmp/rec.log") || true
seg=$(find "$tmp/recordings/file" -name "*.mp4" 2>/dev/null | head -1 || true)
[ -n "$seg" ] || fail "the packaged daemon recorded nothing: $(tail -5 "$tmp/rec.log")"
[ "$(ffprobe -v error -select_streams v -show_entries stream=codec_name -of csv=p=0 "$seg")" = h264 ] ||
    fail "the recording $seg does not read as H.264: $(tail -5 "$tmp/rec.log")"

# An upgrade (the same package again) keeps the edited config and the data.
echo "# edited by check-deb" | $sudo tee -a /etc/ocellus/ocellus.toml >/dev/null
$sudo mkdir -p /var/lib/ocellus && echo data | $sudo tee /var/lib/ocellus/kept >/dev/null
$sudo dpkg -i "$deb" >/dev/null || fail "reinstall failed"
grep -q "edited by check-deb" /etc/ocellus/ocellus.toml || fail "the reinstall replaced the edited config"
[ -f /var/lib/ocellus/kept ] || fail "the reinstall lost the data"

# remove keeps config and data; purge takes everything.
$sudo dpkg -r ocellus >/dev/null || fail "dpkg -r failed"
[ ! -e /usr/bin/ocellus ] || fail "dpkg -r left the binary"
[ -f /etc/ocellus/ocellus.toml ] && [ -f /var/lib/ocellus/kept ] || fail "dpkg -r did not keep config and data"
$sudo dpkg -P ocellus >/dev/null || fail "dpkg -P failed"
for f in /usr/bin/ocellus /etc/ocellus /var/lib/ocellus /usr/share/ocellus /usr/lib/ocellus /usr/lib/systemd/system/ocellus.service \
    /etc/systemd/system/multi-user.target.wants/ocellus.service /usr/share/doc/ocellus; do
    [ ! -e "$f" ] && [ ! -L "$f" ] || fail "dpkg -P left $f"
done
echo "check-deb: $(basename "$deb") ($(du -h "$deb" | cut -f1), $profile build$([ "$build" = no ] && echo ", the one the tests ran")): lintian clean of errors, installs, replays with the packaged NanoDet-g on the packaged ONNX Runtime, records an H.264 file camera, keeps an edited config over a reinstall, removes and purges cleanly"
