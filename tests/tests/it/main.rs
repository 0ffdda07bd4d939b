//! Integration tests: one test binary (fast to link), one module per area.
//! Every test gets its own schema, Redis prefix and streams (`harness::TestEnv`).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests fail loudly on unexpected errors"
)]

mod abuse;
mod admin;
mod admin_errors;
mod admin_objects;
mod admin_queries;
mod attack_attrs;
mod attack_cache;
mod attack_nul;
mod attack_s21;
mod attack_s22;
mod attack_s24a;
mod attack_s24b;
mod attack_s25_ui;
mod attack_s27_voice;
mod attack_s28_windows;
mod attack_s28b_windows;
mod attack_s28c_windows;
mod attack_s28d_windows;
mod attack_s32_admission;
mod attack_s34_client_gone;
mod attack_s34_lease_tag;
mod attack_s34_wake;
mod attack_s34c;
mod attack_s35_replay;
mod attack_s35b;
mod attack_s35c;
mod attack_s36;
mod attack_s36b;
mod attack_s36c;
mod attack_s36d;
mod attack_s37;
mod attack_specs;
mod attack_tenants;
mod availability;
mod booking;
mod bounded;
mod call_in;
mod callbacks;
mod client_gone;
mod clients;
mod create_pipeline;
mod credentials;
mod designer_publish;
mod dispatch_fence;
mod dispatch_settle;
mod ewt;
mod failing_shard;
mod fixtures;
mod fleet;
mod gms;
mod gms_query;
mod group_admission;
mod handoff;
mod hardening;
mod hours;
mod lifecycle;
mod migrate;
mod numbers;
mod observability;
mod ors;
mod pacing;
mod public_port;
mod push;
mod reschedule;
mod security_sweep;
mod slot_grid;
mod statistics;
mod throttle;
mod tidy;
mod tls_postgres;
mod tls_redis;
mod trust_attacks;
mod trust_events;
mod trust_redis;
mod ui;
mod ui_callbacks;
mod ui_config;
mod wake_channel;
mod wiring;
mod worker;
