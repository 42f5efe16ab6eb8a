#!/usr/bin/env bash
# The README's test command: set up the machine, then run every check and every test.
#   1. scripts/setup.sh (idempotent)
#   2. cargo fmt --check; clippy -D warnings for Linux and for x86_64-pc-windows-gnu
#   3. native tests (pure logic)
#   4. the Windows tests under Wine (cargo's runner, see .cargo/config.toml)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n==> %s\n' "$*"; }
win=x86_64-pc-windows-gnu

step "set-up"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "clippy (Linux)"
cargo clippy --workspace --all-targets -- -D warnings

step "clippy ($win)"
cargo clippy --workspace --all-targets --target "$win" -- -D warnings

step "native tests (Linux)"
cargo test --workspace

step "Windows tests under Wine ($(wine --version 2>/dev/null || echo wine))"
cargo test --workspace --target "$win"

step "all checks passed"
