#!/usr/bin/env bash
# Registry: `vmr push` and `vmr pull` of the same disk to and from a private
# docker-registry on loopback, against `skopeo copy` of the same image (same
# bytes, same digest) to and from the same registry, in the same run. Every
# upload goes to an empty registry (its storage is wiped between contenders)
# and every download into an empty destination, so each contender moves all
# the bytes. vmr's pull also fsyncs and renames each blob; skopeo's copy to an
# OCI layout does not fsync.
# Run alone: scripts/bench.sh --only transfer   (TRANSFER_MIB sets the disk size)
# TRANSFER_DISK=random (default: the worst case for compression and dedupe) or
# system (a disk like a freshly installed VM's: a quarter of this machine's
# /usr files, the rest zeros; its own section, transfer-system).
source "$(dirname "$0")/lib.sh"
if ! command -v docker-registry > /dev/null || ! command -v skopeo > /dev/null; then
  echo "bench transfer: skipped (needs docker-registry and skopeo)"
  exit 0
fi
SIZE_MIB=${TRANSFER_MIB:-4096}
BYTES=$((SIZE_MIB * 1024 * 1024))
DISK_KIND=${TRANSFER_DISK:-random}
case $DISK_KIND in
  random) SECTION=transfer ;;
  system) SECTION=transfer-system ;;
  *) echo "bench transfer: TRANSFER_DISK is random or system, not '$DISK_KIND'" >&2; exit 2 ;;
esac
bench_build
bench_workdir transfer

echo "bench transfer: making a ${SIZE_MIB} MiB $DISK_KIND disk"
if [ "$DISK_KIND" = random ]; then
  head -c "$BYTES" /dev/urandom > "$WORK/disk.raw"
  DISK_TEXT="The data is random, the worst case for compression and for dedupe."
else
  # Files in a fixed order, so reruns make the same disk on the same machine.
  { find /usr/bin /usr/lib /usr/share -type f -size +0 2> /dev/null | LC_ALL=C sort |
      xargs -d '\n' cat 2> /dev/null || true; } | head -c $((BYTES / 4)) > "$WORK/disk.raw"
  head -c $((BYTES - $(stat -c %s "$WORK/disk.raw"))) /dev/zero >> "$WORK/disk.raw"
  DISK_TEXT="The disk is like a freshly installed VM's: its first quarter is this machine's
