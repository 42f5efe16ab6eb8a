#!/usr/bin/env bash
# The benchmark: afd-reactor (socket-direct and helper path), mio 1.x, polling 3.x and wepoll,
# side by side under Wine, in rounds; and the async stacks (afd-async, smol, tokio) through the
# echo and an HTTP workload (wrk against an http_hello server). Prints the tables and writes
# docs/bench/{table.txt,results.json,chart.svg,http_chart.svg} (the README shows them). Needs a
# machine that ran scripts/setup.sh.
#
# Arguments go to the driver (bash scripts/bench.sh --help); e.g. --quick for a smoke run,
# --http-only for the HTTP workload alone, --out DIR to write elsewhere. --native runs the
# servers natively on Linux instead (afd-reactor on epoll, mio, polling and the async stacks;
# system calls counted with strace, and HTTP's also with perf) and writes docs/bench/native.
# --waits runs the waitable-handle benchmark alone (issue 15: afd-reactor's register_waitable
# against polling's add_waitable; threads, heap, wineserver requests per signal) and writes
# report.md and results.json to docs/bench/wine<8|10>-waits (of --wine's Wine), or --out.
# The Wine prefix is WINEPREFIX's (default ~/.wine): its wineserver is restarted. The binaries
# are built in CARGO_TARGET_DIR (default target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
args=("$@")
native=0
waits=0
case " ${args[*]-} " in
    *" --native "*) native=1 ;;
esac
case " ${args[*]-} " in
    *" --waits "*) waits=1 ;;
esac
# The Wine --waits runs under (for its default --out): --wine's, else AFD_WINE's, else 8.
wine="${AFD_WINE:-8}"
prev=
for a in "${args[@]}"; do
    [ "$prev" = --wine ] && wine="$a"
    prev="$a"
done
if [ "$native" = 1 ]; then
    if ! command -v strace >/dev/null; then
        echo "[bench] strace is missing: run bash scripts/setup.sh first" >&2
        exit 1
    fi
    echo "[bench] building the server and the driver (Linux, release)"
    cargo build --quiet --release -p bench --bin bench-server --bin bench
else
    if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
        echo "[bench] Wine or mingw-w64 is missing: run bash scripts/setup.sh first" >&2
        exit 1
    fi
    echo "[bench] building the server (Windows, release) and the driver (Linux, release)"
    cargo build --quiet --release -p bench --target x86_64-pc-windows-gnu --bin bench-server
    cargo build --quiet --release -p bench --bin bench
fi
case " ${args[*]-} " in
    *" --out "*) ;;
    *) if [ "$native" = 1 ]; then
        args+=(--out docs/bench/native)
    elif [ "$waits" = 1 ]; then
        args+=(--out "docs/bench/wine$wine-waits")
    else
        args+=(--out docs/bench)
    fi ;;
esac
exec "${CARGO_TARGET_DIR:-target}/release/bench" "${args[@]}"
