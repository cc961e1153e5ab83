//! Stacks carved from slabs with guard regions: a million live greenlets
//! under the default `vm.max_map_count`, the `mprotect` fallback and its
//! wall, stack overflow into either kind of guard, and the pool giving the
//! pages of deep stacks back to the kernel.
//!
//! Cases that must crash or that need a fresh process (the guard kind is
//! chosen once per process) run in a child that re-executes this test binary
//! with `GUARD_TEST_CHILD` naming what to do.
//!
//! The tests that count slabs or mappings, or change this thread's pool
//! settings, take `util::serial()`: `pool_stats().slabs` and
//! `/proc/self/maps` are process-wide.
// House style: one unsafe operation per block, each with its SAFETY line.
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

use greenlet::stack::{
    GuardKind, guard_kind, page_size, pool_stats, set_pool_limit, set_release_threshold,
};
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

/// Why this process may legitimately use `mprotect` guards, or `None` if
/// it must use `MADV_GUARD_INSTALL`: the kernel is 6.13 or later (release
/// read from `/proc/sys/kernel/osrelease`, which qemu-user passes through),
/// the program runs natively, and `GREENLET_STACK_GUARD=mprotect` is not
/// set. On such a system, detection falling back to `mprotect` is a bug
/// that the tests below must not hide.
fn why_madvise_guards_may_be_missing() -> Option<String> {
    if std::env::var_os("GREENLET_STACK_GUARD").is_some_and(|v| v == "mprotect") {
        return Some("GREENLET_STACK_GUARD=mprotect forces the fallback".into());
    }
    let release = match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(release) => release.trim().to_string(),
        Err(e) => return Some(format!("kernel release unknown: {e}")),
    };
    let Some(version) = kernel_version(&release) else {
        return Some(format!("kernel release {release:?} not understood"));
    };
    if version < (6, 13) {
        return Some(format!(
            "kernel {release} predates MADV_GUARD_INSTALL (Linux 6.13)"
        ));
    }
    util::emulated().map(|how| format!("kernel {release}, but {how}"))
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v669`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Asserts that guards are made with `MADV_GUARD_INSTALL` where they must
/// be; elsewhere says on stderr why `test` does not require it.
fn check_guard_kind(kind: GuardKind, test: &str) {
    match why_madvise_guards_may_be_missing() {
        None => assert_eq!(
            kind,
            GuardKind::Madvise,
            "{test}: Linux 6.13 or later, run natively, no fallback forced: guards must be \
             made with MADV_GUARD_INSTALL"
        ),
        Some(why) => eprintln!("{test}: guard kind {kind:?}; madvise guards not required: {why}"),
    }
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
    const NAME: &str = "a_million_live_greenlets_fit_under_the_default_map_count";
    if child_mode().is_some() {
        return;
    }
    let _serial = util::serial();
    let target: usize = std::env::var("GREENLET_MILLION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    check_guard_kind(guard_kind(), NAME);
    if guard_kind() == GuardKind::Mprotect {
        // No guard markers here (old kernel, or qemu-user, which answers
        // MADV_GUARD_INSTALL with success and installs nothing; the reason
        // was printed above): the mprotect path is covered by the tests
        // below.
        eprintln!("{NAME}: skipped: needs madvise guards");
        return;
    }
    let stacks_before = pool_stats().mapped;
    let slabs_before = pool_stats().slabs;
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
    let after = pool_stats();
    assert_eq!(after.mapped, stacks_before, "every stack released");
    assert_eq!(after.slabs, slabs_before, "every slab unmapped: {after:?}");
    // Other tests' threads come and go (each thread stack is a mapping or
    // two), and the allocator may keep an arena: near, not equal.
    let maps_after = mapping_count();
    eprintln!("after dropping them: {maps_after} mappings (was {maps_before})");
    assert!(
        maps_after <= maps_before + 16,
        "{maps_after} mappings after dropping every greenlet, {maps_before} before"
    );
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
    eprintln!("guard kind: {:?}", guard_kind());
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
    const NAME: &str = "overflow_into_a_madvise_guard_is_reported";
    if child_mode().as_deref() == Some("overflow") {
        overflow_child();
    }
    if child_mode().is_some() {
        return;
    }
    let out = run_child(NAME, "overflow", &[]);
    assert_overflow_reported(&out);
    check_guard_kind(child_guard_kind(&out), NAME);
}

/// The guard kind a child running `overflow_child` reported.
fn child_guard_kind(out: &Output) -> GuardKind {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("guard kind: Madvise") {
        GuardKind::Madvise
    } else if stderr.contains("guard kind: Mprotect") {
        GuardKind::Mprotect
    } else {
        panic!("the child did not report its guard kind: {stderr}")
    }
}

#[test]
fn overflow_into_the_guard_of_a_stack_whose_pages_were_given_back_is_reported() {
    const NAME: &str = "overflow_into_the_guard_of_a_stack_whose_pages_were_given_back_is_reported";
    if child_mode().as_deref() == Some("overflow-after-release") {
        // A threshold of 0 releases every page of a stack as it is pooled;
        // the overflowing greenlet then runs on that same stack (the only
        // pooled one of its size), into the guard the release left alone.
        set_release_threshold(0);
        let g = Builder::new()
            .stack_size(SMALL_STACK)
            .spawn(|()| -> Result<usize, SwitchError> {
                let main = getcurrent().parent().expect("parent");
                main.switch::<(), ()>(())?;
                Ok(util::approximate_sp())
            })
            .expect("stack");
        g.switch::<(), ()>(()).expect("suspends");
        let sp: usize = g.switch(()).expect("finishes");
        drop(g);
        assert_eq!(pool_stats().pooled, 1, "the stack was pooled");
        assert!(!resident(sp), "its pages were given back");
        overflow_child();
    }
    if child_mode().is_some() {
        return;
    }
    let out = run_child(NAME, "overflow-after-release", &[]);
    assert_overflow_reported(&out);
    eprintln!("{NAME}: guard kind {:?}", child_guard_kind(&out));
}

#[test]
fn madvise_dontneed_keeps_a_guard_marker() {
    const NAME: &str = "madvise_dontneed_keeps_a_guard_marker";
    if child_mode().is_some() {
        return;
    }
    check_guard_kind(guard_kind(), NAME);
    if guard_kind() != GuardKind::Madvise {
        eprintln!("{NAME}: skipped: no guard markers in this process");
        return;
    }
    // What `Stack`'s drop and the pool's release rely on, asked of the
    // kernel directly: three pages, a guard marker on the middle one, then
    // MADV_DONTNEED over all three.
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    let page = page_size();
    // SAFETY: a fresh anonymous private mapping at an address of the
    // kernel's choosing: nothing else is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap");
    let base = base as usize;
    let guard = base + page;
    // SAFETY: the middle page of our own mapping, which holds nothing.
    let rc = unsafe { libc::madvise(guard as *mut _, page, MADV_GUARD_INSTALL) };
    assert_eq!(rc, 0, "MADV_GUARD_INSTALL");
    assert!(!util::is_readable(guard), "the guard marker is installed");
    for at in [base, guard + page] {
        // SAFETY: the first and last pages of our mapping, read and write.
        unsafe { (at as *mut u8).write_volatile(1) };
        assert!(resident(at));
    }
    // SAFETY: the whole mapping is ours; its contents are not needed.
    let rc = unsafe { libc::madvise(base as *mut _, 3 * page, libc::MADV_DONTNEED) };
    assert_eq!(rc, 0, "MADV_DONTNEED: {}", std::io::Error::last_os_error());
    assert!(
        !resident(base) && !resident(guard + page),
        "pages given back"
    );
    assert!(
        !util::is_readable(guard),
        "the guard survives MADV_DONTNEED"
    );
    assert!(!util::is_readable(guard + page - 1));
    assert!(util::is_readable(base) && util::is_readable(guard + page));
    // SAFETY: unmaps the mapping made above, which nothing refers to.
    assert_eq!(unsafe { libc::munmap(base as *mut _, 3 * page) }, 0);
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

/// Goes `depth` bytes deep, switches to main at the bottom (where the pool
/// sees its depth) with the address of its deepest frame, then returns.
/// One 4 KiB buffer per frame (written through `black_box`, so that it is
/// touched and kept, in one copy even in a debug build).
fn dig(remaining: usize, main: &Greenlet) -> Result<(), SwitchError> {
    let mut buffer = [7u8; 4096];
    std::hint::black_box(&mut buffer);
    if remaining <= 4096 {
        main.switch::<usize, ()>(buffer.as_ptr() as usize)?;
        return Ok(());
    }
    dig(remaining - 4096, main)?;
    std::hint::black_box(&buffer);
    Ok(())
}

/// Where a greenlet that went deep had its frames.
struct Dug {
    /// An address in its first frame, near the top of its stack.
    near_top: usize,
    /// An address in its deepest frame.
    deepest: usize,
    g: Greenlet,
}

/// Spawns a greenlet on a `stack_size` stack that goes `depth` bytes deep
/// and suspends there.
fn dig_and_suspend(stack_size: usize, depth: usize) -> Dug {
    let g = Builder::new()
        .stack_size(stack_size)
        .spawn(move |()| -> Result<(), SwitchError> {
            let main = getcurrent().parent().expect("parent");
            main.switch::<usize, ()>(util::approximate_sp())?;
            dig(depth, &main)
        })
        .expect("stack");
    let near_top: usize = g.switch(()).expect("starts");
    let deepest: usize = g.switch(()).expect("reaches the bottom");
    eprintln!(
        "asked to dig {} KiB deep: {} KiB below the first frame",
        depth / 1024,
        (near_top - deepest) / 1024
    );
    assert!(
        resident(deepest) && resident(near_top),
        "the frames are in memory"
    );
    Dug {
        near_top,
        deepest,
        g,
    }
}

/// Runs a greenlet `depth` bytes deep on a 4 MiB stack to its end, which
/// gives its stack back to the pool; returns where its frames were.
fn run_deep(depth: usize) -> Dug {
    let dug = dig_and_suspend(4 << 20, depth);
    dug.g.switch::<(), ()>(()).expect("finishes");
    assert!(dug.g.is_dead());
    dug
}

#[test]
fn a_deep_stack_gives_its_pages_back_when_pooled() {
    if child_mode().is_some() {
        return;
    }
    let _serial = util::serial();
    let deep = run_deep(512 * 1024);
    assert!(
        !resident(deep.deepest),
        "a 512 KiB deep stack still holds its lowest page after pooling"
    );
    assert!(resident(deep.near_top), "the top pages stay for reuse");
    let shallow = run_deep(16 * 1024);
    assert!(
        resident(shallow.deepest),
        "a shallow stack keeps its pages for reuse"
    );
}

#[test]
fn the_release_threshold_decides_which_pages_a_pooled_stack_keeps() {
    if child_mode().is_some() {
        return;
    }
    let _serial = util::serial();
    // 36 KiB deep (up to 50 KiB in a debug build, whose frames are
    // larger): under the default threshold (64 KiB) the stack is pooled
    // whole.
    const DEPTH: usize = 36 * 1024;
    let kept = run_deep(DEPTH);
    assert_eq!(pool_stats().pooled, 1, "the stack is pooled");
    assert!(
        resident(kept.deepest),
        "36 KiB deep, default 64 KiB threshold: the pages are kept"
    );
    // With 16 KiB, the same depth gives back what lies below the top 16 KiB
    // and keeps the top.
    set_release_threshold(16 * 1024);
    let released = run_deep(DEPTH);
    assert!(
        !resident(released.deepest),
        "36 KiB deep, 16 KiB threshold: the lowest page is given back"
    );
    assert!(
        !resident(released.deepest + 12 * 1024),
        "and the pages up to 16 KiB from the top"
    );
    assert!(
        resident(released.near_top),
        "the top 16 KiB are kept for the next greenlet"
    );
    // Raised above the depth again: nothing is given back.
    set_release_threshold(1 << 20);
    let kept_again = run_deep(DEPTH);
    assert!(
        resident(kept_again.deepest),
        "36 KiB deep, 1 MiB threshold: the pages are kept"
    );
    set_release_threshold(64 * 1024);
}

#[test]
fn a_stack_dropped_by_a_full_pool_gives_its_pages_back_and_keeps_its_guard() {
    if child_mode().is_some() {
        return;
    }
    let _serial = util::serial();
    // An empty pool that keeps one stack; 192 KiB stacks, so that the
    // three below come from one slab (5 slots), which `keeper` keeps mapped.
    const SIZE: usize = 192 * 1024;
    set_pool_limit(0);
    set_pool_limit(1);
    let before = pool_stats();
    let keeper = Builder::new()
        .stack_size(SIZE)
        .spawn(|()| Ok(()))
        .expect("stack");
    let filler = Builder::new()
        .stack_size(SIZE)
        .spawn(|()| Ok(()))
        .expect("stack");
    let deep = dig_and_suspend(SIZE, 64 * 1024);
    // The lowest usable byte of its stack, with the guard below, found by
    // probing down from its deepest frame.
    let page = page_size();
    let mut bottom = deep.deepest & !(page - 1);
    while util::is_readable(bottom - 1) {
        bottom -= page;
    }
    assert!(
        deep.near_top - bottom < SIZE,
        "the guard is within the stack's size below its top"
    );
    let during = pool_stats();
    assert_eq!(during.slabs, before.slabs + 1, "one slab: {during:?}");
    assert_eq!(during.mapped, before.mapped + 3, "{during:?}");
    // The pool fills up with `filler`'s stack...
    filler.switch::<(), ()>(()).expect("runs");
    drop(filler);
    assert_eq!(pool_stats().pooled, 1, "the pool is full");
    // ...so `deep`'s stack is dropped when it ends: every page goes back,
    // though its slab lives on.
    deep.g.switch::<(), ()>(()).expect("finishes");
    drop(deep.g);
    let after = pool_stats();
    assert_eq!(
        (after.pooled, after.mapped, after.slabs),
        (1, before.mapped + 2, before.slabs + 1),
        "dropped, not pooled; the slab is still mapped: {after:?}"
    );
    assert!(
        !resident(deep.deepest),
        "the deepest page of a dropped stack is given back"
    );
    assert!(
        !resident(deep.near_top),
        "and its top page, which a pooled stack would keep"
    );
    // The guard below it is still a guard (made with either mechanism; a
    // MADV_GUARD_INSTALL marker is not removed by MADV_DONTNEED, and the
    // release does not cover it anyway).
    assert!(util::is_readable(bottom), "the released range is mapped");
    assert!(!util::is_readable(bottom - 1), "the guard still faults");
    assert!(!util::is_readable(bottom - page), "the whole guard page");
    drop(keeper);
    set_pool_limit(0);
    let end = pool_stats();
    assert_eq!(
        (end.pooled, end.mapped, end.slabs),
        (0, before.mapped, before.slabs),
        "{end:?}"
    );
    set_pool_limit(1024);
}
