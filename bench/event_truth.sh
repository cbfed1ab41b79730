#!/usr/bin/env bash
# Event truth on the sample clip against its public ground truth (PETS09-S2L1): Ocellus with the
# default config, and Frigate's tracker and event rule on the same detections, scored the same
# way by bench/mot_eval.py. Prints a Markdown section; bench/run.sh puts it in BENCHMARKS.md.
#
#   bench/event_truth.sh [path/to/ocellus [CONFIG.toml]]
#
# With a config, every replay but the tiles row uses it (to compare settings on the same build).
#
# Needs py-motmetrics and norfair (pip, pinned below; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/ocellus}
cfg_args=()
[ -z "${2:-}" ] || cfg_args=(--config "$(realpath "$2")")
gt=media/pets09-s2l1/gt.txt
scripts/setup.sh --assets >/dev/null
# motmetrics 1.4 calls numpy.asfarray, which numpy 2 removed.
python3 -c 'import motmetrics, norfair, numpy; assert int(numpy.__version__.split(".")[0]) < 2' \
    2>/dev/null ||
    pip install -q --disable-pip-version-check motmetrics==1.4.0 norfair==2.3.0 'numpy<2' >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" replay media/vtest.avi "${cfg_args[@]}" --json --tracks "$work/ocellus.txt" --tracks-label person \
    --trace "$work/trace.jsonl" >"$work/events.jsonl" 2>"$work/summary.txt"
python3 bench/frigate_tracker.py "$work/trace.jsonl" "$work/frigate.txt" 2>/dev/null
track_ms=$(sed -n 's/.*track+events \([0-9.]*\) ms.*/\1/p' "$work/summary.txt")

row() { python3 bench/mot_eval.py "$gt" "$2" --row "$1"; }

echo "## Event truth: media/vtest.avi against its public ground truth (PETS09-S2L1, 19 people)"
echo
echo "Default config (NanoDet-g). Scored by \`bench/mot_eval.py $gt TRACKS\`: py-motmetrics, IoU 0.5,"
echo "conf-0 ground-truth boxes ignored; an event is on a person when half of its boxes overlap theirs"
echo "by IoU 0.3. Ocellus: \`$bin replay media/vtest.avi --tracks TRACKS --tracks-label person\`."
echo "Frigate: its tracker (norfair 2.3, Frigate's distance, threshold 2.5, 5 s to disappear) and event"
echo "rule (median of the last 10 scores >= 0.7, min score 0.5) on the same detections:"
echo "\`bench/frigate_tracker.py TRACE TRACKS\` on the \`--trace\` of the same run."
echo
echo "| tracker | person events | on people | on nothing | people with an event | events per person | IDF1 | MOTA | ID switches |"
echo "|---|---|---|---|---|---|---|---|---|"
row "Ocellus" "$work/ocellus.txt"
row "Frigate's tracker, same detections" "$work/frigate.txt"
printf '[detector]\ntiles = 2\n' >"$work/tiles.toml"
"$bin" replay media/vtest.avi --config "$work/tiles.toml" --tracks "$work/tiles.txt" \
    --tracks-label person >/dev/null 2>"$work/tiles-summary.txt"
row "Ocellus with \`detector.tiles = 2\`" "$work/tiles.txt"
tiles_ms=$(sed -n 's/.*detect \([0-9.]*\) ms.*/\1/p' "$work/tiles-summary.txt")
detect_ms=$(sed -n 's/.*detect \([0-9.]*\) ms.*/\1/p' "$work/summary.txt")
echo
echo "Tracking and event logic: $track_ms ms per frame (the replay summary's track+events)."
echo "Detector: $detect_ms ms per frame with one tile, $tiles_ms ms with two (the replay summary's detect)."

# The same build on the clip transformed four ways, the ground truth transformed with it: the
# defaults must not be tuned to one clip's geometry, frame rate, size or colours. Mirrored (people
# walk the other way, the scenery sits on the other side), every second frame (5 fps: twice the
# motion per frame), scaled to 0.75 (people ~60 px tall), and dusk (darker, washed-out colours,
# sensor noise: what a cheap camera gives at the end of the day).
variant() { # NAME FFMPEG_FILTER GT_TRANSFORM(python lambda over [frame,id,x,y,w,h,...])
    make_variant "$work" "$1" "$2" "$3"
    "$bin" replay "$work/$1.avi" "${cfg_args[@]}" --tracks "$work/$1.txt" --tracks-label person >/dev/null \
        2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    python3 bench/mot_eval.py "$work/$1.gt" "$work/$1.txt" --row "$1"
}
echo
echo "The same build on the clip transformed, its ground truth transformed alike (\`ffmpeg -vf\`):"
echo
echo "| footage | person events | on people | on nothing | people with an event | events per person | IDF1 | MOTA | ID switches |"
echo "|---|---|---|---|---|---|---|---|---|"
variant "mirrored (hflip)" hflip 'lambda r: r[:2] + [768 - r[2] - r[4]] + r[3:]'
variant "5 fps (every second frame)" fps=5 \
    'lambda r: None if (r[0] - 1) % 2 else [(r[0] - 1) // 2 + 1] + r[1:]'
variant "scaled to 0.75 (576x432)" scale=576:432 \
    'lambda r: r[:2] + [v * 0.75 for v in r[2:6]] + r[6:]'
variant "dusk (darker, 60 % saturation, noise)" \
    "eq=brightness=-0.08:saturation=0.6:gamma=0.85,noise=alls=6:allf=t" 'lambda r: r'
variant "monochrome (an infrared camera at night)" "format=gray,format=yuv420p" 'lambda r: r'
