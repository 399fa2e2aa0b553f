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

# shellcheck source=scripts/cluster/lib-cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-cache.sh"
cached_or_lock "$OUT/.complete" "$OUT"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
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
