#![doc = include_str!("../README.md")]

pub use shared::*;

pub mod http;

pub use http::{ApiError, ApiResult};
