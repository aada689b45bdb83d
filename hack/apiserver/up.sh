#!/usr/bin/env bash
# up.sh RUNDIR: etcd + dra-test-apiserver on 127.0.0.1 (free ports), the resource.k8s.io/v1
# imitation CRDs Established; prints the kubeconfig path (RUNDIR/kubeconfig) and leaves both
# running until down.sh RUNDIR. Builds the binaries first when needed (build.sh).
# PY: a python with the project's [test] extras (default: the repo's .venv).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PY:-$HERE/../../.venv/bin/python}
[ $# -ge 1 ] || { echo "usage: $0 RUNDIR" >&2; exit 2; }
"$HERE/build.sh" >&2
exec "$PY" "$HERE/realapi.py" up "$@"
