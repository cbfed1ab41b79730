#!/usr/bin/env bash
# The demo: runs the daemon on the sample street clip (looping at its own 10 fps, the default
# NanoDet-g detector on every frame with motion or a moving track), with a counting line and a
# zone, and serves the dashboard, the API and the live feed on http://127.0.0.1:8080/.
# Installs what it needs first. Stop it with Ctrl-C.
#   Extra arguments go to `ocellus run`. Serving beyond loopback needs server.token in
#   config/demo.toml (or server.allow_no_token = true).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
echo "demo: open http://127.0.0.1:8080/ (API: /api/events, /api/stats, /metrics; feed: /ws)"
exec target/release/ocellus run --config config/demo.toml "$@"
