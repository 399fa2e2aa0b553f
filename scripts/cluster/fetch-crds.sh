#!/usr/bin/env bash
# Fetches the operators' published CRDs at the pinned releases (the ones the package's JSON schemas were derived
# from: scripts/derive_crd_schemas.py SOURCES) from their Go modules, into the cluster's cache, once per
# version, and prints the directory holding them as the last line. Nothing of upstream's is committed.
#
#   KServe v0.20.0  github.com/kserve/kserve  config/crd/full/serving.kserve.io_{inferenceservices,
#                   servingruntimes,clusterservingruntimes}.yaml
#   Seldon v1.18.2  github.com/seldonio/seldon-core/operator  config/crd/bases/machinelearning.seldon.io_
#                   seldondeployments.yaml -- fetched only when the proxy serves it: proxy.golang.org answers
#                   403 "This module version is not available" for every seldon-core module (checked
#                   2026-12-08), so the directory then holds KServe's alone and says so in SELDON-MISSING.
set -euo pipefail

KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
SELDON_VERSION="${SELDON_VERSION:-v1.18.2}"
CACHE="${WOLT_CLUSTER_CACHE:-$HOME/.cache/wolt-jupyter/cluster}"
OUT="$CACHE/crds-kserve-$KSERVE_VERSION-seldon-$SELDON_VERSION"
KSERVE_FILES=(inferenceservices servingruntimes clusterservingruntimes)

if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT"
exec 9> "$OUT/.lock" # one fetch at a time per cache
flock 9
if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
module_dir() { # the module's unpacked directory in the Go module cache (downloaded once per machine)
  (cd "$work" && GOFLAGS=-mod=mod go mod download -json "$1") \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or ""); print(d.get("Error") or "", file=sys.stderr); sys.exit(1 if d.get("Error") else 0)'
}
dir="$(module_dir "github.com/kserve/kserve@$KSERVE_VERSION")"
for f in "${KSERVE_FILES[@]}"; do
  cp "$dir/config/crd/full/serving.kserve.io_$f.yaml" "$OUT/"
done
if seldon="$(module_dir "github.com/seldonio/seldon-core/operator@$SELDON_VERSION" 2> "$work/seldon.err")"; then
  cp "$seldon/config/crd/bases/machinelearning.seldon.io_seldondeployments.yaml" "$OUT/"
  rm -f "$OUT/SELDON-MISSING"
else
  { echo "github.com/seldonio/seldon-core/operator@$SELDON_VERSION: not served by the Go module proxy"; \
    cat "$work/seldon.err"; } > "$OUT/SELDON-MISSING"
fi
chmod 0644 "$OUT"/*.yaml
touch "$OUT/.complete"
echo "CRDs fetched in $(($(date +%s) - start)) s" >&2
echo "$OUT"
