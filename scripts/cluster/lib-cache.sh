# Sourced by the cluster's build and fetch scripts (bash): the cache-by-version rule they share.

# cached_or_lock OUT [SHOWN]: when OUT exists, print SHOWN (default OUT) and end the calling script; else take
# the build lock beside OUT (one build at a time per cache, held until the script ends) and check again.
cached_or_lock() {
  local out="$1" shown="${2:-$1}"
  if [[ -e "$out" ]]; then
    echo "$shown"
    exit 0
  fi
  mkdir -p "$(dirname "$out")"
  exec 9> "$(dirname "$out")/.build.lock"
  flock 9
  if [[ -e "$out" ]]; then
    echo "$shown"
    exit 0
  fi
}

# module_dir MODULE@VERSION: the module's unpacked directory in the Go module cache (downloaded once per
# machine); the proxy's error on stderr and a non-zero status when it does not serve it.
module_dir() {
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "$1") | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d.get("Dir") or "")
print(d.get("Error") or "", file=sys.stderr)
sys.exit(1 if d.get("Error") else 0)'
  local rc=$?
  rmdir "$tmp"
  return $rc
}

# build_from_module MODULE@VERSION: a static, reproducible Go build's settings, and a writable copy of the
# module's source in a directory removed when the script ends; cd into it and print nothing.
build_from_module() {
  export GOFLAGS="-buildvcs=false -trimpath -mod=mod"
  export CGO_ENABLED=0
  local dir
  dir="$(module_dir "$1")"
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"
  cd "$work/src"
}
