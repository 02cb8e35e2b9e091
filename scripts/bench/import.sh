#!/usr/bin/env bash
# Import over the socket against the durable-copy limit measured in the same
# run: `openssl dgst -sha256 F` alongside `cp F D && sync`.
# Run alone: scripts/bench.sh --only import   (IMPORT_MIB sets the disk size)
source "$(dirname "$0")/lib.sh"
SIZE_MIB=${IMPORT_MIB:-2048}
BYTES=$((SIZE_MIB * 1024 * 1024))
bench_build
bench_workdir import

echo "bench import: making a ${SIZE_MIB} MiB random disk"
head -c "$BYTES" /dev/urandom > "$WORK/disk.raw"
cat > "$WORK/vmfile.yaml" <<YAML
apiVersion: vmregistry.io/v1alpha1
metadata:
  name: bench/disk
spec:
  diskImage: disk.raw
  diskFormat: raw
  resources: {cpu: 1, memory: 1GiB}
YAML
cat "$WORK/disk.raw" > /dev/null   # warm the page cache for every contender

# Baseline 1: hashing alone.
hash_times=()
for _ in $(seq "$REPS"); do
  hash_times+=("$(timed openssl dgst -sha256 "$WORK/disk.raw")")
done
# Baseline 2: the durable-copy limit: hash and copy+sync in parallel.
copy_times=()
for _ in $(seq "$REPS"); do
  rm -f "$WORK/copy.raw"
  t0=$(now)
  openssl dgst -sha256 "$WORK/disk.raw" > /dev/null &
  h=$!
  cp "$WORK/disk.raw" "$WORK/copy.raw" && sync "$WORK/copy.raw"
  wait "$h"
  t1=$(now)
  copy_times+=("$(python3 -c "print($t1-$t0)")")
done
rm -f "$WORK/copy.raw"

start_vmrd "$WORK/vmr.sock" --fs-path "$WORK/store" --hypervisor fake
import_times=()
for i in $(seq "$REPS"); do
  import_times+=("$(timed "$BIN/vmr" --socket "$WORK/vmr.sock" import -f "$WORK/vmfile.yaml" -t "r$i")")
  "$BIN/vmr" --socket "$WORK/vmr.sock" rmi "bench/disk:r$i" > /dev/null
done
RSS_MIB=$(hwm_mib "$VMRD_PID")
stop_vmrd

H=$(median "${hash_times[@]}"); C=$(median "${copy_times[@]}"); I=$(median "${import_times[@]}")
cat > "$WORK/section.md" <<MD
## Import over the socket (${SIZE_MIB} MiB raw disk, input in the page cache)

Median of $REPS runs; machine: $(machine).

| what | median s | MB/s | import ÷ baseline (throughput) |
|---|---|---|---|
| \`openssl dgst -sha256\` (hash only) | $(printf %.2f "$H") | $(mbps "$BYTES" "$H") | $(ratio "$H" "$I") |
| durable-copy limit: \`openssl dgst\` ∥ \`cp && sync\` | $(printf %.2f "$C") | $(mbps "$BYTES" "$C") | $(ratio "$C" "$I") |
| \`vmr import\` (client stream over the Unix socket; hash, write, fsync, rename) | $(printf %.2f "$I") | $(mbps "$BYTES" "$I") | 1.00 |

Daemon peak RSS (VmHWM) over the run: ${RSS_MIB} MiB.
MD
put_section import "$WORK/section.md"
