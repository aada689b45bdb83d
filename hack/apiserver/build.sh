#!/usr/bin/env bash
# Build the binaries of the real-apiserver test tier (tests/apiserver) from Debian sid packages:
#   dra-test-apiserver  k8s.io/apiextensions-apiserver code started standalone (main.go here),
#                       with the overlay patch below (DELETE returns the object for resource.k8s.io)
#   etcd                sid's etcd-server
#   kubectl             sid's kubectl (handy for poking at a running server; the tests do not use it)
# Nothing is installed system-wide: the Go toolchain and the Go library sources (-dev packages)
# are downloaded with a private apt config and unpacked with dpkg -x into a work dir, which is
# deleted after a successful build. Needs root (apt's private lists), apt-get, dpkg, flock.
#
# Output: $OUT/bin/{dra-test-apiserver,etcd,kubectl}, $OUT/stamp, $OUT/versions.txt, where
#   OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/apiserver
# Idempotent: when the binaries exist and $OUT/stamp matches this recipe (a hash of main.go and
# of build.sh less its comment lines), it does nothing. A cold build downloads ~300 MB and needs
# ~4 GB of disk at peak (180 MB kept); it takes 5-6 min on an idle 2-core machine and up to 15 min
# on a busy one (go build: ~1400 packages).
#
# Usage: build.sh           build unless up to date
#        build.sh --check   exit 0 when up to date, 1 when a build is needed (prints nothing)
#        build.sh --force   rebuild even when up to date
# Env:   SRIOVDRA_APISERVER_KEEP_WORK=1 keeps the work dir (GOCACHE, GOPATH) for quick re-links.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/apiserver
BIN=$OUT/bin
WANT=$( (grep -v '^[[:space:]]*#' "$HERE/build.sh"; cat "$HERE/main.go") | sha256sum | cut -c1-16)

up_to_date() {
  [ -x "$BIN/dra-test-apiserver" ] && [ -x "$BIN/etcd" ] && [ -x "$BIN/kubectl" ] &&
    [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$WANT" ]
}
case "${1:-}" in
  --check) up_to_date; exit ;;
  --force) FORCE=1 ;;
  "") FORCE=0 ;;
  *) echo "usage: $0 [--check|--force]" >&2; exit 2 ;;
esac
if [ "$FORCE" = 0 ] && up_to_date; then
  echo "dra-test-apiserver: up to date in $BIN"
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
  if [ "$FORCE" = 0 ] && up_to_date; then echo "dra-test-apiserver: built by the other run"; exit 0; fi
fi

start=$(date +%s)
step() { echo "[apiserver build +$(($(date +%s) - start))s] $*"; }
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

