#!/usr/bin/env bash
# Cameras per box: N copies of the street clip as 10 fps cameras in one daemon, N rising until a
# camera's processed rate falls below its capture rate (9.5 of 10 fps, the slowest camera) or
# the box's CPU passes 90 % of its cores. Prints a Markdown section; bench/run.sh puts it in
# BENCHMARKS.md.
#
#   bench/cameras.sh [BINARY [SECS [MODEL_TOML [DETECTOR_LINES]]]]
#
# BINARY: target/release/ocellus; SECS: 20 s measured per N after 10 s of warm-up; MODEL_TOML:
# the default model, or the [detector] of e.g. models/fastestdet/model.toml; DETECTOR_LINES:
# more [detector] settings (e.g. "fps = 0"); CAMERAS="4 16" runs those N only. Per N: the
# slowest camera's processed fps, the box's CPU (all threads, % of one core), CPU per
# camera-frame, the stages' wall time per frame
# (ocellus_stage_seconds_total: time on a core or waiting for one, so they add up to more than
# the CPU under load), the share of frames the detector ran on, RSS per camera.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/ocellus}
secs=${2:-20}
model_toml=${3:-}
extra=${4:-}
cores=$(nproc)
scripts/setup.sh --assets >/dev/null
work=$(mktemp -d)
daemon=""
trap '[ -n "$daemon" ] && kill "$daemon" 2>/dev/null; rm -rf "$work"' EXIT

model=$(model_lines "$model_toml")

# sample ADDR -> JSON of the counters (CPU ticks of the daemon, per-camera processed, per-stage
# seconds and runs summed over the cameras, detector runs).
sample() {
    curl -fsS "http://$1/metrics" | python3 -c '
import json, re, sys
ticks = sum(int(v) for v in open("/proc/'"$daemon"'/stat").read().rsplit(")", 1)[1].split()[11:13])
out = {"ticks": ticks, "processed": {}, "stage": {}, "runs": 0}
for line in sys.stdin:
    m = re.match(r"(\w+)\{([^}]*)\} ([0-9.e+-]+)$", line.strip())
    if not m:
        continue
    name, labels, v = m.group(1), dict(re.findall(r"(\w+)=\"([^\"]*)\"", m.group(2))), float(m.group(3))
    if name == "ocellus_frames_processed_total":
        out["processed"][labels["camera"]] = v
    elif name == "ocellus_stage_seconds_total":
        out["stage"][labels["stage"]] = out["stage"].get(labels["stage"], 0) + v
    elif name == "ocellus_detector_runs_total":
        out["runs"] += v
print(json.dumps(out))'
}

# run N -> one table row (and "stop" on stderr when the box is full).
run() {
    local n=$1
    rm -f "$work"/live.db*
    {
        printf '[storage]\npath = "%s/live.db"\n[detector]\n%s\n%s\n' "$work" "$model" "$extra"
        for i in $(seq "$n"); do
            printf '[[cameras]]\nid = "street%d"\nsource = "%s/media/vtest.avi"\n' "$i" "$PWD"
        done
    } >"$work/live.toml"
    "$bin" run --config "$work/live.toml" --listen 127.0.0.1:0 >"$work/live.out" 2>&1 &
    daemon=$!
    for _ in $(seq 300); do grep -q listening "$work/live.out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's#.*listening on \(http://\)\{0,1\}\([0-9.:]*\).*#\2#p' "$work/live.out" | head -1)
    sleep 10
    sample "$addr" >"$work/a.json"
    sleep "$secs"
    sample "$addr" >"$work/b.json"
    local rss_kib
    rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
    kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
    python3 - "$work/a.json" "$work/b.json" "$n" "$secs" "$rss_kib" "$(getconf CLK_TCK)" "$cores" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
n, secs, rss_kib, tck, cores = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
fps = [(b["processed"][c] - a["processed"].get(c, 0)) / secs for c in b["processed"]]
frames = sum(b["processed"][c] - a["processed"].get(c, 0) for c in b["processed"])
cpu_ms = (b["ticks"] - a["ticks"]) * 1000 / tck
cpu_pct = cpu_ms / secs / 10
stage = {s: (b["stage"][s] - a["stage"].get(s, 0)) * 1000 / frames for s in b["stage"]}
runs = (b["runs"] - a["runs"]) / frames
print(f"| {n} | {min(fps):.1f} | {cpu_pct:.0f} % | {cpu_ms / frames:.1f} | "
      f"{stage.get('decode', 0):.1f} / {stage.get('motion', 0):.1f} / {stage.get('detect', 0):.1f} / {stage.get('track', 0):.1f} | "
      f"{runs * 100:.0f} % | {rss_kib / 1024 / n:.0f} |")
if min(fps) < 9.5 or cpu_pct > 90 * cores:
    print("stop", file=sys.stderr)
PY
}

echo "| cameras | slowest camera, fps | box CPU (of $((cores * 100)) %) | CPU ms per camera-frame | wall ms per frame: decode / motion / detect / track | frames detected | RSS MiB per camera |"
echo "|---|---|---|---|---|---|---|"
for n in ${CAMERAS:-1 2 4 6 8 10 12 14 16 20 24 32}; do
    if ! run "$n" 2>"$work/stop"; then
        cat "$work/live.out" >&2
        exit 1
    fi
    if grep -q stop "$work/stop"; then
        break
    fi
done
