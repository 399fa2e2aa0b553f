#!/usr/bin/env bash
# Builds the pinned upstream cluster components (Kubernetes' server binaries, etcd) from the Go module proxy
# into a cache directory keyed by version, once. Nothing of upstream's code is committed: a throwaway module
# requires k8s.io/kubernetes and replaces each staging module (upstream's go.mod points them at ./staging/...,
# which a dependency cannot use) with the matching published k8s.io/<name> v0.N.x.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${WOLT_CLUSTER_CACHE:-$HOME/.cache/wolt-jupyter/cluster}"
K8S_BIN="$CACHE/kubernetes-$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/bin"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# Go from PATH, else where its tarball installs it
command -v go > /dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go > /dev/null || { echo "build-upstream.sh: Go (1.24 or later) is needed" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED="${CGO_ENABLED:-0}"
ldflags="-s -w"

have_all() {
  for c in "${COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || return 1; done
  [[ -x "$ETCD_BIN/etcd" ]]
}
if have_all; then
  echo "cluster binaries cached: $K8S_BIN, $ETCD_BIN"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

if [[ ! -x "$ETCD_BIN/etcd" ]]; then
  mkdir -p "$work/etcd" "$ETCD_BIN"
  (cd "$work/etcd" && go mod init wolt-cluster-etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
    && go build -ldflags "$ldflags" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3) \
    && mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
  echo "etcd $ETCD_VERSION built in $(( $(date +%s) - start )) s"
fi

missing=()
for c in "${COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || missing+=("$c"); done
if ((${#missing[@]})); then
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"; patch="${K8S_VERSION##*.}"
  staging="v0.$minor.$patch"
  mkdir -p "$work/k8s" "$K8S_BIN"
  cd "$work/k8s"
  go mod init wolt-cluster-k8s >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > download.json
  upstream_mod="$(python3 -c 'import json,sys; print(json.load(open("download.json"))["GoMod"])')"
  # Every "k8s.io/X => ./staging/src/k8s.io/X" of upstream's go.mod becomes "k8s.io/X => k8s.io/X v0.N.P".
  grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$upstream_mod" | awk '{print $1}' \
    | while read -r m; do go mod edit -replace "$m=$m@$staging"; done
  go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
  pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  printf 'package tools\n\nimport (\n' > tools.go
  for p in "${pkgs[@]}"; do printf '\t_ "%s"\n' "$p" >> tools.go; done
  printf ')\n' >> tools.go
  sed -i '1i //go:build tools' tools.go
  go mod tidy -e >/dev/null 2>&1 || true
  go mod download
  for p in "${pkgs[@]}"; do
    c="${p##*/}"
    t=$(date +%s)
    go build -ldflags "$ldflags -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      -o "$K8S_BIN/$c.tmp" "$p"
    mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
    echo "$c $K8S_VERSION built in $(( $(date +%s) - t )) s"
  done
fi
echo "cluster binaries built in $(( $(date +%s) - start )) s: $K8S_BIN, $ETCD_BIN"
