#!/usr/bin/env bash
# Prepare the real container runtime of the runtime test tier (tests/runtime): containerd from
# Debian sid, run as extracted (no install), with CNI ptp/host-local/loopback, an offline busybox
# image pair and the CRI gRPC stubs for Python. Background and measurements:
# shared/notes/real-runtime.md §3 (this is the project's version of its realrt-setup.sh).
#
# Nothing is installed system-wide: packages are fetched with a private apt config (own sources,
# lists, cache and an empty dpkg status) and unpacked with dpkg -x. The host only provides runc
# (bookworm's /usr/sbin/runc: sid's runc and crun need a newer glibc), iproute2 and python3.
#
# Output, in OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/runtime:
#   debs/                   the downloaded .debs (file names carry the versions)
#   root/                   the sid packages, unpacked (usr/bin/containerd, usr/lib/cni/ptp, ...)
#   img/{bbox,pause}.tar    OCI image tars made by mkoci.py: docker.io/library/bbox:1 and the
#                           sandbox image registry.k8s.io/pause:3.10 (busybox running sleep)
#   gen/cri_api_pb2{,_grpc}.py  CRI runtime.v1 stubs from golang-k8s-cri-api-dev's api.proto
#   versions.txt            package=version of everything unpacked; containerd-version.txt
#   stamp                   recipe hash + versions: when it matches, setup does nothing
#   root-1.7/ (optional)    containerd 1.7.x from trixie, with --with-1.7 or SRIOVDRA_RUNTIME_17=1
#
# Idempotent and cheap when warm: with a matching stamp it does not even touch the network.
# A cold run downloads ~41 MB + sid's package lists (~15 s on an idle machine, ~30 s on a busy
# one) and keeps ~190 MB; --with-1.7 adds trixie's lists and containerd 1.7 (~+15 s, +25 MB).
# The versions are sid's current ones; --refresh re-resolves them (new versions = new cold run,
# .debs already downloaded are reused).
#
# Usage: setup.sh [--check|--refresh|--force] [--with-1.7]
#   --check    exit 0 when up to date, 1 when setup would do work (prints nothing)
#   --refresh  re-resolve the versions (apt-get update) and rebuild
#   --force    redo everything
# Needs root (apt's private lists must be writable by apt's _apt sandbox => APT::Sandbox::User=root),
# apt-get, apt-cache, dpkg, flock, sha256sum and a python with grpcio-tools (the project venv:
# PYTHON=... or .venv/bin/python).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${SRIOVDRA_CACHE:-$HOME/.cache/sriovdra}/runtime
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
PACKAGES=(containerd containernetworking-plugins busybox-static golang-k8s-cri-api-dev)
# the recipe: this script (less comments) and the image builder; a change means a rebuild
RECIPE=$( (grep -v '^[[:space:]]*#' "$HERE/setup.sh"; cat "$HERE/mkoci.py") | sha256sum | cut -c1-16)

MODE=build WITH17=${SRIOVDRA_RUNTIME_17:-0}
for arg in "$@"; do
  case "$arg" in
    --check) MODE=check ;;
    --refresh) MODE=refresh ;;
    --force) MODE=force ;;
    --with-1.7) WITH17=1 ;;
    *) echo "usage: $0 [--check|--refresh|--force] [--with-1.7]" >&2; exit 2 ;;
  esac
done

up_to_date() {
  local stamp
  stamp=$(cat "$OUT/stamp" 2>/dev/null) || return 1
  [ "${stamp%% *}" = "$RECIPE" ] && [ -x "$OUT/root/usr/bin/containerd" ] &&
    [ -f "$OUT/img/bbox.tar" ] && [ -f "$OUT/img/pause.tar" ] && [ -f "$OUT/gen/cri_api_pb2_grpc.py" ] &&
    { [ "$WITH17" = 0 ] || [ -x "$OUT/root-1.7/usr/bin/containerd" ]; }
}
report() {
  echo "containerd: $(cat "$OUT/containerd-version.txt") in $OUT/root"
  if [ -f "$OUT/containerd-1.7-version.txt" ]; then
    echo "containerd (second target): $(cat "$OUT/containerd-1.7-version.txt") in $OUT/root-1.7"
  fi
}
if [ "$MODE" = check ]; then up_to_date; exit; fi
if [ "$MODE" = build ] && up_to_date; then report; exit 0; fi

for tool in apt-get apt-cache dpkg flock sha256sum; do
  command -v $tool >/dev/null || { echo "setup.sh: $tool not found (needs a Debian host)" >&2; exit 1; }
done
[ -x /usr/sbin/runc ] || command -v runc >/dev/null ||
  echo "setup.sh: warning: no runc on this host (apt-get install runc); containerd will not run pods" >&2
"$PYTHON" -c 'import grpc_tools' 2>/dev/null ||
  { echo "setup.sh: $PYTHON has no grpc_tools (use the project venv: hack/venv.sh, extras [test])" >&2; exit 1; }

mkdir -p "$OUT"
exec 9>"$OUT/.lock"  # several test runs on one machine share the cache
if ! flock -n 9; then
  echo "setup.sh: another setup is running in $OUT, waiting for it"
  flock 9
  if [ "$MODE" = build ] && up_to_date; then report; exit 0; fi
