#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md: machine, versions, and for each row the command,
# the median and the min-max over RUNS runs. The machines here are shared and noisy, so compare
# the ratios within one run of this script.
#   bench/run.sh [RUNS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
scripts/setup.sh >/dev/null
dpkg-query -W -f='${Status}' python3-opencv 2>/dev/null | grep -q "install ok installed" || {
    [ "$(id -u)" -ne 0 ] && sudo=sudo || sudo=""
    $sudo apt-get install -y -qq --no-install-recommends python3-opencv >/dev/null
}
cargo build --release --locked --bins --examples 2>&1 | tail -1
bin=target/release/ocellus
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true' EXIT

# stats NAME VALUES... -> "median (min-max)"
stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.1f} ({min(v):.1f}-{max(v):.1f})")' "$@"; }

row() { printf '| %s | %s | `%s` |\n' "$1" "$2" "$3"; }

echo "== pipeline throughput ($runs runs each)"
declare -A fps
measure() { # KEY CMD... ; the command prints fps as its last number on a "fps" line
    local key=$1; shift
    local vals=()
    for _ in $(seq "$runs"); do
        vals+=("$("$@" 2>&1 | python3 -c 'import re,sys; t=sys.stdin.read(); m=re.findall(r"([0-9.]+) fps processed", t) or re.findall(r"^\S+ \d+ [0-9.]+ ([0-9.]+)$", t, re.M); print(m[-1])')")
    done
    fps[$key]="${vals[*]}"
    echo "$key: ${vals[*]}"
}
model=models/fastestdet/FastestDet.onnx
measure ocellus "$bin" replay media/vtest.avi --every-frame --encode-frames
measure ocellus_noenc "$bin" replay media/vtest.avi --every-frame
measure py_full /usr/bin/python3 bench/reference.py full media/vtest.avi "$model"
measure py_dnn /usr/bin/python3 bench/reference.py dnn media/vtest.avi "$model"
measure py_decode /usr/bin/python3 bench/reference.py decode media/vtest.avi "$model"
med() { python3 -c 'import sys,statistics as s; print(s.median(float(x) for x in sys.argv[1:]))' $1; }
ratio=$(python3 -c "print(f'{$(med "${fps[ocellus]}") / $(med "${fps[py_full]}"):.2f}')")

echo "== SQLite ingest"
ingest=()
for _ in $(seq "$runs"); do ingest+=("$(target/release/examples/db_ingest 200000)"); done
ingest_b=$(for l in "${ingest[@]}"; do echo "$l" | sed -n 's/.*= \([0-9]*\) events\/s (.*/\1/p'; done)
ingest_s=$(for l in "${ingest[@]}"; do echo "$l" | sed -n 's/.*per event: .* = \([0-9]*\) events\/s.*/\1/p'; done)

echo "== WebSocket fan-out"
cfg=$out/fanout.toml
cat > "$cfg" <<TOML
[server]
max_clients = 200
[storage]
path = "$out/fanout.db"
[[cameras]]
id = "street"
source = "media/vtest.avi"
TOML
"$bin" run --config "$cfg" --listen 127.0.0.1:0 > "$out/daemon.out" 2>/dev/null &
daemon=$!
for _ in $(seq 100); do grep -q listening "$out/daemon.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#ocellus listening on http://\(.*\)/#\1#p' "$out/daemon.out")
fan=()
for n in 1 10 100; do
    fan+=("$(target/release/examples/ws_load "$addr" street "$n" 20 0 "$daemon")")
    echo "${fan[-1]}"
done
kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""

{
echo "# Benchmarks"
echo
echo "Written by \`bench/run.sh $runs\` on $(date -u +%Y-%m-%d). Machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB,"
echo "$(lscpu | sed -n 's/Model name: *//p' | head -1); $(. /etc/os-release; echo "$PRETTY_NAME"); OpenCV $(pkg-config --modversion opencv4);"
echo "$(rustc --version); Python $(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])')."
echo "Shared, noisy machines: compare ratios within this run. Values: median (min-max) over $runs runs."
echo
echo "## Pipeline throughput: media/vtest.avi (795 frames, 768x576), FastestDet on every frame"
echo
echo "| what | fps | command |"
echo "|---|---|---|"
row "Ocellus replay: decode, motion, DNN, tracking, events + SQLite, JPEG of every frame" "$(stats ${fps[ocellus]})" "$bin replay media/vtest.avi --every-frame --encode-frames"
row "Ocellus replay without the per-frame JPEG" "$(stats ${fps[ocellus_noenc]})" "$bin replay media/vtest.avi --every-frame"
row "Python reference (python3-opencv): read, motion, DNN, decode, NMS, JPEG, serially" "$(stats ${fps[py_full]})" "/usr/bin/python3 bench/reference.py full media/vtest.avi $model"
row "limit: read + DNN only (Python)" "$(stats ${fps[py_dnn]})" "/usr/bin/python3 bench/reference.py dnn media/vtest.avi $model"
row "limit: read only (Python)" "$(stats ${fps[py_decode]})" "/usr/bin/python3 bench/reference.py decode media/vtest.avi $model"
echo
echo "Ocellus / Python reference (medians): **${ratio}x** (target 1.4x)."
echo
echo "## SQLite ingest through the writer"
echo
echo "| what | events/s | command |"
echo "|---|---|---|"
row "batched (writer thread, one transaction per 50 ms / 512 writes)" "$(stats $ingest_b)" "target/release/examples/db_ingest 200000"
row "one transaction per event (same file settings: WAL, synchronous=NORMAL)" "$(stats $ingest_s)" "(same command)"
echo
echo "## WebSocket fan-out: full-size frames (768x576) and events, 20 s per row, one run each"
echo
echo "Load generator: \`target/release/examples/ws_load ADDR street N 20 0 DAEMON_PID\` against"
echo "\`$bin run\` on the street clip (10 fps). Latency is capture to client (frame header timestamp)."
echo
echo '```'
printf '%s\n' "${fan[@]}"
echo '```'
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
