//! The shared harness, bound to this package's proxy binary.

#![allow(dead_code)]

pub use zerodb_testkit::*;

/// Starts zerodb-proxy with `yaml` (see [`Proxy::start`]).
pub fn start_proxy(yaml: &str) -> Proxy {
    Proxy::start(env!("CARGO_BIN_EXE_zerodb-proxy").as_ref(), yaml)
}
