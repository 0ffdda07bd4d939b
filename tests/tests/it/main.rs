//! Integration tests: one test binary (fast to link), one module per area.
//! Every test gets its own schema, Redis prefix and streams (`harness::TestEnv`).

mod admin;
mod admin_errors;
mod callbacks;
mod hardening;
mod numbers;
mod public_port;
mod throttle;
