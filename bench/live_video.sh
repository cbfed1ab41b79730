#!/usr/bin/env bash
# Live video against live JPEG (issue 45): per viewer, bytes per second, and the daemon's CPU per
# delivered picture, at 1, 10 and 100 viewers, on two cameras: the street clip's H.264 copy as a
# file camera (768x576, 10 fps) and a 1280x720 25 fps H.264 RTSP camera (gst-rtsp-server serving
# the street clip scaled). The daemon runs with `[detector] kind = "none"` and motion off, so
# that what differs is the feed; the same camera and picture size for both kinds, in one run.
#   bench/live_video.sh [SECS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
. bench/lib.sh
apt_need ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0
cargo build --release --locked --bin ocellus --example ws_load 2>&1 | tail -1 >&2
ulimit -n 8192
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

cam720=$work/cam720.mp4
ffmpeg -loglevel error -y -i media/vtest.avi -vf scale=1280:720,fps=25 -c:v libx264 -preset veryfast \
    -g 50 -bf 0 -b:v 2M -pix_fmt yuv420p -an "$cam720"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/python3 tests/fixtures/rtsp_server.py --port "$port" --file "$cam720" > "$work/rtsp.out" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$work/rtsp.out" 2>/dev/null && break; sleep 0.1; done

# daemon NAME SOURCE -> starts it; sets $addr and $pid
daemon() {
    cat > "$work/$1.toml" <<TOML
[server]
max_clients = 200
[storage]
path = "$work/$1.db"
[detector]
kind = "none"
[motion]
enabled = false
[[cameras]]
id = "cam"
source = "$2"
[cameras.record]
mode = "off"
TOML
    target/release/ocellus run --config "$work/$1.toml" --listen 127.0.0.1:0 > "$work/$1.out" 2>"$work/$1.err" &
    pid=$!
    pids+=($pid)
    for _ in $(seq 100); do grep -q listening "$work/$1.out" 2>/dev/null && break; sleep 0.1; done
    addr=$(sed -n 's#.*listening on \(http://\)\{0,1\}\([0-9.:]*\).*#\2#p' "$work/$1.out")
    sleep 3 # the camera connected and past its first GOPs
}

echo "## Live video against live JPEG"
echo
echo "\`bench/live_video.sh $secs\`: the daemon with \`[detector] kind = \"none\"\`, motion off and recording"
echo "off; \`target/release/examples/ws_load ADDR cam CLIENTS $secs 0 PID [--video]\`, each row one"
echo "run of $secs s, JPEG and video interleaved on the same daemon. Bytes per second per viewer; the"
echo "daemon's CPU per delivered picture = its CPU time / pictures delivered to all viewers;"
echo "latency p99 from the picture's capture (JPEG) or the packet's arrival (video) to the client;"
echo "delivered: the least share of pictures any viewer got. \"beyond decoding\": the same CPU less what"
echo "the daemon spends with no viewer at all (reading and decoding the camera for detection, which"
echo "both feeds pay), measured on the same daemon just before. Pictures taken before a viewer's"
echo "measurement began (the GOP a joiner is sent first) are left out."
echo
echo "| camera | viewers | feed | KiB/s per viewer | daemon µs per delivered picture | beyond decoding | p99 ms | delivered |"
echo "|---|---|---|---|---|---|---|---|"
for camera in "street clip H.264 file, 768x576 10 fps|$PWD/media/vtest-h264.mp4" "RTSP 1280x720 25 fps|rtsp://127.0.0.1:$port/stream"; do
    label=${camera%%|*}
    daemon "d$RANDOM" "${camera#*|}"
    # CPU with no viewer, % of a core
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); sleep "$secs"; t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    idle=$(python3 -c "print(($t1 - $t0) / $(getconf CLK_TCK) / $secs * 100)")
    echo "$label: no viewer $idle % of a core" >&2
    for n in 1 10 100; do
        for kind in jpeg video; do
            flag=""
            [ "$kind" = video ] && flag=--video
            out=$(target/release/examples/ws_load "$addr" cam "$n" "$secs" 0 "$pid" $flag)
            echo "$label $kind $n: $out" >&2
            python3 - "$label" "$n" "$kind" "$out" "$idle" "$secs" <<'PY'
import re, sys
label, n, kind, out, idle, secs = sys.argv[1:]
kib = re.search(r"KiB/s per viewer (\d+)", out)[1]
us = re.search(r"per delivered picture ([0-9.]+) us", out)[1]
p99 = re.search(r"p99 (-?\d+) ms", out)[1]
share = re.search(r"delivered share min ([0-9.]+)%", out)[1]
cpu = float(re.search(r"daemon cpu ([0-9.]+)%", out)[1])
fps = float(re.search(r"fps/client mean ([0-9.]+)", out)[1])
beyond = (cpu - float(idle)) / 100 * 1e6 / (int(n) * fps)
print(f"| {label} | {n} | {kind} | {kib} | {float(us):.0f} | {beyond:.0f} | {p99} | {share} % |")
PY
        done
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
