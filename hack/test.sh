#!/usr/bin/env bash
# The whole test suite: install sriovdra with its test extras into .venv, the container runtime
# the runtime tier uses (podman + runc from Debian, when root with apt; openssl makes the webhook
# tier's certificates), then run pytest; the apiserver tier builds etcd + dra-test-apiserver
# from Debian sid on first use
# (hack/apiserver/build.sh, cached in ~/.cache/sriovdra; 5-15 min once on a new machine).
# Extra arguments go to pytest (e.g. hack/test.sh -k discover -x).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "[test]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  missing=()
  for pkg in podman runc busybox-static containernetworking-plugins openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} for the runtime tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
cd "$REPO"
exec python -m pytest "$@"
