#!/usr/bin/env bash
# The RPC figures of issue 7 (target 4), with their baselines measured in the
# same run: ListVMs and ListImages under 500 concurrent callers with 200 VMs
# and 200 images (fake mode) against the gRPC Health call through the same
# server and connections; daemon start to serving against spawning `true`;
# idle RSS. Run alone: scripts/bench.sh --only rpc
source "$(dirname "$0")/lib.sh"
N=${RPC_ITEMS:-200}            # images and VMs
CALLERS=${RPC_CALLERS:-500}
CONNS=${RPC_CONNECTIONS:-8}
SECS=${RPC_SECS:-10}
INTERVAL_MS=${RPC_INTERVAL_MS:-100}
# Every caller once a second: 500 `vmr ps`/`vmr images` watchers.
WATCH_MS=${RPC_WATCH_MS:-1000}
# ListImages allocates per call; a daemon past this is stopped, not left to
# the OOM killer of a shared machine.
RSS_CAP_MIB=${RPC_RSS_CAP_MIB:-4096}
bench_build
bench_workdir rpc
LOAD="$BIN/vmr-load"
SOCK="$WORK/vmr.sock"
VMR=("$BIN/vmr" --socket "$SOCK")

echo "bench rpc: daemon start to serving"
START_JSON=$("$LOAD" --measure-start "$BIN/vmrd" --starts 10 --idle-smaps "$WORK/idle.smaps")

"$BIN/vmrd" --socket "$SOCK" --fs-path "$WORK/store" --hypervisor fake --log-level warn \
  2> "$WORK/vmrd.log" &
VMRD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done

echo "bench rpc: importing $N images and creating $N VMs"
head -c 65536 /dev/urandom > "$WORK/disk.raw"
for i in $(seq -w 1 "$N"); do
  printf 'apiVersion: vmregistry.io/v1alpha1\nmetadata: {name: bench/img%s}\nspec: {diskImage: disk.raw, diskFormat: raw, resources: {cpu: 1, memory: 128MiB}}\n' \
    "$i" > "$WORK/img$i.yaml"
done
seq -w 1 "$N" | xargs -P 4 -I{} "${VMR[@]}" import -f "$WORK/img{}.yaml" -t 1 > /dev/null
seq -w 1 "$N" | xargs -P 4 -I{} "${VMR[@]}" create --name vm{} bench/img{}:1 > /dev/null

