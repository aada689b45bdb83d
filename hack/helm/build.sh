#!/usr/bin/env bash
# Build sriovdra-helm-template (main.go here: `helm template` behaviour on text/template + sprig,
# see README.md) from Debian sid packages, as hack/apiserver/build.sh builds the test apiserver
# (hack/lib/sid.sh: private apt config, dpkg -x, offline GOPATH build, the work dir deleted).
# Nothing is installed system-wide. Needs root (apt's private lists), apt-get, dpkg, flock.
#
# Output: $OUT/bin/sriovdra-helm-template, $OUT/stamp, $OUT/versions.txt, where
#   OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/helm
# Idempotent: when the binary exists and $OUT/stamp matches this recipe (a hash of main.go and of
# build.sh and hack/lib/sid.sh less their comment lines), it does nothing. A cold build downloads
# ~60 MB and takes about a minute (go build of ~230 packages).
#
# Usage: build.sh           build unless up to date
#        build.sh --check   exit 0 when up to date, 1 when a build is needed (prints nothing)
#        build.sh --force   rebuild even when up to date
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib/sid.sh"
OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/helm
LABEL=helm-renderer
NAME=sriovdra-helm-template
WANT=$(sid_recipe_hash "$HERE/main.go")
up_to_date() {
  [ -x "$BIN/$NAME" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$WANT" ]
}
sid_begin "$@"
sid_apt_update

# --- the Go toolchain and the Go -dev closure of the three libraries main.go imports: sprig
# (Helm's template functions), gojsonschema (Helm v3's schema validator) and sigs.k8s.io/yaml
# (Helm's YAML: via JSON, so numbers are float64 and keys sorted, as in Helm)
sid_go_closure golang-github-masterminds-sprig-dev golang-github-xeipuuv-gojsonschema-dev golang-k8s-sigs-yaml-dev
sid_fetch

# --- go build, offline, GOPATH mode
G=$W/gopath/src/$NAME
mkdir -p "$G"
cp "$HERE/main.go" "$G/main.go"
sid_go_env
cd "$G"
sid_go_build "$BIN.new/$NAME"
cd "$HERE"
"$BIN.new/$NAME" --help >/dev/null

# --- install atomically, then drop the work dir
sid_install
step "done: $BIN/$NAME ($(grep -E '^(golang-github-masterminds-sprig-dev|golang-github-xeipuuv-gojsonschema-dev|golang-1\.[0-9]+-go)=' "$OUT/versions.txt" | tr '\n' ' '))"
