#!/usr/bin/env bash
# Event truth on the sample clip against its public ground truth (PETS09-S2L1): Ocellus with the
# default config, and Frigate's tracker and event rule on the same detections, scored the same
# way by bench/mot_eval.py. Prints a Markdown section; bench/run.sh puts it in BENCHMARKS.md.
#
#   bench/event_truth.sh [path/to/ocellus]
#
# Needs py-motmetrics and norfair (pip, pinned below; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/ocellus}
gt=media/pets09-s2l1/gt.txt
scripts/setup.sh --assets >/dev/null
python3 -c 'import motmetrics, norfair' 2>/dev/null ||
    pip install -q --disable-pip-version-check motmetrics==1.4.0 norfair==2.3.0 >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" replay media/vtest.avi --json --tracks "$work/ocellus.txt" --tracks-label person \
    --trace "$work/trace.jsonl" >"$work/events.jsonl" 2>"$work/summary.txt"
python3 bench/frigate_tracker.py "$work/trace.jsonl" "$work/frigate.txt" 2>/dev/null
track_ms=$(sed -n 's/.*track+events \([0-9.]*\) ms.*/\1/p' "$work/summary.txt")

row() { python3 bench/mot_eval.py "$gt" "$2" --row "$1"; }

echo "## Event truth: media/vtest.avi against its public ground truth (PETS09-S2L1, 19 people)"
echo
echo "Default config, FastestDet. Scored by \`bench/mot_eval.py $gt TRACKS\`: py-motmetrics, IoU 0.5,"
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
echo
echo "Tracking and event logic: $track_ms ms per frame (the replay summary's track+events)."
