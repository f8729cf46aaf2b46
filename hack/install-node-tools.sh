#!/usr/bin/env bash
# Makes sure the node agent's tools are installed: util-linux (unshare, nsenter, setpriv)
# and mount for the pods' mount namespaces, iproute2 (ip) for their network namespaces.
# On Debian/Ubuntu it installs the packages that are missing.
set -euo pipefail

missing=()
for tool in ip:iproute2 unshare:util-linux nsenter:util-linux setpriv:util-linux mount:mount; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "node agent tools: ip, unshare, nsenter, setpriv, mount"; exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the node agent needs ${packages[*]}; install them for your system" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing ${packages[*]} (the node agent's namespaces)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
${sudo:+$sudo -E} apt-get install -y -q --no-install-recommends "${packages[@]}"
