#!/usr/bin/env bash
# Proves the aarch64 build without Docker: unpacks Debian 12's arm64 OpenCV (and everything it
# needs) into a sysroot, cross-compiles Ocellus with Debian's aarch64 gcc, runs the binary under
# qemu-aarch64 on a short replay, and checks it finds the same events as the native build: on
# OpenCV's DNN module exactly, and with the default int8 model on ONNX Runtime (the arm64 library
# of the same version) within a stated tolerance.
#
#   scripts/cross-aarch64-qemu.sh [FRAMES]     (default 60 frames of the sample clip)
#
# Needs a Debian 12 (bookworm) host: the sysroot's OpenCV 4.6 and glibc 2.36 match it. Installs
# gcc/g++-aarch64-linux-gnu and qemu-user, adds the arm64 architecture to apt's lists (nothing
# arm64 is installed on the host), and the Rust target aarch64-unknown-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
frames=${1:-60}
work=${OCELLUS_CROSS_DIR:-$root/target/cross-aarch64}
sysroot=$work/sysroot
debs=$work/debs
started=$(date +%s)
log() { echo "cross-aarch64: [$(( $(date +%s) - started ))s] $*"; }

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

# 1. Host tools.
need=()
for p in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    need_update=1
fi
if [ ${#need[@]} -gt 0 ] || [ -n "${need_update:-}" ]; then
    log "installing ${need[*]:-(arm64 package lists)}"
    $sudo apt-get update -qq
    [ ${#need[@]} -gt 0 ] && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

# 2. Sysroot: libopencv-dev:arm64 and the GStreamer headers (the packet path), with their whole
# dependency closure, unpacked (not installed).
if [ ! -f "$sysroot/.complete-gst" ]; then
    log "downloading arm64 OpenCV and its dependencies"
    mkdir -p "$debs/partial" "$sysroot"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --download-only --no-install-recommends \
        -o Dir::Cache::archives="$debs" libopencv-dev:arm64 libgstreamer1.0-dev:arm64 \
        libgstreamer-plugins-base1.0-dev:arm64 >/dev/null
    log "unpacking $(ls "$debs"/*.deb | wc -l) packages"
    for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
    # Absolute symlinks inside the sysroot must point into it.
    find "$sysroot" -type l -lname '/*' | while read -r l; do
        ln -sfn "$sysroot$(readlink "$l")" "$l"
    done
    touch "$sysroot/.complete-gst"
fi

lib=$sysroot/usr/lib/aarch64-linux-gnu
# Sonames Debian provides through update-alternatives (run by postinst, which unpacking skips).
for alt in blas/libblas.so.3 lapack/liblapack.so.3; do
    target=$(find "$lib" -path "*/$alt" | sort | head -1)
    [ -n "$target" ] && ln -sfn "$target" "$lib/$(basename "$alt")"
done

# 3. Cross-compile. The variables live in a subshell: the native build below must not see them.
log "building for aarch64"
(
    modules=core,imgproc,imgcodecs,videoio,dnn,objdetect,video,features2d,flann,calib3d
    export OPENCV_LINK_LIBS=$(echo "$modules" | sed 's/\([a-z0-9]*\)/opencv_\1/g')
    export OPENCV_LINK_PATHS=$lib
    export OPENCV_INCLUDE_PATHS=$sysroot/usr/include/opencv4,$sysroot/usr/include/aarch64-linux-gnu/opencv4
    export OPENCV_CLANG_ARGS="--target=aarch64-linux-gnu"
    # The binding generator takes its C++ system include paths from the clang it finds; this wrapper
    # makes them the aarch64 cross toolchain's (glibc and libstdc++ headers for the target).
    mkdir -p "$work/bin"
    printf '#!/bin/sh\nexec clang --target=aarch64-linux-gnu "$@"\n' > "$work/bin/clang"
    chmod +x "$work/bin/clang"
    export CLANG_PATH=$work/bin/clang
    # gstreamer-sys finds GStreamer with pkg-config: the sysroot's .pc files, paths inside it.
    export PKG_CONFIG_ALLOW_CROSS=1
    export PKG_CONFIG_SYSROOT_DIR=$sysroot
    export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$sysroot/usr/share/pkgconfig
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$sysroot -C link-arg=-Wl,-rpath-link,$lib -C link-arg=-Wl,-rpath-link,$sysroot/lib/aarch64-linux-gnu"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
    # No debug info: it halves the link and the binary (70 MB -> ~20 MB); the code is the same.
    export CARGO_PROFILE_RELEASE_DEBUG=false
    cargo build --release --locked --target aarch64-unknown-linux-gnu --bin ocellus
)
bin=target/aarch64-unknown-linux-gnu/release/ocellus
file "$bin" | grep -q "ARM aarch64" || { echo "cross-aarch64: $bin is not an aarch64 binary" >&2; exit 1; }
log "built $(du -h "$bin" | cut -f1) $bin"

# 4. The same short replay, native and under qemu. The frames are lossless PNGs: FFmpeg's MJPEG and
# H.264 decoding (its IDCT and YUV->BGR conversion) is not bit-exact across architectures (on the
# MJPEG clip every frame's pixels differed), and the point here is the pipeline that runs on them.
scripts/setup.sh --assets >/dev/null
cargo build --release --locked --bin ocellus
clip=$work/frames
rm -rf "$clip" && mkdir -p "$clip"
cargo run --release --locked --example cut_clip -- media/vtest.avi "$clip/%04d.png" "$frames" >/dev/null
# Both on OpenCV's DNN module: the x86-64 ONNX Runtime in vendor/ cannot load into the aarch64
# build, and the point is the same pipeline on the same runtime.
target/release/ocellus replay "$clip/%04d.png" --runtime opencv --json --trace "$work/native.trace" > "$work/native.jsonl"
log "native: $(wc -l < "$work/native.jsonl") events"
t0=$(date +%s)
qemu-aarch64 -L "$sysroot" "$bin" replay "$clip/%04d.png" --runtime opencv --json --trace "$work/aarch64.trace" > "$work/aarch64.jsonl"
log "aarch64 under qemu: $(wc -l < "$work/aarch64.jsonl") events in $(( $(date +%s) - t0 ))s"
[ -s "$work/native.jsonl" ] || { echo "cross-aarch64: the native run found no events to compare" >&2; exit 1; }
# compare NAME MODE: NAME's native and aarch64 runs (NAME.trace and NAME.jsonl beside each other
# as native-NAME / aarch64-NAME, or native / aarch64 for the first). Both modes first check the
# two builds decoded the same pixels (the traces' per-frame hashes). `exact`: the same events,
# labels, track ids, start/end times and hit counts exactly, scores within 1e-4 and boxes within
# 0.5 px (the DNN's NEON and AVX kernels sum in different orders: scores differ by < 1e-6).
# `tolerance`: the confident detections (score >= 0.4) of every frame matched one to one at IoU
# >= 0.9 with scores within 0.03, at least 98 % of them, and the events the same in number of
# each label.
compare() {
    python3 - "$work" "$1" "$2" <<'PY'
import json, sys
work, name, mode = sys.argv[1:]
load = lambda side, ext: [json.loads(l) for l in open(f"{work}/{side}{name}.{ext}")]
ta, tb = load("native", "trace"), load("aarch64", "trace")
if len(ta) != len(tb) or any(x["pixels"] != y["pixels"] for x, y in zip(ta, tb)):
    print(f"cross-aarch64: {name or 'opencv'}: the two builds decoded different pixels; nothing to compare")
    sys.exit(1)
a, b = load("native", "jsonl"), load("aarch64", "jsonl")

def iou(p, q):
    w = max(0.0, min(p["x"] + p["w"], q["x"] + q["w"]) - max(p["x"], q["x"]))
    h = max(0.0, min(p["y"] + p["h"], q["y"] + q["h"]) - max(p["y"], q["y"]))
    return w * h / (p["w"] * p["h"] + q["w"] * q["h"] - w * h) if w * h > 0 else 0.0

if mode == "tolerance":
    total = matched = 0
    worst = 0.0
    for x, y in zip(ta, tb):
        da = [d for d in x["detections"] if d["score"] >= 0.4]
        db = [d for d in y["detections"] if d["score"] >= 0.4]
        total += max(len(da), len(db))
        used = set()
        for d in da:
            best, j = max(((iou(d["box"], e["box"]), j) for j, e in enumerate(db)
                           if j not in used and e["label"] == d["label"]), default=(0.0, None))
            if best >= 0.9 and abs(d["score"] - db[j]["score"]) <= 0.03:
                used.add(j)
                matched += 1
                worst = max(worst, abs(d["score"] - db[j]["score"]))
    share = matched / total if total else 0.0
    same = sorted(e["label"] for e in a) == sorted(e["label"] for e in b)
    print(f"cross-aarch64: int8: {matched} of {total} confident detections matched ({share:.1%}; "
          f"largest score difference of a matched pair {worst:.3f}); events native {len(a)}, aarch64 {len(b)}")
    sys.exit(0 if share >= 0.98 and same else 1)

dmax = max((abs(d["score"] - e["score"]) for x, y in zip(ta, tb)
            for d, e in zip(x["detections"], y["detections"])), default=0.0)
key = lambda e: (e["label"], e["track_id"], e["start_ms"], e["end_ms"], e["hits"])
def same(x, y):
    return key(x) == key(y) and abs(x["top_score"] - y["top_score"]) < 1e-4 and all(
        abs(x["box"][k] - y["box"][k]) <= 0.5 for k in "xywh")
if len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)):
    print(f"cross-aarch64: {len(ta)} frames with identical pixels; {len(a)} events identical "
          f"(largest raw detection score difference {dmax:.1e})")
    sys.exit(0)
print(f"cross-aarch64: events differ: native {len(a)}, aarch64 {len(b)}")
print("  build   label   track  start_ms  end_ms  hits  top_score")
for tag, evs in (("native ", a), ("aarch64", b)):
    for e in sorted(evs, key=lambda e: (e["start_ms"], e["track_id"])):
        print(f"  {tag} {e['label']:<7} {e['track_id']:>5} {e['start_ms']:>9} {e['end_ms']:>7} {e['hits']:>5}  {e['top_score']:.3f}")
sys.exit(1)
PY
}
compare "" exact

# 5. The default model, NanoDet-g int8, on ONNX Runtime: this machine's library natively, the
# arm64 build of the same version under qemu (whose CPU model has the dot-product instructions a
# Pi 5's Cortex-A76 has, so ONNX Runtime takes its arm64 int8 kernels). Integer kernels differ
# between the architectures (x86's AVX2 path and arm64's SDOT path round and saturate at
# different points), so compare's `tolerance`.
scripts/fetch-onnxruntime.sh aarch64 "$work/onnxruntime" >/dev/null
ort_arm=$(ls "$work"/onnxruntime/libonnxruntime.so.* | head -1)
target/release/ocellus replay "$clip/%04d.png" --runtime onnxruntime --json --trace "$work/native-int8.trace" \
    > "$work/native-int8.jsonl" 2> "$work/native-int8.err" || { cat "$work/native-int8.err" >&2; exit 1; }
grep -q "int8.onnx 384x288 on onnxruntime" "$work/native-int8.err" ||
    { echo "cross-aarch64: the native run did not use the int8 model: $(grep detector "$work/native-int8.err")" >&2; exit 1; }
# ONNX Runtime reads the CPU's model from /proc/cpuinfo (pytorch's cpuinfo library), which under
# qemu-user is this x86 machine's: it then dereferences a null pointer at start. A private mount
# namespace shows it a two-core Cortex-A76 (a Pi 5's core, with the dot-product instructions) in
# its place; qemu's CPU has those instructions too (HWCAP), so the kernels are what a Pi 5 runs.
printf 'processor\t: %s\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' 0 1 \
    > "$work/cpuinfo-a76"
t0=$(date +%s)
$sudo unshare -m sh -c 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"' sh "$work/cpuinfo-a76" \
    env ORT_DYLIB_PATH="$ort_arm" qemu-aarch64 -L "$sysroot" "$bin" replay "$clip/%04d.png" --runtime onnxruntime \
    --json --trace "$work/aarch64-int8.trace" > "$work/aarch64-int8.jsonl" 2> "$work/aarch64-int8.err" ||
    { cat "$work/aarch64-int8.err" >&2; exit 1; }
grep -q "int8.onnx 384x288 on onnxruntime" "$work/aarch64-int8.err" ||
    { echo "cross-aarch64: the aarch64 run did not use the int8 model: $(grep detector "$work/aarch64-int8.err")" >&2; exit 1; }
log "int8 on ONNX Runtime: native $(wc -l < "$work/native-int8.jsonl") events, aarch64 under qemu $(wc -l < "$work/aarch64-int8.jsonl") in $(( $(date +%s) - t0 ))s"
compare -int8 tolerance
log "done"
