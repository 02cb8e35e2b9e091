# Shared helpers of the benchmark sections (sourced, not run). Each section
# script (scripts/bench/<name>.sh) measures its figures with their baselines in
# the same run and replaces its own part of docs/benchmarks.md, between the
# markers <!-- bench:<name> --> and <!-- /bench:<name> -->.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
export RUST_BACKTRACE=0
REPS=${REPS:-3}
DOC="$REPO/docs/benchmarks.md"
BIN="$REPO/target/release"
VMRD_PID=

# The release binaries, built once per `scripts/bench.sh` run.
bench_build() {
  [ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --bins -q
}

# A scratch directory removed on exit, with any daemon this section started.
bench_workdir() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmr-bench-$1.XXXXXX")
  trap 'bench_cleanup' EXIT
}
BENCH_EXTRA_PIDS=()
bench_cleanup() {
  kill "${VMRD_PID:-}" "${BENCH_EXTRA_PIDS[@]}" 2> /dev/null || true
  rm -rf "${WORK:-/nonexistent}"
}

now() { date +%s.%N; }
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
# mbps BYTES SECONDS
mbps() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2])/1e6:.0f}')" "$1" "$2"; }
# ratio A B: A ÷ B to two decimals
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
# timed CMD...: the wall-clock seconds of one run, output discarded
timed() { local t0 t1; t0=$(now); "$@" > /dev/null; t1=$(now); python3 -c "print($t1-$t0)"; }
# minflt PID: the process's minor page faults so far, all threads (a count,
# not a time: it does not depend on the machine's load).
minflt() { awk '{print $10}' "/proc/$1/stat"; }
hwm_mib() { echo $(( $(awk '/VmHWM/ {print $2}' "/proc/$1/status") / 1024 )); }

machine() {
  local cpu mem
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
  mem=$(free -g | awk '/Mem:/ {print $2}')
  echo "$(nproc) × $cpu, ${mem} GiB RAM, $(df -T "$REPO" | awk 'NR==2 {print $2}') file system, $(uname -r), $(date -u +%Y-%m-%d)"
}

# start_vmrd SOCKET ARGS...: a release vmrd in the background (VMRD_PID), serving.
start_vmrd() {
  local sock=$1; shift
  "$BIN/vmrd" --socket "$sock" --log-level warn "$@" &
  VMRD_PID=$!
  for _ in $(seq 200); do [ -S "$sock" ] && return; sleep 0.05; done
  echo "bench: vmrd did not create $sock" >&2; exit 1
}
stop_vmrd() {
  kill "$VMRD_PID" 2> /dev/null || true
  wait "$VMRD_PID" 2> /dev/null || true
  VMRD_PID=
}

# put_section NAME FILE: replace NAME's part of docs/benchmarks.md with FILE,
# or add it at the end.
put_section() {
  python3 - "$DOC" "$1" "$2" <<'PY'
import re, sys
doc_path, name, section_path = sys.argv[1:4]
section = open(section_path).read().strip("\n")
block = f"<!-- bench:{name} -->\n{section}\n<!-- /bench:{name} -->"
try:
    doc = open(doc_path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
if pattern.search(doc):
    doc = pattern.sub(lambda _: block, doc, count=1)
else:
    doc = doc.rstrip("\n") + "\n\n" + block + "\n"
open(doc_path, "w").write(doc.rstrip("\n") + "\n")
PY
  echo "bench: wrote the $1 section of docs/benchmarks.md"
}