/usr/bin, /usr/lib and /usr/share files (programs, libraries, text) back to back, the rest
zeros (written, not a hole). skopeo moves the bytes as they are; vmr's chunks compress, and
the zero chunks are one blob."
fi
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
TICK=$(getconf CLK_TCK)
# cpu_s PID: user + system CPU seconds of a live process so far.
cpu_s() { awk -v t="$TICK" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# cpu_run CMD...: runs CMD (output discarded); prints its wall-clock seconds
# and the CPU seconds of CMD and its children.
cpu_run() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.monotonic() - t0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, r.ru_utime + r.ru_stime)
PY
}
# per_gib SECONDS: CPU seconds per GiB of the disk.
per_gib() { python3 -c "import sys; print(f'{float(sys.argv[1]) * 1073741824 / $BYTES:.2f}')" "$1"; }
# measure OUT DAEMON_PID CMD...: runs CMD against the registry; appends to the
# arrays OUT_t (wall s), OUT_reg (registry CPU s), OUT_cli (CMD's own CPU s)
# and OUT_d (DAEMON_PID's CPU s, 0 without one).
measure() {
  local out=$1 dpid=$2; shift 2
  local r0 d0=0 d1=0 r1 wall cli
  r0=$(cpu_s "$REG_PID")
  [ "$dpid" = - ] || d0=$(cpu_s "$dpid")
  read -r wall cli < <(cpu_run "$@")
  r1=$(cpu_s "$REG_PID")
  [ "$dpid" = - ] || d1=$(cpu_s "$dpid")
  eval "${out}_t+=(\"$wall\"); ${out}_cli+=(\"$cli\")"
  eval "${out}_reg+=(\"$(python3 -c "print($r1 - $r0)")\"); ${out}_d+=(\"$(python3 -c "print($d1 - $d0)")\")"
}
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
# The curl baselines: one blob upload per call, POST then a monolithic PUT.
cat > "$WORK/upload.sh" <<'SH'
#!/usr/bin/env bash
# upload.sh REGISTRY REPOSITORY FILE DIGEST
set -euo pipefail
loc=$(curl -sf -o /dev/null -D - -X POST -H 'Content-Length: 0' "http://$1/v2/$2/blobs/uploads/" \
  | awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
case $loc in /*) loc="http://$1$loc" ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
code=$(curl -s -o /dev/null -w '%{http_code}' -T "$3" -H 'Expect:' \
  -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$4")
[ "$code" = 201 ] || { echo "upload of $3: HTTP $code" >&2; exit 1; }
SH
chmod +x "$WORK/upload.sh"
DISK_DIGEST="sha256:$(sha256sum "$WORK/disk.raw" | cut -d' ' -f1)"
mkdir "$WORK/chunks"
split -b 32M -a 4 -d "$WORK/disk.raw" "$WORK/chunks/c."
( cd "$WORK/chunks" && sha256sum c.* | awk '{print $2, "sha256:" $1}' ) > "$WORK/chunks.list"
# The chunks, 3 uploads at a time, each to its own repository's session.
cat > "$WORK/chunked.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
xargs -P 3 -L 1 sh -c '"$WORK/upload.sh" "\$0" bench/curl "$WORK/chunks/\$1" "\$2"' "$REG" < "$WORK/chunks.list"
SH
chmod +x "$WORK/chunked.sh"
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
for v in sp sl rp rl cp cl cm cc; do eval "${v}_t=(); ${v}_reg=(); ${v}_cli=(); ${v}_d=()"; done
for _ in $(seq "$REPS"); do
  # The registry's ingest ceiling: curl, one monolithic upload, then chunks.
  registry_fresh
  measure cm - "$WORK/upload.sh" "$REG" bench/curl "$WORK/disk.raw" "$DISK_DIGEST"
  registry_fresh
  measure cc - "$WORK/chunked.sh"
  # skopeo: push the single-layer image, pull it back.
  registry_fresh
  measure sp - skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:reg" "docker://$REG/bench/disk:reg"
  rm -rf "$WORK/pulled"
  measure sl - skopeo copy -q --src-tls-verify=false "docker://$REG/bench/disk:reg" "oci:$WORK/pulled:reg"
  # vmr, one layer: push, drop the local image, pull it back (for the next push too).
  registry_fresh
  measure rp "$PLAIN_PID" "${VMR[@]}" push bench/disk:reg
  "${VMR[@]}" rmi bench/disk:reg > /dev/null
  "${VMR[@]}" image prune > /dev/null
  measure rl "$PLAIN_PID" "${VMR[@]}" pull bench/disk:reg
  # vmr, chunk layers.
  registry_fresh
  measure cp "$CHUNK_PID" "${VMRC[@]}" push bench/disk:reg
  "${VMRC[@]}" rmi bench/disk:reg > /dev/null
  "${VMRC[@]}" image prune > /dev/null
  measure cl "$CHUNK_PID" "${VMRC[@]}" pull bench/disk:reg
done
CHUNK_RSS_MIB=$(hwm_mib "$CHUNK_PID")
VMRD_PID=$CHUNK_PID; stop_vmrd
VMRD_PID=$PLAIN_PID
RSS_MIB=$(hwm_mib "$VMRD_PID")
stop_vmrd
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=; BENCH_EXTRA_PIDS=()
# med V FIELD: the median of one contender's figures.
med() { local a="${1}_${2}[@]"; median "${!a}"; }
SP=$(med sp t); SL=$(med sl t); RP=$(med rp t); RL=$(med rl t); CP=$(med cp t); CL=$(med cl t)
CM=$(med cm t); CC=$(med cc t)
# row LABEL V BASELINE_SECONDS CEILING_SECONDS: one table row.
row() {
  local s; s=$(med "$2" t)
  local b="" c=""
  [ -z "$3" ] || b=$(ratio "$3" "$s")
  [ -z "$4" ] || c=$(ratio "$4" "$s")
  local cli d
  cli=$(med "$2" cli); d=$(med "$2" d)
  echo "| $1 | $(printf %.2f "$s") | $(mbps "$BYTES" "$s") | $b | $c | $(per_gib "$(med "$2" reg)") | $(per_gib "$(python3 -c "print($cli + $d)")") |"
}
REG_VERSION=$(docker-registry --version 2>/dev/null | awk '{print $3}')
SKOPEO_VERSION=$(skopeo --version | awk '{print $3}')
cat > "$WORK/section.md" <<MD
## Push and pull (${SIZE_MIB} MiB $DISK_KIND raw disk, docker-registry ${REG_VERSION:-?} on loopback)

The same disk pushed to an empty registry and pulled into an empty
destination, by \`skopeo\` $SKOPEO_VERSION and by vmr in its two forms,
alternately in the same run. skopeo copies the plain single-layer image (one
disk blob, one config, one manifest); its pull writes an OCI layout without
fsync. vmr with one layer (\`--push-chunk-mib 0\`) streams the disk from its store in one
PATCH (verifying it as it reads) and pulls it verifying the digest while writing, then fsyncs and
renames it. With its default, \`--push-chunk-mib 32\`, vmr pushes 32 MiB chunk layers, 3 at
a time, each streamed from the disk file in one POST + \`PUT ?digest=\`, and zstd-compressed
only when 4 samples of 256 KiB say it may pay and it then saves 10 % (random data: never tried),
and pulls them 3 at a time, verifying each as it streams and writing it once
at its offset in the disk blob (docs/chunked-images.md). $DISK_TEXT Median of $REPS runs;
machine: $(machine).

The registry's ingest ceiling is measured with curl in the same run, as
uploads of the same shape: the whole disk in one POST + monolithic
\`PUT ?digest=\` (the ceiling for one-layer pushes, skopeo's included), and
the disk cut into the same 32 MiB chunks, 3 curl uploads at a time, each a
POST + monolithic PUT (the ceiling for chunked pushes). "registry CPU" is the
user + system time of the docker-registry process during the run
(/proc/<pid>/stat), per GiB of disk; "client CPU" that of the pushing or
pulling side: skopeo or curl and their children, or the vmr CLI plus vmrd.
The machine has $(nproc) cores, so registry + client CPU near
$(nproc) × the run's seconds means the two processes share out the CPU.

| what | median s | MB/s | vmr ÷ skopeo (throughput) | ÷ registry ceiling (curl, same shape) | registry CPU s/GiB | client CPU s/GiB |
|---|---|---|---|---|---|---|
$(row "curl, one monolithic upload (POST + PUT of the whole disk): ceiling" cm "" "")
$(row "curl, 32 MiB chunks, 3 at a time (POST + PUT each): ceiling" cc "" "")
$(row "\`skopeo copy oci:… docker://…\` (push baseline)" sp "" "$CM")
$(row "\`vmr push\`, one layer" rp "$SP" "$CM")
$(row "\`vmr push\`, chunk layers (default)" cp "$SP" "$CC")
$(row "\`skopeo copy docker://… oci:…\` (pull baseline)" sl "" "")
$(row "\`vmr pull\`, one layer" rl "$SL" "")
$(row "\`vmr pull\`, chunk layers (default)" cl "$SL" "")

Daemon peak RSS (VmHWM) over the push and pull runs: ${RSS_MIB} MiB (one layer),
${CHUNK_RSS_MIB} MiB (chunk layers).
MD
put_section "$SECTION" "$WORK/section.md"
