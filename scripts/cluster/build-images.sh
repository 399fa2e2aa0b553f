#!/usr/bin/env bash
# Builds the container images the test cluster runs, without any registry but PyPI and Debian's mirror:
#   1. localhost/wolt-debian-base:bookworm   a Debian base made here with debootstrap (python3, python3-venv,
#                                             ca-certificates), the base of the runtime image on the cluster
#   2. wolt-jupyter-runtime:<version>        the repository's Dockerfile built with buildah on that base
#                                             (render.DEFAULT_IMAGE; containerd sees docker.io/library/...)
#   3. localhost/wolt-pause:1.0              our own pause program (scripts/cluster/pause), FROM scratch
# Each is built once per content (a hash of its inputs) and saved as a docker-archive that
# `ctr -n k8s.io images import FILE` takes with its name. Needs root; installs its Debian packages if missing.
#
#   build-images.sh [all|base|runtime|pause]       (default: all)
#
# Environment:
#   WOLT_CLUSTER_CACHE    cache root (default ~/.cache/wolt-jupyter/cluster); archives go to $it/images/
#   WOLT_DEBIAN_MIRROR    Debian mirror for debootstrap (default: the one apt uses, from /etc/apt/sources*)
#   WOLT_DEBIAN_SUITE     default bookworm
#   WOLT_VENV             the notebook-side venv whose `pip freeze` pins the runtime's dependencies
#                         (default: <repo>/.venv); WOLT_RUNTIME_CONSTRAINTS=FILE uses that file instead
#   WOLT_PIP_CERT         CA bundle pip needs to reach PyPI during the build (default: $PIP_CERT if set);
#                         given to the build as a secret, never stored in the image
#   WOLT_BUILDAH_ISOLATION  default chroot (no cgroup or network namespace needed: works with cgroup v1 and
#                         no systemd; RUN steps use the host network, which pip needs)
# Output: for each image, a line `image-archive: NAME PATH` (the last lines), plus sizes and timings.
set -euo pipefail

t_start=$EPOCHREALTIME
what=${1:-all}
case "$what" in all | base | runtime | pause) ;; *) echo "usage: $0 [all|base|runtime|pause]" >&2; exit 2 ;; esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${WOLT_CLUSTER_CACHE:-$HOME/.cache/wolt-jupyter/cluster}/images
mkdir -p "$cache"
suite=${WOLT_DEBIAN_SUITE:-bookworm}
isolation=${WOLT_BUILDAH_ISOLATION:-chroot}
export BUILDAH_ISOLATION=$isolation
# Storage: buildah's default (overlay on /var/lib/containers/storage; CONTAINERS_STORAGE_CONF overrides it).
# chroot isolation uses no cgroup, so cgroup v1 without systemd needs nothing; with
# WOLT_BUILDAH_ISOLATION=oci, set cgroup_manager = "cgroupfs" in containers.conf (there is no systemd).

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[build-images %6ss] %s\n' "$(elapsed "$t_start")" "$*" >&2; }

# -- Debian packages this script needs -------------------------------------------------------------------
need=()
command -v buildah > /dev/null || need+=(buildah)
command -v debootstrap > /dev/null || need+=(debootstrap)
command -v go > /dev/null || need+=(golang-go)
command -v git > /dev/null || need+=(git)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "build-images.sh needs root to install: ${need[*]}" >&2; exit 1; }
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
[ "$(id -u)" -eq 0 ] || { echo "build-images.sh needs root (debootstrap, buildah storage)" >&2; exit 1; }

# One build at a time per cache (two checkouts may build at once: they share the context dir and the tag)
exec 9> "$cache/.lock"
if ! flock -n 9; then
  log "waiting for another build-images.sh on $cache"
  flock 9
fi

