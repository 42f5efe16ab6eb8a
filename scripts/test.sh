#!/usr/bin/env bash
# The README's test command: set up the machine, then run every check and every test.
#   1. scripts/setup.sh (idempotent)
#   2. cargo fmt --check; clippy -D warnings for Linux and for x86_64-pc-windows-gnu; rustdoc for
#      x86_64-pc-windows-gnu with -D warnings (the README and docs/ links are checked by
#      afd-reactor/tests/docs.rs)
#   3. native tests: unit tests, the conformance suite on the simulated kernel and on the epoll
#      kernel (real sockets), the waitable suite on both (tests/waits), the epoll kernel's contract and Linux facts (epoll_layer), the hardening and
#      review-finding tests, the property test (10,000 seeded schedules with fault injection;
#      AFD_SCHEDULES=N for more)
#   4. Miri on the simulated-kernel tests (skip with AFD_SKIP_MIRI=1)
#   5. the Windows tests under Wine 8 and again under Wine 10 (scripts/wine.sh; AFD_WINE chooses):
#      NT layer, conformance suite on the real NT kernel (socket-direct and helper paths), and the
#      simulated suites again as Windows code. A behaviour the two Wines differ in is a fact a test
#      pins per version (tests/platform), never a skipped test.
#   6. a short run of the demo (100 connections, 2 s) under each Wine and natively on epoll, so the
#      README's first command keeps working, and of the async demo (--async, afd-async)
#   7. a short soak (500 connections, 12 s) under each Wine and natively on epoll (the long form:
#      bash scripts/soak.sh)
#   8. a smoke run of the benchmark harness under each Wine and natively (`bash scripts/bench.sh
#      --quick`, `--native --quick`: tiny sizes, one round; it proves the harness works, its
#      figures are not the benchmark's)
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

step "clippy: the libraries as a user builds them (no test-rig feature), Linux and $win"
cargo clippy -p afd-reactor -p afd-async --lib -- -D warnings
cargo clippy -p afd-reactor -p afd-async --lib --target "$win" -- -D warnings

step "rustdoc for $win and Linux: no broken links, no warnings (as a user builds it, and with test-rig)"
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-reactor --no-deps --target "$win"
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-reactor --no-deps --all-features --target "$win"
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-reactor --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-reactor --no-deps --all-features
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-async --no-deps --target "$win"
RUSTDOCFLAGS="-D warnings" cargo doc -q -p afd-async --no-deps

step "native tests (Linux)"
cargo test --workspace

step "property test summary (seeded schedules, all fault kinds)"
cargo test -q -p afd-reactor --test property_sim -- --nocapture 2>&1 | grep -E '^(property|faults)'

if [ "${AFD_SKIP_MIRI:-0}" != 1 ]; then
    step "Miri (strict provenance): simulated kernel, state machine, reactor on the sim"
    MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
        cargo +nightly miri test -q -p afd-reactor --lib --test conformance_sim --test property_sim \
            --test hardening_sim --test review_findings --test waits_sim --test waits_hardening_sim
fi

for wine in 8 10; do
    step "Windows tests under Wine $wine ($(AFD_WINE=$wine scripts/wine.sh wine --version))"
    AFD_WINE=$wine cargo test --workspace --target "$win"
done

for wine in 8 10; do
    step "demo smoke run under Wine $wine (echo server under Wine, native load)"
    CONNECTIONS=100 SECS=2 PORT=7017 bash scripts/demo.sh --wine "$wine"
    step "async demo smoke run under Wine $wine (afd-async's echo server)"
    CONNECTIONS=100 SECS=2 PORT=7019 bash scripts/demo.sh --async --wine "$wine"
done

step "demo smoke run natively (echo server on epoll, native load)"
CONNECTIONS=100 SECS=2 PORT=7018 bash scripts/demo.sh --native
step "async demo smoke run natively (afd-async's echo server on epoll)"
CONNECTIONS=100 SECS=2 PORT=7020 bash scripts/demo.sh --async --native

for wine in 8 10; do
    step "short soak under Wine $wine (500 connections, 12 s; long form: bash scripts/soak.sh)"
    CONNECTIONS=500 SECS=12 PORT=7317 bash scripts/soak.sh --wine "$wine"
done

step "short soak natively on epoll (500 connections, 12 s; long form: bash scripts/soak.sh --native)"
CONNECTIONS=500 SECS=12 PORT=7318 bash scripts/soak.sh --native

for wine in 8 10; do
    step "benchmark harness smoke run under Wine $wine (tiny sizes; the real run is bash scripts/bench.sh)"
    bash scripts/bench.sh --quick --wine "$wine" --out "target/bench-quick-wine$wine"
    step "waitable-handle benchmark smoke run under Wine $wine (tiny sizes, ~15 s; the real run is bash scripts/bench.sh --waits --wine $wine)"
    bash scripts/bench.sh --waits --quick --wine "$wine" --out "target/bench-quick-waits-wine$wine"
done

step "benchmark harness smoke run natively (afd-reactor on epoll, mio, polling; afd-async, smol, tokio; tiny sizes)"
bash scripts/bench.sh --native --quick --out target/bench-quick-native

step "all checks passed"
