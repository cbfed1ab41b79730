#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md: machine, versions, and for each row the command,
# the median and the min-max over RUNS runs. The machines here are shared and noisy, so compare
# the ratios within one run of this script.
#   bench/run.sh [RUNS]        (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
scripts/setup.sh >/dev/null
. bench/lib.sh
apt_need python3-opencv python3-websockets
cargo build --release --locked --bins --examples 2>&1 | tail -1
bin=target/release/ocellus
out=$(mktemp -d)
trap 'rm -rf "$out"; [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true' EXIT

# stats NAME VALUES... -> "median (min-max)"
stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.1f} ({min(v):.1f}-{max(v):.1f})")' "$@"; }

row() { printf '| %s | %s | `%s` |\n' "$1" "$2" "$3"; }

# start_daemon NAME CMD... : starts a server that prints its address on stdout; sets $daemon to its
# pid and $addr to its host:port once it listens.
start_daemon() {
    local name=$1; shift
    "$@" > "$out/$name.out" 2>/dev/null &
    daemon=$!
    for _ in $(seq 100); do grep -q listening "$out/$name.out" 2>/dev/null && break; sleep 0.1; done
    addr=$(sed -n 's#.*listening on \(http://\)\{0,1\}\([0-9.:]*\).*#\2#p' "$out/$name.out")
}
stop_daemon() { kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""; }

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
measure ocellus "$bin" replay media/vtest.avi --config models/fastestdet/model.toml --every-frame --encode-frames
measure ocellus_noenc "$bin" replay media/vtest.avi --config models/fastestdet/model.toml --every-frame
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
source = "$PWD/media/vtest.avi"
TOML
start_daemon fanout "$bin" run --config "$cfg" --listen 127.0.0.1:0
fan=()
for n in 1 10 100; do
    fan+=("$(target/release/examples/ws_load "$addr" street "$n" 20 0 "$daemon" --detections)")
    echo "${fan[-1]}"
done
stop_daemon

echo "== fan-out cost: Ocellus (detector and motion off), Python websockets, the raw-send limit"
bench/fanout.sh "$runs" > "$out/fanout"; cat "$out/fanout"

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$daemon/smaps_rollup"; }
mib() { echo $(($1 / 1024)); }
printf '[storage]\npath = "%s"\n' "$out/idle.db" > "$out/idle.toml"

# idle_floor BIN -> "RSS x MiB (file-backed y, anonymous z), n shared libraries": the daemon with no
# camera, 5 s after start.
idle_floor() {
    rm -f "$out"/idle.db*
    start_daemon idle "$1" run --config "$out/idle.toml" --listen 127.0.0.1:0
    sleep 5
    local libs
    libs=$(awk '$6 ~ /\.so/ {print $6}' "/proc/$daemon/maps" | sort -u | wc -l)
    echo "RSS $(mib "$(kib Rss)") MiB (file-backed $(mib "$(kib Pss_File)"), anonymous $(mib "$(kib Pss_Anon)")), $libs shared libraries"
    stop_daemon
}

# mem_run BIN SECS -> two lines: the RSS series summary, and the split at the end. One camera
# (detection on), 10 clients at full size; RSS sampled every 30 s.
mem_run() {
    rm -f "$out"/fanout.db*
    start_daemon mem "$1" run --config "$cfg" --listen 127.0.0.1:0
    target/release/examples/ws_load "$addr" street 10 "$2" 0 "$daemon" > "$out/mem.load" &
    local load=$! series=() t
    for t in $(seq 30 30 "$2"); do
        sleep 30
        series+=("$t:$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")")
    done
    wait $load
    python3 - "${series[@]}" <<'PY'
import sys
pts = [(int(t), int(k)) for t, k in (a.split(":") for a in sys.argv[1:])]
first = next((k for t, k in pts if t >= 60), pts[0][1])
last = pts[-1][1]
ks = [k for t, k in pts if t >= 60] or [last]
print(f"RSS at 60 s {first/1024:.1f} MiB, at {pts[-1][0]} s {last/1024:.1f} MiB (min {min(ks)/1024:.1f}, max {max(ks)/1024:.1f}); growth {(last-first)/1024:+.1f} MiB; samples (s:KiB) {' '.join(sys.argv[1:])}")
PY
    echo "at the end: anonymous memory (the process's own) $(mib "$(kib Pss_Anon)") MiB, file-backed (shared libraries) $(mib "$(kib Pss_File)") MiB"
    stop_daemon
}

echo "== memory: Debian's OpenCV"
mem_secs=${OCELLUS_BENCH_MEM_SECS:-600}
# Called with a redirection, not in $(...), so the daemon they start is this shell's $daemon and
# the EXIT trap stops it if the run is interrupted.
idle_floor "$bin" > "$out/idle_deb"; idle_deb=$(cat "$out/idle_deb"); echo "$idle_deb"
mem_run "$bin" "$mem_secs" > "$out/mem_deb"; mapfile -t mem_deb < "$out/mem_deb"; printf '%s\n' "${mem_deb[@]}"

