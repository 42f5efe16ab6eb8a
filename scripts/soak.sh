#!/usr/bin/env bash
# Bounded-time soak: "10,000 sockets under Wine, nothing lost".
#
# The soak server (afd-reactor/examples/soak_server.rs) runs under Wine; the native Linux peer
# (loadgen's `soakpeer`) keeps CONNECTIONS connections to it busy for SECS seconds with random
# bursts (every echoed byte verified), reading pauses (server backpressure), half-closes, resets
# and reconnects, while the server changes interests and modes at random, runs timers and is
# woken from other threads. Then a summary, and the exit status:
#   non-zero if either side panicked or exited non-zero, any server check failed (registrations
#   vs connections held at every tick, stale or unwanted events, lost wakes, zombies left,
#   teardown leaks), any echo mismatched or was lost, or — only when SECS >= 30 — the server's
#   RSS grew more than 5% between the end of its warm-up and the end of the steady state.
#
# Options (environment): CONNECTIONS (default 10000), SECS (default 60), SEED (default 1),
# PORT (default 7300), RATE (peer actions per second over all connections, default 500),
# WINDOW (connections being set up, or drained, at once; default 64), INFLIGHT (connections
# with echoes outstanding at once, default 32). The Wine: --wine 8|10 (or AFD_WINE; default 8,
# the host's; 10 is the Debian 13 chroot scripts/setup.sh builds). --native runs the soak server
# natively on Linux, on epoll.
#
# The peer ramps up first (no random action until all CONNECTIONS echo, or SECS/2), soaks until
# SECS, then drains: it half-closes every connection, WINDOW at a time, and reads each to EOF
# (at most 120 s more). The server stops 2 s after its last client has gone.
#
# Why the peer paces itself (WINDOW, INFLIGHT, the drain) — Wine 8, measured here: wineserver
# keeps every pending AFD poll of every process in one list (server/sock.c `poll_list`) and walks
# it on each socket event (complete_async_polls), each re-select (sock_get_poll_events), each
# cancel and each close; and a completed poll reaches the completion port only after the issuing
# thread fetched it. Many polls completing at once therefore cost far more than linear time,
# and more the more sockets are registered. Time for K one-byte echoes sent at once, with P idle
# connections open (soak_server, --chaos 0):
#     P=1000:  K=100 0.17 s, K=300 0.80 s, K=1000 6.0 s
#     P=4000:  K=100 0.80 s, K=300 4.1 s,  K=1000 36.8 s
#     P=10000: K=100 2.3 s,  K=300 11.7 s
# Unpaced, 10,000 connections collapse: 500 random actions/s stalled the server inside Wine for
# minutes (wineserver at 100% CPU, the server thread idle, no tick), and closing 2,000 (5,500)
# connections at once took ~40 s (over 90 s). With at most INFLIGHT connections busy, WINDOW
# connects and a windowed drain, the load stays within what Wine delivers.
#
# File descriptors: the hard RLIMIT_NOFILE here is 20,000 per process (ulimit -Hn), so one process
# cannot hold both ends of 10,000 connections. The intended split is 10,000 server sockets in the
# Wine process (plus wineserver's copies, in its own process) and 10,000 peer sockets in the
# native peer process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag=soak script="$0"
# shellcheck source=scripts/wine-flag.sh
source scripts/wine-flag.sh
connections=${CONNECTIONS:-10000}
secs=${SECS:-60}
seed=${SEED:-1}
port=${PORT:-7300}
rate=${RATE:-500}
window=${WINDOW:-64}
inflight=${INFLIGHT:-32}
win=x86_64-pc-windows-gnu

bash scripts/setup.sh
if [ "${AFD_NATIVE:-0}" = 1 ]; then
    echo "[soak] building the soak server and soakpeer (Linux, release)"
    cargo build --quiet --release -p afd-reactor --example soak_server
else
    echo "[soak] building the soak server (Windows, release) and soakpeer (Linux, release)"
    cargo build --quiet --release -p afd-reactor --example soak_server --target "$win"
