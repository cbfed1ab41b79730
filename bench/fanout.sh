#!/usr/bin/env bash
# WebSocket fan-out cost: Ocellus against a Python `websockets` broadcaster and against the
# raw-send limit (bench/py_broadcast.py --raw: each frame built once and handed to every
# client's socket as it is), at 10 and 100 clients on full-size frames and 1,000 clients on the
# 320 px thumbnail stream, interleaved, in one run. All three read the street clip at 10 fps and
# JPEG-encode each frame once; Ocellus runs with the detector and motion off so that all three do
# the same work. Prints a Markdown section; bench/run.sh puts it in BENCHMARKS.md.
#   bench/fanout.sh [RUNS] [SECS] [OTHER_OCELLUS_BINARY]   (defaults 3 and 20)
# With a second binary (an earlier build, say) it is measured the same way, in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
secs=${2:-20}
other=${3:-}
. bench/lib.sh
apt_need python3-opencv python3-websockets
cargo build --release --locked --bin ocellus --example ws_load 2>&1 | tail -1 >&2
# A thousand clients are a thousand sockets on each side.
ulimit -n 8192
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# start NAME CMD... : a server that prints "listening on [http://]HOST:PORT"; sets
# addr_NAME and pid_NAME.
start() {
    local name=$1; shift
    "$@" > "$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    printf -v "pid_$name" %s $!
    for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
    printf -v "addr_$name" %s "$(sed -n 's#.*listening on \(http://\)\{0,1\}\([0-9.:]*\).*#\2#p' "$work/$name.out")"
}
ocellus_config() { # NAME -> path of a config with the detector and motion off
    cat > "$work/$1.toml" <<TOML
[server]
max_clients = 1100
[storage]
path = "$work/$1.db"
[detector]
kind = "none"
[motion]
enabled = false
[[cameras]]
id = "street"
source = "$PWD/media/vtest.avi"
TOML
    echo "$work/$1.toml"
}

servers=(ocellus)
start ocellus target/release/ocellus run --config "$(ocellus_config ocellus)" --listen 127.0.0.1:0
if [ -n "$other" ]; then
    servers=(other "${servers[@]}")
    start other "$other" run --config "$(ocellus_config other)" --listen 127.0.0.1:0
fi
# The Python servers scale frames themselves, so each row has its own pair.
for w in 0 320; do
    start "python$w" /usr/bin/python3 bench/py_broadcast.py media/vtest.avi --width "$w"
    start "raw$w" /usr/bin/python3 bench/py_broadcast.py media/vtest.avi --width "$w" --raw
done

# load SERVER CLIENTS WIDTH -> ws_load's line
load() {
    local server=$1 n=$2 width=$3 a p
    case $server in
        python | raw) a=addr_$server$width p=pid_$server$width; width=0 ;; # scaled by the server
        *) a=addr_$server p=pid_$server ;;
    esac
    target/release/examples/ws_load "${!a}" street "$n" "$secs" "$width" "${!p}"
}
# fields LINE -> "cpu_us_per_frame workers_us_per_frame p99_ms delivered_min_pct"
fields() {
    python3 -c '
import re, sys
t = sys.argv[1]
n = int(re.search(r"clients (\d+)", t)[1])
f = float(re.search(r"fps/client mean ([0-9.]+)", t)[1])
us = lambda pct: f"{float(pct) / 100 * 1e6 / (n * f):.1f}"
c = re.search(r"daemon cpu ([0-9.]+)%", t)[1]
w = re.search(r"workers cpu ([0-9.]+)%", t)
p99 = re.search(r"p99 (\d+) ms", t)[1]
share = re.search(r"delivered share min ([0-9.]+)%", t)[1]
print(us(c), us(w[1]) if w else "-", p99, share)' "$1"
}
declare -A cost work p99 share last
rows=("10 0" "100 0" "1000 320")
for row in "${rows[@]}"; do
    read -r n width <<< "$row"
    for _ in $(seq "$runs"); do
        for s in "${servers[@]}" python raw; do
            line=$(load "$s" "$n" "$width")
            echo "$s: $line" >&2
            read -r c w q d <<< "$(fields "$line")"
            k="$s/$n"
            cost[$k]+="$c " work[$k]+="$w " p99[$k]+="$q " share[$k]+="$d " last[$k]=$line
        done
    done
