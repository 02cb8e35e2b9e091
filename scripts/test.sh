#!/usr/bin/env bash
# The full test suite, as `make test` and CI (.ci/run) run it: installs the system packages,
# starts the outside services (libvirtd, S3, OCI registries) on loopback, builds, runs every
# test, then checks formatting and clippy. Exits non-zero when any step failed.
#
# Services that were already up when it began are left running afterwards (a developer's,
# or another test run's); the daemons it started itself are stopped on exit, by their pids.
# VMR_KEEP_SERVICES=1 keeps them running in any case.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

step() { echo; echo "==> $*"; }

# A CI machine builds once from nothing, so incremental-compilation caches (about 2 GB in
# target/debug/incremental) would only cost disk. Developers keep theirs.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

# Disk is the resource a shared machine runs out of: say up front what there is.
target_dir=${CARGO_TARGET_DIR:-$REPO/target}
mkdir -p "$target_dir"
free_mib=$(df -Pm "$target_dir" | awk 'NR == 2 { print $4 }')
echo "disk: ${free_mib} MiB free for ${target_dir} (a run from nothing peaks at about 4 GiB: 2.5 of build, 2 of test data)"
if [ "${free_mib:-0}" -lt 5120 ]; then
  echo "disk: WARNING: less than 5 GiB free; the build may fail with 'No space left on device'" >&2
fi

step "system packages"
bash scripts/install-deps.sh

step "test services"
# The daemons `start` launches now are listed here and stopped on exit; services already up
# (a developer's, another run's, shared by others on this machine) are never touched.
VMR_SERVICES_STARTED=$(mktemp)
export VMR_SERVICES_STARTED
summary_line=""
stop_services() {
  if [ -s "$VMR_SERVICES_STARTED" ] && [ "${VMR_KEEP_SERVICES:-0}" != 1 ]; then
    step "stopping the test services this run started"
    bash scripts/test-services.sh stop-started "$VMR_SERVICES_STARTED" || true
  fi
  rm -f "$VMR_SERVICES_STARTED"
  # The test summary is the run's last line, whatever came before it.
  if [ -n "$summary_line" ]; then echo; echo "$summary_line"; fi
}
trap stop_services EXIT
bash scripts/test-services.sh start
eval "$(bash scripts/test-services.sh env)"

# The real Debian guest the real-libvirt tests boot: built once (a few minutes), then reused
# from the cache, keyed by the script's content.
step "test guest (scripts/guest-image.sh)"
export VMR_GUEST_CACHE=${VMR_GUEST_CACHE:-$REPO/.cache/guest}
VMR_TEST_GUEST_IMAGE=$(bash scripts/guest-image.sh | tail -1)
export VMR_TEST_GUEST_IMAGE
echo "guest: $VMR_TEST_GUEST_IMAGE"

failed=()

# The end-to-end tests run the daemon and CLI binaries, so they are built first, in the same
# invocation as the tests: with `--tests`, Cargo resolves features the way the test run does
# (dev-dependencies turn on tokio's test-util), so the binaries and the tests share one build of
# every dependency instead of two.
step "cargo build --workspace --bins --tests"
cargo build --workspace --bins --tests

summary_log=$(mktemp)
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests: run them first, so that the suite's own
  # summary is the last test-runner output.
  step "cargo test --workspace --doc"
  cargo test --workspace --doc || failed+=("doctests")
  step "cargo nextest run --workspace --no-fail-fast"
  cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$summary_log" || failed+=("tests")
else
  step "cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast 2>&1 | tee "$summary_log" || failed+=("tests")
fi
# One plain closing line: "tests: N passed, M failed".
passed=$(grep -oE '[0-9]+ passed' "$summary_log" | tail -1 | grep -oE '[0-9]+' || echo 0)
failed_count=$(grep -oE 'tests run: .*' "$summary_log" | tail -1 | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
rm -f "$summary_log"

step "fuzz: each target ~15 s (scripts/fuzz.sh short)"
bash scripts/fuzz.sh short || failed+=("fuzz")
if [ "${CI:-}" = true ]; then
  # The sanitizer build is not needed again in this run; give its disk to clippy.
  rm -rf fuzz/target
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check || failed+=("fmt")

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings || failed+=("clippy")

echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "==> FAILED: ${failed[*]}"
  summary_line="tests: ${passed} passed, ${failed_count:-0} failed"
  exit 1
fi
echo "==> all checks passed"
summary_line="tests: ${passed} passed, ${failed_count:-0} failed"
