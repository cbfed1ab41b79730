#!/usr/bin/env bash
# The detector's runtimes side by side, in one run: ONNX Runtime (scripts/setup.sh fetches it
# into vendor/onnxruntime/) and OpenCV's DNN module. Prints a Markdown section; bench/run.sh puts
# it in BENCHMARKS.md.
#
#   bench/runtime.sh [RUNS] [LIVE_SECS]     (defaults 3 and 30)
#
# Rows: the detector alone per inference; default-config replay of media/vtest.avi with each
# runtime against the serial Python reference (bench/reference.py nanodet: the same model on
# ONNX Runtime's Python package); the live
# daemon's CPU per processed frame on the clip played at its 10 fps, and its RSS. The replays
# are interleaved (one of each per round) so a noisy neighbour hits all alike.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3}
live_secs=${2:-30}
scripts/setup.sh --assets >/dev/null
cargo build --release --locked --bins --examples 2>&1 | tail -1 >&2
bin=target/release/ocellus
model=models/nanodet-g/nanodet-g-384x288.onnx
py=$(bench/venv.sh)
out=$(mktemp -d)
daemon=""
trap 'rm -rf "$out"; [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true' EXIT

stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")' "$@"; }
med() { python3 -c 'import sys,statistics as s; print(s.median(float(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c "print(f'{$(med $1) / $(med $2):.2f}')"; }

echo "== detector alone" >&2
declare -A inf
for t in 1 2; do
    for rt in onnxruntime opencv; do
        for _ in $(seq "$runs"); do
            inf[$rt$t]+="$(target/release/examples/detector_bench media/vtest.avi $rt $t 300 | sed -n 's/.*: \([0-9.]*\) ms per inference.*/\1/p') "
        done
        echo "$rt threads $t: ${inf[$rt$t]}" >&2
    done
done

echo "== default-config replay" >&2
declare -A fps rss
replay_fps() { # RUNTIME -> "fps rss_kib" of one default-config replay
    /usr/bin/time -f "rss %M" "$bin" replay media/vtest.avi --runtime "$1" 2>"$out/replay.err" >/dev/null
    local f r
    f=$(sed -n 's/.* \([0-9.]*\) fps processed.*/\1/p' "$out/replay.err")
    r=$(sed -n 's/^rss \([0-9]*\)$/\1/p' "$out/replay.err")
    echo "$f $r"
}
for _ in $(seq "$runs"); do
    for rt in onnxruntime opencv; do
        read -r f r < <(replay_fps $rt)
        fps[$rt]+="$f "; rss[$rt]+="$((r / 1024)) "
    done
    fps[py]+="$("$py" bench/reference.py nanodet media/vtest.avi "$model" | awk '{print $NF}') "
done
grep "per frame" "$out/replay.err" > "$out/perframe_opencv"
"$bin" replay media/vtest.avi --runtime onnxruntime 2>&1 >/dev/null | grep "per frame" > "$out/perframe_ort"
echo "fps: ort ${fps[onnxruntime]} opencv ${fps[opencv]} python ${fps[py]}" >&2

echo "== live daemon, ${live_secs} s per runtime" >&2
# live RUNTIME [MODEL_TOML] -> "cpu_ms_per_frame fps rss_mib" (bench/lib.sh's live_cost): the
# default model, or the [detector] of MODEL_TOML.
live() {
    live_cost "$bin" "$out" "$live_secs" "runtime = \"$1\"
$(model_lines "${2:-}")"
}
declare -A cpu lfps lrss
for rt in onnxruntime opencv; do
    read -r c f r < <(live $rt)
    cpu[$rt]=$c; lfps[$rt]=$f; lrss[$rt]=$r
    echo "live $rt: $c ms CPU per frame at $f fps, RSS $r MiB" >&2
done
# The previous default model, FastestDet, on ONNX Runtime: the live cost before NanoDet-g.
read -r c f r < <(live onnxruntime models/fastestdet/model.toml)
cpu[fastestdet]=$c; lfps[fastestdet]=$f; lrss[fastestdet]=$r
echo "live fastestdet onnxruntime: $c ms CPU per frame at $f fps, RSS $r MiB" >&2

row() { printf '| %s | %s | %s | `%s` |\n' "$@"; }
echo "## Detector runtimes: ONNX Runtime and OpenCV's DNN module"
echo
echo "\`bench/runtime.sh $runs $live_secs\`: NanoDet-g (384x288), default config; ONNX Runtime $(basename "$(readlink -f vendor/onnxruntime/libonnxruntime.so)" | sed 's/libonnxruntime.so.//') (CPU execution provider,"
echo "the pinned library scripts/setup.sh fetches), OpenCV $(pkg-config --modversion opencv4). Median (min-max) over $runs runs."
echo
echo "| what | ONNX Runtime | OpenCV DNN | command |"
echo "|---|---|---|---|"
row "detector alone, 1 thread: ms per inference (input tensor, network, decoding, NMS)" "$(stats ${inf[onnxruntime1]})" "$(stats ${inf[opencv1]})" "target/release/examples/detector_bench media/vtest.avi RUNTIME 1"
row "detector alone, 2 threads" "$(stats ${inf[onnxruntime2]})" "$(stats ${inf[opencv2]})" "target/release/examples/detector_bench media/vtest.avi RUNTIME 2"
row "default-config replay of vtest.avi: fps" "$(stats ${fps[onnxruntime]})" "$(stats ${fps[opencv]})" "$bin replay media/vtest.avi --runtime RUNTIME"
row "... its peak RSS, MiB" "$(stats ${rss[onnxruntime]})" "$(stats ${rss[opencv]})" "(same, /usr/bin/time)"
row "live daemon on the clip at 10 fps: CPU ms per processed frame (one run, ${live_secs} s)" "${cpu[onnxruntime]} (${lfps[onnxruntime]} fps)" "${cpu[opencv]} (${lfps[opencv]} fps)" "$bin run (detector.runtime = RUNTIME)"
row "... its RSS at the end, MiB" "${lrss[onnxruntime]}" "${lrss[opencv]}" "(same)"
row "live, FastestDet (the default before NanoDet-g): CPU ms per processed frame, RSS" "${cpu[fastestdet]} (${lfps[fastestdet]} fps), ${lrss[fastestdet]} MiB" "" "$bin run (the [detector] of models/fastestdet/model.toml)"
echo
echo "Python reference (\`bench/reference.py nanodet media/vtest.avi $model\` in bench/venv.sh's venv: read,"
echo "motion, the same model on ONNX Runtime's Python package (its default threads), numpy decode, NMS, JPEG,"
echo "serially): $(stats ${fps[py]}) fps. Default-config replay / reference (medians):"
echo "**$(ratio "${fps[onnxruntime]}" "${fps[py]}")x** with ONNX Runtime, $(ratio "${fps[opencv]}" "${fps[py]}")x with OpenCV. Detector alone, OpenCV / ONNX Runtime: $(ratio "${inf[opencv1]}" "${inf[onnxruntime1]}")x"
echo "(1 thread), $(ratio "${inf[opencv2]}" "${inf[onnxruntime2]}")x (2 threads)."
echo
echo "Where a default-config replay's time goes (one run each; motion and decoding run on their own threads):"
echo
echo "- ONNX Runtime: $(cat "$out/perframe_ort")"
echo "- OpenCV: $(cat "$out/perframe_opencv")"