fi
cargo build --quiet --release -p loadgen --bin soakpeer

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# RSS baseline after a warm-up of max(2 s, 10% of the run), counted from the end of the ramp.
warmup=$((secs / 10 > 2 ? secs / 10 : 2))
# The server's hard bound: the peer's run, its drain (at most 120 s) and Wine's start-up. It ends
# earlier by itself once the peer has gone (--exit-when-idle).
server_secs=$((secs + 150))
server_args=(--addr "127.0.0.1:$port" --secs "$server_secs" --seed "$seed" --expect "$connections"
    --warmup "$warmup" --ramp-by $((secs / 2 + 10)) --exit-when-idle)
if [ "${AFD_NATIVE:-0}" = 1 ]; then
    AFD_WINE_VERSION="Linux $(uname -r), epoll"
    export AFD_WINE_VERSION
    echo "[soak] starting the soak server natively ($AFD_WINE_VERSION) on 127.0.0.1:$port"
    target/release/examples/soak_server "${server_args[@]}" \
        >"$work/server.out" 2> >(tee "$work/server.err" >&2) &
else
    AFD_WINE_VERSION=$(scripts/wine.sh wine --version)
    export AFD_WINE_VERSION
    echo "[soak] starting the soak server under $AFD_WINE_VERSION on 127.0.0.1:$port"
    # `exec` all the way down (bash -c, wine-runner.sh, wine): the Wine process keeps this pid,
    # which the server needs to read its own RSS from Z:\proc\<pid>\status (Z:\proc\self is
    # wineserver's).
    bash -c 'exec scripts/wine-runner.sh "$@" --rss-pid "$$"' soak-server \
        "target/$win/release/examples/soak_server.exe" "${server_args[@]}" \
        >"$work/server.out" 2> >(tee "$work/server.err" >&2) &
fi
server_pid=$!

echo "[soak] soakpeer: $connections connections, ${secs}s, seed $seed, $rate actions/s," \
    "$inflight busy at most"
set +e
target/release/soakpeer --addr "127.0.0.1:$port" --connections "$connections" --secs "$secs" \
    --seed "$seed" --rate "$rate" --window "$window" --inflight "$inflight" --drain-secs 120 \
    >"$work/peer.out" 2> >(tee "$work/peer.err" >&2)
peer_status=$?
set -e

# The server exits by itself once every client has gone (at most server_secs + teardown).
for _ in $(seq 1 $(((server_secs + 30) * 10))); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
    echo "[soak] the server did not exit; killing it" >&2
    kill "$server_pid" 2>/dev/null || true
fi
wait "$server_pid" 2>/dev/null && server_status=0 || server_status=$?
server_pid=""
sleep 0.2 # let the tee behind the server's stderr finish

python3 - "$work" "$secs" "$peer_status" "$server_status" <<'PY'
import json, os, sys
work, secs, peer_status, server_status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def summary(path, prefix):
    for line in open(path):
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])
    return None

server = summary(f"{work}/server.out", "soak-summary")
peer = summary(f"{work}/peer.out", "soakpeer-summary")
logs = "".join(open(f"{work}/{f}").read() for f in ("server.out", "server.err", "peer.out", "peer.err"))
teardown = next((l.strip() for l in open(f"{work}/server.out") if l.startswith("teardown:")), "")

failures = []
if "panicked" in logs:
    failures.append("a panic")
if server_status != 0:
    failures.append(f"server exit status {server_status}")
if peer_status != 0:
    failures.append(f"soakpeer exit status {peer_status}")
if server is None:
    failures.append("no soak-summary line from the server")
if peer is None:
    failures.append("no soakpeer-summary line from the peer")

print()
for prefix, obj in (("soak-summary", server), ("soakpeer-summary", peer)):
    if obj is not None:
        print(prefix, json.dumps(obj, separators=(",", ":")))
