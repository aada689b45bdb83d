# Sourced by hack/demo.sh and hack/test.sh: make sure .venv exists and holds the package
# (editable) with the given extras. Re-installs only when pyproject.toml changed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SRIOVDRA_VENV:-$REPO/.venv}
ensure_venv() {
  local extras=$1 stamp="$VENV/.sriovdra-installed"
  local want
  want="$(sha256sum "$REPO/pyproject.toml" | cut -c1-16) $extras"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # compat mode: a plain path entry instead of an import hook that costs every start 20 ms
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      --config-settings editable_mode=compat -e "$REPO$extras"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}
