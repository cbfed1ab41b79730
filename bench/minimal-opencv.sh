#!/usr/bin/env bash
# Builds OpenCV 4.6.0 with only what Ocellus uses (core, imgproc, imgcodecs with JPEG and PNG,
# videoio with FFmpeg and V4L2, dnn, video, objdetect and the modules these need), the way an
# embedded image such as the Yocto layer's does, then Ocellus against it. Debian's OpenCV links
# GDAL, GDCM, Poppler, GStreamer and ~250 libraries in all into every process that uses it; this
# build shows what the daemon's memory is without them. Used by bench/run.sh for its memory rows.
#
#   bench/minimal-opencv.sh      -> prints the path of the Ocellus binary built against it
#
# Idempotent: the source, the OpenCV install and the Ocellus build are kept under
# target/minimal-opencv and reused. About 25 minutes from nothing on 2 cores (OpenCV ~17, Ocellus ~6).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/minimal-opencv
prefix=$work/install
mkdir -p "$work"

# The OpenCV 4.6.0 source as opencv-python 4.6.0.66 ships it on PyPI (the registry these machines
# reach), checked against PyPI's sha256.
sdist=opencv-python-4.6.0.66.tar.gz
sha=c5bfae41ad4031e66bb10ec4a0a2ffd3e514d092652781e8b1ac98d1b59f1158
url=https://files.pythonhosted.org/packages/7a/1c/e57fe138615c29b8d1442009057dd420c58d4773cb16112e914c9e7b47d8/$sdist

need=()
for p in cmake ninja-build libavcodec-dev libavformat-dev libswscale-dev libjpeg-dev libpng-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -ne 0 ] && sudo=sudo || sudo=""
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [ ! -f "$prefix/lib/pkgconfig/opencv4.pc" ]; then
    if ! echo "$sha  $work/$sdist" | sha256sum -c --status 2>/dev/null; then
        echo "downloading $sdist" >&2
        curl -fsSL -o "$work/$sdist" "$url"
        echo "$sha  $work/$sdist" | sha256sum -c --status || { echo "sha256 mismatch for $sdist" >&2; exit 1; }
    fi
    rm -rf "$work/src"
    mkdir -p "$work/src"
    tar xzf "$work/$sdist" -C "$work/src" --strip-components=1 opencv-python-4.6.0.66/opencv
    # OpenCV 4.6.0 does not build with FFmpeg 5.1 (opencv/opencv#22418, fixed after 4.6.0):
    # libavformat no longer includes libavcodec's header, so the version test falls back to the
    # pre-2012 codec names. Debian patches the same.
    sed -i 's|#include <libavformat/avformat.h>|&\n#include <libavcodec/avcodec.h>|' \
        "$work/src/opencv/modules/videoio/src/ffmpeg_codecs.hpp"
    off=()
    for w in GSTREAMER GTK QT OPENGL VTK OPENCL VA VA_INTEL 1394 EIGEN LAPACK TBB OPENMP ITT CUDA \
        IPP ADE OPENVX TENGINE TIMVX TIFF WEBP OPENJPEG JASPER OPENEXR GDAL GDCM \
        IMGCODEC_HDR IMGCODEC_SUNRASTER IMGCODEC_PFM; do
        off+=("-DWITH_$w=OFF")
    done
    cmake -S "$work/src/opencv" -B "$work/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DBUILD_LIST=core,imgproc,imgcodecs,videoio,dnn,video,objdetect \
        -DBUILD_SHARED_LIBS=ON -DOPENCV_GENERATE_PKGCONFIG=ON -DCPU_DISPATCH=AVX2 \
        -DWITH_FFMPEG=ON -DWITH_V4L=ON -DWITH_JPEG=ON -DBUILD_JPEG=OFF -DWITH_PNG=ON -DBUILD_PNG=OFF \
        -DBUILD_ZLIB=OFF -DWITH_PROTOBUF=ON -DBUILD_PROTOBUF=ON -DWITH_QUIRC=ON \
        "${off[@]}" \
        -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_opencv_apps=OFF \
        -DBUILD_JAVA=OFF -DBUILD_opencv_python3=OFF -DBUILD_DOCS=OFF >&2
    cmake --build "$work/build" >&2
    cmake --install "$work/build" >&2
fi

# Ocellus against that OpenCV, in its own target directory; the rpath makes the binary find it.
lib=$(dirname "$(find "$prefix" -name 'libopencv_core.so' | head -1)")
PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name opencv4.pc | head -1)")" \
    OPENCV_PACKAGE_NAME=opencv4 \
    RUSTFLAGS="-C link-arg=-Wl,-rpath,$lib" \
    cargo build --release --locked --bin ocellus --target-dir "$work/cargo" >&2
echo "$work/cargo/release/ocellus"
