//! Records the exact compiler version for the report (the `rustc` that
//! builds this crate, which `rustc -V` at run time might not be), and builds
//! the core's switch a second time without its floating-point control lines,
//! under another symbol prefix, so that one workload can show what keeping
//! the ABI's floating-point promise costs. That build is never shipped: only
//! this crate links it.

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

    let asm = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64_sysv_elf_gas.S",
        Ok("aarch64") => "aarch64_aapcs_elf_gas.S",
        // The core's own build script rejects every other target.
        _ => return,
    };
    // Read at run time: `env!` would bake in the directory the build script
    // itself was compiled in, which a reused build script would keep.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = std::path::Path::new(&manifest_dir).join("../asm");
    println!("cargo:rerun-if-changed={}", dir.display());
    cc::Build::new()
        .file(dir.join(asm))
        .include(&dir)
        .define("GREENLET_SYMBOL_PREFIX", "greenlet_bench_nofp_")
        .define("GREENLET_BENCH_WITHOUT_FP_CONTROL", None)
        .compile("greenlet_bench_nofp");
}