print()
print(f"=== afd-reactor soak (server under {os.environ.get('AFD_WINE_VERSION', 'Wine')}, peer native Linux) ===")
if server:
    s = server
    fails = {k[5:]: v for k, v in s.items() if k.startswith("fail_") and v}
    print(f"duration          {s['duration_secs']:.1f} s (server), connections max {s['connections_max']}, "
          f"accepted {s['accepted_total']} (level {s['accepted_level']}, oneshot {s['accepted_oneshot']}, edge {s['accepted_edge']})")
    print(f"events            {s['events']} ({s['events_per_sec']}/s), packets {s['packets']}, "
          f"stale discarded {s['stale_discarded']}, misrouted {s['misrouted']}")
    print(f"closes            half-close {s['closed_half_close']}, I/O error {s['closed_io_error']}, "
          f"error event {s['closed_error_event']}, at end {s['closed_at_end']}")
    print(f"chaos             pauses {s['pauses']} (resumed {s['resumes']}), mode switches "
          f"level {s['to_level']} oneshot {s['to_oneshot']} edge {s['to_edge']}, registered afresh {s['registered_afresh']}, "
          f"backpressure {s['backpressure']}")
    print(f"peer resets       seen as {s['abort_events']} ABORT events; {s['reset_read_as_eof']} reads after one returned 0 (EOF), "
          f"{s['closed_io_error']} failed")
    print(f"zombies           max {s['zombies_max']} at a tick, created {s['zombies_created']}, "
          f"late packets {s['late_packets']}; slots {s['slots_start']} -> {s['slots_end']}")
    verdict = "PASS" if s["fail_registered_mismatch"] == 0 else f"FAIL ({s['fail_registered_mismatch']} mismatches)"
    print(f"alive=registered  {s['checks']} checks (every tick): {verdict}")
    print(f"other checks      {'all passed' if not fails else fails}")
    print(f"wakes             {s['wakes_called']} called, {s['wakes_counted_by_reactor']} counted by the reactor, "
          f"{s['nt_post']} posted, {s['wake_events']} wake events")
    print(f"NT calls          {s['nt_total']}: submit {s['nt_submit']}, dequeue {s['nt_dequeue']}, cancel {s['nt_cancel']}, "
          f"associate {s['nt_associate']}, base-socket {s['nt_base_socket']}, post {s['nt_post']}")
    growth = s["rss_growth_pct"]
    print(f"RSS               start {s['rss_start_kib']} KiB (at {s['rss_start_at_secs']} s, {s['rss_start_conns']} conns), "
          f"end {s['rss_end_kib']} KiB: {growth:+.2f}%; max {s['rss_max_kib']} KiB, at launch {s['rss_at_launch_kib']} KiB")
    print(teardown)
    if s["check_failures"]:
        failures.append(f"{s['check_failures']} server check failures: {fails}")
    if s["rss_start_kib"] == 0:
        print("RSS               (not measured: the server could not read its RSS)")
        if secs >= 30:
            failures.append("RSS not measured")
    elif secs >= 30 and growth > 5.0:
        failures.append(f"RSS grew {growth:.2f}% after warm-up (limit 5%)")
if peer:
    p = peer
    ramp = f"all {p['connections']} echoing after {p['ramp_secs']:.1f} s" if p["ramp_secs"] else "never completed (actions began at SECS/2)"
    print(f"peer ramp         {ramp}; final drain: {p['drain_completed']}/{p['drain_started']} half-closed connections "
          f"drained (EOF after every byte echoed) in {p['drain_secs']:.1f} s")
    print(f"peer              open max {p['open_max']} of {p['connections']}, {p['connects_ok']} connects "
          f"({p['reconnects']} reconnects, {p['connect_failures']} failed, {p['connect_failures_after_start']} after start-up)")
    print(f"echo              {p['bytes_sent']} bytes sent, {p['echo_bytes_verified']} verified in "
          f"{p['echo_reads_verified']} reads; mismatches {p['mismatches']}, lost at EOF {p['lost_at_eof']}")
    print(f"peer actions      {p['bursts']} bursts, {p['pauses']} reading pauses, {p['half_closes_completed']}/{p['half_closes']} "
          f"half-closes completed, {p['resets']} resets, {p['deferred']} deferred (busy); "
          f"server closed {p['server_closed']}, server resets {p['server_resets']}")
    if p["mismatches"] or p["lost_at_eof"]:
        failures.append(f"{p['mismatches']} echo mismatches, {p['lost_at_eof']} lost at EOF")
    if p["drain_completed"] != p["drain_started"]:
        failures.append(f"only {p['drain_completed']} of {p['drain_started']} connections drained")
print()
if failures:
    print("[soak] FAILED: " + "; ".join(failures))
    sys.exit(1)
print("[soak] PASSED")
PY
