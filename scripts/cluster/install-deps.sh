#!/usr/bin/env bash
# Debian packages the cluster needs: containerd, runc, CNI plugins, iptables, conntrack (kube-proxy), openssl
# (certificates), Go is on the machine already (1.26; the Go module proxy serves Kubernetes and etcd), and the
# image builders (buildah, debootstrap, umoci). Installs only what is missing; needs root (or sudo).
set -euo pipefail
need=()
for pair in containerd:containerd runc:runc iptables:iptables conntrack:conntrack openssl:openssl \
            buildah:buildah debootstrap:debootstrap umoci:umoci; do
  cmd="${pair%%:*}"; pkg="${pair##*:}"
  command -v "$cmd" > /dev/null || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
command -v go > /dev/null || [ -x /usr/local/go/bin/go ] \
  || { echo "Go (1.24 or later) is needed to build the cluster's components: install it" >&2; exit 1; }
