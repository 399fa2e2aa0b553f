#!/usr/bin/env bash
# Debian packages the build and the tests need. Installs only what is missing; needs root (or sudo).
#   install-system-deps.sh          everything `make test` needs: PostgreSQL, Prometheus, git, Node, Chromium
#   install-system-deps.sh build    only what building the JupyterLab extension needs (Node)
set -euo pipefail

need=()
command -v node > /dev/null || need+=(nodejs)
if [ "${1:-all}" != "build" ]; then
  compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || need+=(postgresql)
  command -v prometheus > /dev/null || need+=(prometheus)
  command -v git > /dev/null || need+=(git)
  command -v chromium > /dev/null || need+=(chromium)  # the browser tests drive it through Playwright
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

# @jupyter/builder bundles with rspack, which needs Node >= 20.19 (Debian 12's own nodejs is 18).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "Node $(node --version) is too old to build the JupyterLab extension: install Node 20.19+ (e.g. NodeSource's nodejs 20)" >&2
  exit 1
fi
