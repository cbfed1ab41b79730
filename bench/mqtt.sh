#!/usr/bin/env bash
# Event messages through MQTT to a Mosquitto on this machine (examples/mqtt_bench.rs): the
# backlog an outage leaves drained by a daemon that connects, and messages published as they
# are written. Prints a Markdown section; bench/run.sh puts it in BENCHMARKS.md.
#   bench/mqtt.sh [RUNS] [N]     (defaults 3 and 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
n=${2:-20000}
command -v mosquitto >/dev/null || OCELLUS_SETUP_TESTS=1 scripts/setup.sh >/dev/null
cargo build --release --locked --bin ocellus --example mqtt_bench 2>&1 | tail -1 >&2
work=$(mktemp -d)
chmod 777 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No limit on what the broker queues for a slow subscriber (its default drops past 1000).
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
declare -A rate
for _ in $(seq "$runs"); do
    for mode in backlog live; do
        line=$(target/release/examples/mqtt_bench "$port" "$mode" "$n")
        echo "$line" >&2
        rate[$mode]+="$(echo "$line" | sed -n 's/.* = \([0-9]*\) messages\/s.*/\1/p') "
    done
done
stats() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(f"{s.median(v):.0f} ({min(v):.0f}-{max(v):.0f})")' "$@"; }
echo "## MQTT: event messages to a local Mosquitto"
echo
echo "\`bench/mqtt.sh $runs $n\`: Mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/mosquitto version \([0-9.]*\).*/\1/p' | head -1) on loopback, QoS 1, $n event messages of ~450 bytes, counted by a"
echo "subscriber from the first to the last. Median (min-max) over $runs runs."
echo
echo "| what | messages/s | command |"
echo "|---|---|---|"
echo "| backlog drain: $n messages waiting in the outbox (an outage) when the daemon connects | $(stats ${rate[backlog]}) | \`target/release/examples/mqtt_bench PORT backlog $n\` |"
echo "| live: the daemon connected, $n messages written to its outbox as fast as SQLite takes them | $(stats ${rate[live]}) | \`target/release/examples/mqtt_bench PORT live $n\` |"
