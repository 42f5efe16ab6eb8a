#!/usr/bin/env bash
# Cargo runner for x86_64-pc-windows-gnu: runs a Windows executable under Wine.
# Quiet by default (WINEDEBUG=-all) unless the caller set WINEDEBUG; keeps one wineserver alive
# between test binaries so each one does not pay for a server start.
set -euo pipefail
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"
if [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
    echo "wine-runner: the ProcessPrng shim is not installed in $WINEPREFIX; run scripts/setup.sh" >&2
    exit 1
fi
wineserver -p30 2>/dev/null || true
exec wine "$@"
