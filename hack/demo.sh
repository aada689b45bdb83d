#!/usr/bin/env bash
# The demo: install sriovdra into .venv, build a shipped fake host, and show what the driver
# sees on it (discover) and what it thinks of the node (doctor).
#   hack/demo.sh [HOST]    HOST: one of demo/hosts/*.yaml (default ethernet-baremetal)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv ""
host=${1:-ethernet-baremetal}
spec="$REPO/demo/hosts/$host.yaml"
[ -f "$spec" ] || { echo "no such demo host: $host (see demo/hosts/)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/sriovdra-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
python -m sriovdra.fakehost build "$spec" "$work/$host" >/dev/null
echo "== sriovdra discover --sysfs-root <$host>/sys"
sriovdra discover --sysfs-root "$work/$host/sys"
echo
echo "== sriovdra doctor --host-root <$host>"
sriovdra doctor --host-root "$work/$host"
