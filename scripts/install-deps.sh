#!/usr/bin/env bash
# Installs every system package vmr builds and tests with, on Debian 12 (bookworm).
# Idempotent: a second run installs nothing. Needs root (or sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

want_debs=(libvirt-daemon-system libvirt-dev qemu-system-x86 qemu-utils pkg-config
           docker-registry skopeo apache2-utils genisoimage xorriso openssl iproute2
           ovmf python3-venv curl ca-certificates make mmdebstrap extlinux fdisk
           # the bootable guest of the compose readiness test (tests/tests/e2e/compose/libvirt.rs)
           linux-image-cloud-amd64 busybox-static isolinux syslinux-common cpio
           # the real Debian test guest (scripts/guest-image.sh)
           mmdebstrap extlinux e2fsprogs fdisk util-linux mount
           # the test bridge's DHCP server (tests/tests/e2e/guest_networks.rs)
           dnsmasq-base)
missing=()
for p in "${want_debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  # The image ships qemu-utils from bookworm-backports; libvirt and QEMU must come from there too,
  # or apt refuses (qemu-utils Breaks qemu-system-common) or silently downgrades qemu-img.
  if [ ! -f /etc/apt/sources.list.d/bookworm-backports.sources ] && \
     grep -q bookworm /etc/os-release 2>/dev/null; then
    $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  echo "install-deps: installing ${missing[*]}"
  # Without systemd, apt would start the packaged services through /etc/init.d: among them a
  # docker-registry on *:5000 with a broken config. scripts/test-services.sh starts what the
  # tests need, on loopback, so keep apt from starting anything while it installs.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$guard" >/dev/null
    $SUDO chmod 755 "$guard"
    trap '$SUDO rm -f "$guard"' EXIT
  fi
  $SUDO apt-get update -qq
  bp=()
  grep -q bookworm /etc/os-release 2>/dev/null && bp=(-t bookworm-backports)
  $SUDO apt-get install -y -qq --no-install-recommends "${bp[@]}" \
    libvirt-daemon-system libvirt-dev qemu-system-x86 qemu-utils pkg-config ovmf
  $SUDO apt-get install -y -qq --no-install-recommends \
    docker-registry skopeo apache2-utils genisoimage xorriso openssl iproute2 python3-venv curl ca-certificates \
    make mmdebstrap extlinux fdisk
  $SUDO apt-get install -y -qq --no-install-recommends \
    linux-image-cloud-amd64 busybox-static isolinux syslinux-common cpio
  $SUDO apt-get install -y -qq --no-install-recommends \
    mmdebstrap extlinux e2fsprogs fdisk util-linux mount
  $SUDO apt-get install -y -qq --no-install-recommends dnsmasq-base
fi
