//! Records the exact compiler version for the report: the `rustc` that
//! builds this crate, which `rustc -V` at run time might not be.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GREENLET_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
