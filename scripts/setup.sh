#!/usr/bin/env bash
# One idempotent set-up step for afd-reactor, used by both README commands and by .ci/run.
#
# Makes a fresh Debian 12 machine that has only rustup/cargo ready to build the Windows target and
# run it under Wine:
#   - Debian packages: mingw-w64 C toolchain + binutils, wine, wine64, procps (ps, for the
#     runner's time limit), debootstrap, strace, wrk (the benchmark's HTTP load) and linux-perf
#     (perf, which counts the native HTTP servers' system calls) (apt-get update once, only
#     when something is missing);
#   - rustup: the x86_64-pc-windows-gnu target; nightly + miri (for the simulated-kernel tests);
#   - the ProcessPrng shim DLL (tools/prng-shim), built from source with mingw and installed into
#     the Wine prefix's system32;
#   - the Wine prefix itself, initialised quietly;
#   - Wine 10: a Debian 13 (trixie) chroot with Debian's wine 10 packages, built with debootstrap
#     from the Debian mirror this machine's apt already uses, outside the repository
#     (AFD_WINE10_ROOT, default ~/.cache/afd-reactor/wine10-trixie), and its Wine prefix;
#     scripts/wine.sh runs programs in it (AFD_WINE=10).
# When everything is already there it finishes in seconds and installs nothing.
#
# Environment: WINEPREFIX (default ~/.wine); AFD_SKIP_MIRI=1 skips the nightly/miri install;
# AFD_SKIP_WINE10=1 skips the Wine 10 chroot; AFD_DEBIAN_MIRROR overrides the mirror it uses.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '[setup] %s\n' "$*"; }

export WINEPREFIX="${WINEPREFIX:-$HOME/.wine}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"

# --- Debian packages ---------------------------------------------------------------------------
pkgs=(gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64 wine wine64 procps debootstrap strace wrk linux-perf)
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
# --- Wine 10: a Debian 13 chroot ----------------------------------------------------------------
# Built in "$wine10_root.partial" and renamed when complete, so an interrupted build starts over.
# Its mounts (proc, dev) exist only in a mount namespace of the build's own (unshare), so nothing
# is left mounted on the host whatever happens.
debian_mirror() {
    if [ -n "${AFD_DEBIAN_MIRROR:-}" ]; then
        echo "$AFD_DEBIAN_MIRROR"
        return
    fi
    # The first Debian archive (not the security one) in the machine's apt sources, in either
    # format: deb822 (.sources, "URIs:") or one-line ("deb [options] URI suite ...").
    python3 - <<'PY'
import glob, re
def debian(uri):
    return "security" not in uri and re.match(r"^(https?|file)://", uri)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path, encoding="utf-8", errors="replace").read()):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"]) == ["no"]:
            continue
        if not any(s.split("-")[0] in ("bookworm", "trixie", "stable", "oldstable") for s in fields.get("suites", [])):
            continue
        for uri in fields.get("uris", []):
            if debian(uri):
                print(uri)
                raise SystemExit
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", " ", line).split()
        if len(words) >= 3 and words[0] == "deb" and debian(words[1]):
            print(words[1])
            raise SystemExit
PY
}
if [ "${AFD_SKIP_WINE10:-0}" != 1 ]; then
    wine10_root=$(bash "$root/scripts/wine.sh" --chroot)
    if [ -e "$wine10_root/.afd-wine10-ready" ]; then
        say "Wine 10 chroot present: $wine10_root"
    else
        if [ "$(id -u)" -ne 0 ]; then
            say "ERROR: building the Wine 10 chroot needs root (debootstrap, chroot); or set AFD_SKIP_WINE10=1"
            exit 1
        fi
        mirror=$(debian_mirror)
        [ -n "$mirror" ] || { say "ERROR: no Debian mirror found in /etc/apt/sources*; set AFD_DEBIAN_MIRROR"; exit 1; }
        partial="$wine10_root.partial"
        rm -rf "$partial"
        mkdir -p "$(dirname "$wine10_root")"
        say "building the Wine 10 chroot (Debian 13, minbase) in $wine10_root from $mirror (about 1 min)"
        debootstrap --variant=minbase trixie "$partial" "$mirror" >"$partial.log" 2>&1 || {
            say "ERROR: debootstrap failed; the end of $partial.log:"
            tail -n 15 "$partial.log" >&2
            exit 1
        }
        say "installing wine 10 in the chroot"
        # shellcheck disable=SC2016  # expanded by the inner shell
        unshare --mount --propagation private -- /bin/sh -c '
            set -e
            mount -t proc proc "$1/proc"
            mount --rbind /dev "$1/dev"
            chroot "$1" /usr/bin/env DEBIAN_FRONTEND=noninteractive /bin/sh -c "
                apt-get update -qq &&
                apt-get install -y -qq --no-install-recommends wine wine64 procps &&
                /usr/lib/wine/wine64 --version >/.afd-wine10-ready" ' \
            afd-setup "$partial" >>"$partial.log" 2>&1 || {
            say "ERROR: installing wine in the chroot failed; the end of $partial.log:"
            tail -n 15 "$partial.log" >&2
            exit 1
        }
        rm -rf "$wine10_root"
        mv "$partial" "$wine10_root"
        rm -f "$partial.log"
    fi
    # The prefix (made on first use by wine.sh) and a check that Wine 10 starts.
    say "Wine 10: $(AFD_WINE=10 bash "$root/scripts/wine.sh" wine --version)"
fi
say "ready"
