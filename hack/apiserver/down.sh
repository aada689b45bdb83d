#!/usr/bin/env bash
# down.sh RUNDIR: stop what up.sh RUNDIR started (by PID), wait for both to exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PY:-$HERE/../../.venv/bin/python}
[ $# -ge 1 ] || { echo "usage: $0 RUNDIR" >&2; exit 2; }
exec "$PY" "$HERE/realapi.py" down "$1"
