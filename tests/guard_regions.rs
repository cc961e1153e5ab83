//! Stacks carved from slabs with guard regions: a million live greenlets
//! under the default `vm.max_map_count`, the `mprotect` fallback and its
//! wall, stack overflow into either kind of guard, and the pool giving the
//! pages of deep stacks back to the kernel.
//!
//! Cases that must crash or that need a fresh process (the guard kind is
//! chosen once per process) run in a child that re-executes this test binary
//! with `GUARD_TEST_CHILD` naming what to do.

use greenlet::stack::{GuardKind, guard_kind, pool_stats, set_pool_limit};
use greenlet::{Builder, Greenlet, SwitchError, getcurrent};
use std::process::Output;

#[path = "util/mod.rs"]
mod util;

const SMALL_STACK: usize = 16 * 1024;

/// Runs `test` of this binary in a child process with `GUARD_TEST_CHILD=mode`
/// and extra environment (through qemu when this is an emulated aarch64
/// run: see `util::run_child`).
fn run_child(test: &str, mode: &str, env: &[(&str, &str)]) -> Output {
    let mut all = vec![("GUARD_TEST_CHILD", mode)];
    all.extend_from_slice(env);
    util::run_child(test, &all)
}

fn child_mode() -> Option<String> {
    std::env::var("GUARD_TEST_CHILD").ok()
}

fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps readable")
        .lines()
        .count()
}

/// Creates `n` greenlets that each start and suspend; returns them.
fn suspend_many(n: usize) -> Result<Vec<Greenlet>, greenlet::Error> {
    let mut live = Vec::with_capacity(n);
    for i in 0..n {
        let g = Builder::new().stack_size(SMALL_STACK).spawn(move |()| {
            let main = getcurrent().parent().expect("parent");
            let back: usize = main.switch(i)?;
            Ok(back + 1)
        })?;
        let got: usize = g
            .switch(())
            .unwrap_or_else(|e| panic!("greenlet {i} did not start: {e}"));
        assert_eq!(got, i);
        live.push(g);
    }
    Ok(live)
}

#[test]
fn a_million_live_greenlets_fit_under_the_default_map_count() {
    let target: usize = std::env::var("GREENLET_MILLION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if guard_kind() == GuardKind::Mprotect {
        // No guard markers here (old kernel, or qemu-user, which answers
        // MADV_GUARD_INSTALL with success and installs nothing): the
        // mprotect path is covered by the tests below.
        eprintln!(
            "guard regions unavailable (kind {:?}); million-greenlet test not applicable",
            guard_kind()
        );
        return;
    }
    let stacks_before = pool_stats().mapped;
    let maps_before = mapping_count();
    let live = suspend_many(target).expect("a million greenlets with madvise guards");
    let maps_during = mapping_count();
    let stats = pool_stats();
    eprintln!(
        "{target} live greenlets: {} mappings (was {maps_before}), {} slabs, {} stacks",
        maps_during, stats.slabs, stats.mapped
    );
    assert!(stats.mapped >= stacks_before + target);
    // A few hundred slabs, not a million mappings.
    assert!(
        maps_during - maps_before < 2_000,
        "{maps_during} mappings for {target} greenlets"
    );
    for (i, g) in live.iter().enumerate() {
        let result: usize = g.switch(i * 2).expect("resumes to completion");
        assert_eq!(result, i * 2 + 1);
        assert!(g.is_dead());
    }
    drop(live);
    set_pool_limit(0);
    assert_eq!(pool_stats().mapped, stacks_before, "every stack released");
    set_pool_limit(1024);
}