load() { "$LOAD" --socket "$SOCK" --callers "$CALLERS" --duration-secs "$SECS" "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "bench rpc: Health and ListVMs, $CALLERS callers"
H8=$(load --connections "$CONNS" --rpc health)
V8=$(load --connections "$CONNS" --rpc list-vms)
H1=$(load --connections 0 --rpc health)
V1=$(load --connections 0 --rpc list-vms)
HP=$(load --connections "$CONNS" --rpc health --interval-ms "$INTERVAL_MS")
VP=$(load --connections "$CONNS" --rpc list-vms --interval-ms "$INTERVAL_MS")
HW=$(load --connections "$CONNS" --rpc health --interval-ms "$WATCH_MS")
VW=$(load --connections "$CONNS" --rpc list-vms --interval-ms "$WATCH_MS")
IW=$(load --connections "$CONNS" --rpc list-images --interval-ms "$WATCH_MS")
LOAD_HWM_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$VMRD_PID/status")

echo "bench rpc: one caller each"
HS=$("$LOAD" --socket "$SOCK" --callers 1 --duration-secs "$SECS" --rpc health)
VS=$("$LOAD" --socket "$SOCK" --callers 1 --duration-secs "$SECS" --rpc list-vms)
IS=$("$LOAD" --socket "$SOCK" --callers 1 --duration-secs "$SECS" --rpc list-images)
SEQ_HWM_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$VMRD_PID/status")

echo "bench rpc: ListImages, $CALLERS callers (stopped past $RSS_CAP_MIB MiB daemon RSS)"
load --connections "$CONNS" --rpc list-images > "$WORK/images.json" 2> "$WORK/images.err" &
LOAD_PID=$!
T0=$(date +%s.%N)
CAPPED=
while kill -0 "$LOAD_PID" 2> /dev/null; do
  RSS=$(awk '/VmRSS/ {print $2}' "/proc/$VMRD_PID/status" 2> /dev/null || echo 0)
  if [ "${RSS:-0}" -gt $((RSS_CAP_MIB * 1024)) ]; then
    CAPPED=$(python3 -c "import time; print(f'{time.time()-$T0:.1f}')")
    kill "$VMRD_PID" "$LOAD_PID" 2> /dev/null || true
    break
  fi
  sleep 0.2
done
wait "$LOAD_PID" 2> /dev/null || true
kill "$VMRD_PID" 2> /dev/null || true
wait "$VMRD_PID" 2> /dev/null || true
VMRD_PID=

row() { # label json baseline-json
  local j=$1 b=$2
  python3 - "$j" "$b" <<'PY'
import json, sys
j, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ratio = j["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan")
print(f'{j["callers"]} | {j["connections"]} | {j["items"]} | {j["calls_per_sec"]:.0f} | '
      f'{j["p50_ms"]:.2f} | {j["p90_ms"]:.2f} | {j["p99_ms"]:.2f} | {j["max_ms"]:.2f} | {ratio:.2f}')
PY
}
if [ -n "$CAPPED" ]; then
  IMAGES_ROW="$CALLERS | $CONNS | $N | — | — | — | — | — | stopped: daemon RSS passed $RSS_CAP_MIB MiB after ${CAPPED} s"
elif [ -s "$WORK/images.json" ]; then
  IMAGES_ROW=$(row "$(cat "$WORK/images.json")" "$H8")
else
  IMAGES_ROW="$CALLERS | $CONNS | $N | — | — | — | — | — | failed: $(tr '\n' ' ' < "$WORK/images.err" | cut -c1-200)"
fi

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
SECTION="$WORK/section.md"
cat > "$SECTION" <<MD
## RPCs ($N images, $N VMs, fake mode; $CALLERS concurrent callers)

\`vmr-load\` (tests crate) fires one RPC from $CALLERS callers, each in a closed
loop (the next call as soon as the last one answers) for $SECS s, over
$CONNS shared HTTP/2 connections or one connection per caller; "paced" rows
start one call per caller every $INTERVAL_MS ms (or every $WATCH_MS ms: "once a
second", $CALLERS watchers refreshing a listing) instead (a late call counts from
when it was due). Latency is the caller's, from send to decoded answer. The
baseline is \`grpc.health.v1.Health/Check\` through the same server, layers
and connections, in the same run. The load generator and vmrd share the
machine's $(nproc) cores, so a closed loop measures queueing: with $CALLERS
callers and zero think time, mean latency = callers ÷ calls/s (Little's law),
which no server reaches 5 ms under unless it answers 100 000 calls/s.
Machine: $(nproc) × $CPU, $(uname -r), $(date -u +%Y-%m-%d).

| RPC | callers | connections | items | calls/s | p50 ms | p90 ms | p99 ms | max ms | p99 ÷ Health p99 |
|---|---|---|---|---|---|---|---|---|---|
| Health (baseline) | $(row "$H8" "$H8") |
| ListVMs | $(row "$V8" "$H8") |
| Health (baseline), one connection per caller | $(row "$H1" "$H1") |
| ListVMs, one connection per caller | $(row "$V1" "$H1") |
| Health (baseline), paced | $(row "$HP" "$HP") |
| ListVMs, paced | $(row "$VP" "$HP") |
| Health (baseline), each caller once a second | $(row "$HW" "$HW") |
| ListVMs, each caller once a second | $(row "$VW" "$HW") |
| ListImages, each caller once a second | $(row "$IW" "$HW") |
| Health (baseline), one caller | $(row "$HS" "$HS") |
| ListVMs, one caller | $(row "$VS" "$HS") |
| ListImages, one caller | $(row "$IS" "$HS") |
| ListImages | $IMAGES_ROW |

Daemon peak RSS (VmHWM): $((LOAD_HWM_KIB / 1024)) MiB after the Health and
ListVMs runs; $((SEQ_HWM_KIB / 1024)) MiB after one caller's ListImages loop.

| start and idle | vmrd | baseline |
|---|---|---|
| spawn to first answered Health call, median of 10 (fake mode, empty store) | $(field "$START_JSON" start_to_serving_ms_median) ms (max $(field "$START_JSON" start_to_serving_ms_max) ms) | spawn and exit of \`true\`: $(field "$START_JSON" true_spawn_ms_median) ms |
| idle RSS (VmRSS after start, 10 calls, 1 s idle) | $(( $(field "$START_JSON" idle_rss_kib) / 1024 )) MiB | |

The idle RSS by mapping (\`/proc/PID/smaps\` of that idle daemon, $(field "$START_JSON" idle_threads)
threads; file-backed pages count once mapped, shared or not):

| mapping | Rss KiB | private dirty KiB |
|---|---|---|
$(python3 "$REPO/scripts/bench/smaps.py" "$WORK/idle.smaps" vmrd)
MD
python3 - "$H8" "$V8" "$HS" "$VS" "$IS" "$START_JSON" "$WORK/images.json" "$CAPPED" "$VW" "$IW" >> "$SECTION" <<'PY'
import json, sys
h8, v8, hs, vs, is_, start = (json.loads(a) for a in sys.argv[1:7])
try:
    images = json.load(open(sys.argv[7]))
except (OSError, ValueError):
    images = None
capped = sys.argv[8]
vw, iw = json.loads(sys.argv[9]), json.loads(sys.argv[10])
def vs_target(ms, target):
    return f"{ms:.1f} ms, {ms / target:.1f}× the {target:g} ms target"
lines = ["", "Against the targets of issue 7:", ""]
lines.append(f"- p99 ≤ 5 ms with {h8['callers']} callers: ListVMs {vs_target(v8['p99_ms'], 5)}; "
             + (f"ListImages {vs_target(images['p99_ms'], 5)}" if images and not capped
                else "ListImages stopped (daemon memory)")
             + f". The Health baseline is at {vs_target(h8['p99_ms'], 5)} under the same closed loop, "
             "so on these shared cores the target holds for no RPC at this concurrency; what sets the lists "
             f"apart from Health is their cost per call (one caller, p50: Health {hs['p50_ms']:.2f} ms, "
             f"ListVMs {vs['p50_ms']:.2f} ms, ListImages {is_['p50_ms']:.2f} ms), which caps their calls/s.")
lines.append(f"- p99 ≤ 5 ms with {vw['callers']} callers each calling once a second "
             f"({vw['calls_per_sec']:.0f} calls/s): ListVMs {vs_target(vw['p99_ms'], 5)} "
             f"({'met' if vw['p99_ms'] <= 5 else 'missed'}); ListImages {vs_target(iw['p99_ms'], 5)} "
             f"({'met' if iw['p99_ms'] <= 5 else 'missed'}).")
st = start["start_to_serving_ms_median"]
lines.append(f"- start to serving ≤ 100 ms: {st:.1f} ms ({'met' if st <= 100 else 'missed'}).")
rss = start["idle_rss_kib"] / 1024
lines.append(f"- idle RSS ≤ 20 MiB: {rss:.1f} MiB ("
             + ("met" if rss <= 20 else f"missed by {rss - 20:.1f} MiB") + ").")
print("\n".join(lines))
PY

put_section rpc "$SECTION"
cat "$SECTION"
