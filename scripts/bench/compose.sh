#!/usr/bin/env bash
# Compose in fake mode: a generated project of N_SERVICES independent services
# on one network (what is measured is vmrd's own work: planning, image
# resolution, cloud-init seed ISOs, runtime files, the concurrent level), with
# `compose config` (validation and planning only) as the baseline.
# Run alone: scripts/bench.sh --only compose
source "$(dirname "$0")/lib.sh"
N_SERVICES=${N_SERVICES:-100}
bench_build
bench_workdir compose

head -c $((1024 * 1024)) /dev/urandom > "$WORK/tiny.raw"
cat > "$WORK/tiny.yaml" <<YAML
apiVersion: vmregistry.io/v1alpha1
metadata: {name: bench/tiny}
spec: {diskImage: tiny.raw, diskFormat: raw, resources: {cpu: 1, memory: 128MiB}}
YAML
mkdir -p "$WORK/compose"
{
  printf 'apiVersion: vmregistry.io/v1alpha1\nname: bench\nnetworks:\n  lan: {mode: nat, subnet: 10.250.0.0/16}\nservices:\n'
  for i in $(seq -w 1 "$N_SERVICES"); do
    printf '  s%s:\n    image: bench/tiny:1\n    networks: [lan]\n    cloudInit: {userData: "#cloud-config\\nhostname: s%s\\n"}\n' "$i" "$i"
  done
} > "$WORK/compose/vmcompose.yaml"
start_vmrd "$WORK/c.sock" --fs-path "$WORK/cstore" --hypervisor fake
VMR=("$BIN/vmr" --socket "$WORK/c.sock")
"${VMR[@]}" import -f "$WORK/tiny.yaml" -t 1 > /dev/null
CF=(compose -f "$WORK/compose/vmcompose.yaml")
config_times=(); up_times=(); again_times=(); down_times=()
for _ in $(seq "$REPS"); do
  config_times+=("$(timed "${VMR[@]}" "${CF[@]}" config)")
  up_times+=("$(timed "${VMR[@]}" -o json "${CF[@]}" up)")
  again_times+=("$(timed "${VMR[@]}" -o json "${CF[@]}" up)")
  down_times+=("$(timed "${VMR[@]}" "${CF[@]}" down)")
done
RSS_MIB=$(hwm_mib "$VMRD_PID")
stop_vmrd
CC=$(median "${config_times[@]}"); CU=$(median "${up_times[@]}")
CA=$(median "${again_times[@]}"); CD=$(median "${down_times[@]}")
per() { python3 -c "print(f'{float(\"$1\")*1000/$N_SERVICES:.1f}')"; }
cat > "$WORK/section.md" <<MD
## Compose in fake mode ($N_SERVICES independent services on one NAT network)

Fake hypervisor: what is measured is vmrd's own work per service (plan, image
resolution, spec hash, cloud-init seed ISO, runtime directory, define and
start calls), all services of the level concurrently. Each figure includes
one \`vmr\` process start. Median of $REPS runs; machine: $(machine).

| what | median s | ms per service |
|---|---|---|
| \`vmr compose config\` (validate and plan only: the baseline) | $(printf %.3f "$CC") | $(per "$CC") |
| \`vmr compose up\`, nothing exists | $(printf %.3f "$CU") | $(per "$CU") |
| \`vmr compose up\` again, nothing changed (no hypervisor change) | $(printf %.3f "$CA") | $(per "$CA") |
| \`vmr compose down\` | $(printf %.3f "$CD") | $(per "$CD") |

Daemon peak RSS (VmHWM) over the compose runs: ${RSS_MIB} MiB.
MD
put_section compose "$WORK/section.md"
