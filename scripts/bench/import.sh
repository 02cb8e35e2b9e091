#!/usr/bin/env bash
# Import over the socket against the durable-copy limit measured in the same
# run: `openssl dgst -sha256 F` alongside `cp F D && sync`. Both import paths
# are measured, each on its own daemon (so each has its own peak RSS): the
# open file passed over the socket (the default) and the client stream
# (VMR_IMPORT_STREAM=1, the portable path).
# Run alone: scripts/bench.sh --only import   (IMPORT_MIB sets the disk size)
source "$(dirname "$0")/lib.sh"
SIZE_MIB=${IMPORT_MIB:-4096}
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

# import_runs NAME [ENV...]: REPS imports on a fresh daemon; sets TIMES,
# RSS_MIB and FAULTS (the daemon's minor page faults per GiB imported).
import_runs() {
  local name=$1; shift
  rm -rf "$WORK/store"
  start_vmrd "$WORK/$name.sock" --fs-path "$WORK/store" --hypervisor fake
  TIMES=()
  local faults=0 f0
  for i in $(seq "$REPS"); do
    f0=$(minflt "$VMRD_PID")
    TIMES+=("$(timed env "$@" "$BIN/vmr" --socket "$WORK/$name.sock" import -f "$WORK/vmfile.yaml" -t "r$i")")
    faults=$((faults + $(minflt "$VMRD_PID") - f0))
    "$BIN/vmr" --socket "$WORK/$name.sock" rmi "bench/disk:r$i" > /dev/null
  done
  FAULTS=$((faults * 1024 / SIZE_MIB / REPS))
  RSS_MIB=$(hwm_mib "$VMRD_PID")
  stop_vmrd
}
import_runs fd VMR_IMPORT_STREAM=0
F=$(median "${TIMES[@]}"); RSS_FD=$RSS_MIB; FAULTS_FD=$FAULTS
import_runs stream VMR_IMPORT_STREAM=1
S=$(median "${TIMES[@]}"); RSS_STREAM=$RSS_MIB; FAULTS_STREAM=$FAULTS
rm -rf "$WORK/store"

H=$(median "${hash_times[@]}"); C=$(median "${copy_times[@]}")
cat > "$WORK/section.md" <<MD
## Import over the socket (${SIZE_MIB} MiB raw disk, input in the page cache)

Median of $REPS runs; machine: $(machine). Each import hashes, writes,
fsyncs and renames the disk blob; each path runs on its own daemon. Page
faults are the daemon's minor faults per GiB imported (all threads), a count
that does not depend on the machine's load.

| what | median s | MB/s | throughput ÷ durable-copy limit | daemon peak RSS (VmHWM) | daemon page faults per GiB |
|---|---|---|---|---|---|
| \`openssl dgst -sha256\` (hash only) | $(printf %.2f "$H") | $(mbps "$BYTES" "$H") | $(ratio "$C" "$H") | | |
| durable-copy limit: \`openssl dgst\` ∥ \`cp && sync\` | $(printf %.2f "$C") | $(mbps "$BYTES" "$C") | 1.00 | | |
| \`vmr import\`, open file passed over the socket (default) | $(printf %.2f "$F") | $(mbps "$BYTES" "$F") | $(ratio "$C" "$F") | ${RSS_FD} MiB | ${FAULTS_FD} |
| \`vmr import\`, client stream (\`VMR_IMPORT_STREAM=1\`) | $(printf %.2f "$S") | $(mbps "$BYTES" "$S") | $(ratio "$C" "$S") | ${RSS_STREAM} MiB | ${FAULTS_STREAM} |
MD
put_section import "$WORK/section.md"
