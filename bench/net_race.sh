#!/usr/bin/env bash
# bench/net_race.sh: the network race, side by side in one run:
# greenlet-hub, tokio (current-thread; for two cores, 2 workers, and two
# current-thread runtimes sharing the port), may (1 and 2 workers) and
# gevent, on loopback only, beside a floor (raw-mio: the same workloads on
# bare mio, no runtime, the lower bound). Writes bench/NET_RESULTS.md.
#
#   bench/net_race.sh              the full race (a few minutes)
#   bench/net_race.sh --quick      a fast pass to check the pipeline (figures not quotable)
#   bench/net_race.sh --no-python  without gevent
#
# Needs wrk for the HTTP rows (Debian: apt-get install -y wrk); without it
# they are skipped and the report says so. Other options go to
# `net_race report`. CARGO_TARGET_DIR is honoured.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
target_dir=${CARGO_TARGET_DIR:-$root/target}
venv=$here/.venv

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

python_args=(--python "$venv/bin/python")
report_args=()
for arg in "$@"; do
    if [ "$arg" = "--no-python" ]; then
        python_args=()
    else
        report_args+=("$arg")
    fi
done

if [ ${#python_args[@]} -gt 0 ]; then
    if ! "$venv/bin/python" -c 'import greenlet, gevent' 2>/dev/null; then
        say "making $venv with greenlet and gevent from PyPI"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check greenlet gevent
    fi
    "$venv/bin/python" -c 'import gevent; print("gevent", gevent.__version__)'
fi

if ! command -v wrk >/dev/null; then
    echo "net_race.sh: wrk is not installed (apt-get install -y wrk): the HTTP rows are skipped" >&2
fi

say "building net_race (release)"
(cd "$root" && CARGO_TARGET_DIR=$target_dir cargo build --release -p greenlet-bench --bin net_race)

say "racing (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
"$target_dir/release/net_race" report "${python_args[@]}" "${report_args[@]}"
