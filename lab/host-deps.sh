#!/usr/bin/env bash
# Installs the Debian 12 packages the lab, the tests, molecule and the benchmarks need on the controller,
# only those missing, then runs the preflight that checks every command and host file they provide.
# Idempotent and quiet when everything is there (the common case on a developer's machine).
# `host-deps.sh --list` prints the packages, one per line: tests/host/ reads them from there (every command
# and host file the code uses must come from one of these, from what they depend on, or from the base system).
set -euo pipefail

packages=(
  make              # the Makefile (make setup / demo / test)
  git               # cloning; the collection build and the fresh-clone CI
  python3-venv      # make venv (ensurepip for the controller's .venv)
  lxc               # lxc-start/-stop/-info/-wait/-cgroup/-usernsexec/-ls/-attach: the PVE emulator's backend;
                    # lxc-freeze in its tests
  lxc-templates     # /usr/share/lxc/config/debian.*.conf, which every lab container config includes
  uidmap            # newuidmap/newgidmap for unprivileged containers
  debootstrap       # mmdebstrap's fallback tooling
  mmdebstrap        # the Debian 12 template build and the fresh-root test
  dnsmasq-base      # DHCP on the lab bridge
  dnsmasq-utils     # dhcp_release when a container is destroyed
  iptables          # NAT from the lab bridge to Debian's mirror
  iproute2          # bridge, veth, ip -j addr inside containers
  openssl           # lab CA and certificates, squid's CA in the client tests
  zstd              # template tarballs (tar --zstd)
  openssh-client    # ssh / ssh-keygen: Ansible's connection, host keys, key validation
  rsync             # copying trees into containers
  nginx-light       # bench: the nginx baseline the relay is measured against
  wrk               # bench: load generator
  valgrind          # bench relay_ab --instructions: instructions per request (cachegrind)
  squid-openssl     # client tests: the corporate proxy (with TLS inspection)
)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

here="$(cd "$(dirname "$0")" && pwd)"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec python3 "$here/preflight.py"
