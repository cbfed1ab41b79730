#!/usr/bin/env bash
# Makes (once) and names the benchmarks' Python venv, target/bench-venv: py-motmetrics 1.4 (which
# needs numpy < 2), norfair, ONNX Runtime's Python package, OpenCV and scikit-image, pinned; a
# venv so that Debian's python3-opencv, built against Debian's numpy, keeps working.
#   py=$(bench/venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/bench-venv
if ! "$venv/bin/python" -c 'import motmetrics, norfair, onnxruntime, skimage, cv2, numpy; assert int(numpy.__version__.split(".")[0]) < 2' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check motmetrics==1.4.0 norfair==2.3.0 \
        'numpy<2' onnx==1.17.0 onnxruntime==1.20.1 opencv-python-headless==4.10.0.84 \
        scikit-image==0.24.0 >&2
fi
echo "$PWD/$venv/bin/python"
