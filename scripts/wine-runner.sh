#!/usr/bin/env bash
# Cargo runner for x86_64-pc-windows-gnu: runs a Windows executable under Wine.
# AFD_WINE chooses the Wine: 8 (the default, the host's) or 10 (the Debian 13 chroot); see
# scripts/wine.sh, through which every Wine program here is started.
# Quiet by default (WINEDEBUG=-all) unless the caller set WINEDEBUG; keeps one wineserver alive
# between test binaries so each one does not pay for a server start.
#
# Test binaries (cargo puts them in target/<triple>/<profile>/deps/) run under a time limit:
# AFD_TEST_TIMEOUT seconds (default 600; 0 = no limit). On a timeout the runner prints the tests
# that were still running (the binary's `--list` for the same filters, minus those it reported
# finished), kills the Wine process and its children, stops this prefix's wineserver so the next
# binary starts clean, and exits 124. Otherwise the binary's exit status is passed through.
# Anything else (examples, bench servers: long-running) is run as before, without a limit.
set -euo pipefail
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
w="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/wine.sh"
# Wine 8 lacks ProcessPrng, which Rust's std calls; Wine 10 has it.
if [ "${AFD_WINE:-8}" = 8 ] && [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
    echo "wine-runner: the ProcessPrng shim is not installed in $WINEPREFIX; run scripts/setup.sh" >&2
    exit 1
fi
prefix_seen=$("$w" --prefix) # the prefix as the chosen Wine sees it (in the chroot for Wine 10)
"$w" wineserver -p30 2>/dev/null || true

exe="${1:?usage: wine-runner.sh <program.exe> [args...]}"
limit="${AFD_TEST_TIMEOUT:-600}"
case "$limit" in
    '' | *[!0-9]*)
        echo "wine-runner: AFD_TEST_TIMEOUT must be a number of seconds, not '$limit'" >&2
        exit 2
        ;;
esac
is_test=false
case "$(basename "$(dirname "$exe")")" in deps) is_test=true ;; esac
if ! $is_test || [ "$limit" -eq 0 ]; then
    exec "$w" wine "$@"
fi

