#!/usr/bin/env bash
# The fuzz targets in fuzz/ (cargo-fuzz, libFuzzer). See docs/fuzzing.md.
#
#   scripts/fuzz.sh list        the targets
#   scripts/fuzz.sh build       build every target
#   scripts/fuzz.sh short       run each target ~15 s (CI); FUZZ_SHORT_SECS overrides
#   scripts/fuzz.sh long [N]    run each target N seconds (default 180) and print a
#                               summary table (executions, coverage, corpus, crashes)
#   scripts/fuzz.sh run T [N]   run one target N seconds (default 60)
#
# cargo-fuzz is installed when missing. The sanitizer needs a nightly compiler:
# the nightly toolchain when rustup has one, else the stable one with
# RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN=stable forces the latter). Corpora
# grow in fuzz/corpus/T (seeded from fuzz/seeds/T,
# not committed); crashes land in fuzz/artifacts/T and fail the run.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO/fuzz"

TARGETS=(vmfile compose reference size manifest image_config domain_xml)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" = stable ]; then
  export RUSTC_BOOTSTRAP=1
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
# The machines this runs on are small and shared.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

build() {
  cargo "${toolchain[@]}" fuzz build "$@"
}

# run TARGET SECONDS LOG: fuzz one target from its seeds and its grown corpus.
run() {
  local target=$1 secs=$2 log=$3
  mkdir -p "corpus/$target" "artifacts/$target"
  # -rss_limit_mb: a parser that balloons on a small input is a finding too.
  cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
}

summary_row() {
  local target=$1 log=$2 status=$3
  local execs cov ft corpus crashes
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  corpus=$(find "corpus/$target" -type f | wc -l)
  crashes=$(find "artifacts/$target" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$execs" "$cov" "$ft" "$corpus" "$crashes" "$status"
}

# fuzz_all SECONDS: every target in turn; non-zero when any found a crash.
fuzz_all() {
  local secs=$1 failed=() logdir
  logdir=$(mktemp -d)
  build
  echo "| target | executions | coverage (edges) | features | corpus | crashes | result |"
  echo "|---|---|---|---|---|---|---|"
  for t in "${TARGETS[@]}"; do
    local status=ok
    if ! run "$t" "$secs" "$logdir/$t.log"; then
      status=FAILED
      failed+=("$t")
    fi
    summary_row "$t" "$logdir/$t.log" "$status"
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    for t in "${failed[@]}"; do
      echo; echo "==> $t failed; the end of its log:"; tail -40 "$logdir/$t.log"
    done
    echo "fuzz: crashes in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    return 1
  fi
  rm -rf "$logdir"
}

case "${1:-}" in
  list) printf '%s\n' "${TARGETS[@]}" ;;
  build) build ;;
  short) fuzz_all "${FUZZ_SHORT_SECS:-15}" ;;
  long) fuzz_all "${2:-180}" ;;
  run)
    [ -n "${2:-}" ] || { echo "usage: $0 run TARGET [SECONDS]" >&2; exit 2; }
    build "$2"
    log=$(mktemp)
    status=0; run "$2" "${3:-60}" "$log" || status=$?
    tail -25 "$log"; rm -f "$log"; exit "$status" ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
