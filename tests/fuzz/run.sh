#!/usr/bin/env bash
# Bounded coverage-guided fuzz run of every target in tests/fuzz (docs/fuzzing.md), for CI and
# `just fuzz`: builds the targets with cargo-fuzz (installed when missing), runs each for
# SECONDS (default 60), two at a time, and fails when any target crashes, hangs or runs out
# of memory. Crashing inputs are kept in tests/fuzz/artifacts/<target>/ (not committed); the
# committed corpus is read, never written (new inputs go to a scratch folder).
#
# usage: tests/fuzz/run.sh [seconds]   (build, then run every target)
#        tests/fuzz/run.sh build       (build only: CI builds early, in the background)
# The pinned stable toolchain builds libFuzzer targets with RUSTC_BOOTSTRAP=1 and without a
# sanitizer (`-s none`); debug assertions and overflow checks stay on (`-a`).
set -euo pipefail

secs="${1:-60}"
build_only=false
[[ "$secs" == build ]] && build_only=true && secs=0
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [seconds]" >&2; exit 2; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
fuzz="$root/tests/fuzz"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
triple="$(rustc -vV | sed -n 's/^host: //p')"
started=$(date +%s)
cargo fuzz build --fuzz-dir tests/fuzz -s none -a
built=$(date +%s)
echo "fuzz: built every target in $((built - started)) s"
$build_only && exit 0

targets=$(cargo fuzz list --fuzz-dir tests/fuzz)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Runs one target for $secs seconds; writes "<target> <seconds> <executions> <crashes>" to
# $scratch/<target>.row and libFuzzer's output to $scratch/<target>.log.
run_one() {
  local t="$1" bin="$fuzz/target/$triple/release/$1"
  local dict=()
  [[ -f "$fuzz/dict/$t.dict" ]] && dict=("-dict=$fuzz/dict/$t.dict")
  mkdir -p "$scratch/corpus/$t" "$fuzz/artifacts/$t" "$fuzz/corpus/$t"
  local before after t0 t1 rc=0
  before=$(find "$fuzz/artifacts/$t" -type f | wc -l)
  t0=$(date +%s)
  "$bin" "${dict[@]}" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$t/" \
    "$scratch/corpus/$t" "$fuzz/corpus/$t" >"$scratch/$t.log" 2>&1 || rc=$?
  t1=$(date +%s)
  after=$(find "$fuzz/artifacts/$t" -type f | wc -l)
  local execs crashes=$((after - before))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log" | tail -1)
  if [[ $rc -ne 0 && $crashes -eq 0 ]]; then crashes=1; fi
  echo "$t $((t1 - t0)) ${execs:-?} $crashes" >"$scratch/$t.row"
  if [[ $crashes -ne 0 ]]; then
    echo "fuzz: $t FAILED (exit $rc); its output:" >&2
    grep -v '^#' "$scratch/$t.log" | tail -60 >&2
  fi
}

# Two targets at a time (CI machines have 2 cores).
running=0
for t in $targets; do
  run_one "$t" &
  running=$((running + 1))
  if [[ $running -ge 2 ]]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '\n%-20s %8s %12s %8s\n' target seconds executions crashes
for t in $targets; do
  read -r name s n c <"$scratch/$t.row"
  printf '%-20s %8s %12s %8s\n' "$name" "$s" "$n" "$c"
  [[ "$c" == 0 ]] || failed=1
done
echo "fuzz: wall time $(( $(date +%s) - started )) s (build $((built - started)) s)"
if [[ $failed -ne 0 ]]; then
  echo "fuzz: crashes kept in tests/fuzz/artifacts/; see docs/fuzzing.md#when-a-target-crashes" >&2
  exit 1
fi
