# Sourced by scripts/demo.sh and scripts/soak.sh: reads their command line: `--wine 8|10` (the
# Wine to run under; the default is AFD_WINE, else 8), `--native` (run the server natively on
# Linux, on epoll, instead of under Wine: sets AFD_NATIVE=1), `--async` (run the server written
# on afd-async instead of the callback one, where the script has one: sets AFD_ASYNC=1), and
# `--help` (prints the calling script's header comment). Everything else they take comes from the environment.
# Needs: `tag` (the script's name in messages) and `script` (its path), set by the caller.
while [ $# -gt 0 ]; do
    case "$1" in
        --wine)
            if [ $# -lt 2 ]; then
                echo "[$tag] --wine needs a value: 8 or 10" >&2
                exit 2
            fi
            export AFD_WINE="$2"
            shift 2
            ;;
        --wine=*)
            export AFD_WINE="${1#--wine=}"
            shift
            ;;
        --native)
            export AFD_NATIVE=1
            shift
            ;;
        --async)
            export AFD_ASYNC=1
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "[$tag] unknown argument '$1' (options: --wine 8|10, --native, --async; the rest are environment variables, see --help)" >&2
            exit 2
            ;;
    esac
done
case "${AFD_WINE-8}" in
    8 | 10) ;;
    *)
        echo "[$tag] --wine (or AFD_WINE) must be 8 or 10, not '$AFD_WINE'" >&2
        exit 2
        ;;
esac
