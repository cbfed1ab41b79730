#!/usr/bin/env bash
# Checks systemd/ocellus.service: `systemd-analyze verify` must print nothing (warnings count),
# and the offline security exposure must be below 2.0.
#   scripts/check-systemd.sh [PATH_TO_OCELLUS_BINARY]   (default: target/debug/ocellus)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/ocellus}")
[ -x "$bin" ] || { echo "check-systemd: $bin not built" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# verify wants ExecStart to exist: check a copy that points at the built binary.
sed "s|/usr/bin/ocellus|$bin|" systemd/ocellus.service > "$work/ocellus.service"
out=$(systemd-analyze verify "$work/ocellus.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
    echo "check-systemd: systemd-analyze verify complained:" >&2
    echo "$out" >&2
    exit 1
fi
exposure=$(systemd-analyze security --offline=yes systemd/ocellus.service 2>&1 \
    | sed -n 's/.*Overall exposure level for ocellus.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || { echo "check-systemd: no exposure level reported" >&2; exit 1; }
if awk -v e="$exposure" 'BEGIN { exit !(e < 2.0) }'; then
    echo "check-systemd: verify clean, exposure $exposure (< 2.0)"
else
    echo "check-systemd: exposure $exposure is not below 2.0" >&2
    exit 1
fi
