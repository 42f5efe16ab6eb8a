#!/usr/bin/env bash
# The simulated fault campaign: the seeded property test scaled up (default 1,000,000 schedules),
# every fault kind enabled (reorder, cancel race, synchronous success, submit failure, handle reuse,
# slot reuse, LOCAL_CLOSE, dequeue error, spurious completion, foreign/stale packets, close-contract
# violations). Prints the counts per fault kind and the invariant checks made; a failure prints
# its seed, and `AFD_SEED=<seed> cargo test -p afd-reactor --test property_sim` reproduces it
# (`AFD_TRACE=1` prints every step).
#
#   SCHEDULES=1000000 STEPS=120 bash scripts/campaign.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
schedules=${SCHEDULES:-1000000}
steps=${STEPS:-120}
echo "[campaign] $schedules schedules x $steps steps (release build)"
start=$(date +%s)
AFD_SCHEDULES=$schedules AFD_STEPS=$steps \
    cargo test --release -q -p afd-reactor --test property_sim -- --nocapture 2>&1 |
    grep -E '^(property|faults|schedule failed|seed )|panicked'
echo "[campaign] passed in $(($(date +%s) - start)) s"
