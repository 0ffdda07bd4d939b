//! Integration tests: one test binary (fast to link), one module per area.
//! Every test gets its own schema, Redis prefix and streams (`harness::TestEnv`).

mod admin;
mod callbacks;
mod hardening;
mod lifecycle;
