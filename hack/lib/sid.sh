# Shared by hack/apiserver/build.sh and hack/helm/build.sh (sourced, not run): build a Go program
# offline from Debian sid packages without installing anything system-wide. The Go toolchain and
# the Go library sources (-dev packages) are downloaded with a private apt config, unpacked with
# dpkg -x into a work dir and built in GOPATH mode; only the binaries, a stamp and the package
# versions are kept. Needs root (apt's private lists), apt-get, apt-cache, dpkg, flock.
#
# A build script sets OUT (its cache dir), LABEL (for progress lines) and defines up_to_date()
# (true when its binaries exist and "$OUT/stamp" = $WANT), then calls, in order:
#   WANT=$(sid_recipe_hash "$HERE/main.go")  the stamp: this file and the caller, less comment
#                                            lines, plus the given sources
#   sid_begin "$@"       --check/--force/usage, up-to-date exit, tool check, build lock, work dir
#   sid_apt_update       private sid apt config in the array o=(...), apt-get update
#   sid_go_closure PKG...  GO = the toolchain behind golang-go; DEVS = the Go -dev closure of PKG...
#   sid_fetch EXTRA...   download $GO, its -src, DEVS and EXTRA; unpack all into $R
#   sid_go_env           GOROOT, GOPATH ($W/gopath first), offline GOPATH-mode settings
#   sid_go_build OUTPUT  go build of the package in the current dir, with progress every 30 s
#   sid_install          move $BIN.new to $BIN atomically, write the stamp and versions, drop $W

sid_recipe_hash() {
  (grep -hv '^[[:space:]]*#' "${BASH_SOURCE[0]}" "$0"; cat "$@") | sha256sum | cut -c1-16
}

sid_begin() {
  BIN=$OUT/bin
  case "${1:-}" in
    --check) up_to_date; exit ;;
    --force) FORCE=1 ;;
    "") FORCE=0 ;;
    *) echo "usage: $0 [--check|--force]" >&2; exit 2 ;;
  esac
  if [ "$FORCE" = 0 ] && up_to_date; then
    echo "$LABEL: up to date in $BIN"
    exit 0
  fi
  local tool
  for tool in apt-get apt-cache dpkg flock sha256sum; do
    command -v $tool >/dev/null || { echo "$0: $tool not found (needs a Debian host)" >&2; exit 1; }
  done
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  if ! flock -n 9; then
    echo "another build is running in $OUT, waiting for it"
    flock 9
    if [ "$FORCE" = 0 ] && up_to_date; then echo "$LABEL: built by the other run"; exit 0; fi
  fi
  SID_START=$(date +%s)
  W=$OUT/work
  R=$W/root
  rm -rf "$W" "$BIN.new"
  mkdir -p "$W/debs" "$R" "$W/sid-apt/lists/partial" "$W/sid-apt/cache/archives/partial" "$BIN.new"
}

step() { echo "[$LABEL build +$(($(date +%s) - SID_START))s] $*"; }

# The system's sources, lists and dpkg status are untouched.
sid_apt_update() {
  local A=$W/sid-apt
  : > "$A/status"  # an empty dpkg status: apt resolves every dependency as not installed
  echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main' > "$A/sources.list"
  o=(-o "Dir::State::status=$A/status" -o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root
     -o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
  step "apt-get update (sid, private lists)"
  apt-get "${o[@]}" update -qq
}

# The whole dependency closure rather than a curated list: robust to sid's package renames.
# C -dev packages are not needed (CGO_ENABLED=0).
sid_go_closure() {
  GO=$(apt-cache "${o[@]}" depends golang-go | awk '/Depends: golang-1\.[0-9]+-go/{print $2; exit}')
  [ -n "$GO" ] || { echo "$0: cannot resolve the Go toolchain behind golang-go in sid" >&2; exit 1; }
  apt-cache "${o[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" > "$W/closure.txt"
  mapfile -t DEVS < <(grep -E '^golang-.*-dev$' "$W/closure.txt" | sort -u)
  local lib
  for lib in "$@"; do
    printf '%s\n' "${DEVS[@]}" | grep -qx "$lib" || { echo "$0: $lib is not in sid" >&2; exit 1; }
  done
}

sid_fetch() {
  step "downloading $GO ${GO%-go}-src $* + ${#DEVS[@]} Go -dev packages"
  (cd "$W/debs" && apt-get "${o[@]}" download "$GO" "${GO%-go}-src" "$@" "${DEVS[@]}" >/dev/null)
  step "downloaded $(ls "$W/debs" | wc -l) packages ($(du -sh "$W/debs" | cut -f1)), extracting"
  # shellcheck disable=SC2016
  find "$W/debs" -name '*.deb' -print0 | xargs -0 -n 16 -P "$(nproc)" sh -c 'for f; do dpkg -x "$f" "$0"; done' "$R"
  (cd "$W/debs" && ls *.deb | sed 's/_[^_]*$//; s/_/=/; s/%3a/:/') > "$W/versions.txt"
}

sid_go_env() {
  GOROOT=$(ls -d "$R"/usr/lib/go-1.* | sort -V | tail -1)
  export GOROOT GOPATH=$W/gopath:$R/usr/share/gocode GO111MODULE=off GOTOOLCHAIN=local GOPROXY=off GOFLAGS= \
         GOCACHE=$W/gocache GOTMPDIR= CGO_ENABLED=0
}

sid_go_build() {
  local total gopid
  total=$("$GOROOT/bin/go" list -deps . | wc -l)
  step "go build ($("$GOROOT/bin/go" version | cut -d' ' -f3), $total packages)"
  "$GOROOT/bin/go" build -v -trimpath -ldflags='-s -w' -o "$1" . 2> "$W/go-build.log" &
  gopid=$!
  while kill -0 $gopid 2>/dev/null; do
    sleep 30
    if kill -0 $gopid 2>/dev/null; then step "go build: $(grep -vc '^#' "$W/go-build.log")/$total packages compiled"; fi
  done
  if ! wait $gopid; then
    tail -n 40 "$W/go-build.log" >&2
    echo "$0: go build failed (log: $W/go-build.log)" >&2
    exit 1
  fi
}

# KEEP_WORK=1 keeps the work dir (GOCACHE, GOPATH) for quick re-links.
sid_install() {
  rm -rf "$BIN"
  mv "$BIN.new" "$BIN"
  mv "$W/versions.txt" "$OUT/versions.txt"
  echo "$WANT" > "$OUT/stamp"
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    step "kept the work dir $W ($(du -sh "$W" | cut -f1))"
  else
    rm -rf "$W"
  fi
}
