#![doc = include_str!("../README.md")]

pub mod auth;
pub mod aws_secrets;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod db;
pub mod error;
pub mod metrics;
pub mod model;
pub mod phone;
pub mod process;
pub mod redis;
pub mod resources;
pub mod telemetry;

pub use config::Config;
pub use error::Error;
pub use resources::Resources;

/// The allocator of every Engage binary (they all link this crate): glibc's malloc took about
/// a fifth of a create's CPU time under load (`just bench`, perf), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
