//! What the benchmarks share: where the workspace is, release binaries,
//! medians.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds release binaries of `packages` (cargo bench builds only this
/// package) and returns their paths, in order.
pub fn release_binaries(packages: &[&str]) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--release", "--locked"];
    for p in packages {
        args.extend(["-p", p]);
    }
    let st = Command::new(cargo)
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .expect("cargo build");
    assert!(st.success(), "building {packages:?} failed");
    packages
        .iter()
        .map(|p| workspace_root().join("target/release").join(p))
        .collect()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}
