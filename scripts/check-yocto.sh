#!/usr/bin/env bash
# Lints the Yocto layer with oelint-adv (from PyPI) and fails on any error; checks that the
# crates include matches Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/yocto-crates.py --check
if ! command -v oelint-adv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check oelint-adv
fi
layer=yocto-layer/meta-ocellus
out=$(oelint-adv --quiet --nobackup $layer/recipes-*/*/*.bb 2>&1 || true)
if [ -n "$out" ] && ! printf '%s\n' "$out" | grep -q "$layer/"; then
    echo "check-yocto: oelint-adv did not run:" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
errors=$(printf '%s\n' "$out" | grep -c ':error:' || true)
warnings=$(printf '%s\n' "$out" | grep -c ':warning:' || true)
if [ "$errors" -gt 0 ]; then
    printf '%s\n' "$out" | grep ':error:' >&2
    echo "check-yocto: $errors oelint-adv errors" >&2
    exit 1
fi
echo "check-yocto: oelint-adv $(oelint-adv --version 2>&1 | tail -1): 0 errors, $warnings warnings"
