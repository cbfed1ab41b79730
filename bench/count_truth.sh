#!/usr/bin/env bash
# Counting truth: the crossings of eight counting lines (bench/count_lines.toml: vertical,
# horizontal, diagonal, short and long) that the public ground truth implies, against what
# `ocellus replay --counts` counts, on the sample clip and on copies of it transformed as
# bench/event_truth.sh makes them (the ground truth transformed alike). Prints a Markdown section;
# bench/run.sh puts it in BENCHMARKS.md.
#
#   bench/count_truth.sh [path/to/ocellus [CONFIG.toml]]
#
# With a config, its settings apply too (its cameras are replaced by the lines' camera). With
# COUNT_EXPLAIN=1, each clip's missed and extra crossings, with the person each belongs to
# (bench/count_explain.py), go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/ocellus}
gt=media/pets09-s2l1/gt.txt
scripts/setup.sh --assets >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The lines, with the optional config's other tables in front; and mirrored (x -> 1 - x).
config() { # LINES.toml -> config path
    local out="$work/$(basename "$1" .toml)-config.toml"
    { [ -z "${2:-}" ] || grep -v '^\s*#' "$2" | sed '/^\[\[cameras/,$d'; cat "$1"; } >"$out"
    echo "$out"
}
python3 - bench/count_lines.toml "$work/mirrored-lines.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def flip(m):
    return f"[{1 - float(m.group(1)):g}, {m.group(2)}]"
open(sys.argv[2], "w").write(re.sub(r"\[([0-9.]+), ([0-9.]+)\]", flip, text))
PY
lines=$(config bench/count_lines.toml "${2:-}")
mirrored=$(config "$work/mirrored-lines.toml" "${2:-}")

count() { # VIDEO CONFIG OUT.csv
    "$bin" replay "$1" --config "$2" --counts "$3" --tracks "$3.tracks" >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; exit 1; }
}
explain() { # GT CONFIG WIDTH HEIGHT FPS OUT.csv NAME
    [ "${COUNT_EXPLAIN:-}" = 1 ] || return 0
    echo "== $7" >&2
    python3 bench/count_explain.py "$1" "$2" "$3" "$4" "$5" "$6.tracks" >&2
}
count media/vtest.avi "$lines" "$work/vtest.csv"

echo "## Counting truth: eight lines across the sample clip against its ground truth"
echo
echo "\`bench/count_truth.sh\`: the lines of bench/count_lines.toml on media/vtest.avi. Ground truth: each"
echo "of the 19 people's bottom-centre path in PETS09-S2L1's gt.txt through the rule of src/pipeline/zones.rs"
echo "(bench/count_truth.py: a side counts a tenth of the box height off the line, a crossing once the"
echo "point has stayed 200 ms on the other side). Ocellus: \`$bin replay VIDEO --config LINES --counts"
echo "FILE.csv\` with the default config (NanoDet-g), every crossing of an object with an event."
echo
python3 bench/count_truth.py "$gt" "$lines" 768 576 10 "$work/vtest.csv"
echo
echo "The same lines on copies of the clip, the ground truth transformed alike (the mirrored copy"
echo "with the lines mirrored too: its ground truth is the clip's with the directions swapped):"
echo
echo "| footage | ground-truth crossings | Ocellus | total error | worst line and direction | worst line, both ways |"
echo "|---|---|---|---|---|---|"
python3 bench/count_truth.py "$gt" "$lines" 768 576 10 "$work/vtest.csv" --row "vtest.avi"
explain "$gt" "$lines" 768 576 10 "$work/vtest.csv" "vtest.avi"
variant() { # NAME FFMPEG_FILTER GT_TRANSFORM WIDTH HEIGHT FPS LINES
    make_variant "$work" "$1" "$2" "$3"
    count "$work/$1.avi" "$7" "$work/$1.csv"
    python3 bench/count_truth.py "$work/$1.gt" "$7" "$4" "$5" "$6" "$work/$1.csv" --row "$1"
    explain "$work/$1.gt" "$7" "$4" "$5" "$6" "$work/$1.csv" "$1"
}
variant "mirrored (hflip)" hflip 'lambda r: r[:2] + [768 - r[2] - r[4]] + r[3:]' 768 576 10 "$mirrored"
variant "5 fps (every second frame)" fps=5 \
    'lambda r: None if (r[0] - 1) % 2 else [(r[0] - 1) // 2 + 1] + r[1:]' 768 576 5 "$lines"
variant "scaled to 0.75 (576x432)" scale=576:432 \
    'lambda r: r[:2] + [v * 0.75 for v in r[2:6]] + r[6:]' 576 432 10 "$lines"
variant "dusk (darker, 60 % saturation, noise)" \
    "eq=brightness=-0.08:saturation=0.6:gamma=0.85,noise=alls=6:allf=t" 'lambda r: r' 768 576 10 "$lines"
variant "monochrome (an infrared camera at night)" "format=gray,format=yuv420p" 'lambda r: r' 768 576 10 "$lines"
