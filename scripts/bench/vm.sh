#!/usr/bin/env bash
# The daemon's own overhead per real VM (overlay, seed ISO, define, start):
# each service's creating -> started interval from `compose up`'s events,
# against `virsh start` of the same, already defined domain (measured in the
# same run) as the baseline. Needs a real libvirt: VMR_TEST_LIBVIRT_URI.
# Run alone: scripts/bench.sh --only vm
source "$(dirname "$0")/lib.sh"
LIBVIRT_URI=${VMR_TEST_LIBVIRT_URI:-}
if [ -z "$LIBVIRT_URI" ] || ! command -v virsh > /dev/null; then
  echo "bench vm: skipped (no VMR_TEST_LIBVIRT_URI or no virsh)"
  exit 0
fi
bench_build
bench_workdir vm
chmod 755 "$WORK"   # QEMU runs as another user and must reach the store
qemu-img create -q -f qcow2 "$WORK/real.qcow2" 64M
cat > "$WORK/real.yaml" <<YAML
apiVersion: vmregistry.io/v1alpha1
metadata: {name: bench/real}
spec: {diskImage: real.qcow2, diskFormat: qcow2, resources: {cpu: 1, memory: 128MiB}}
YAML
mkdir -p "$WORK/real"
{
  printf 'apiVersion: vmregistry.io/v1alpha1\nname: vmrbench\nservices:\n'
  for i in 1 2 3 4; do printf '  r%s: {image: bench/real:1}\n' "$i"; done
} > "$WORK/real/vmcompose.yaml"
# The create phases' debug events (JSON) go to vmrd.log for the phase table.
RUST_LOG=warn,vmr_app::service::vms::materialize=debug \
  start_vmrd "$WORK/l.sock" --fs-path "$WORK/lstore" --hypervisor libvirt \
  --libvirt-uri "$LIBVIRT_URI" --virt-type qemu --log-format json 2> "$WORK/vmrd.log"
VMR=("$BIN/vmr" --socket "$WORK/l.sock")
LF=(compose -f "$WORK/real/vmcompose.yaml")
"${VMR[@]}" import -f "$WORK/real.yaml" -t 1 > /dev/null
"${VMR[@]}" "${LF[@]}" down > /dev/null
: > "$WORK/real-events.jsonl"
virsh_times=()
for _ in $(seq "$REPS"); do
  "${VMR[@]}" -o json "${LF[@]}" up >> "$WORK/real-events.jsonl"
  virsh -q -c "$LIBVIRT_URI" destroy vmrbench-r1 > /dev/null
  virsh_times+=("$(timed virsh -q -c "$LIBVIRT_URI" start vmrbench-r1)")
  "${VMR[@]}" "${LF[@]}" down > /dev/null
done
stop_vmrd
REAL_VM=$(python3 - "$WORK/real-events.jsonl" <<'PY'
import json, statistics, sys
first, spans = {}, []
for line in open(sys.argv[1]):
    e = json.loads(line)
    key = e["service"]
    if e["kind"] == "creating":
        first[key] = e["timestampUnixNanos"]
    elif e["kind"] == "started" and key in first:
        spans.append((e["timestampUnixNanos"] - first.pop(key)) / 1e9)
print(f"{statistics.median(spans):.3f}")
PY
)
PHASES=$(python3 - "$WORK/vmrd.log" <<'PY'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("message") == "create phase":
        by.setdefault(f["phase"], []).append(float(f["duration_ms"]))
what = {
    "prepare": "store path of the base, runtime directory",
    "disk": "overlay disk (base size, qcow2 header)",
    "seed": "cloud-init seed ISO",
    "define": "libvirt define (domain XML)",
    "start": "libvirt start (QEMU launched)",
    "inspect": "libvirt read-back of the started domain",
}
for phase in ["prepare", "disk", "seed", "define", "start", "inspect"]:
    v = by.get(phase)
    if v:
        print(f"| {phase}: {what[phase]} | {statistics.median(v):.1f} | {max(v):.1f} | {len(v)} |")
PY
)
VS=$(median "${virsh_times[@]}")
VIRT=$(virsh -c "$LIBVIRT_URI" version | awk -F': ' '/Running hypervisor|Using library/ {printf "%s; ", $2}')
cat > "$WORK/section.md" <<MD
## The daemon's overhead per real VM (libvirt $LIBVIRT_URI, TCG)

Four services of one level on real libvirt (${VIRT%; }), 128 MiB guests with a
64 MiB qcow2 image. vmr's part is the interval from a service's \`creating\`
event to its \`started\` event: overlay disk, cloud-init seed ISO, domain
definition and the start call, four at a time. The baseline is \`virsh start\`
of one of those domains, already defined, timed alone. Median of $REPS runs;
machine: $(machine).

| what | median s |
|---|---|
| \`virsh start\` of a defined domain (the baseline) | $(printf %.3f "$VS") |
| vmr: overlay + seed ISO + define + start, per VM (4 concurrently) | $REAL_VM |

Per phase (vmrd's \`create phase\` debug events, all VMs of all runs):

| phase | median ms | max ms | VMs |
|---|---|---|---|
$PHASES
MD
put_section vm "$WORK/section.md"
