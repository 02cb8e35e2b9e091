#!/usr/bin/env bash
# The cost of sharing one S3 bucket between daemons (docs/shared-bucket.md):
# `vmr import` of a random raw disk and the `vmr image prune --all` that then
# deletes it, on the SeaweedFS test server with one daemon on the bucket and
# with three (the other two idle, each with a VM whose image its lease record
# names, renewing their records), against the same import and prune on the
# filesystem store measured in the same run.
# Run alone: scripts/bench.sh --only shared-bucket   (SHARED_MIB sets the disk size)
source "$(dirname "$0")/lib.sh"
# A failed `vmr` inside `$(timed ...)` stops the run rather than timing an error.
shopt -s inherit_errexit
SIZE_MIB=${SHARED_MIB:-512}
BYTES=$((SIZE_MIB * 1024 * 1024))
# Every S3 daemon's flags: no grace window (the prune deletes the disk it
# follows) and a short TTL, so the idle hosts renew every 2 s meanwhile.
TTL=8
bench_build
bench_workdir shared-bucket
: "${VMR_TEST_S3_ENDPOINT:?the SeaweedFS test server: eval \"\$(scripts/test-services.sh env)\"}"
BUCKET="vmr-bench-shared-$(date +%s)-$$"
S3_FLAGS=(--storage s3 --s3-bucket "$BUCKET" --s3-endpoint "$VMR_TEST_S3_ENDPOINT"
  --s3-access-key "$VMR_TEST_S3_ACCESS_KEY" --s3-secret-key "$VMR_TEST_S3_SECRET_KEY"
  --s3-gc-grace 0 --s3-lease-ttl "$TTL")

# start_host NAME ARGS...: a release vmrd (fake hypervisor) on $WORK/NAME.sock
# with its own local directory, serving; its pid in HOST_PID.
start_host() {
  local name=$1; shift
  "$BIN/vmrd" --socket "$WORK/$name.sock" --fs-path "$WORK/$name" --hypervisor fake \
    --log-level warn "$@" 2>> "$WORK/$name.log" &
  HOST_PID=$!
  BENCH_EXTRA_PIDS+=("$HOST_PID")
  for _ in $(seq 200); do [ -S "$WORK/$name.sock" ] && return; sleep 0.05; done
  echo "bench shared-bucket: vmrd $name did not create its socket" >&2; exit 1
}
# stop_host PID: a clean stop (SIGTERM), which withdraws its lease record.
stop_host() { kill "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }
vmr_on() { local name=$1; shift; "$BIN/vmr" --socket "$WORK/$name.sock" "$@"; }

vmfile() {  # vmfile NAME DISK: a Vmfile for image NAME of the raw DISK
  printf 'apiVersion: vmregistry.io/v1alpha1\nmetadata: {name: %s}\nspec: {diskImage: %s, diskFormat: raw, resources: {cpu: 1, memory: 128MiB}}\n' \
    "$1" "$2" > "$WORK/${1//\//_}.yaml"
  echo "$WORK/${1//\//_}.yaml"
}

echo "bench shared-bucket: making a ${SIZE_MIB} MiB random disk"
head -c "$BYTES" /dev/urandom > "$WORK/disk.raw"
cat "$WORK/disk.raw" > /dev/null   # warm the page cache for every contender
DISK_FILE=$(vmfile bench/shared disk.raw)
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)

# runs NAME: REPS imports of the disk on host NAME, each followed by the
# `image prune --all` that deletes it; sets IMPORTS and PRUNES (seconds).
runs() {
  IMPORTS=(); PRUNES=()
  for i in $(seq "$REPS"); do
    IMPORTS+=("$(timed vmr_on "$1" import -f "$DISK_FILE" -t "r$i")")
    PRUNES+=("$(timed vmr_on "$1" image prune --all)")
  done
}

echo "bench shared-bucket: filesystem store, one daemon"
start_host fs
FS_PID=$HOST_PID
runs fs
FS_IMPORT=$(median "${IMPORTS[@]}"); FS_PRUNE=$(median "${PRUNES[@]}")
stop_host "$FS_PID"

