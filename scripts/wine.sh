#!/usr/bin/env bash
# Runs one of Wine's programs (wine, wineserver, wineboot, ...) under the Wine that AFD_WINE
# chooses:
#   AFD_WINE=8  (the default) the host's Wine: Debian 12's packages, Wine 8;
#   AFD_WINE=10 Wine 10 from Debian 13, in the chroot scripts/setup.sh builds (AFD_WINE10_ROOT,
#               default ~/.cache/afd-reactor/wine10-trixie; never inside the repository).
#
#   AFD_WINE=10 scripts/wine.sh wine target/x86_64-pc-windows-gnu/debug/foo.exe --help
#   AFD_WINE=10 scripts/wine.sh wineserver -k
#   scripts/wine.sh --chroot    prints the Wine 10 chroot's directory (for scripts/setup.sh)
#   scripts/wine.sh --prefix    prints WINEPREFIX as the chosen Wine sees it
#
# Wine 10 runs in a mount namespace of its own (unshare --mount, propagation private): /proc,
# /dev, /sys and the host's directories (below) are bind-mounted into the chroot at their own
# paths, for this run only. No mount is ever made in the host's namespace, so none can be left
# behind: the namespace, with its mounts, ends with the last process in it (the program, or the
# wineserver it started, which exits on its own once idle).
# Everything is `exec`ed, so the program keeps this script's pid (scripts/soak.sh relies on it),
# and the loopback network is the host's (the native load generators reach a server under
# Wine 10).
#
# The Wine 10 prefix: WINEPREFIX (default ~/.wine) names a host path; Wine 10 uses that same path
# under /afd-prefixes inside the chroot, so each Wine 8 prefix has a Wine 10 twin and concurrent
# jobs keep their prefixes apart under both Wines. A missing prefix is created on first use.
set -euo pipefail
say() { printf 'wine.sh: %s\n' "$*" >&2; }
[ $# -ge 1 ] || { say "usage: scripts/wine.sh <wine|wineserver|wineboot|...> [args...]"; exit 2; }
export WINEPREFIX="${WINEPREFIX:-$HOME/.wine}"
case "$WINEPREFIX" in
    /*) ;;
    *) WINEPREFIX="$(pwd)/$WINEPREFIX" ;; # Wine wants it absolute; so does its Wine 10 twin
esac

case "${AFD_WINE:-8}" in
    8 | 10) ;;
    *)
        say "AFD_WINE must be 8 or 10, not '${AFD_WINE}'"
        exit 2
        ;;
esac
chroot_dir="${AFD_WINE10_ROOT:-$HOME/.cache/afd-reactor/wine10-trixie}"
prefix="$WINEPREFIX"
[ "${AFD_WINE:-8}" = 8 ] || prefix="/afd-prefixes$WINEPREFIX"
case "$1" in
    --chroot) echo "$chroot_dir" && exit 0 ;;
    --prefix) echo "$prefix" && exit 0 ;;
esac
[ "${AFD_WINE:-8}" = 10 ] || exec "$@"

if [ ! -x "$chroot_dir/usr/lib/wine/wine64" ] || [ ! -e "$chroot_dir/.afd-wine10-ready" ]; then
    say "no Wine 10 chroot in $chroot_dir: run bash scripts/setup.sh (it builds one)"
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    say "Wine 10 runs in a chroot, which needs root (unshare --mount, chroot)"
    exit 1
fi

# Every run sees the same host directories, at their own paths: the wineserver a run starts
# serves later runs too, and opens files for them in the view of the run that started it. So the
# view does not depend on the run: every top-level host directory but the system ones (so /work,
# /home, /root, /tmp, /mnt, /opt, ... over the chroot's own, empty in a minbase system), and
# /var/tmp. The chroot's /usr, /etc, /var, /bin and /lib stay its own: a checkout under
# /usr/local or /var (but /var/tmp) would not be seen.
binds=()
for d in /*; do
    [ -d "$d" ] && [ ! -L "$d" ] || continue
    case "$d" in
        # The chroot's own system, and what is mounted apart.
        /usr | /etc | /var | /bin | /sbin | /lib | /lib32 | /lib64 | /libx32 | /boot | \
            /proc | /dev | /sys | /run | /lost+found | /old_root | /afd-prefixes) continue ;;
    esac
    binds+=("$d")
done
[ ! -d /var/tmp ] || binds+=(/var/tmp)

# In the new namespace: mount, chroot, make the prefix if it is missing, run the program.
# shellcheck disable=SC2016  # expanded by the inner shell
inner='
set -eu
root=$1 prefix=$2 cwd=$3 n=$4
shift 4
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
i=0
while [ "$i" -lt "$n" ]; do
    [ -d "$root$1" ] || mkdir "$root$1"
    mount --bind "$1" "$root$1"
    shift
    i=$((i + 1))
done
exec chroot "$root" /bin/sh -c '"'"'
    set -e
    export WINEPREFIX="$1" HOME=/root
    # No display here: without a runtime directory, the Wayland driver of Wine 10 prints an error
    # on every start; with an empty one it finds no compositor and stays quiet.
    export XDG_RUNTIME_DIR=/tmp/afd-xdg-runtime
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
    cwd=$2
    shift 2
    if [ ! -f "$WINEPREFIX/system.reg" ] && [ "${1##*/}" != wineserver ]; then
        echo "wine.sh: creating the Wine 10 prefix $WINEPREFIX (first use, about 30 s)" >&2
        mkdir -p "$WINEPREFIX"
        WINEDEBUG=-all wineboot --init >/dev/null 2>&1 || true
        wineserver -w || true
        [ -f "$WINEPREFIX/system.reg" ] || { echo "wine.sh: the Wine 10 prefix was not created" >&2; exit 1; }
    fi
    cd "$cwd"
    exec "$@"
'"'"' afd-wine10 "$prefix" "$cwd" "$@"
'
exec unshare --mount --propagation private -- /bin/sh -c "$inner" afd-wine10 \
    "$chroot_dir" "$prefix" "$(pwd)" "${#binds[@]}" "${binds[@]}" "$@"
