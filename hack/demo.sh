#!/usr/bin/env bash
# The demo: install sriovdra into .venv, build a shipped fake host, show what the driver sees on
# it (discover) and what it thinks of the node (doctor), then run `sriovdra serve` on it against
# an API server stand-in, with a kubelet-like client preparing the seeds' claims.
#   hack/demo.sh [HOST]    HOST: one of demo/hosts/*.yaml (default mixed: both drivers)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "[test]"  # the demo's API server stand-in validates objects with kubernetes-validate
host=${1:-mixed}
spec="$REPO/demo/hosts/$host.yaml"
[ -f "$spec" ] || { echo "no such demo host: $host (see demo/hosts/)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sriovdra-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
python -m sriovdra.fakehost build "$spec" "$work/$host" >/dev/null
echo "== sriovdra discover --sysfs-root <$host>/sys"
sriovdra discover --sysfs-root "$work/$host/sys"
echo
echo "== sriovdra doctor --host-root <$host>"
sriovdra doctor --host-root "$work/$host" || true  # a FAIL verdict is part of the show
python "$REPO/hack/demo_serve.py" "$work/$host"