# --- a test binary, under a time limit ---------------------------------------------------------
say() { printf 'wine-runner: %s\n' "$*" >&2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wine-runner.XXXXXX")
pid=""
sleeper=""
relay=""

# Every process of the run: the session setsid gave it, plus descendants that left it.
descendants() {
    local p c
    for p in "$@"; do
        for c in $(ps -o pid= --ppid "$p" 2>/dev/null || true); do
            echo "$c"
            descendants "$c"
        done
    done
}
kill_run() {
    [ -n "$pid" ] || return 0
    local procs sig
    for sig in TERM KILL; do
        procs="$pid $(descendants "$pid") $(ps -o pid= --sid "$pid" 2>/dev/null || true)"
        # shellcheck disable=SC2086
        kill -s "$sig" $procs 2>/dev/null || true
        [ "$sig" = KILL ] || sleep 2
    done
    wait "$pid" 2>/dev/null || true
}
# With the prefix's wineserver stopped, end the Wine processes still in the prefix: after a
# wineserver crash its clients never exit by themselves (threads blocked in futexes, services
# waiting for a server that is gone). Only Wine loader processes with this exact WINEPREFIX (as the
# chosen Wine sees it).
sweep_prefix() {
    local p exe env
    for p in $(ps -e -o pid= || true); do
        exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
        case "${exe##*/}" in wine | wine64 | wine-preloader | wine64-preloader) ;; *) continue ;; esac
        env=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null) || continue
        [[ $'\n'"$env"$'\n' == *$'\n'"WINEPREFIX=$prefix_seen"$'\n'* ]] || continue
        kill -s KILL "$p" 2>/dev/null || true
    done
}
# shellcheck disable=SC2317  # called from traps
cleanup() {
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
    [ -z "$relay" ] || { kill "$relay" 2>/dev/null || true; }
    rm -rf "$tmp"
}
# shellcheck disable=SC2317  # called from a trap
on_signal() {
    say "interrupted: stopping $(basename "$exe")"
    kill_run
    cleanup
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP

# stdout goes to a file that `tail` relays, so the runner can read what libtest reported; a file
# rather than a pipe, so that Wine processes that inherit stdout (and outlive the binary) cannot
# keep the relay open. stderr and stdin are passed through untouched.
out="$tmp/stdout"
: >"$out"
setsid -w "$w" wine "$@" <&0 >"$out" &
pid=$!
tail -n +1 -s 0.1 -f --pid="$pid" "$out" &
relay=$!
sleep "$limit" >/dev/null 2>&1 &
sleeper=$!

rc=0
finished=""
wait -n -p finished "$pid" "$sleeper" || rc=$?
if [ "$finished" = "$pid" ]; then
    # The binary ended in time: let the relay print the rest, pass its status through.
    kill "$sleeper" 2>/dev/null || true
    sleeper=""
    wait "$relay" 2>/dev/null || true
    relay=""
    exit "$rc"
fi

# Timed out.
sleeper=""
kill_run
wait "$relay" 2>/dev/null || true
relay=""
name=$(basename "$exe")
say "$name did not finish within $limit s (AFD_TEST_TIMEOUT)"
# A crashed or wedged wineserver would stop `--list` too: list with a fresh one.
"$w" wineserver -k 2>/dev/null || true

# The same filters as the run, without the options that change the output format.
list_args=()
skip_next=false
for a in "${@:2}"; do
    if $skip_next; then
        skip_next=false
        continue
    fi
    case "$a" in
        --format | -Z | --color | --test-threads | --shuffle-seed | --logfile) skip_next=true ;;
        --format=* | -Z* | --color=* | --test-threads=* | --shuffle-seed=* | --logfile=*) ;;
        -q | --quiet | --list | --nocapture | --no-capture | --show-output | --shuffle | \
            --report-time | --ensure-time | --exclude-should-panic | --force-run-in-process) ;;
        *) list_args+=("$a") ;;
    esac
done
all="$tmp/all"
if timeout 120 "$w" wine "$exe" "${list_args[@]}" --list </dev/null 2>/dev/null |
    tr -d '\r' | sed -n 's/: \(test\|bench\|benchmark\)$//p' | sort -u >"$all"; then
    :
fi
# "test NAME ... ok" (FAILED, ignored, bench:); with --nocapture and one thread the result can
# come on a later line, after the test's own output.
tr -d '\r' <"$out" | awk '
    function finish(name) { sub(/ - should panic$/, "", name); print name }
    /^test .* \.\.\. / {
        name = $0; sub(/^test /, "", name); sub(/ \.\.\. .*$/, "", name)
        rest = $0; sub(/^test .* \.\.\. /, "", rest)
        if (rest ~ /^(ok|FAILED|ignored|bench:)/) { finish(name); pending = "" } else pending = name
        next
    }
    pending != "" && /^(ok|FAILED|ignored)/ { finish(pending); pending = "" }
' | sort -u >"$tmp/done"
if [ -s "$all" ]; then
    running=$(comm -23 "$all" "$tmp/done")
    total=$(wc -l <"$all")
    done_count=$(comm -12 "$all" "$tmp/done" | wc -l)
    if [ -n "$running" ]; then
        say "$done_count of $total tests finished; still running (or not started):"
        printf '%s\n' "$running" | sed 's/^/    /' >&2
    else
        say "all $total tests reported a result; the binary hung after them"
    fi
else
    say "could not list the tests of $name; the tests it reported finished:"
    sed 's/^/    /' "$tmp/done" >&2
fi
grep -a 'has been running for over' "$out" | tr -d '\r' | sed 's/^/wine-runner: libtest: /' >&2 || true
say "stopping the wineserver of $WINEPREFIX"
"$w" wineserver -k 2>/dev/null || true
sweep_prefix
exit 124
