#!/usr/bin/env bash
# Soak: the release daemon on the looping street clip while 20 WebSocket clients connect and
# disconnect continuously; the daemon's RSS and open file descriptors are sampled every 10 s.
# Fails if the daemon dies, if clients stop being served, or if RSS or fds grow between the end
# of the warm-up (first quarter) and the end.
#
#   scripts/soak.sh [MINUTES] [CLIENTS]      (default 30 minutes, 20 clients)
#
# Writes target/soak/soak.csv and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
clients=${2:-20}
scripts/setup.sh --assets >/dev/null
cargo build --release --locked --bin ocellus --example ws_churn 2>&1 | tail -1
out=target/soak
rm -rf "$out" && mkdir -p "$out"
cat > "$out/soak.toml" <<TOML
[server]
max_clients = 64
[storage]
path = "$out/soak.db"
[[cameras]]
id = "street"
source = "$PWD/media/vtest.avi"
TOML
target/release/ocellus run --config "$out/soak.toml" --listen 127.0.0.1:0 > "$out/stdout" 2> "$out/stderr" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$out/stdout" && break; sleep 0.1; done
addr=$(sed -n 's|ocellus listening on https\?://\(.*\)/|\1|p' "$out/stdout")
echo "soak: daemon $daemon on $addr, $clients clients churning for $minutes min"
target/release/examples/ws_churn "$addr" street "$clients" $((minutes * 60)) "$daemon" | tee "$out/soak.csv"
kill -TERM $daemon
wait $daemon
python3 - "$out/soak.csv" <<'PY'
import csv, sys
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
warm = rows[len(rows) // 4]
last = rows[-1]
rss = [r["rss_kib"] for r in rows[len(rows) // 4:]]
fds = [r["fds"] for r in rows[len(rows) // 4:]]
print(f"soak: {last['t_s']} s, {last['sessions']} sessions, {last['frames']} frames, "
      f"{last['events']} event messages, {last['failures']} failed sessions")
print(f"soak: RSS after warm-up {warm['rss_kib'] / 1024:.1f} MiB, at the end {last['rss_kib'] / 1024:.1f} MiB, "
      f"range {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB")
print(f"soak: open fds after warm-up {warm['fds']}, at the end {last['fds']}, range {min(fds)}-{max(fds)}")
ok = (last["rss_kib"] - warm["rss_kib"] < 8 * 1024 and max(fds) - min(fds) <= 2 * 20 + 10
      and last["failures"] * 100 <= last["sessions"] and last["frames"] > 0)
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
