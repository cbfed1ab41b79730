#!/usr/bin/env bash
# Two builds of the daemon side by side, in one run, for a change that must not cost speed or
# memory (a refactor): default-config replay of media/vtest.avi (fps, peak RSS) and the live
# daemon on the clip at its 10 fps (CPU per processed frame, RSS), interleaved round by round so
# that a noisy neighbour hits both alike. Prints a Markdown section.
#
#   bench/compare.sh OLD_BINARY NEW_BINARY [RUNS] [LIVE_SECS]     (defaults 5 and 30)
#
# e.g. git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release) then
#   bench/compare.sh /tmp/old/target/release/ocellus target/release/ocellus
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
old=${1:?usage: bench/compare.sh OLD_BINARY NEW_BINARY [RUNS] [LIVE_SECS]}
new=${2:?usage: bench/compare.sh OLD_BINARY NEW_BINARY [RUNS] [LIVE_SECS]}
runs=${3:-5}
live_secs=${4:-30}
scripts/setup.sh --assets >/dev/null
out=$(mktemp -d)
daemon=""
trap 'rm -rf "$out"; [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true' EXIT

stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.1f} ({min(v):.1f}-{max(v):.1f})")' "$@"; }
ratio() { python3 -c 'import sys,statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f"{s.median(b)/s.median(a):.3f}")' "$1" "$2"; }

replay() { # BINARY -> "fps rss_mib"
    /usr/bin/time -f "rss %M" "$1" replay media/vtest.avi 2>"$out/replay.err" >/dev/null
    local f r
    f=$(sed -n 's/.* \([0-9.]*\) fps processed.*/\1/p' "$out/replay.err")
    r=$(sed -n 's/^rss \([0-9]*\)$/\1/p' "$out/replay.err")
    echo "$f $((r / 1024))"
}

live() { # BINARY -> "cpu_ms_per_frame rss_mib" (bench/lib.sh's live_cost, default config)
    local c f r
    read -r c f r < <(live_cost "$1" "$out" "$live_secs")
    echo "$c $r"
}

declare -A fps rss cpu lrss
for i in $(seq "$runs"); do
    for b in old new; do
        bin=$old; [ $b = new ] && bin=$new
        read -r f r < <(replay "$bin")
        fps[$b]+="$f "; rss[$b]+="$r "
    done
    echo "round $i: replay fps old ${fps[old]}/ new ${fps[new]}" >&2
done
live_rounds=$(( runs < 2 ? runs : 2 ))
for i in $(seq "$live_rounds"); do
    for b in old new; do
        bin=$old; [ $b = new ] && bin=$new
        read -r c r < <(live "$bin")
        cpu[$b]+="$c "; lrss[$b]+="$r "
    done
    echo "live round $i: CPU ms/frame old ${cpu[old]}/ new ${cpu[new]}" >&2
done

row() { printf '| %s | %s | %s | %s |\n' "$@"; }
echo "\`bench/compare.sh OLD NEW $runs $live_secs\`: default config (NanoDet-g on ONNX Runtime), median (min-max);"
echo "replays interleaved, $runs each; live runs interleaved, $live_rounds each, ${live_secs} s after 10 s of warm-up."
echo
echo "| what | old | new | new / old |"
echo "|---|---|---|---|"
row "replay of vtest.avi: fps" "$(stats ${fps[old]})" "$(stats ${fps[new]})" "$(ratio "${fps[old]}" "${fps[new]}")"
row "... peak RSS, MiB" "$(stats ${rss[old]})" "$(stats ${rss[new]})" "$(ratio "${rss[old]}" "${rss[new]}")"
row "live daemon on the clip at 10 fps: CPU ms per processed frame" "$(stats ${cpu[old]})" "$(stats ${cpu[new]})" "$(ratio "${cpu[old]}" "${cpu[new]}")"
row "... RSS at the end, MiB" "$(stats ${lrss[old]})" "$(stats ${lrss[new]})" "$(ratio "${lrss[old]}" "${lrss[new]}")"
