# Engage: the front door. `just --list` documents every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

data := justfile_directory() / ".local"
admin_token := env_var_or_default("ADMIN_TOKEN", "local-admin-token-change-me")

# List the recipes.
default:
    @just --list

# Install (apt) and start PostgreSQL and Redis locally; print their env.
deps:
    bash infra/local/deps.sh up

# Bring the whole service up on this box: deps, build, migrate, demo tenant + key, serve (+ worker).
# Builds only what it runs (`engage`, `ors-sim`), with the `local` profile (release without LTO).
up: deps
    cargo build --profile local -p engage --bin engage -p ors-sim --bin ors-sim
    bash infra/local/up.sh "{{admin_token}}"

# Stop the local service and its PostgreSQL and Redis.
down:
    bash infra/local/up.sh --stop || true
    bash infra/local/deps.sh down

# Run the full test suite against real PostgreSQL and Redis (standalone and cluster).
test: deps
    bash infra/local/deps.sh cluster > /dev/null
    bash infra/local/deps.sh browser
    cargo build --workspace --bins
    cargo nextest run --workspace --no-fail-fast
    # The OpenAPI contract against the live service (schemathesis, ~2 min: docs/api-contract.md).
    bash tests/contract/run.sh
    bash tests/deploy/run.sh

# Print the rendered Kubernetes/Knative manifests (base, gke, aks or all).
deploy-render target="all":
    bash infra/k8s-render.sh {{target}}

# Start-up time, idle memory and size of one function binary (release).
bench-startup bin="callbacks-create":
    bash tests/bench/startup.sh {{bin}}

# Format, clippy (-D warnings) and docs, exactly as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path tests/fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# Benchmarks: release build, every scenario, writes tests/bench/REPORT.md and SVG charts
# (`just bench --quick` for a smoke run, `just bench --only create,sizing` for some scenarios).
bench *args: deps
    cargo build --release --workspace --bins
    ./target/release/bench {{args}}

# Fault suite (issue 12): release build, every fault on private servers, writes
# tests/chaos/REPORT.md (`just chaos --only pg-stop` for some rows, `--quick` for the CI variant).
chaos *args:
    cargo build --release -p engage --bin engage -p engage-worker --bin engage-worker -p ors-sim --bin ors-sim -p engage-tests --bin chaos
    ./target/release/chaos {{args}}

# Coverage-guided fuzzing (docs/fuzzing.md): builds every target in tests/fuzz and runs each
# for SECONDS (default 60), two at a time; fails on a crash (kept in tests/fuzz/artifacts/).
fuzz seconds="60":
    bash tests/fuzz/run.sh {{seconds}}

# Format the code.
fmt:
    cargo fmt --all
