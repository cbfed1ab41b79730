#!/usr/bin/env bash
# Fetches the default model, FastestDet (BSD-3-Clause), into DEST (default: models/ beside this
# script), from ../shared when it is there, else from upstream; checks sha256 either way.
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
