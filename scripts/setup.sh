#!/usr/bin/env bash
# One idempotent set-up step for afd-reactor, used by both README commands and by .ci/run.
#
# Makes a fresh Debian 12 machine that has only rustup/cargo ready to build the Windows target and
# run it under Wine:
#   - Debian packages: mingw-w64 C toolchain + binutils, wine, wine64, procps (ps, for the
#     runner's time limit) (apt-get update once, only
#     when something is missing);
#   - rustup: the x86_64-pc-windows-gnu target; nightly + miri (for the simulated-kernel tests);
#   - the ProcessPrng shim DLL (tools/prng-shim), built from source with mingw and installed into
#     the Wine prefix's system32;
#   - the Wine prefix itself, initialised quietly.
# When everything is already there it finishes in seconds and installs nothing.
#
# Environment: WINEPREFIX (default ~/.wine); AFD_SKIP_MIRI=1 skips the nightly/miri install.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '[setup] %s\n' "$*"; }

export WINEPREFIX="${WINEPREFIX:-$HOME/.wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"

# --- Debian packages ---------------------------------------------------------------------------
pkgs=(gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64 wine wine64 procps)
missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "Debian packages present: ${pkgs[*]}"
fi

# --- rustup targets / components ---------------------------------------------------------------
for c in clippy rustfmt; do
    if ! rustup component list --installed | grep -q "^$c"; then
        say "adding rustup component $c"
        rustup component add "$c"
    fi
done
if rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    say "rust target x86_64-pc-windows-gnu present"
else
    say "adding rust target x86_64-pc-windows-gnu"
    rustup target add x86_64-pc-windows-gnu
fi
if [ "${AFD_SKIP_MIRI:-0}" != 1 ]; then
    if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^miri'; then
        say "nightly + miri present"
    else
        say "installing nightly toolchain with miri and rust-src"
        rustup toolchain install nightly --profile minimal --component miri,rust-src
    fi
fi

# --- Wine prefix -------------------------------------------------------------------------------
if [ -f "$WINEPREFIX/system.reg" ]; then
    say "wine prefix present: $WINEPREFIX"
else
    say "initialising wine prefix $WINEPREFIX (first time takes ~30 s)"
    wineboot --init >/dev/null 2>&1 || wine64 wineboot --init >/dev/null 2>&1 || true
    wineserver -w || true
    [ -f "$WINEPREFIX/system.reg" ] || { say "ERROR: wine prefix was not created"; exit 1; }
fi

# --- ProcessPrng shim --------------------------------------------------------------------------
shim_src="$root/tools/prng-shim/prng_shim.c"
shim_out="$root/target/prng-shim/bcryptprimitives.dll"
shim_dst="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$shim_out" ] || [ "$shim_src" -nt "$shim_out" ]; then
    say "building ProcessPrng shim with mingw"
    mkdir -p "$(dirname "$shim_out")"
    x86_64-w64-mingw32-gcc -O2 -shared -o "$shim_out" "$shim_src"
fi
if ! cmp -s "$shim_out" "$shim_dst" 2>/dev/null; then
    say "installing ProcessPrng shim into $shim_dst"
    cp "$shim_out" "$shim_dst"
else
    say "ProcessPrng shim installed"
fi
say "ready"
