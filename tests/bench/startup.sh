#!/usr/bin/env bash
# Start-up figures of a function binary (budget in docs/decisions.md#budgets: start → serving
# ≤ 50 ms, idle RSS ≤ 20 MB): process start → first 200 on /ges/v1/health/live and on
# /ges/v1/health/ready (which needs the first PostgreSQL connection), median of RUNS (20); idle
# RSS 0.3 s after the first answer; size of the stripped release binary. Prints figures, asserts
# nothing.
#
#   tests/bench/startup.sh [function-binary]     default: callbacks-create
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
bin=${1:-callbacks-create}
runs=${RUNS:-20}

cargo build --release --quiet -p engage --bin engage -p engage-functions --bin "$bin"
set -a
eval "$(bash infra/local/deps.sh up)"
DB_SCHEMA=bench_startup
REDIS_PREFIX=bench_startup
VOICE_STREAM=bench_startup:NewCallbackStream
CONTROL_STREAM=bench_startup:CallbackControlStream
LOG_LEVEL=WARN
set +a
target/release/engage migrate
python3 tests/bench/startup.py "target/release/$bin" --runs "$runs"