fi
start=$(date +%s%N)
step() {
  local ms=$((($(date +%s%N) - start) / 1000000))
  printf '[runtime setup +%d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}

# --- 1. private apt configs (sid; trixie only for the optional 1.7 target). The system's sources,
# lists and dpkg status are untouched; an empty status makes apt consider nothing installed.
apt_opts() {  # apt_opts <suite>: sets the array $o
  local A=$OUT/apt/$1
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
  : > "$A/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $1 main" \
    > "$A/sources.list"
  o=(-o "Dir::State::status=$A/status" -o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root
     -o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
}
apt_opts sid
step "apt-get update (sid, private lists)"
apt-get "${o[@]}" update -qq

# --- 2. resolve the versions and download what is missing (debs/ is keyed by file name = version)
versions=()
for p in "${PACKAGES[@]}"; do
  v=$(apt-cache "${o[@]}" show --no-all-versions "$p" 2>/dev/null | awk '/^Version:/ && !v {v=$2} END {print v}')
  [ -n "$v" ] || { echo "setup.sh: $p not found in sid" >&2; exit 1; }
  versions+=("$p=$v")
done
case "${versions[0]#containerd=}" in
  2.*) ;;
  *) echo "setup.sh: sid's containerd is ${versions[0]#containerd=}; the tier expects 2.x (config schema v3)" >&2
     exit 1 ;;
esac
mkdir -p "$OUT/debs"
need=()
for pv in "${versions[@]}"; do
  p=${pv%%=*} v=${pv#*=}
  ls "$OUT/debs/${p}_${v/:/%3a}_"*.deb >/dev/null 2>&1 || need+=("$pv")
done
if [ ${#need[@]} -gt 0 ]; then
  step "downloading ${need[*]}"
  (cd "$OUT/debs" && apt-get "${o[@]}" download "${need[@]}" -qq)
fi

# --- 3. unpack into a fresh root (atomically replaced: a failed run leaves the old one usable)
step "unpacking"
rm -rf "$OUT/root.new"
mkdir -p "$OUT/root.new"
for pv in "${versions[@]}"; do
  p=${pv%%=*} v=${pv#*=}
  dpkg -x "$(ls "$OUT/debs/${p}_${v/:/%3a}_"*.deb | head -1)" "$OUT/root.new"
done
R=$OUT/root.new
for f in usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/lib/cni/ptp usr/lib/cni/host-local \
         usr/lib/cni/loopback usr/bin/busybox; do
  [ -e "$R/$f" ] || { echo "setup.sh: $f missing after unpacking ${versions[*]}" >&2; exit 1; }
done
"$R/usr/bin/containerd" --version > "$OUT/containerd-version.txt.new"

# --- 4. the two OCI images (busybox-static rootfs, no registry)
mkdir -p "$OUT/img"
"$PYTHON" "$HERE/mkoci.py" "$R/usr/bin/busybox" "$OUT/img/bbox.tar.new" docker.io/library/bbox:1 '["/bin/sh"]'
"$PYTHON" "$HERE/mkoci.py" "$R/usr/bin/busybox" "$OUT/img/pause.tar.new" registry.k8s.io/pause:3.10 \
  '["/bin/sleep","2147483647"]'

# --- 5. CRI stubs (package runtime.v1; the proto imports nothing)
rm -rf "$OUT/gen.new" "$OUT/protos"
mkdir -p "$OUT/gen.new" "$OUT/protos"
cp "$R/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto" "$OUT/protos/cri_api.proto"
"$PYTHON" -m grpc_tools.protoc -I"$OUT/protos" --python_out="$OUT/gen.new" --grpc_python_out="$OUT/gen.new" \
  cri_api.proto

# --- 6. optional second target: containerd 1.7 from trixie (same CNI plugins and images)
if [ "$WITH17" = 1 ]; then
  apt_opts trixie
  step "apt-get update (trixie, private lists)"
  apt-get "${o[@]}" update -qq
  v17=$(apt-cache "${o[@]}" show --no-all-versions containerd | awk '/^Version:/ && !v {v=$2} END {print v}')
  ls "$OUT/debs/containerd_${v17/:/%3a}_"*.deb >/dev/null 2>&1 ||
    (cd "$OUT/debs" && apt-get "${o[@]}" download "containerd=$v17" -qq)
  rm -rf "$OUT/root-1.7.new"
  dpkg -x "$(ls "$OUT/debs/containerd_${v17/:/%3a}_"*.deb | head -1)" "$OUT/root-1.7.new"
  "$OUT/root-1.7.new/usr/bin/containerd" --version > "$OUT/containerd-1.7-version.txt"
  versions+=("containerd(trixie)=$v17")
  rm -rf "$OUT/root-1.7"
  mv "$OUT/root-1.7.new" "$OUT/root-1.7"
fi

# --- 7. install atomically, drop .debs of versions no longer wanted, write the stamp
rm -rf "$OUT/root" "$OUT/gen"
mv "$OUT/root.new" "$OUT/root"
mv "$OUT/gen.new" "$OUT/gen"
mv "$OUT/img/bbox.tar.new" "$OUT/img/bbox.tar"
mv "$OUT/img/pause.tar.new" "$OUT/img/pause.tar"
mv "$OUT/containerd-version.txt.new" "$OUT/containerd-version.txt"
printf '%s\n' "${versions[@]}" > "$OUT/versions.txt"
for deb in "$OUT/debs/"*.deb; do
  b=$(basename "$deb")
  keep=0
  for pv in "${versions[@]}"; do
    p=${pv%%=*} v=${pv#*=}
    case "$b" in "${p%(trixie)}_${v/:/%3a}_"*) keep=1 ;; esac
  done
  [ $keep = 1 ] || rm -f "$deb"
done
# the package lists are only needed to resolve versions (a stale list would name .debs the mirror
# no longer has): drop them, every later resolution starts with a fresh apt-get update
rm -rf "$OUT/apt"
echo "$RECIPE ${versions[*]}" > "$OUT/stamp"
step "done ($(du -sh "$OUT" | cut -f1) in $OUT)"
report