echo "== memory: OpenCV built with only the modules Ocellus uses"
echo "(bench/minimal-opencv.sh: about 25 minutes the first time, then reused)"
if ! min_bin=$(bench/minimal-opencv.sh 2> "$out/minimal-opencv.log"); then
    tail -30 "$out/minimal-opencv.log"; exit 1
fi
min_bin=${min_bin#"$PWD/"}
min_secs=${OCELLUS_BENCH_MIN_SECS:-300}
idle_floor "$min_bin" > "$out/idle_min"; idle_min=$(cat "$out/idle_min"); echo "$idle_min"
mem_run "$min_bin" "$min_secs" > "$out/mem_min"; mapfile -t mem_min < "$out/mem_min"; printf '%s\n' "${mem_min[@]}"

echo "== event truth against the ground truth"
bench/event_truth.sh "$bin" > "$out/event_truth"; cat "$out/event_truth"

echo "== counting truth against the ground truth"
bench/count_truth.sh "$bin" > "$out/count_truth"; cat "$out/count_truth"
bench/counts_size.sh "$bin" > "$out/counts_size"; cat "$out/counts_size"

echo "== models against the ground truth"
bench/models.sh "$bin" > "$out/models"; cat "$out/models"

echo "== detector runtimes"
bench/runtime.sh "$runs" > "$out/runtime"; cat "$out/runtime"

echo "== MQTT"
bench/mqtt.sh "$runs" > "$out/mqtt"; cat "$out/mqtt"

echo "== fleet view"
bench/fleet.sh > "$out/fleet"; cat "$out/fleet"

echo "== cameras per box"
{
    echo "## Cameras per box: bench/cameras.sh"
    echo
    echo "N street-clip cameras at 10 fps in one daemon until the slowest falls below 9.5 fps or the"
    echo "box passes 90 %; default model, then FastestDet (\`bench/cameras.sh $bin 20 [MODEL_TOML]\`)."
    echo
    bench/cameras.sh "$bin" 20
    echo
    bench/cameras.sh "$bin" 20 models/fastestdet/model.toml
} > "$out/cameras"; cat "$out/cameras"

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
row "Ocellus replay: decode, motion, DNN, tracking, events + SQLite, JPEG of every frame" "$(stats ${fps[ocellus]})" "$bin replay media/vtest.avi --config models/fastestdet/model.toml --every-frame --encode-frames"
row "Ocellus replay without the per-frame JPEG" "$(stats ${fps[ocellus_noenc]})" "$bin replay media/vtest.avi --config models/fastestdet/model.toml --every-frame"
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
row "batched (writer thread, one transaction per 50 ms / 4096 writes)" "$(stats $ingest_b)" "target/release/examples/db_ingest 200000"
row "one transaction per event (same file settings: WAL, synchronous=FULL)" "$(stats $ingest_s)" "(same command)"
echo
echo "## WebSocket fan-out: full-size frames (768x576) and events, 20 s per row, one run each"
echo
echo "Load generator: \`target/release/examples/ws_load ADDR street N 20 0 DAEMON_PID --detections\` against"
echo "\`$bin run\` on the street clip (10 fps), detection on. Each client subscribes to the frames, the events"
echo "and the detections. \"latency\" is capture to client for frames (frame header timestamp); frames are"
echo "streamed from capture, in parallel with detection. \"boxes\" is capture to client for the frame's"
echo "detections message, so it includes motion and the DNN."
echo
echo '```'
printf '%s\n' "${fan[@]}"
echo '```'
echo
cat "$out/fanout"
echo
echo "## Memory: one camera (detection on), 10 clients at full size"
echo
echo "Load: \`target/release/examples/ws_load ADDR street 10 SECS 0 DAEMON_PID\`; RSS sampled every 30 s from"
echo "/proc; the split at the end from smaps_rollup. The floor is the daemon with no camera, 5 s after start."
echo
echo "With Debian's OpenCV ($(pkg-config --modversion opencv4), \`$bin\`), ${mem_secs} s:"
echo
echo "- floor: $idle_deb"
echo "- ${mem_deb[0]}"
echo "- ${mem_deb[1]}"
echo
echo "Debian's OpenCV packages link GDAL, GDCM, Poppler, GStreamer, FFmpeg and more into imgcodecs and"
echo "videoio, and the dynamic loader maps and initialises all of them in any process that links OpenCV."
echo
echo "With OpenCV 4.6.0 built with only the modules Ocellus uses (core, imgproc, imgcodecs with JPEG"
echo "and PNG, videoio with FFmpeg and V4L2, dnn, video, objdetect), as an embedded image builds it:"
echo "\`bench/minimal-opencv.sh\` builds it and Ocellus against it (\`$min_bin\`), ${min_secs} s:"
echo
echo "- floor: $idle_min"
echo "- ${mem_min[0]}"
echo "- ${mem_min[1]}"
echo
cat "$out/event_truth"
echo
cat "$out/count_truth"
echo
cat "$out/counts_size"
echo
cat "$out/models"
echo
cat "$out/runtime"
echo
cat "$out/mqtt"
echo
cat "$out/fleet"
echo
cat "$out/cameras"
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
