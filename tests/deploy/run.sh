#!/usr/bin/env bash
# Deployment tests: manifests (kubernetes-validate + the Knative Service schema + checks
# against the code), the container build file, and the Lambda emulation test (cargo lambda
# watch + moto Secrets Manager + the local PostgreSQL and Redis). Called by `just test` / CI.
#
#   tests/deploy/run.sh [pytest args]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  'pytest>=8' 'kubernetes-validate>=1.31' 'jsonschema>=4' 'pyyaml>=6' 'moto[server]>=5' boto3 \
  'cargo-lambda>=1.8' 'dockerfile-parse>=2'
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

# The CLI used to provision (a no-op after `just test`'s workspace build), and the Lambda builds
# of the functions under test (feature `lambda`: Secrets Manager), built exactly as `cargo
# lambda watch` builds them so the watch starts without compiling. A `-p` build unifies
# features differently from the workspace build, so only this one extra build runs here (the
# secret mapping's unit tests need no feature: they run in the workspace suite).
cargo build --quiet --workspace --bins
cargo build --quiet -p engage-functions --features lambda --bin callbacks-create --bin callbacks-retrieve
bash infra/local/deps.sh up >/dev/null

exec python3 -m pytest -q -p no:cacheprovider tests/deploy "$@"
