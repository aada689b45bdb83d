#!/usr/bin/env bash
# The whole test suite: install sriovdra with its test extras into .venv, then run pytest.
# Extra arguments go to pytest (e.g. hack/test.sh -k discover -x).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "[test]"
cd "$REPO"
exec python -m pytest "$@"
