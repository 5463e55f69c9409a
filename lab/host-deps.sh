#!/usr/bin/env bash
# Installs the Debian packages the lab and the test suite need, only those missing.
# Idempotent and quiet when everything is there (the common case on a developer's machine).
set -euo pipefail
pkgs=(
  lxc debootstrap mmdebstrap dnsmasq-base dnsmasq-utils iptables iproute2 openssl zstd uidmap
  openssh-client rsync
  nginx-light wrk squid-openssl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
