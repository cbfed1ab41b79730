#!/usr/bin/env bash
# Builds the Debian package: target/debian/ocellus_<version>-1_<arch>.deb.
#   scripts/build-deb.sh                      for this machine
#   scripts/build-deb.sh aarch64-unknown-linux-gnu
#       packages target/aarch64-unknown-linux-gnu/release/ocellus, built beforehand by
#       scripts/cross-aarch64-qemu.sh (Debian 12's arm64 OpenCV): its dependencies are named
#       explicitly for Debian 12 (the bookworm-arm64 variant in Cargo.toml).
# Needs cargo-deb (installed if missing) and dpkg-dev; fetches the model with setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-}
scripts/setup.sh --assets >/dev/null
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
if [ -z "$target" ]; then
    cargo build --release --locked --bin ocellus
    bin=target/release/ocellus
else
    bin=target/$target/release/ocellus
    [ -x "$bin" ] || { echo "build-deb: $bin is missing; build it for $target first" >&2; exit 1; }
fi
# The man pages and completions come from the binary's own argument definitions; a cross-built
# binary cannot run here, and they are the same for every architecture.
if [ -z "$target" ]; then
    "$bin" generate-docs target/generated
else
    cargo run --release --locked --bin ocellus -- generate-docs target/generated
fi
# ONNX Runtime for the package's architecture (its private copy in /usr/lib/ocellus).
case "$target" in
"") ort_arch=$(uname -m) ;;
aarch64-*) ort_arch=aarch64 ;;
*) echo "build-deb: no pinned ONNX Runtime for $target" >&2; exit 1 ;;
esac
scripts/fetch-onnxruntime.sh "$ort_arch" target/deb-onnxruntime >/dev/null
variant=()
# A cross-built aarch64 binary: dependencies named for Debian 12 (see Cargo.toml).
[ "$target" = aarch64-unknown-linux-gnu ] && variant=(--variant bookworm-arm64)
cargo deb --no-build --locked --strip ${target:+--target "$target"} "${variant[@]}" 2>&1 | tail -1