done

med() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.0f} ({min(v):.0f}-{max(v):.0f})")' "$@"; }
worst() { python3 -c 'import sys; f={"max":max,"min":min}[sys.argv[1]]; print(f"{f(float(x) for x in sys.argv[2:]):g}")' "$@"; }
ratio() { python3 -c 'import sys,statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f"{s.median(a)/s.median(b):.2f}x")' "$1" "$2"; }

echo "## WebSocket fan-out: Ocellus, a Python broadcaster and the raw-send limit"
echo
echo "\`bench/fanout.sh $runs $secs${other:+ OTHER_BINARY}\`. Each server reads the street clip at 10 fps, JPEG-encodes each frame"
echo "once (quality 75) and sends it to every client: Ocellus with \`[detector] kind = \"none\"\` and"
echo "\`[motion] enabled = false\`; \`/usr/bin/python3 bench/py_broadcast.py media/vtest.avi\` (websockets $(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)'),"
echo "\`websockets.broadcast\`); and the raw-send limit, the same script with \`--raw\`: each WebSocket frame"
echo "built once and written to every client's transport as it is. Thumbnail rows: Ocellus's 320 px"
echo "stream, the Python servers scaling to 320 px before encoding. Load: \`target/release/examples/ws_load ADDR"
echo "street CLIENTS $secs WIDTH PID\`, the servers measured in turn, $runs runs each. CPU per delivered frame ="
echo "the server process's CPU / (clients x frames per second per client), in µs, median (min-max);"
echo "\"fan-out\" is the same for Ocellus's tokio workers (\`ocellus-rt\`) alone, where the clients are"
echo "served: the rest of its CPU is capture and the one encode per frame, which the Python servers pay"
echo "too. p99 is capture to client, the worst of the runs; \"delivered\" the least share of frames any"
echo "client got of those sent in its span, worst run."
echo
head="| clients | stream |"
sep="|---|---|"
for s in "${servers[@]}"; do
    case $s in other) label="other build" ;; *) label="Ocellus" ;; esac
    head+=" $label µs per frame | fan-out | p99 ms | delivered |"
    sep+="---|---|---|---|"
done
head+=" Python µs per frame | p99 ms | raw-send µs per frame | Python / Ocellus | Ocellus / raw |"
sep+="---|---|---|---|---|"
echo "$head"
echo "$sep"
for row in "${rows[@]}"; do
    read -r n width <<< "$row"
    [ "$width" = 0 ] && stream="full (768x576)" || stream="${width} px"
    line="| $n | $stream |"
    for s in "${servers[@]}"; do
        k="$s/$n"
        line+=" $(med ${cost[$k]}) | $(med ${work[$k]}) | $(worst max ${p99[$k]}) | $(worst min ${share[$k]}) % |"
    done
    line+=" $(med ${cost[python/$n]}) | $(worst max ${p99[python/$n]}) | $(med ${cost[raw/$n]}) |"
    line+=" **$(ratio "${cost[python/$n]}" "${cost[ocellus/$n]}")** | $(ratio "${cost[ocellus/$n]}" "${cost[raw/$n]}") |"
    echo "$line"
done
echo
echo "Last run of each:"
echo
echo '```'
for row in "${rows[@]}"; do
    read -r n _ <<< "$row"
    for s in "${servers[@]}" python raw; do
        printf '%-8s %s\n' "$s:" "${last[$s/$n]}"
    done
done
echo '```'
