#!/usr/bin/env bash
# Builds KServe's controller manager (cmd/manager) at the pinned release from the Go module proxy into the
# cluster's cache, once per version, and prints the binary's path as the last line. The release is the one the
# package's InferenceService schema and the cluster tier's CRDs come from (scripts/cluster/fetch-crds.sh).
# The module's own go.mod (with its replace directives) is used as is, from a writable copy of the module;
# nothing of upstream's is committed.
set -euo pipefail

KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
CACHE="${WOLT_CLUSTER_CACHE:-$HOME/.cache/wolt-jupyter/cluster}"
BIN="$CACHE/kserve-$KSERVE_VERSION/bin/manager"

# shellcheck source=scripts/cluster/lib-cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib-cache.sh"
cached_or_lock "$BIN"
start=$(date +%s)
build_from_module "github.com/kserve/kserve@$KSERVE_VERSION"
nice -n 10 go build -ldflags "-s -w" -o "$BIN.tmp" ./cmd/manager >&2
mv "$BIN.tmp" "$BIN"
echo "kserve manager $KSERVE_VERSION built in $(($(date +%s) - start)) s" >&2
echo "$BIN"
