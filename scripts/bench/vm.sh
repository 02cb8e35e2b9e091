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
# The create and start phases' debug events and the libvirt adapter's timing
# of virDomainCreate (JSON) go to vmrd.log for the phase table.
RUST_LOG=warn,vmr_app::service::vms=debug,vmr_libvirt::vms=debug \
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
# vmrd's debug events, in order: "create phase" (a VM's creation; compose
# creates without starting), "start phase" (a start: `vmr start`, compose),
# and the libvirt adapter's "libvirt call" timing virDomainCreate alone.
by, runs, current = {}, [], {}
for line in open(sys.argv[1]):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    message, vm = f.get("message"), f.get("vm")
    if message in ("create phase", "start phase"):
        phase, ms = f["phase"], float(f["duration_ms"])
        by.setdefault(phase, []).append(ms)
        if phase == "prepare":
            current[vm] = {}
            runs.append(current[vm])
        if vm in current:
            current[vm][phase] = ms
    elif message == "libvirt call" and f.get("call") == "virDomainCreate":
        ms = float(f["duration_ms"])
        by.setdefault("virDomainCreate", []).append(ms)
        if vm in current:
            current[vm]["virDomainCreate"] = ms
what = {
    "prepare": "store path of the base, runtime directory",
    "disk": "overlay disk (base size, qcow2 header)",
    "seed": "cloud-init seed ISO",
    "define": "libvirt define (domain XML)",
    "start": "the start call as vmr makes it (lookup, state and network checks, virDomainCreate)",
    "virDomainCreate": "of which libvirt's virDomainCreate (libvirt's and QEMU's time, not vmr's)",
    "inspect": "libvirt read-back of the started domain",
}
def row(label, v):
    print(f"| {label} | {statistics.median(v):.1f} | {max(v):.1f} | {len(v)} |")
for phase in what:
    if by.get(phase):
        row(f"{phase}: {what[phase]}", by[phase])
own_phases = ["prepare", "disk", "seed", "define", "start", "inspect"]
whole = [r for r in runs if all(p in r for p in own_phases + ["virDomainCreate"])]
if whole:
    row("vmr's share of the start call (start − virDomainCreate)",
        [r["start"] - r["virDomainCreate"] for r in whole])
    row("**vmr's own overhead per VM**: prepare + disk + seed + define + "
        "(start − virDomainCreate) + inspect",
        [sum(r[p] for p in own_phases) - r["virDomainCreate"] for r in whole])
    row("every phase, virDomainCreate included",
        [sum(r[p] for p in own_phases) for r in whole])
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

Per phase (vmrd's \`create phase\` and \`start phase\` debug events, and the
libvirt adapter's \`libvirt call\` event timing \`virDomainCreate\`; all VMs of all
runs). Compose creates each VM without starting it, then starts it: \`start\`
and \`inspect\` come from the start. \`virDomainCreate\` is libvirt's and QEMU's
time (spawning QEMU, waiting for its monitor), not vmr's; the sums per VM give
vmr's own overhead without it (issue 7's target: ≤ 50 ms) and with it.

| phase | median ms | max ms | VMs |
|---|---|---|---|
$PHASES
MD
put_section vm "$WORK/section.md"
