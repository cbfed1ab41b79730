# Shared by the bench scripts (source it from the repository root, with $out or $work set).

# apt_need PKG... : installs the Debian packages that are missing (with sudo when not root).
apt_need() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# model_lines [MODEL_TOML] -> the [detector] lines of a model.toml (family, files, input size,
# score), its file paths made absolute; nothing without an argument (the default model).
model_lines() {
    [ -n "${1:-}" ] || return 0
    grep -E '^(family|model|labels|input_width|input_height|min_score) =' "$1" |
        sed "s#^\(model\|labels\) = \"#\1 = \"$PWD/$(dirname "$1")/#"
}

# live_cost BINARY OUT_DIR LIVE_SECS [DETECTOR_TOML_LINES] -> "cpu_ms_per_frame fps rss_mib":
# the daemon on the street clip (a file source plays at its 10 fps, looping), default config
# plus the given [detector] lines, no client; CPU (user + system, all threads) over the frames
# processed between two /api/stats readings LIVE_SECS apart, after 10 s of warm-up; RSS at the
# end. Sets $daemon while it runs, for the caller's EXIT trap.
live_cost() {
    local bin=$1 dir=$2 secs=$3 detector=${4:-}
    rm -f "$dir"/live.db*
    cat > "$dir/live.toml" <<TOML
[storage]
path = "$dir/live.db"
[detector]
$detector
[[cameras]]
id = "street"
source = "$PWD/media/vtest.avi"
TOML
    "$bin" run --config "$dir/live.toml" --listen 127.0.0.1:0 > "$dir/live.out" 2>/dev/null &
    daemon=$!
    for _ in $(seq 100); do grep -q listening "$dir/live.out" 2>/dev/null && break; sleep 0.1; done
    local addr
    addr=$(sed -n 's#.*listening on \(http://\)\{0,1\}\([0-9.:]*\).*#\2#p' "$dir/live.out")
    sleep 10
    _live_sample() { # -> "cpu_ticks processed"
        local ticks processed
        ticks=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
        processed=$(curl -fsS "http://$addr/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cameras"][0]["processed"])')
        echo "$ticks $processed"
    }
    local t0 p0 t1 p1 rss_kib
    read -r t0 p0 < <(_live_sample)
    sleep "$secs"
    read -r t1 p1 < <(_live_sample)
    rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
    kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
    python3 -c "d=$p1-$p0; print(f'{($t1-$t0)*1000/$(getconf CLK_TCK)/d:.2f} {d/$secs:.1f} {$rss_kib/1024:.0f}')"
}

# make_variant DIR NAME FFMPEG_FILTER GT_TRANSFORM [CODEC...]: DIR/NAME.avi, the sample clip
# through the filter (MJPEG unless a codec is given), and DIR/NAME.gt, its ground truth through
# the transform (a Python lambda over a row [frame, id, x, y, w, h, ...]; None drops the row).
make_variant() {
    local dir=$1 name=$2 filter=$3 transform=$4
    shift 4
    local codec=("$@")
    [ ${#codec[@]} -gt 0 ] || codec=(-c:v mjpeg -q:v 2)
    ffmpeg -v error -y -i media/vtest.avi -vf "$filter" "${codec[@]}" "$dir/$name.avi"
    python3 - media/pets09-s2l1/gt.txt "$dir/$name.gt" "$transform" <<'PY'
import sys
src, dst, f = sys.argv[1], sys.argv[2], eval(sys.argv[3])
with open(src) as i, open(dst, "w") as o:
    for line in i:
        r = line.strip().split(",")
        if len(r) < 6:
            continue
        r = f([float(v) for v in r])
        if r:
            o.write(",".join(f"{v:g}" for v in r) + "\n")
PY
}
