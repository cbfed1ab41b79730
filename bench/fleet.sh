#!/usr/bin/env bash
# The fleet view at scale (examples/fleet_load.rs): N simulated boxes, each its own MQTT
# connection to a Mosquitto on this machine, one event (a start and an end message) per second
# per device and a snapshot with every tenth, stats every minute; `ocellus fleet` stores them;
# a WebSocket client on the fleet view measures publish-to-fleet-client latency. 10, 100 and
# 1,000 devices, and a run past the fleet view's limit. Prints a Markdown section; bench/run.sh
# puts it in BENCHMARKS.md.
#   bench/fleet.sh [SECONDS]     (default 30 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
command -v mosquitto >/dev/null || OCELLUS_SETUP_TESTS=1 scripts/setup.sh >/dev/null
cargo build --release --locked --bin ocellus --example fleet_load 2>&1 | tail -1 >&2
# A thousand devices are a thousand sockets for the broker and for the generator.
ulimit -n 8192
work=$(mktemp -d)
chmod 777 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
# The fleet view's session: nothing dropped however far behind it falls (the default drops past
# 1000 queued messages), and enough in flight that acknowledging after each commit keeps up.
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 1000\nmax_connections -1\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker=$!
fleet=
trap 'kill $broker $fleet 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

run() { # devices rate
    rm -f "$work"/fleet.db*
    printf '[log]\nlevel = "warn"\n[storage]\npath = "%s/fleet.db"\n[mqtt]\nurl = "mqtt://127.0.0.1:%s"\ndevice_id = "bench"\n' "$work" "$port" > "$work/fleet.toml"
    target/release/ocellus fleet --config "$work/fleet.toml" --listen 127.0.0.1:0 > "$work/fleet.out" 2>"$work/fleet.err" &
    fleet=$!
    for _ in $(seq 100); do grep -q listening "$work/fleet.out" && break; sleep 0.1; done
    addr=$(sed -n 's|ocellus listening on http://\(.*\)/|\1|p' "$work/fleet.out")
    out=$(target/release/examples/fleet_load "$port" "$addr" "$1" "$seconds" "$2" "$fleet" 10 "$broker")
    echo "$out" >&2
    stored=$(python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute("select count(*) from events").fetchone()[0])' "$work/fleet.db")
    kill "$fleet"; wait "$fleet" 2>/dev/null || true
    fleet=
    pub=$(echo "$out" | sed -n 's/.*published [0-9]* (\([0-9]*\)\/s).*/\1/p')
    recv=$(echo "$out" | sed -n 's/.*received on .* (\([0-9]*\)\/s, \([0-9.]*\) %).*/\1 (\2 %)/p')
    lat=$(echo "$out" | sed -n 's/latency .*: p50 \([-0-9]*\) p90 \([-0-9]*\) p99 \([-0-9]*\) max \([-0-9]*\)/\1 \/ \3 \/ \4/p')
    cpu=$(echo "$out" | sed -n 's/fleet view: CPU \([0-9.]*\) % .*(\([0-9]*\) µs per event message), RSS \([0-9]*\) MiB (peak \([0-9]*\) MiB)/\1 % (\2 µs a message) | \4 MiB/p')
    others=$(echo "$out" | sed -n 's/others: broker CPU \(.*\) of one core, this generator \(.*\)/\1 \/ \2/p')
    echo "| $1 | $(python3 -c "print(f'{$1*$2:.0f}')") | $pub | $recv | $lat | $cpu | $stored | $others |"
}

echo "## Fleet view: many devices through one broker"
echo
echo "\`bench/fleet.sh $seconds\`: Mosquitto $(mosquitto -h 2>/dev/null | sed -n 's/mosquitto version \([0-9.]*\).*/\1/p' | head -1) on loopback, \`ocellus fleet\` (release) and"
echo "\`target/release/examples/fleet_load PORT ADDR DEVICES $seconds RATE PID 10 BROKER_PID\` on the same 2 cores: each"
echo "device its own MQTT connection, RATE events a second each (a start and an end message, QoS 1,"
echo "~400 bytes), a 320x240 JPEG snapshot with every tenth, stats every minute. Measured over $seconds s"
echo "after a 5 s warm-up; latency is from the device's publish to the fleet view's WebSocket"
echo "client (after the fleet's commit). Stored: events in the fleet database after the run."
echo
echo "| devices | events/s offered | event messages published/s | messages at the fleet's /ws per s (share) | latency p50 / p99 / max ms | fleet CPU (per message) | fleet peak RSS | events stored | broker / generator CPU |"
echo "|---|---|---|---|---|---|---|---|---|"
run 10 1
run 100 1
run 1000 1
run 1000 3
run 1000 6
