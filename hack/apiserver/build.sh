#!/usr/bin/env bash
# Build the binaries of the real-apiserver test tier (tests/apiserver) from Debian sid packages:
#   dra-test-apiserver  k8s.io/apiextensions-apiserver code started standalone (main.go here),
#                       with the overlay patch below (DELETE returns the object for resource.k8s.io)
#   etcd                sid's etcd-server
#   kubectl             sid's kubectl (handy for poking at a running server; the tests do not use it)
# Nothing is installed system-wide (hack/lib/sid.sh: private apt config, dpkg -x, offline GOPATH
# build, the work dir deleted after a successful build). Needs root, apt-get, dpkg, flock.
#
# Output: $OUT/bin/{dra-test-apiserver,etcd,kubectl}, $OUT/stamp, $OUT/versions.txt, where
#   OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/apiserver
# Idempotent: when the binaries exist and $OUT/stamp matches this recipe (a hash of main.go and
# of build.sh and hack/lib/sid.sh less their comment lines), it does nothing. A cold build downloads ~300 MB and needs
# ~4 GB of disk at peak (180 MB kept); it takes 5-6 min on an idle 2-core machine and up to 15 min
# on a busy one (go build: ~1400 packages).
#
# Usage: build.sh           build unless up to date
#        build.sh --check   exit 0 when up to date, 1 when a build is needed (prints nothing)
#        build.sh --force   rebuild even when up to date
# Env:   SRIOVDRA_APISERVER_KEEP_WORK=1 keeps the work dir (GOCACHE, GOPATH) for quick re-links.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../lib/sid.sh"
OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/apiserver
LABEL=dra-test-apiserver
KEEP_WORK=${SRIOVDRA_APISERVER_KEEP_WORK:-0}
WANT=$(sid_recipe_hash "$HERE/main.go")
up_to_date() {
  [ -x "$BIN/dra-test-apiserver" ] && [ -x "$BIN/etcd" ] && [ -x "$BIN/kubectl" ] &&
    [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$WANT" ]
}
sid_begin "$@"
sid_apt_update

# --- the Go toolchain and every Go -dev package that golang-k8s-apiextensions-apiserver-dev pulls in
sid_go_closure golang-k8s-apiextensions-apiserver-dev
[ ${#DEVS[@]} -ge 50 ] || { echo "build.sh: only ${#DEVS[@]} Go -dev packages in the closure of golang-k8s-apiextensions-apiserver-dev" >&2; exit 1; }
sid_fetch etcd-server kubectl

# --- GOPATH overlay: resource.k8s.io custom resources return the deleted object on DELETE,
# as kube-apiserver's built-in resourceslices/resourceclaims/deviceclasses do (the kubernetes
# Python client's typed delete_* calls expect the object, not a Status)
G=$W/gopath/src
C=k8s.io/apiextensions-apiserver/pkg/registry/customresource
mkdir -p "$G/$C" "$G/dra-test-apiserver"
cp "$R/usr/share/gocode/src/$C"/*.go "$G/$C/"
rm -f "$G/$C"/*_test.go
sed -i 's|^\t\tTableConvertor: tableConvertor,$|&\n\t\tReturnDeletedObject: resource.Group == "resource.k8s.io",|' "$G/$C/etcd.go"
grep -q 'ReturnDeletedObject: resource.Group' "$G/$C/etcd.go" ||
  { echo "build.sh: the overlay patch no longer applies to $C/etcd.go (upstream changed)" >&2; exit 1; }
cp "$HERE/main.go" "$G/dra-test-apiserver/main.go"

# --- go build, offline, GOPATH mode
sid_go_env
cd "$G/dra-test-apiserver"
sid_go_build "$BIN.new/dra-test-apiserver"
cd "$HERE"
cp "$R/usr/bin/etcd" "$R/usr/bin/kubectl" "$BIN.new/"
"$BIN.new/dra-test-apiserver" --help >/dev/null
"$BIN.new/etcd" --version >/dev/null

# --- install atomically, then drop the work dir (GOCACHE 1.4 GB, debs, the unpacked root)
sid_install
step "done: $(du -sh "$BIN" | cut -f1) in $BIN ($(grep -E '^(golang-k8s-apiextensions-apiserver-dev|etcd-server|golang-1\.[0-9]+-go)=' "$OUT/versions.txt" | tr '\n' ' '))"
