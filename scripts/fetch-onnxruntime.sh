#!/usr/bin/env bash
# Puts ONNX Runtime's shared library in vendor/onnxruntime/ (ignored by git), where the daemon
# looks for it after the system's library path: the `onnxruntime` wheel from PyPI carries
# onnxruntime/capi/libonnxruntime.so.<version>, the C API library, for x86-64 and aarch64. The
# wheel is pinned (version and sha256 per architecture) and so is the library taken from it.
# Idempotent: with the library in place and intact it does nothing.
#
#   scripts/fetch-onnxruntime.sh                 this machine's architecture, into vendor/onnxruntime
#   scripts/fetch-onnxruntime.sh ARCH DIR        x86_64 or aarch64, into DIR (the Debian package's
#                                                copy, scripts/build-deb.sh)
#
# Elsewhere (armv7, or to use your distribution's build): install libonnxruntime (Debian trixie,
# Ubuntu 24.04 and later), or set detector.onnxruntime_library; without it Ocellus runs the
# model on OpenCV's DNN module.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/fetch-lib.sh

version=1.32.0
pypi=https://files.pythonhosted.org/packages
arch=${1:-$(uname -m)}
dir=${2:-vendor/onnxruntime}
case "$arch" in
x86_64)
    wheel_url=$pypi/1d/46/e6f356c9539d2eed44126de3421a81e217da2ad91b22dc11b379cb1e384f/onnxruntime-$version-cp311-cp311-manylinux_2_28_x86_64.whl
    wheel_sum=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
    lib_sum=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
    ;;
aarch64 | arm64)
    wheel_url=$pypi/b7/30/103820b32e9dc1d1fcfc5b519fd2de5bd699d25a25895caf5d726350d1b5/onnxruntime-$version-cp311-cp311-manylinux_2_28_aarch64.whl
    wheel_sum=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c
    lib_sum=49852228a93995158b2a813d4df487d47a1b76b0eaa894507ef49e91b6d7954a
    ;;
*)
    echo "fetch-onnxruntime: no pinned ONNX Runtime for $arch; install libonnxruntime or set detector.onnxruntime_library (OpenCV's DNN module is used meanwhile)" >&2
    exit 0
    ;;
esac

lib=$dir/libonnxruntime.so.$version
if [ -f "$lib" ] && echo "$lib_sum  $lib" | sha256sum -c --status; then
    ln -sfn "libonnxruntime.so.$version" "$dir/libonnxruntime.so"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The wheel is a zip; the library is one member of it. Not kept: only the library is needed.
fetch "$work/onnxruntime.whl" "$wheel_sum" /nonexistent "$wheel_url" >/dev/null
unzip -q -o -j "$work/onnxruntime.whl" "onnxruntime/capi/libonnxruntime.so.$version" -d "$work"
if ! echo "$lib_sum  $work/libonnxruntime.so.$version" | sha256sum -c --status; then
    echo "fetch-onnxruntime: the library in the wheel has an unexpected checksum; not installed" >&2
    exit 1
fi
mkdir -p "$dir"
mv "$work/libonnxruntime.so.$version" "$lib"
ln -sfn "libonnxruntime.so.$version" "$dir/libonnxruntime.so"
echo "fetch: $lib ok (ONNX Runtime $version, from PyPI's onnxruntime wheel)"
