#!/usr/bin/env bash
# Builds the real test guest: Debian 12 (bookworm) from Debian's own packages only, as a
# compressed qcow2 of 1 GiB virtual size, with a VMFile next to it for `vmr import`.
#
#   VMR_GUEST_CACHE=DIR scripts/guest-image.sh    (default DIR: $REPO/.cache/guest)
#
# The guest has the cloud kernel, systemd, cloud-init (NoCloud and None datasources only, so it
# never waits on a metadata server), openssh-server, qemu-guest-agent (started by udev when the
# org.qemu.guest_agent.0 port appears), sudo, ifupdown + isc-dhcp-client (the renderer Debian
# 12's cloud-init picks: "eni"), extlinux in the MBR and `console=ttyS0` on the kernel line, so
# the kernel, systemd, cloud-init and a getty all talk on the serial console. cloud-init creates
# the default user `debian` (passwordless sudo, no password); root has no password either.
#
# The files are named by a hash of this script, so a second run only prints the path, and an
# edit of the script builds a new image. A build happens in a temporary directory and is renamed
# into place at the end: a half-built image never has the final name. Needs root (mmdebstrap in
# root mode, a loop mount for extlinux). The last line printed is the image's path; the VMFile
# is the same path with `.vmfile.yaml` in place of `.qcow2`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VMR_GUEST_CACHE:-$REPO/.cache/guest}
MIRROR=${VMR_GUEST_MIRROR:-http://deb.debian.org/debian}
SIZE_MIB=1024
PART_START_MIB=1

hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
image="$CACHE/debian12-$hash.qcow2"
vmfile="${image%.qcow2}.vmfile.yaml"
say() { echo "guest-image: $*" >&2; }

if [ -f "$image" ] && [ -f "$vmfile" ]; then
  echo "$image"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { say "must run as root (mmdebstrap --mode=root, a loop mount)"; exit 1; }
for tool in mmdebstrap extlinux qemu-img mkfs.ext4 sfdisk losetup; do
  command -v "$tool" >/dev/null || { say "$tool is missing: run scripts/install-deps.sh"; exit 1; }
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || { say "$mbr is missing: run scripts/install-deps.sh (syslinux-common)"; exit 1; }

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build-XXXXXX")
loop=""
cleanup() {
  if mountpoint -q "$work/mnt" 2>/dev/null; then umount "$work/mnt" || true; fi
  if [ -n "$loop" ]; then losetup -d "$loop" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

# Everything the guest needs is configured by this hook, inside the tree before it is packed.
# $1 is the root of the tree.
cat >"$work/customize.sh" <<'HOOK'
#!/bin/sh
set -eu
root=$1
echo debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
printf 'LABEL=root\t/\text4\terrors=remount-ro\t0\t1\n' >"$root/etc/fstab"
# ifupdown reads cloud-init's rendering from interfaces.d (cloud-init's eni renderer needs
# this `source` line to consider itself usable).
mkdir -p "$root/etc/network/interfaces.d"
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' \
  >"$root/etc/network/interfaces"
cat >"$root/etc/cloud/cloud.cfg.d/01-vmr-test-guest.cfg" <<'CFG'
# vmr's test guest: seeds come from a NoCloud cidata medium, never a metadata server.
datasource_list: [NoCloud, None]
# One host key type: RSA key generation alone takes seconds under TCG.
ssh_genkeytypes: [ed25519]
# No locales package in the image: update-locale would fail (a module error in every boot).
locale: false
CFG
# Timers and jobs a short-lived test VM does not need, each costing CPU under TCG.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
            fstrim.timer man-db.timer; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
# A fresh machine id on first boot, so every VM gets its own (and its own DHCP client id).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Host keys are made by cloud-init on first boot, per VM.
rm -f "$root"/etc/ssh/ssh_host_*
HOOK
chmod +x "$work/customize.sh"

say "mmdebstrap bookworm from $MIRROR"
packages=(systemd-sysv udev dbus linux-image-cloud-amd64 initramfs-tools e2fsprogs
          cloud-init cloud-guest-utils openssh-server qemu-guest-agent sudo
          ifupdown isc-dhcp-client iproute2 netbase)
mmdebstrap --mode=root --variant=apt --quiet \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --customize-hook="$work/customize.sh \"\$1\"" \
  bookworm "$work/root" "$MIRROR"

kernel=$(cd "$work/root/boot" && ls vmlinuz-* | sort -V | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
[ -f "$work/root/boot/$initrd" ] || { say "no /boot/$initrd in the tree"; exit 1; }
mkdir -p "$work/root/boot/extlinux"
cat >"$work/root/boot/extlinux/extlinux.conf" <<CONF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=LABEL=root ro console=tty0 console=ttyS0,115200n8
CONF

say "writing the disk (${SIZE_MIB} MiB, one bootable ext4 partition)"
raw="$work/disk.raw"
truncate -s "${SIZE_MIB}M" "$raw"
echo "start=${PART_START_MIB}MiB, type=83, bootable" | sfdisk --quiet "$raw"
part_bytes=$(( (SIZE_MIB - PART_START_MIB) * 1024 * 1024 ))
# The partition through a loop device at its offset: no partition scan (and no udev) needed.
loop=$(losetup --find --show --offset $((PART_START_MIB * 1024 * 1024)) --sizelimit "$part_bytes" "$raw")
# extlinux 6.04 reads neither 64-bit ext4 nor the orphan file.
mkfs.ext4 -q -L root -O ^64bit,^orphan_file -d "$work/root" "$loop" 2>/dev/null ||
  mkfs.ext4 -q -F -L root -O ^64bit -d "$work/root" "$loop"
mkdir -p "$work/mnt"
mount "$loop" "$work/mnt"
extlinux --install "$work/mnt/boot/extlinux" >/dev/null
umount "$work/mnt"
losetup -d "$loop"
loop=""
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none

say "converting to compressed qcow2"
qemu-img convert -c -O qcow2 "$raw" "$work/disk.qcow2"
cat >"$work/vmfile.yaml" <<YAML
apiVersion: v1
metadata:
  name: tests/debian12
  description: "vmr's test guest: Debian 12 with cloud-init, openssh-server and qemu-guest-agent (scripts/guest-image.sh)"
  # vmr.ssh.user: the user vmr ssh logs in as (cloud-init's default user on Debian).
  labels: {os: debian, version: "12", vmr.ssh.user: debian}
spec:
  diskImage: "$(basename "$image")"
  diskFormat: qcow2
  resources:
    cpu: 1
    memory: 512MiB
YAML
# The VMFile first: the image's name is what says "done".
mv "$work/vmfile.yaml" "$vmfile"
mv "$work/disk.qcow2" "$image"
say "built in $((SECONDS - started)) s: $(du -m "$image" | cut -f1) MiB on disk, ${SIZE_MIB} MiB virtual"
echo "$image"
