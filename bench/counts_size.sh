#!/usr/bin/env bash
# The size of the counts over time in the database: one camera with 3 counting lines, 2 zones and
# 2 labels, every series counting every minute (a busy camera), as the daemon's schema stores
# them: a day of minute buckets, and a year of hour buckets (what the rollup leaves). Prints a
# Markdown section; bench/run.sh puts it in BENCHMARKS.md.
#
#   bench/counts_size.sh [path/to/ocellus]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/ocellus}
work=$(mktemp -d)
daemon=""
trap '[ -z "$daemon" ] || kill "$daemon" 2>/dev/null; rm -rf "$work"' EXIT

# A database with the daemon's schema: the daemon creates it, with no camera.
size_of() { # ROWS_SPEC -> bytes of data
    rm -f "$work"/c.db*
    printf '[storage]\npath = "%s/c.db"\n' "$work" >"$work/c.toml"
    "$bin" run --config "$work/c.toml" --listen 127.0.0.1:0 >"$work/out" 2>/dev/null &
    daemon=$!
    for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
    kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
    python3 - "$work/c.db" "$1" <<'PY'
import sqlite3, sys
path, spec = sys.argv[1], sys.argv[2]
span = {"minutes": 60_000, "hours": 3_600_000}[spec.split(":")[0]]
n = int(spec.split(":")[1])
db = sqlite3.connect(path)
size = lambda: db.execute("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size").fetchone()[0]
db.execute("VACUUM")
empty = size()
t0 = 1_764_547_200_000  # 2025-12-01
cam = "front-door"
with db:
    for i in range(n):
        t = t0 + i * span
        for line in ("gate", "path-north", "bike-lane"):
            db.execute("INSERT INTO line_counts VALUES (?, ?, ?, ?, ?, ?)", (cam, line, t, span, 3, 2))
        for zone in ("driveway", "porch"):
            db.execute("INSERT INTO zone_counts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (cam, zone, t, span, 2, 3, 41_000 * span // 60_000, span))
        for label in ("person", "car"):
            db.execute("INSERT INTO label_counts VALUES (?, ?, ?, ?, ?)", (cam, label, t, span, 4))
db.execute("VACUUM")
print(size() - empty)
PY
}
day=$(size_of minutes:1440)
year=$(size_of hours:8760)
echo "## Counts over time: size in the database"
echo
echo "\`bench/counts_size.sh\`: one camera with 3 counting lines, 2 zones and 2 labels, every series"
echo "counting every minute (a busy camera; a minute that counted nothing stores no row), in the"
echo "daemon's schema (WITHOUT ROWID tables keyed by camera, name, start), after VACUUM:"
echo
echo "| what | rows | size |"
echo "|---|---|---|"
python3 -c "print(f'| a day of minute buckets | {1440*7:,} | {$day/1e6:.2f} MB ({$day/1440/7:.0f} bytes a row) |')"
python3 -c "print(f'| a year of hour buckets (after the rollup, storage.counts_minutes_days) | {8760*7:,} | {$year/1e6:.2f} MB |')"
python3 -c "print(f'| a camera-year at the defaults (7 days of minutes, the rest in hours) | | {(7*$day + $year*358/365)/1e6:.1f} MB |')"