# Hash of files (paths relative to $2.. and contents), stable across machines.
hash_files() { # hash_files DIR FILE...
  local dir=$1; shift
  (cd "$dir" && for f in "$@"; do printf '%s\0' "$f"; sha256sum < "$f"; done) | sha256sum | cut -c1-16
}
image_key() { buildah inspect --type image --format '{{index .OCIv1.Config.Labels "wolt.cache-key"}}' "$1" 2> /dev/null || true; }
have_image() { buildah inspect --type image "$1" > /dev/null 2>&1; }
size_of() { du -h --apparent-size "$1" | cut -f1; }
# Saves image $1 to $2 as a docker-archive (the format `ctr images import` keeps the name of; see below).
save_archive() { # save_archive IMAGE FILE [NAME-IN-ARCHIVE]
  local name=$1 out=$2 tag=${3:-$1}
  rm -f "$out.tmp"
  # docker-archive:PATH:NAME writes NAME into the manifest's RepoTags; ctr 1.6 imports that name as-is
  # (a bare name becomes docker.io/library/NAME, as the kubelet expects for an unqualified image).
  buildah push --quiet "$name" "docker-archive:$out.tmp:$tag" > /dev/null
  mv "$out.tmp" "$out"
}
# Puts an archived image back into buildah's storage if the storage lost it (e.g. a fresh /var/lib/containers).
restore_image() {
  local name=$1 archive=$2
  have_image "$name" && return 0
  [ -s "$archive" ] || return 1
  log "restoring $name from $archive"
  buildah pull --quiet "docker-archive:$archive" > /dev/null
  have_image "$name" || buildah tag "$(buildah pull --quiet "docker-archive:$archive")" "$name"
}

