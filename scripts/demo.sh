#!/usr/bin/env bash
# The README's first command: set up the machine, then run the demo.
#
# An echo server on afd-reactor runs under Wine; a native Linux load generator opens N connections
# to it and keeps them busy (ping-pong) for a set time, printing a live progress line. Then a
# summary: connections, echoes/s, round-trip p50/p99, and the reactor's own NT calls per echo from
# its counters.
#
# Options (environment): CONNECTIONS (default 1000), SECS (default 10), SIZE (bytes, default 64),
# PORT (default 7007), HELPER=1 (poll through the \Device\Afd helper instead of on each socket).
# The Wine: --wine 8|10 (or AFD_WINE; default 8, the host's; 10 is the Debian 13 chroot
# scripts/setup.sh builds). --native runs the same server natively on Linux, on epoll. --async
# runs the async echo server instead (afd-async's example async_echo: a task per connection on one thread,
# on the same reactor); it combines with --native and --wine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag=demo script="$0"
# shellcheck source=scripts/wine-flag.sh
source scripts/wine-flag.sh
connections=${CONNECTIONS:-1000}
secs=${SECS:-10}
size=${SIZE:-64}
port=${PORT:-7007}
win=x86_64-pc-windows-gnu

bash scripts/setup.sh
package=afd-reactor kind="callback" example=echo_server
if [ "${AFD_ASYNC:-0}" = 1 ]; then
    package=afd-async kind="async" example=async_echo
    [ "${HELPER:-0}" = 1 ] && { echo "[demo] HELPER=1 is for the callback server only" >&2; exit 2; }
fi
if [ "${AFD_NATIVE:-0}" = 1 ]; then
    echo "[demo] building the $kind echo server and the load generator (Linux, release)"
    cargo build --quiet --release -p "$package" --example "$example"
    server=("target/release/examples/$example")
    AFD_WINE_VERSION="Linux $(uname -r), epoll"
else
    echo "[demo] building the $kind echo server (Windows, release) and the load generator (Linux, release)"
    cargo build --quiet --release -p "$package" --example "$example" --target "$win"
    server=(scripts/wine-runner.sh "target/$win/release/examples/$example.exe")
    AFD_WINE_VERSION=$(scripts/wine.sh wine --version)
fi
cargo build --quiet --release -p loadgen

work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
server_args=(--addr "127.0.0.1:$port" --exit-when-idle --max-secs $((secs + 120)))
[ "${HELPER:-0}" = 1 ] && server_args+=(--helper)
export AFD_WINE_VERSION
echo "[demo] starting the $kind echo server under $AFD_WINE_VERSION on 127.0.0.1:$port"
export AFD_DEMO_KIND=$kind
"${server[@]}" "${server_args[@]}" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

echo "[demo] $connections connections, ${secs}s, ${size}-byte messages"
set +e
target/release/loadgen --addr "127.0.0.1:$port" --connections "$connections" \
    --duration "$secs" --size "$size" --json "$work/load.json"
load_status=$?
set -e

# The server exits by itself once every client has gone.
for _ in $(seq 1 600); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
    echo "[demo] the server did not exit after the clients left" >&2
    kill "$server_pid" 2>/dev/null || true
fi
wait "$server_pid" 2>/dev/null && server_status=0 || server_status=$?
if [ "$load_status" -ne 0 ] || [ "$server_status" -ne 0 ]; then
    echo "[demo] FAILED (loadgen exit $load_status, server exit $server_status)" >&2
    cat "$work/server.out" "$work/server.err" >&2
    exit 1
fi

python3 - "$work/load.json" "$work/server.out" <<'PY'
import json, os, sys
load = json.load(open(sys.argv[1]))
stats, syscalls, teardown = None, None, ""
for line in open(sys.argv[2]):
    if line.startswith("reactor-stats "):
        stats = json.loads(line[len("reactor-stats "):])
    if line.startswith("kernel-syscalls "):
        syscalls = json.loads(line[len("kernel-syscalls "):])
    if line.startswith("teardown:"):
        teardown = line.strip()
if stats is None:
    sys.exit("[demo] the server printed no reactor-stats line")
echoes = max(load["echoes"], 1)
events = max(stats["events"], 1)
print()
name = "afd-async echo demo (a task per connection)" if os.environ.get("AFD_DEMO_KIND") == "async" else "afd-reactor echo demo"
print(f"=== {name} (server under {os.environ.get('AFD_WINE_VERSION', 'Wine')}, load from native Linux) ===")
kernel_calls = "kernel calls" if "epoll" in os.environ.get("AFD_WINE_VERSION", "") else "NT calls"
print(f"connections      {load['connected']} of {load['connections']}")
print(f"echoes           {load['echoes']} in {load['duration_secs']:.1f} s = {load['echoes_per_sec']:.0f} echoes/s")
print(f"round trip       p50 {load['rtt_p50_us']} us, p99 {load['rtt_p99_us']} us, max {load['rtt_max_us']} us")
print(f"errors           {load['errors']} (mismatches {load['mismatches']})")
print(f"reactor events   {stats['events']} ({stats['packets']} packets, {stats['stale_discarded']} stale discarded)")
print(f"reactor {kernel_calls} {stats['nt_total']}: submit {stats['nt_submit']}, dequeue {stats['nt_dequeue']}, "
      f"cancel {stats['nt_cancel']}, associate {stats['nt_associate']}, base-socket {stats['nt_base_socket']}, post {stats['nt_post']}")
print(f"{kernel_calls} / echo  {stats['nt_total'] / echoes:.3f}   (submit {stats['nt_submit'] / echoes:.3f}, dequeue {stats['nt_dequeue'] / echoes:.3f})")
print(f"{kernel_calls} / event {stats['nt_total'] / events:.3f}")
if syscalls is not None:
    print(f"syscalls / echo  {syscalls['total'] / echoes:.3f}   (epoll_wait {syscalls['wait'] / echoes:.3f}, "
          f"epoll_ctl MOD {syscalls['modify'] / echoes:.3f}, ADD {syscalls['add']}, probes {syscalls['probe']})")
print(teardown)
PY
