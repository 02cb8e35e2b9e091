#!/usr/bin/env bash
# Runs the daemon in the foreground with local defaults, as `make run` does: socket and image
# store under ./.vmr, the real libvirt hypervisor when a libvirt daemon answers, otherwise the
# fake hypervisor (images work, VMs are simulated). As root, an installed libvirtd that is not
# running is started first (as the test services start it), so a fresh machine gets real VMs.
# Extra arguments go to vmrd.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# Idempotent and quick when everything is installed; vmrd-libvirt links libvirt.
bash scripts/install-deps.sh
cargo build --release --bins

mkdir -p .vmr/store
socket="$REPO/.vmr/vmr.sock"
if [ "$(id -u)" -eq 0 ]; then uri="qemu:///system"; else uri="qemu:///session"; fi

if [ "$(id -u)" -eq 0 ] && command -v libvirtd >/dev/null && ! virsh -c "$uri" version >/dev/null 2>&1; then
  # Not fatal: a machine where libvirtd cannot run (no /dev/net/tun, a container) still gets
  # the fake hypervisor below, with the reason printed.
  bash scripts/test-services.sh start-libvirt || echo "run: could not start libvirtd (see above)"
fi

if virsh -c "$uri" version >/dev/null 2>&1; then
  hv=(--hypervisor libvirt --libvirt-uri "$uri")
  echo "run: libvirt answers on $uri; VMs are real"
else
  hv=(--hypervisor fake)
  echo "run: no libvirt daemon answers on $uri (as root: 'virtlogd -d; libvirtd -d'); using the fake hypervisor"
fi

cat <<EOF
run: in another shell:
       export VM_REGISTRY_SOCKET_PATH=$socket
       target/release/vmr health
EOF
exec target/release/vmrd --socket "$socket" --fs-path "$REPO/.vmr/store" "${hv[@]}" "$@"