# --- 2. the Go toolchain behind the golang-go metapackage (golang-1.27-go today) and every Go
# -dev package that golang-k8s-apiextensions-apiserver-dev pulls in (the whole closure is more
# robust to sid's package renames than a curated list; C -dev packages are not needed)
GO=$(apt-cache "${o[@]}" depends golang-go | awk '/Depends: golang-1\.[0-9]+-go/{print $2; exit}')
[ -n "$GO" ] || { echo "build.sh: cannot resolve the Go toolchain behind golang-go in sid" >&2; exit 1; }
apt-cache "${o[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances golang-k8s-apiextensions-apiserver-dev > "$W/closure.txt"
mapfile -t DEVS < <(grep -E '^golang-.*-dev$' "$W/closure.txt" | sort -u)
[ ${#DEVS[@]} -ge 50 ] || { echo "build.sh: only ${#DEVS[@]} Go -dev packages in the closure of golang-k8s-apiextensions-apiserver-dev" >&2; exit 1; }
step "downloading $GO ${GO%-go}-src etcd-server kubectl + ${#DEVS[@]} Go -dev packages"
(cd "$W/debs" && apt-get "${o[@]}" download "$GO" "${GO%-go}-src" etcd-server kubectl "${DEVS[@]}" >/dev/null)
step "downloaded $(ls "$W/debs" | wc -l) packages ($(du -sh "$W/debs" | cut -f1)), extracting"
# shellcheck disable=SC2016
find "$W/debs" -name '*.deb' -print0 | xargs -0 -n 16 -P "$(nproc)" sh -c 'for f; do dpkg -x "$f" "$0"; done' "$W/root"
(cd "$W/debs" && ls *.deb | sed 's/_[^_]*$//; s/_/=/; s/%3a/:/') > "$W/versions.txt"

# --- 3. GOPATH overlay: resource.k8s.io custom resources return the deleted object on DELETE,
# as kube-apiserver's built-in resourceslices/resourceclaims/deviceclasses do (the kubernetes
# Python client's typed delete_* calls expect the object, not a Status)
R=$W/root
G=$W/gopath/src
C=k8s.io/apiextensions-apiserver/pkg/registry/customresource
mkdir -p "$G/$C" "$G/dra-test-apiserver"
cp "$R/usr/share/gocode/src/$C"/*.go "$G/$C/"
rm -f "$G/$C"/*_test.go
sed -i 's|^\t\tTableConvertor: tableConvertor,$|&\n\t\tReturnDeletedObject: resource.Group == "resource.k8s.io",|' "$G/$C/etcd.go"
grep -q 'ReturnDeletedObject: resource.Group' "$G/$C/etcd.go" ||
  { echo "build.sh: the overlay patch no longer applies to $C/etcd.go (upstream changed)" >&2; exit 1; }
cp "$HERE/main.go" "$G/dra-test-apiserver/main.go"

# --- 4. go build, offline, GOPATH mode
GOROOT=$(ls -d "$R"/usr/lib/go-1.* | sort -V | tail -1)
export GOROOT GOPATH=$W/gopath:$R/usr/share/gocode GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off GOFLAGS= \
       GOCACHE=$W/gocache GOTMPDIR= CGO_ENABLED=0
cd "$G/dra-test-apiserver"
TOTAL=$("$GOROOT/bin/go" list -deps . | wc -l)
step "go build ($("$GOROOT/bin/go" version | cut -d' ' -f3), $TOTAL packages, takes 4-8 min on 2 cores)"
"$GOROOT/bin/go" build -v -trimpath -ldflags='-s -w' -o "$BIN.new/dra-test-apiserver" . 2> "$W/go-build.log" &
gopid=$!
while kill -0 $gopid 2>/dev/null; do
  sleep 30
  if kill -0 $gopid 2>/dev/null; then step "go build: $(grep -vc '^#' "$W/go-build.log")/$TOTAL packages compiled"; fi
done
if ! wait $gopid; then
  tail -n 40 "$W/go-build.log" >&2
  echo "build.sh: go build failed (log: $W/go-build.log)" >&2
  exit 1
fi
cd "$HERE"
cp "$R/usr/bin/etcd" "$R/usr/bin/kubectl" "$BIN.new/"
"$BIN.new/dra-test-apiserver" --help >/dev/null
"$BIN.new/etcd" --version >/dev/null

# --- 5. install atomically, then drop the work dir (GOCACHE 1.4 GB, debs, the unpacked root)
rm -rf "$BIN"
mv "$BIN.new" "$BIN"
mv "$W/versions.txt" "$OUT/versions.txt"
echo "$WANT" > "$OUT/stamp"
if [ "${SRIOVDRA_APISERVER_KEEP_WORK:-0}" = 1 ]; then
  step "kept the work dir $W ($(du -sh "$W" | cut -f1))"
else
  rm -rf "$W"
fi
step "done: $(du -sh "$BIN" | cut -f1) in $BIN ($(grep -E '^(golang-k8s-apiextensions-apiserver-dev|etcd-server|golang-1\.[0-9]+-go)=' "$OUT/versions.txt" | tr '\n' ' '))"
