#!/usr/bin/env bash
# The model table: every model on all 795 frames of media/vtest.avi and on copies of it
# transformed six ways (ground truth transformed alike), scored against the public ground truth,
# in one run. Prints a Markdown section; BENCHMARKS.md has its output.
#
#   bench/models.sh [path/to/ocellus [MODEL...]]
#
# MODELs (all unless named) are fastestdet, nanodet-384x288, nanodet-320x256,
# nanodet-384x288-int8, nanodet-320x256-int8: e.g. `bench/models.sh target/release/ocellus
# nanodet-384x288-int8` for the default model alone (~4 minutes), to compare two builds'
# trackers on the same detections.
#
# Models: FastestDet 352x352; NanoDet-g fp32 at 384x288 and 320x256; NanoDet-g int8 at 384x288
# (the default, as models/fetch.sh makes it with models/qdq.py from the committed calibration
# table) and 320x256 (bench/quantize.py: ONNX Runtime's static quantiser, calibrated on
# scikit-image's sample photographs, never on the clip, as the table was). Per model: per-frame
# person recall and precision at IoU 0.5 for the confident detections
# (bench/detection_truth.py), boxes over two people, detector milliseconds per frame at 1 and 2 threads (examples/detector_bench, ONNX
# Runtime), and per clip the event-level figures of Ocellus' tracker and, on the same
# detections, Frigate's (bench/frigate_tracker.py), scored by bench/mot_eval.py.
#
# Its Python tools run in target/bench-venv (bench/venv.sh makes it). Takes ~25 minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/ocellus}
shift || true
scripts/setup.sh --assets >/dev/null
cargo build --release --locked --bins --examples 2>&1 | tail -1 >&2
py=$(bench/venv.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gt=media/pets09-s2l1/gt.txt

# The clips: the sample and six copies a camera could send instead.
clips=(vtest mirrored fps5 scaled dusk mono lowbit)
declare -A clip_name=(
    [vtest]="vtest.avi" [mirrored]="mirrored" [fps5]="5 fps" [scaled]="scaled 0.75"
    [dusk]="dusk" [mono]="monochrome" [lowbit]="512x384 low bitrate")
variant() { make_variant "$work" "$@"; } # NAME FFMPEG_FILTER GT_TRANSFORM [CODEC...]
cp media/vtest.avi "$work/vtest.avi"
cp "$gt" "$work/vtest.gt"
variant mirrored hflip 'lambda r: r[:2] + [768 - r[2] - r[4]] + r[3:]'
variant fps5 fps=5 'lambda r: None if (r[0] - 1) % 2 else [(r[0] - 1) // 2 + 1] + r[1:]'
variant scaled scale=576:432 'lambda r: r[:2] + [v * 0.75 for v in r[2:6]] + r[6:]'
variant dusk "eq=brightness=-0.08:saturation=0.6:gamma=0.85,noise=alls=6:allf=t" 'lambda r: r'
# What an infrared camera sends at night: no colour at all.
variant mono "format=gray,format=yuv420p" 'lambda r: r'
# A camera's second stream: 512x384 at 120 kbit/s MPEG-4, blocky.
variant lowbit scale=512:384 'lambda r: r[:2] + [v * 2 / 3 for v in r[2:6]] + r[6:]' \
    -c:v mpeg4 -b:v 120k

# The models.
nd=models/nanodet-g
all_models=(fastestdet nanodet-384x288 nanodet-320x256 nanodet-384x288-int8 nanodet-320x256-int8)
models=("${all_models[@]}")
[ $# -eq 0 ] || models=("$@")
wanted() { [[ " ${models[*]} " == *" $1 "* ]]; }
for m in "${models[@]}"; do
    [[ " ${all_models[*]} " == *" $m "* ]] || { echo "models.sh: no model $m (${all_models[*]})" >&2; exit 2; }
done
if wanted nanodet-320x256 || wanted nanodet-320x256-int8; then
    /usr/bin/python3 models/tfjs2onnx.py $nd/nanodet.json "$work/nanodet-320x256.onnx" --width 320 --height 256 2>/dev/null
fi
if wanted nanodet-320x256-int8; then
    "$py" bench/quantize.py "$work/nanodet-320x256.onnx" "$work/nanodet-320x256-int8.onnx" 320 256 2>/dev/null
fi
nano() { # NAME MODEL W H
    printf '[detector]\nkind = "dnn"\nfamily = "nanodet"\nmodel = "%s"\nlabels = "%s"\ninput_width = %s\ninput_height = %s\n' \
        "$2" "$PWD/$nd/coco80.names" "$3" "$4" > "$work/$1.toml"
}
printf '[detector]\nkind = "dnn"\nfamily = "fastestdet"\nmodel = "%s"\nlabels = "%s"\ninput_width = 352\ninput_height = 352\nmin_score = 0.4\n' \
    "$PWD/models/fastestdet/FastestDet.onnx" "$PWD/models/fastestdet/coco.names" > "$work/fastestdet.toml"
nano nanodet-384x288 "$PWD/$nd/nanodet-g-384x288.onnx" 384 288
nano nanodet-320x256 "$work/nanodet-320x256.onnx" 320 256
nano nanodet-384x288-int8 "$PWD/$nd/nanodet-g-384x288-int8.onnx" 384 288
nano nanodet-320x256-int8 "$work/nanodet-320x256-int8.onnx" 320 256
declare -A model_name=(
    [fastestdet]="FastestDet 352x352" [nanodet-384x288]="NanoDet-g 384x288 fp32"
    [nanodet-320x256]="NanoDet-g 320x256 fp32" [nanodet-384x288-int8]="NanoDet-g 384x288 int8 (default)"
    [nanodet-320x256-int8]="NanoDet-g 320x256 int8")

echo "## Models against the ground truth (bench/models.sh)"
echo
echo "All 795 frames of media/vtest.avi (PETS09-S2L1, 19 people). Per-frame: the person boxes scoring at"
echo "least the confident score (0.4) against the ground truth at IoU 0.5, conf-0 boxes ignored; \"over"
echo "two\": a box holding half of each of two people while matching neither. Detector: milliseconds per"
echo "frame (input tensor, network, decoding, NMS) on ONNX Runtime $(basename "$(readlink -f vendor/onnxruntime/libonnxruntime.so)" | sed 's/libonnxruntime.so.//') (CPU), 300 calls, median."
echo
echo "| model | person recall | person precision | boxes over two people | ms, 1 thread | ms, 2 threads |"
echo "|---|---|---|---|---|---|"
ms() { target/release/examples/detector_bench media/vtest.avi onnxruntime "$2" 300 "$work/$1.toml" |
    sed -n 's/.*: \([0-9.]*\) ms per inference.*/\1/p'; }
for m in "${models[@]}"; do
    "$bin" replay "$work/vtest.avi" --config "$work/$m.toml" --trace "$work/$m-vtest.trace" \
        --tracks "$work/$m-vtest.txt" --tracks-label person >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; exit 1; }
    row=$("$py" bench/detection_truth.py "$work/vtest.gt" "$work/$m-vtest.trace" --min-score 0.4 --row "${model_name[$m]}")
    echo "$row $(ms "$m" 1) | $(ms "$m" 2) |"
done

echo
echo "Events, per model and footage: Ocellus' tracker with its default rules, and Frigate's tracker and"
echo "event rule (bench/frigate_tracker.py: norfair 2.3 with Frigate's distance and thresholds, a missed"
echo "frame adding 0.0 to the score history) on the same detections, scored by bench/mot_eval.py"
echo "(py-motmetrics, IoU 0.5)."
echo
echo "| model | footage | tracker | person events | on people | on nothing | people with an event | events per person | IDF1 | MOTA | ID switches |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
    for c in "${clips[@]}"; do
        fps=10
        [ "$c" = fps5 ] && fps=5
        if [ ! -f "$work/$m-$c.trace" ]; then
            "$bin" replay "$work/$c.avi" --config "$work/$m.toml" --trace "$work/$m-$c.trace" \
                --tracks "$work/$m-$c.txt" --tracks-label person >/dev/null 2>"$work/err" ||
                { cat "$work/err" >&2; exit 1; }
        fi
        "$py" bench/frigate_tracker.py "$work/$m-$c.trace" "$work/$m-$c.frigate" --fps $fps 2>/dev/null
        "$py" bench/mot_eval.py "$work/$c.gt" "$work/$m-$c.txt" --row "${model_name[$m]} | ${clip_name[$c]} | Ocellus"
        "$py" bench/mot_eval.py "$work/$c.gt" "$work/$m-$c.frigate" --row "${model_name[$m]} | ${clip_name[$c]} | Frigate"
    done
done
