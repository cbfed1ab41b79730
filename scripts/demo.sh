#!/usr/bin/env bash
# The demo: replays the sample street clip through the whole pipeline (FastestDet on every frame)
# and prints the events it finds. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
exec target/release/ocellus replay media/vtest.avi --db ocellus-demo.db "$@"
