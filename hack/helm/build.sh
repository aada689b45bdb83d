#!/usr/bin/env bash
# Build sriovdra-helm-template (main.go here: `helm template` behaviour on text/template + sprig,
# see README.md) from Debian sid packages, as hack/apiserver/build.sh builds the test apiserver:
# the Go toolchain and the Go library sources (-dev packages) are downloaded with a private apt
# config and unpacked with dpkg -x into a work dir, built offline in GOPATH mode, and the work dir
# is deleted. Nothing is installed system-wide. Needs root (apt's private lists), apt-get, dpkg, flock.
#
# Output: $OUT/bin/sriovdra-helm-template, $OUT/stamp, $OUT/versions.txt, where
#   OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/helm
# Idempotent: when the binary exists and $OUT/stamp matches this recipe (a hash of main.go and of
# build.sh less its comment lines), it does nothing. A cold build downloads ~60 MB and takes about
# a minute (go build of ~230 packages).
#
# Usage: build.sh           build unless up to date
#        build.sh --check   exit 0 when up to date, 1 when a build is needed (prints nothing)
#        build.sh --force   rebuild even when up to date
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/helm
BIN=$OUT/bin
NAME=sriovdra-helm-template
WANT=$( (grep -v '^[[:space:]]*#' "$HERE/build.sh"; cat "$HERE/main.go") | sha256sum | cut -c1-16)

up_to_date() {
  [ -x "$BIN/$NAME" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$WANT" ]
}
case "${1:-}" in
  --check) up_to_date; exit ;;
  --force) FORCE=1 ;;
  "") FORCE=0 ;;
  *) echo "usage: $0 [--check|--force]" >&2; exit 2 ;;
esac
if [ "$FORCE" = 0 ] && up_to_date; then
  echo "$NAME: up to date in $BIN"
  exit 0
fi
for tool in apt-get apt-cache dpkg flock sha256sum; do
  command -v $tool >/dev/null || { echo "build.sh: $tool not found (needs a Debian host)" >&2; exit 1; }
done

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  echo "another build is running in $OUT, waiting for it"
  flock 9
  if [ "$FORCE" = 0 ] && up_to_date; then echo "$NAME: built by the other run"; exit 0; fi
fi

start=$(date +%s)
step() { echo "[helm renderer build +$(($(date +%s) - start))s] $*"; }
W=$OUT/work
rm -rf "$W" "$BIN.new"
mkdir -p "$W/debs" "$W/root" "$W/sid-apt/lists/partial" "$W/sid-apt/cache/archives/partial" "$BIN.new"

# --- 1. private apt config for sid: the system's sources, lists and dpkg status are untouched
A=$W/sid-apt
: > "$A/status"  # an empty dpkg status: apt resolves every dependency as not installed
echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main' > "$A/sources.list"
o=(-o "Dir::State::status=$A/status" -o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root
   -o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
step "apt-get update (sid, private lists)"
apt-get "${o[@]}" update -qq

# --- 2. the Go toolchain behind golang-go and the Go -dev closure of the three libraries main.go
# imports: sprig (Helm's template functions), gojsonschema (Helm v3's schema validator) and
# sigs.k8s.io/yaml (Helm's YAML: via JSON, so numbers are float64 and keys sorted, as in Helm)
LIBS=(golang-github-masterminds-sprig-dev golang-github-xeipuuv-gojsonschema-dev golang-k8s-sigs-yaml-dev)
GO=$(apt-cache "${o[@]}" depends golang-go | awk '/Depends: golang-1\.[0-9]+-go/{print $2; exit}')
[ -n "$GO" ] || { echo "build.sh: cannot resolve the Go toolchain behind golang-go in sid" >&2; exit 1; }
apt-cache "${o[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances "${LIBS[@]}" > "$W/closure.txt"
mapfile -t DEVS < <(grep -E '^golang-.*-dev$' "$W/closure.txt" | sort -u)
for lib in "${LIBS[@]}"; do
  printf '%s\n' "${DEVS[@]}" | grep -qx "$lib" || { echo "build.sh: $lib is not in sid" >&2; exit 1; }
done
step "downloading $GO ${GO%-go}-src + ${#DEVS[@]} Go -dev packages"
(cd "$W/debs" && apt-get "${o[@]}" download "$GO" "${GO%-go}-src" "${DEVS[@]}" >/dev/null)
step "downloaded $(ls "$W/debs" | wc -l) packages ($(du -sh "$W/debs" | cut -f1)), extracting"
# shellcheck disable=SC2016
find "$W/debs" -name '*.deb' -print0 | xargs -0 -n 16 -P "$(nproc)" sh -c 'for f; do dpkg -x "$f" "$0"; done' "$W/root"
(cd "$W/debs" && ls *.deb | sed 's/_[^_]*$//; s/_/=/; s/%3a/:/') > "$W/versions.txt"

# --- 3. go build, offline, GOPATH mode
R=$W/root
G=$W/gopath/src/$NAME
mkdir -p "$G"
cp "$HERE/main.go" "$G/main.go"
GOROOT=$(ls -d "$R"/usr/lib/go-1.* | sort -V | tail -1)
export GOROOT GOPATH=$W/gopath:$R/usr/share/gocode GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off GOFLAGS= \
       GOCACHE=$W/gocache GOTMPDIR= CGO_ENABLED=0
cd "$G"
step "go build ($("$GOROOT/bin/go" version | cut -d' ' -f3), $("$GOROOT/bin/go" list -deps . | wc -l) packages)"
if ! "$GOROOT/bin/go" build -trimpath -ldflags='-s -w' -o "$BIN.new/$NAME" . 2> "$W/go-build.log"; then
  tail -n 40 "$W/go-build.log" >&2
  echo "build.sh: go build failed (log: $W/go-build.log)" >&2
  exit 1
fi
cd "$HERE"
"$BIN.new/$NAME" --help >/dev/null

# --- 4. install atomically, then drop the work dir
rm -rf "$BIN"
mv "$BIN.new" "$BIN"
mv "$W/versions.txt" "$OUT/versions.txt"
echo "$WANT" > "$OUT/stamp"
rm -rf "$W"
step "done: $BIN/$NAME ($(grep -E '^(golang-github-masterminds-sprig-dev|golang-github-xeipuuv-gojsonschema-dev|golang-1\.[0-9]+-go)=' "$OUT/versions.txt" | tr '\n' ' '))"
