#!/usr/bin/env bash
# Registry: `vmr push` and `vmr pull` of the same disk to and from a private
# docker-registry on loopback, against `skopeo copy` of the same image (same
# bytes, same digest) to and from the same registry, in the same run. Every
# upload goes to an empty registry (its storage is wiped between contenders)
# and every download into an empty destination, so each contender moves all
# the bytes. vmr's pull also fsyncs and renames each blob; skopeo's copy to an
# OCI layout does not fsync.
# Run alone: scripts/bench.sh --only transfer   (TRANSFER_MIB sets the disk size)
source "$(dirname "$0")/lib.sh"
if ! command -v docker-registry > /dev/null || ! command -v skopeo > /dev/null; then
  echo "bench transfer: skipped (needs docker-registry and skopeo)"
  exit 0
fi
SIZE_MIB=${TRANSFER_MIB:-2048}
BYTES=$((SIZE_MIB * 1024 * 1024))
bench_build
bench_workdir transfer

echo "bench transfer: making a ${SIZE_MIB} MiB random disk"
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

REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG="127.0.0.1:$REG_PORT"
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/registry}
  delete: {enabled: true}
http: {addr: $REG, secret: vmr-bench}
YAML
REG_PID=
registry_fresh() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK/registry"
  docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
  REG_PID=$!
  BENCH_EXTRA_PIDS=("$REG_PID")
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")" = 200 ] && return
    sleep 0.1
  done
  echo "bench: docker-registry did not start" >&2; cat "$WORK/registry.log" >&2; exit 1
}
# skopeo's source: the same image as a plain single-layer OCI layout, pushed
# once by vmr and copied out.
start_vmrd "$WORK/r.sock" --fs-path "$WORK/rstore" --hypervisor fake --registry-url "http://$REG" --push-chunk-mib 0
VMR=("$BIN/vmr" --socket "$WORK/r.sock")
"${VMR[@]}" import -f "$WORK/vmfile.yaml" -t reg > /dev/null
registry_fresh
"${VMR[@]}" push bench/disk:reg > /dev/null
skopeo copy -q --src-tls-verify=false "docker://$REG/bench/disk:reg" "oci:$WORK/layout:reg"
PLAIN_PID=$VMRD_PID
# A second daemon pushes the disk in 32 MiB chunk layers (--push-chunk-mib 32).
start_vmrd "$WORK/c.sock" --fs-path "$WORK/cstore" --hypervisor fake --registry-url "http://$REG" --push-chunk-mib 32
CHUNK_PID=$VMRD_PID
VMRC=("$BIN/vmr" --socket "$WORK/c.sock")
"${VMRC[@]}" import -f "$WORK/vmfile.yaml" -t reg > /dev/null
push_times=(); spush_times=(); pull_times=(); spull_times=(); cpush_times=(); cpull_times=()
for _ in $(seq "$REPS"); do
  # skopeo: push the single-layer image, pull it back.
  registry_fresh
  spush_times+=("$(timed skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:reg" "docker://$REG/bench/disk:reg")")
  rm -rf "$WORK/pulled"
  spull_times+=("$(timed skopeo copy -q --src-tls-verify=false "docker://$REG/bench/disk:reg" "oci:$WORK/pulled:reg")")
  # vmr, one layer: push, drop the local image, pull it back (for the next push too).
  registry_fresh
  push_times+=("$(timed "${VMR[@]}" push bench/disk:reg)")
  "${VMR[@]}" rmi bench/disk:reg > /dev/null
  "${VMR[@]}" image prune > /dev/null
  pull_times+=("$(timed "${VMR[@]}" pull bench/disk:reg)")
  # vmr, chunk layers.
  registry_fresh
  cpush_times+=("$(timed "${VMRC[@]}" push bench/disk:reg)")
  "${VMRC[@]}" rmi bench/disk:reg > /dev/null
  "${VMRC[@]}" image prune > /dev/null
  cpull_times+=("$(timed "${VMRC[@]}" pull bench/disk:reg)")
done
CHUNK_RSS_MIB=$(hwm_mib "$CHUNK_PID")
VMRD_PID=$CHUNK_PID; stop_vmrd
VMRD_PID=$PLAIN_PID
RSS_MIB=$(hwm_mib "$VMRD_PID")
stop_vmrd
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=; BENCH_EXTRA_PIDS=()
RP=$(median "${push_times[@]}"); SP=$(median "${spush_times[@]}")
RL=$(median "${pull_times[@]}"); SL=$(median "${spull_times[@]}")
CP=$(median "${cpush_times[@]}"); CL=$(median "${cpull_times[@]}")
REG_VERSION=$(docker-registry --version 2>/dev/null | awk '{print $3}')
SKOPEO_VERSION=$(skopeo --version | awk '{print $3}')
cat > "$WORK/section.md" <<MD
## Push and pull (${SIZE_MIB} MiB raw disk, docker-registry ${REG_VERSION:-?} on loopback)

The same disk pushed to an empty registry and pulled into an empty
destination, by \`skopeo\` $SKOPEO_VERSION and by vmr in its two forms,
alternately in the same run. skopeo copies the plain single-layer image (one
disk blob, one config, one manifest); its pull writes an OCI layout without
fsync. vmr with one layer (\`--push-chunk-mib 0\`) sends the disk from its store in 16 MiB PATCH
requests and pulls it verifying the digest while writing, then fsyncs and
renames it. With its default, \`--push-chunk-mib 32\`, vmr pushes 32 MiB chunk layers, 3 at
a time, each zstd-compressed only when that saves 10 % (random data: never),
and pulls them 3 at a time, verifying each as it streams and writing it once
at its offset in the disk blob (docs/chunked-images.md). The data is random, the worst
case for compression. Median of $REPS runs;
machine: $(machine).

| what | median s | MB/s | vmr ÷ skopeo (throughput) |
|---|---|---|---|
| \`skopeo copy oci:… docker://…\` (push baseline) | $(printf %.2f "$SP") | $(mbps "$BYTES" "$SP") | |
| \`vmr push\`, one layer | $(printf %.2f "$RP") | $(mbps "$BYTES" "$RP") | $(ratio "$SP" "$RP") |
| \`skopeo copy docker://… oci:…\` (pull baseline) | $(printf %.2f "$SL") | $(mbps "$BYTES" "$SL") | |
| \`vmr pull\`, one layer | $(printf %.2f "$RL") | $(mbps "$BYTES" "$RL") | $(ratio "$SL" "$RL") |
| \`vmr push\`, chunk layers (default) | $(printf %.2f "$CP") | $(mbps "$BYTES" "$CP") | $(ratio "$SP" "$CP") |
| \`vmr pull\`, chunk layers (default) | $(printf %.2f "$CL") | $(mbps "$BYTES" "$CL") | $(ratio "$SL" "$CL") |

Daemon peak RSS (VmHWM) over the push and pull runs: ${RSS_MIB} MiB (one layer),
${CHUNK_RSS_MIB} MiB (chunk layers).
MD
put_section transfer "$WORK/section.md"
