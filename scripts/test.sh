#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Rust installed: installs what it
# needs (scripts/setup.sh), checks formatting and lints, runs every test, then checks the systemd
# unit, the Yocto layer and the Debian package (installed and purged: needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
OCELLUS_SETUP_TESTS=1 scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
python3 scripts/check-architecture.py src
python3 scripts/check-architecture.py --self-test
cargo test --all-targets --locked
scripts/check-systemd.sh target/debug/ocellus
scripts/check-yocto.sh
scripts/check-deb.sh --tested