outputs=()
tmpdirs=()
cleanup() { for d in "${tmpdirs[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

# -- 1. the Debian base ----------------------------------------------------------------------------------
base_name=localhost/wolt-debian-base:$suite
base_packages=(python3 python3-venv ca-certificates)
mirror=${WOLT_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list 2> /dev/null | grep -m1 -E '/debian/?( |$)' | awk '{print ($1 == "deb" ? $2 : $2)}' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
base_key=$(printf '%s\n' "v1" "$suite" "minbase" "${base_packages[@]}" | sha256sum | cut -c1-16)
base_archive=$cache/wolt-debian-base-$suite-$base_key.tar

make_rootfs() { # make_rootfs DIR: debootstrap + clean
  local root=$1
  log "base: debootstrap --variant=minbase $suite from $mirror (packages: ${base_packages[*]})"
  local inc
  inc=$(IFS=,; echo "${base_packages[*]}")
  nice -n 10 debootstrap --variant=minbase --include="$inc" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$suite" "$root" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # Clean: package lists and caches, docs, man pages, locales but C/en, logs, the machine-id; nothing that
  # dpkg needs to know what is installed (var/lib/dpkg stays, so `apt-get install` still works in derived images).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian \
    "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name locale.alias -exec rm -rf {} +
  : > "$root"/etc/machine-id
  # apt in the image uses the public mirror, whatever this machine's apt points at
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suite" "$suite" "$suite" > "$root"/etc/apt/sources.list.d/debian.sources
  rm -f "$root"/etc/apt/sources.list
}

build_base() {
  if [ -s "$base_archive" ] && restore_image "$base_name" "$base_archive"; then
    log "base: cache hit ($base_archive)"
    return
  fi
  local t0 root ctr mnt rootfs
  t0=$EPOCHREALTIME
  rootfs=$cache/wolt-debian-base-$suite-$base_key.rootfs.tar
  if [ ! -s "$rootfs" ]; then
    root=$(mktemp -d "$cache/debootstrap.XXXXXX")
    tmpdirs+=("$root")
    make_rootfs "$root"
    tar -C "$root" --numeric-owner -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
    rm -rf "$root"
  fi
  ctr=$(buildah from --quiet scratch)
  # one layer holding the whole tree, as a base image has
  mnt=$(buildah mount "$ctr")
  tar -C "$mnt" --numeric-owner -xf "$rootfs"
  buildah umount "$ctr" > /dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd /bin/bash --label org.opencontainers.image.title="Debian $suite minbase + ${base_packages[*]}" \
    --label wolt.cache-key="$base_key" --os linux --arch amd64 "$ctr"
  buildah rmi --force "$base_name" > /dev/null 2>&1 || true
  buildah commit --quiet --rm "$ctr" "$base_name" > /dev/null
  save_archive "$base_name" "$base_archive"
  log "base: built in $(elapsed "$t0") s; $(size_of "$base_archive") archive"
}

# -- 2. the runtime image --------------------------------------------------------------------------------
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/wolt_jupyter/_version.py" | head -1)
# WOLT_RUNTIME_TAG: another name (e.g. a branch's image beside main's in one cluster; then WOLT_RUNTIME_IMAGE)
runtime_name=${WOLT_RUNTIME_TAG:-wolt-jupyter-runtime:$version}
venv=${WOLT_VENV:-$repo/.venv}
if [ -z "${WOLT_VENV:-}" ] && [ ! -x "$venv/bin/python" ]; then # a git worktree: the main checkout's venv
  common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2> /dev/null || true)
  [ -n "$common" ] && [ -x "$(dirname "$common")/.venv/bin/python" ] && venv=$(dirname "$common")/.venv
fi
# the host's own CA bundle by default: where PyPI is reached through a TLS proxy, its CA is there too
pip_cert=${WOLT_PIP_CERT:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
ctxdir=$cache/runtime-context

# The build context: only what the Dockerfile reads (the package, without bytecode or the built lab
# extension) plus runtime-constraints.txt, the notebook venv's versions. Its content is the cache key.
make_context() {
  rm -rf "$ctxdir"
  mkdir -p "$ctxdir"
  cp "$repo/Dockerfile" "$repo/pyproject.toml" "$ctxdir/"
  (cd "$repo" && find wolt_jupyter -path wolt_jupyter/labextension -prune -o -name __pycache__ -prune \
    -o -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 cp --parents -t "$ctxdir")
  if [ -n "${WOLT_RUNTIME_CONSTRAINTS:-}" ]; then
    cp "$WOLT_RUNTIME_CONSTRAINTS" "$ctxdir/runtime-constraints.txt"
  elif [ -x "$venv/bin/python" ]; then
    # name==version lines only (no editable installs, no direct URLs), and not the package itself
    log "runtime: pinning dependencies to $venv"
    "$venv/bin/python" -m pip freeze --exclude-editable 2> /dev/null \
      | grep -E '^[A-Za-z0-9_.-]+==' | grep -v -i -E '^wolt[-_]jupyter==' | LC_ALL=C sort > "$ctxdir/runtime-constraints.txt"
  else
    echo "warning: no venv at $venv (WOLT_VENV) and no WOLT_RUNTIME_CONSTRAINTS: dependency versions unpinned" >&2
  fi
}

build_runtime() {
  local t0 key archive
  t0=$EPOCHREALTIME
  make_context
  key=$(cd "$ctxdir" && find . -type f -print | LC_ALL=C sort | tr '\n' '\0' | xargs -0 -n1 sh -c \
    'printf "%s\0" "$0"; sha256sum < "$0"' | sha256sum | cut -c1-16)
  # the base's cache key is part of this one: a new base is a new runtime image
  key=$(printf '%s %s %s\n' "$key" "$base_key" "$runtime_name" | sha256sum | cut -c1-16)
  archive=$cache/wolt-jupyter-runtime-$version-$key.tar
  runtime_archive=$archive
  if [ -s "$archive" ]; then
    # the archive is the truth; the image in buildah's storage is put back from it if it is another content
    if [ "$(image_key "localhost/$runtime_name")" != "$key" ]; then
      local id
      id=$(buildah images --quiet --no-trunc --filter "label=wolt.cache-key=$key" 2> /dev/null | head -1)
      buildah untag "localhost/$runtime_name" > /dev/null 2>&1 || true
      [ -z "$id" ] || buildah tag "$id" "localhost/$runtime_name"
    fi
    restore_image "localhost/$runtime_name" "$archive"
    log "runtime: cache hit ($archive)"
    return
  fi
  local secret=()
  [ -n "$pip_cert" ] && [ -s "$pip_cert" ] && secret=(--secret "id=pip-cert,src=$pip_cert")
  log "runtime: buildah bud (base $base_name, isolation $isolation, key $key)"
  # --layers: the dependency layer is reused while requirements.txt and the constraints are unchanged;
  # --format docker keeps the HEALTHCHECK (OCI has none); --pull=never: the base is local, there is no registry
  nice -n 10 buildah bud --layers --format docker --pull=never --isolation "$isolation" \
    --build-arg "BASE_IMAGE=$base_name" "${secret[@]}" --label "wolt.cache-key=$key" \
    -t "$runtime_name" -f "$ctxdir/Dockerfile" "$ctxdir" > "$cache/runtime-build.log" 2>&1 \
    || { tail -30 "$cache/runtime-build.log" >&2; echo "runtime: build failed; log: $cache/runtime-build.log" >&2; exit 1; }
  save_archive "localhost/$runtime_name" "$archive" "$runtime_name"
  # archives of earlier contents are dead weight: keep the newest two
  ls -t "$cache"/wolt-jupyter-runtime-*.tar 2> /dev/null | tail -n +3 | xargs -r rm -f
  log "runtime: built in $(elapsed "$t0") s"
}

# -- 3. the pause image ----------------------------------------------------------------------------------
pause_name=localhost/wolt-pause:1.0
pause_key=$(hash_files "$here/pause" main.go go.mod)
pause_archive=$cache/wolt-pause-1.0-$pause_key.tar

build_pause() {
  if [ -s "$pause_archive" ] && restore_image "$pause_name" "$pause_archive"; then
    log "pause: cache hit ($pause_archive)"
    return
  fi
  local t0 tmp ctr
  t0=$EPOCHREALTIME
  tmp=$(mktemp -d "$cache/pause.XXXXXX")
  tmpdirs+=("$tmp")
  (cd "$here/pause" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOOS=linux GOARCH=amd64 \
    nice -n 10 go build -trimpath -ldflags "-s -w" -o "$tmp/pause" .)
  ctr=$(buildah from --quiet scratch)
  buildah copy --quiet --chmod 0755 "$ctr" "$tmp/pause" /pause > /dev/null
  buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 --os linux --arch amd64 \
    --label wolt.cache-key="$pause_key" "$ctr"
  buildah rmi --force "$pause_name" > /dev/null 2>&1 || true
  buildah commit --quiet --rm "$ctr" "$pause_name" > /dev/null
  save_archive "$pause_name" "$pause_archive"
  log "pause: built in $(elapsed "$t0") s; $(size_of "$pause_archive") archive"
}

runtime_archive=
case "$what" in
  all) build_base; build_runtime; build_pause ;;
  base) build_base ;;
  runtime) build_base; build_runtime ;;
  pause) build_pause ;;
esac
if [ -n "$runtime_archive" ]; then
  log "runtime: image $(buildah images --format '{{.Size}}' "localhost/$runtime_name" | head -1) uncompressed; archive $(size_of "$runtime_archive")"
fi
case "$what" in all | base) outputs+=("image-archive: $base_name $base_archive") ;; esac
[ -n "$runtime_archive" ] && outputs+=("image-archive: $runtime_name $runtime_archive")
case "$what" in all | pause) outputs+=("image-archive: $pause_name $pause_archive") ;; esac
log "done in $(elapsed "$t_start") s"
printf '%s\n' "${outputs[@]}"