#[test]
fn the_mprotect_fallback_can_be_forced_and_hits_the_map_count_wall_with_an_error() {
    if let Some(mode) = child_mode() {
        if mode != "wall" {
            return;
        }
        assert_eq!(
            guard_kind(),
            GuardKind::Mprotect,
            "GREENLET_STACK_GUARD=mprotect forces the fallback"
        );
        let before = mapping_count();
        let ten = suspend_many(10).expect("ten greenlets");
        let after = mapping_count();
        println!("mappings for 10 stacks: {}", after - before);
        drop(ten);
        match suspend_many(200_000) {
            Ok(_) => println!("NO WALL"),
            Err(e) => println!("WALL after error: {e}"),
        }
        return;
    }
    let out = run_child(
        "the_mprotect_fallback_can_be_forced_and_hits_the_map_count_wall_with_an_error",
        "wall",
        &[("GREENLET_STACK_GUARD", "mprotect")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ten: usize = stdout
        .lines()
        .find_map(|l| l.split("mappings for 10 stacks: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "child reported no mapping count: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // Each mprotect guard splits its slab: about two mappings per stack.
    assert!(
        ten >= 18,
        "only {ten} new mappings for 10 mprotect-guarded stacks"
    );
    let wall = stdout
        .lines()
        .find(|l| l.contains("WALL"))
        .expect("child reached the wall");
    assert!(wall.contains("vm.max_map_count"), "{wall}");
    assert!(wall.contains("sysctl"), "{wall}");
}

fn overflow_child() {
    fn recurse(depth: u64) -> u64 {
        let buffer = std::hint::black_box([depth; 64]);
        if std::hint::black_box(depth) == u64::MAX {
            return 0;
        }
        buffer[(depth % 64) as usize] + recurse(depth + 1)
    }
    let g = Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|()| -> Result<u64, SwitchError> { Ok(recurse(0)) })
        .expect("stack");
    let _ = g.switch::<(), u64>(());
    unreachable!("the overflow aborts the process");
}

fn assert_overflow_reported(out: &Output) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(stderr.contains("stack overflow in greenlet #"), "{stderr}");
    assert!(stderr.contains("16384-byte stack"), "{stderr}");
    assert!(stderr.contains("stack_size("), "{stderr}");
}

#[test]
fn overflow_into_a_madvise_guard_is_reported() {
    if child_mode().as_deref() == Some("overflow") {
        overflow_child();
    }
    if child_mode().is_some() {
        return;
    }
    let out = run_child("overflow_into_a_madvise_guard_is_reported", "overflow", &[]);
    assert_overflow_reported(&out);
}

#[test]
fn overflow_into_an_mprotect_guard_is_reported() {
    if child_mode().as_deref() == Some("overflow") {
        overflow_child();
    }
    if child_mode().is_some() {
        return;
    }
    let out = run_child(
        "overflow_into_an_mprotect_guard_is_reported",
        "overflow",
        &[("GREENLET_STACK_GUARD", "mprotect")],
    );
    assert_overflow_reported(&out);
}

fn resident(address: usize) -> bool {
    let page = greenlet::stack::page_size();
    let mut vec = 0u8;
    // SAFETY: mincore reads the page tables for one page of our own address
    // space and writes one byte into `vec`.
    let rc = unsafe { libc::mincore((address & !(page - 1)) as *mut _, page, &mut vec) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec & 1 == 1
}

#[test]
fn a_deep_stack_gives_its_pages_back_when_pooled() {
    if child_mode().is_some() {
        return;
    }
    // Goes `depth` bytes deep, switches to main at the bottom (where the
    // pool sees its depth), and returns the address of its deepest frame.
    fn dig(remaining: usize, main: &Greenlet) -> Result<usize, SwitchError> {
        let buffer = std::hint::black_box([7u8; 4096]);
        if remaining <= 4096 {
            main.switch::<(), ()>(())?;
            return Ok(buffer.as_ptr() as usize);
        }
        let deepest = dig(remaining - 4096, main)?;
        std::hint::black_box(&buffer);
        Ok(deepest)
    }
    let run = |depth: usize| -> usize {
        let g = Builder::new()
            .stack_size(4 << 20)
            .spawn(move |()| {
                let main = getcurrent().parent().expect("parent");
                dig(depth, &main)
            })
            .expect("stack");
        g.switch::<(), ()>(()).expect("reaches the bottom");
        let deepest: usize = g.switch(()).expect("finishes");
        assert!(g.is_dead());
        deepest
    };
    let deep = run(512 * 1024);
    assert!(
        !resident(deep),
        "a 512 KiB deep stack still holds its lowest page after pooling"
    );
    let shallow = run(16 * 1024);
    assert!(
        resident(shallow),
        "a shallow stack keeps its pages for reuse"
    );
}