echo "bench shared-bucket: SeaweedFS bucket $BUCKET, one daemon"
start_host a "${S3_FLAGS[@]}"
A_PID=$HOST_PID
runs a
ONE_IMPORT=$(median "${IMPORTS[@]}"); ONE_PRUNE=$(median "${PRUNES[@]}")

echo "bench shared-bucket: the same bucket, three daemons (two idle with a VM each)"
IDLE_PIDS=()
for name in b c; do
  start_host "$name" "${S3_FLAGS[@]}"
  IDLE_PIDS+=("$HOST_PID")
  head -c $((1 << 20)) /dev/urandom > "$WORK/idle-$name.raw"
  vmr_on "$name" import -f "$(vmfile "bench/idle-$name" "idle-$name.raw")" -t 1 > /dev/null
  vmr_on "$name" run --name "idle-$name" "bench/idle-$name:1" > /dev/null
done
runs a
THREE_IMPORT=$(median "${IMPORTS[@]}"); THREE_PRUNE=$(median "${PRUNES[@]}")
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)

# Empty the bucket (the idle hosts' VMs and images, then every record) and
# delete it: SeaweedFS holds only a few dozen buckets.
for name in b c; do
  vmr_on "$name" rm -f "idle-$name" > /dev/null
done
for pid in "${IDLE_PIDS[@]}"; do stop_host "$pid"; done
vmr_on a image prune --all > /dev/null
stop_host "$A_PID"
curl -sf --max-time 10 --aws-sigv4 "aws:amz:${VMR_TEST_S3_REGION:-us-east-1}:s3" \
  --user "$VMR_TEST_S3_ACCESS_KEY:$VMR_TEST_S3_SECRET_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
  -X DELETE "$VMR_TEST_S3_ENDPOINT/$BUCKET" > /dev/null ||
  echo "bench shared-bucket: could not delete bucket $BUCKET (not empty?)" >&2

row() {  # row WHAT IMPORT PRUNE
  echo "| $1 | $(printf %.2f "$2") | $(mbps "$BYTES" "$2") | $(ratio "$2" "$FS_IMPORT") | $(printf %.3f "$3") | $(ratio "$3" "$FS_PRUNE") |"
}
cat > "$WORK/section.md" <<MD
## Shared bucket: import and prune with one host and with three (${SIZE_MIB} MiB raw disk)

Median of $REPS runs; machine: $(machine); load average $LOAD_START at the start, $LOAD_END
at the end (a shared machine: read the ratios). Each \`vmrd\` is a release build with the fake
hypervisor, its own socket and local directory. The S3 daemons share one fresh bucket on the
SeaweedFS test server (loopback) with \`--s3-gc-grace 0 --s3-lease-ttl $TTL\` (records renewed
every 2 s); with three, the other two are idle but each runs a VM of its own small image, so
their live records name it, and they renew them throughout. Each import (the open file passed
over the socket) is followed by an \`image prune --all\` that untags it and deletes its blobs;
on S3 the import publishes its lease and confirms its blobs (HEAD) before the tag, and the prune
announces itself, reads every live record and lists the blobs' times (docs/shared-bucket.md).

| what | import median s | import MB/s | import ÷ filesystem | \`image prune --all\` median s | prune ÷ filesystem |
|---|---|---|---|---|---|
$(row "filesystem store, one daemon (baseline)" "$FS_IMPORT" "$FS_PRUNE")
$(row "SeaweedFS bucket, one daemon" "$ONE_IMPORT" "$ONE_PRUNE")
$(row "SeaweedFS bucket, three daemons (two idle, renewing)" "$THREE_IMPORT" "$THREE_PRUNE")

Coordination cost, three daemons ÷ one on the same bucket: import $(ratio "$THREE_IMPORT" "$ONE_IMPORT"),
prune $(ratio "$THREE_PRUNE" "$ONE_PRUNE").
MD
put_section shared-bucket "$WORK/section.md"
