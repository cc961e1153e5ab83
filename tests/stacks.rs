//! Greenlet stacks: the guard below every stack is really inaccessible and
//! sits directly below the usable range (probed through the kernel, and
//! seen as a `---p` mapping in `/proc/self/maps` when guards are made with
//! `mprotect`), sizes are whole pages of the page size the OS reports, sizes
//! out of range are `InvalidSize` errors naming the bounds, and the
//! per-thread pool makes the steady state of create/run/drop map nothing
//! new and keeps no more free stacks than its limit.
//!
//! Every test takes `util::serial()`: `pool_stats().slabs` counts the whole
//! process's mappings.
// House style: one unsafe operation per block, each with its SAFETY line.
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

mod util;

use greenlet::stack::{
    DEFAULT_STACK_SIZE, GuardKind, MAX_STACK_SIZE, MIN_STACK_SIZE, Stack, StackErrorKind,
    guard_kind, page_size, pool_stats, set_pool_limit,
};
use greenlet::{Error, Greenlet, SwitchError, getcurrent};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

fn page_floor(address: usize) -> usize {
    address & !(page_size() - 1)
}

/// Walks down from a page below `from` (clear of any red zone) to the
/// first page that cannot be read, at most `limit` bytes down; returns that
/// guard page's end, i.e. the lowest usable byte above it.
fn find_guard_below(from: usize, limit: usize) -> usize {
    let page = page_size();
    let mut at = page_floor(from) - page;
    while util::is_readable(at) {
        assert!(
            from - at <= limit,
            "no guard within {limit} bytes below {from:#x}"
        );
        at -= page;
    }
    at + page
}

/// Where a greenlet's stack is, seen from inside it: (a local near the top
/// of the stack, the lowest usable byte found by probing down to the guard).
fn greenlet_stack_bounds(g_size: usize) -> (usize, usize) {
    let g = Greenlet::builder()
        .stack_size(g_size)
        .spawn(move |()| {
            let here = util::approximate_sp();
            Ok((here, find_guard_below(here, g_size + page_size())))
        })
        .unwrap();
    let bounds = g.switch::<(), (usize, usize)>(()).unwrap();
    assert_eq!(g.stack_size(), g_size);
    bounds
}

/// Checks a greenlet's stack as seen from inside: the guard sits exactly
/// `size` bytes below the top, and the top is just above the body's frames.
fn check_greenlet_guard(size: usize) -> (usize, usize) {
    let (here, bottom) = greenlet_stack_bounds(size);
    let top = bottom + size;
    assert!(
        top > here,
        "the stack top {top:#x} is above the body {here:#x}"
    );
    assert!(
        top - here < 64 * 1024,
        "the guard is {size} bytes below the top: top {top:#x}, body at {here:#x}"
    );
    assert!(
        !util::is_readable(bottom - 1),
        "the byte below the stack is a guard"
    );
    assert!(
        !util::is_readable(bottom - page_size()),
        "the whole page is"
    );
    (bottom, top)
}

#[test]
fn guard_is_inaccessible_directly_below_the_usable_range() {
    let _serial = util::serial();
    let page = page_size();
    for size in [MIN_STACK_SIZE, 64 * 1024, 1 << 20] {
        let stack = Stack::new(size).unwrap();
        let guard = stack.guard();
        let top = stack.top().as_ptr() as usize;
        assert_eq!(
            guard.end,
            stack.bottom(),
            "the guard ends where the stack begins"
        );
        assert!(
            guard.end - guard.start >= page,
            "the guard is at least a page"
        );
        assert_eq!(top - stack.bottom(), stack.len());
        for address in [guard.start, guard.start + page / 2, guard.end - 1] {
            assert!(
                !util::is_readable(address),
                "guard byte {address:#x} is inaccessible"
            );
        }
        for address in [stack.bottom(), stack.bottom() + page, top - 1] {
            assert!(
                util::is_readable(address),
                "stack byte {address:#x} is usable"
            );
        }
        if guard_kind() == GuardKind::Madvise {
            // The guard is a page-table marker: one mapping covers guard and
            // stack, which is what keeps vm.max_map_count out of the way.
            let maps = util::mappings();
            assert!(
                maps.iter()
                    .any(|m| m.start <= guard.start && m.end >= top && m.perms == "rw-p"),
                "one rw-p mapping spans guard and stack"
            );
        }
    }
    // Stacks of greenlets come from the pool's slabs: the same holds.
    for size in [MIN_STACK_SIZE, DEFAULT_STACK_SIZE, 256 * 1024] {
        check_greenlet_guard(size);
    }
}

/// The `---p` mapping that ends exactly at `bottom`, and the `rw-p` one that
/// starts there and reaches `top`.
fn check_maps_around(bottom: usize, top: usize, what: &str) {
    let maps = util::mappings();
    let guard = maps.iter().find(|m| m.end == bottom);
    let guard = guard.unwrap_or_else(|| panic!("{what}: a mapping ends at {bottom:#x}"));
    assert_eq!(
        guard.perms, "---p",
        "{what}: the guard below the stack: {}",
        guard.line
    );
    assert!(
        bottom - guard.start >= page_size(),
        "{what}: the guard is a page at least"
    );
    // The mapping holding the stack's lowest byte. On a real kernel it
    // starts at `bottom` (the guard ends there; checked below); qemu-user,
    // which writes its own /proc/self/maps from the host's, has been seen
    // (rarely) to list no line starting there, so under it the test asks
    // only that the byte above the guard is in a writable mapping that
    // reaches `top`.
    let usable = maps.iter().find(|m| m.start <= bottom && bottom < m.end);
    let usable = usable.unwrap_or_else(|| {
        let lines: Vec<&str> = maps
            .iter()
            .filter(|m| m.end + (1 << 20) >= bottom && m.start <= top + (1 << 20))
            .map(|m| m.line.as_str())
            .collect();
        panic!("{what}: a mapping holds {bottom:#x}; the maps around it: {lines:#?}")
    });
    assert_eq!(
        usable.perms, "rw-p",
        "{what}: the stack itself: {}",
        usable.line
    );
    assert!(
        usable.end >= top,
        "{what}: the stack is one mapping: {}",
        usable.line
    );
    if util::emulated().is_none() {
        assert_eq!(
            usable.start, bottom,
            "{what}: the stack's mapping starts where the guard ends: {}",
            usable.line
        );
    }
}

#[test]
fn guard_is_prot_none_in_proc_maps_with_mprotect_guards() {
    const NAME: &str = "guard_is_prot_none_in_proc_maps_with_mprotect_guards";
    let _serial = util::serial();
    if guard_kind() != GuardKind::Mprotect {
        // The guard kind is chosen once per process: check the fallback in
        // a child that forces it.
        assert!(
            !util::is_child(NAME),
            "the child was asked to use mprotect guards"
        );
        let output = util::run_child(NAME, &[("GREENLET_STACK_GUARD", "mprotect")]);
        assert!(
            output.status.success(),
            "the child passed: {:?}",
            output.status
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
        return;
    }
    for size in [MIN_STACK_SIZE, 64 * 1024] {
        let stack = Stack::new(size).unwrap();
        check_maps_around(stack.bottom(), stack.top().as_ptr() as usize, "Stack::new");
    }
    // A greenlet's stack, carved from a slab: its guard splits the slab.
    let (bottom, top) = check_greenlet_guard(DEFAULT_STACK_SIZE);
    check_maps_around(bottom, top, "a greenlet's stack");
}

#[test]
fn sizes_are_whole_pages_of_the_os_page_size() {
    let _serial = util::serial();
    // SAFETY: sysconf has no preconditions.
    let os_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert_eq!(
        page_size() as libc::c_long,
        os_page,
        "the page size is queried from the OS"
    );
    let page = page_size();
    assert!(page.is_power_of_two());
    for size in [MIN_STACK_SIZE, MIN_STACK_SIZE + 1, 100_000, 1 << 20] {
        let stack = Stack::new(size).unwrap();
        assert_eq!(
            stack.len(),
            size.div_ceil(page) * page,
            "{size} rounds up to pages"
        );
        assert_eq!(stack.bottom() % page, 0);
        assert_eq!(stack.top().as_ptr() as usize % page, 0);
        assert_eq!(stack.guard().start % page, 0);
        assert!(!stack.is_empty());
    }
    let g = Greenlet::new(|()| Ok(()));
    assert_eq!(g.stack_size(), DEFAULT_STACK_SIZE, "the default stack size");
    let g = Greenlet::builder()
        .stack_size(MIN_STACK_SIZE + 1)
        .spawn(|()| Ok(()))
        .unwrap();
    assert_eq!(g.stack_size(), (MIN_STACK_SIZE + 1).div_ceil(page) * page);
    assert!(greenlet::raw::min_stack_size() <= MIN_STACK_SIZE);
}

#[test]
fn sizes_out_of_range_are_invalid_size_errors_naming_the_bounds() {
    let _serial = util::serial();
    let bounds = [MIN_STACK_SIZE.to_string(), MAX_STACK_SIZE.to_string()];
    for size in [0, 1, MIN_STACK_SIZE - 1, MAX_STACK_SIZE + 1, usize::MAX] {
        let error = Stack::new(size).unwrap_err();
        assert_eq!(
            error.kind(),
            StackErrorKind::InvalidSize,
            "Stack::new({size})"
        );
        assert!(error.os_error().is_none());
        let message = error.to_string();
        for text in bounds.iter().chain([&size.to_string()]) {
            assert!(message.contains(text.as_str()), "{message:?} names {text}");
        }
        match Greenlet::builder().stack_size(size).spawn(|()| Ok(())) {
            Err(Error::Stack(e)) => {
                assert_eq!(e.kind(), StackErrorKind::InvalidSize);
                assert_eq!(e.to_string(), message);
            }
            other => panic!("Builder::stack_size({size}): {other:?}"),
        }
    }
    // The bounds themselves are in range.
    assert!(Stack::new(MIN_STACK_SIZE).is_ok());
}

#[test]
fn ten_thousand_greenlets_in_sequence_make_one_stack_at_most() {
    let _serial = util::serial();
    let before = pool_stats();
    let main = getcurrent();
    // The page each greenlet's body ran in: one stack, reused, means one
    // page (a stack carved anew each time, even without a new mapping,
    // would show up here as many).
    let pages = Rc::new(RefCell::new(HashSet::new()));
    for i in 0..10_000u32 {
        let parent = main.clone();
        let seen = pages.clone();
        let g = Greenlet::new(move |x: u32| {
            seen.borrow_mut().insert(page_floor(util::approximate_sp()));
            let y: u32 = parent.switch(x + 1)?;
            Ok::<u32, SwitchError>(y * 2)
        });
        match i % 3 {
            // Run to the end.
            0 => {
                assert_eq!(g.switch::<u32, u32>(i).unwrap(), i + 1);
                assert_eq!(g.switch::<u32, u32>(i).unwrap(), i * 2);
                assert!(g.is_dead());
            }
            // Dropped while suspended: exits through GreenletExit.
            1 => assert_eq!(g.switch::<u32, u32>(i).unwrap(), i + 1),
            // Dropped without ever running.
            _ => {}
        }
        drop(g);
        let now = pool_stats();
        assert!(
            now.mapped <= before.mapped + 1 && now.slabs <= before.slabs + 1,
            "greenlet {i}: {now:?}, started from {before:?}"
        );
        assert_eq!(
            now.pooled, now.mapped,
            "greenlet {i}: its stack went back to the pool"
        );
    }
    let after = pool_stats();
    assert!(after.mapped <= before.mapped + 1, "{after:?} vs {before:?}");
    assert!(after.slabs <= before.slabs + 1, "{after:?} vs {before:?}");
    assert!(after.pooled >= 1, "the stack waits in the pool");
    assert_eq!(
        pages.borrow().len(),
        1,
        "every greenlet ran on the same stack"
    );
}

#[test]
fn pool_limit_bounds_the_free_stacks() {
    let _serial = util::serial();
    set_pool_limit(1024);
    let base = pool_stats();
    let live: Vec<Greenlet> = (0..8).map(|i| Greenlet::new(move |()| Ok(i))).collect();
    assert_eq!(pool_stats().mapped, base.mapped + 8, "eight stacks in use");

    set_pool_limit(3);
    drop(live);
    let stats = pool_stats();
    assert_eq!(
        stats.pooled,
        base.pooled + 3,
        "the pool keeps three: {stats:?}"
    );
    assert_eq!(
        stats.mapped,
        base.mapped + 3,
        "the other five were released: {stats:?}"
    );

    set_pool_limit(1);
    let stats = pool_stats();
    assert_eq!(
        (stats.pooled, stats.mapped),
        (1, base.mapped + 1),
        "{stats:?}"
    );

    // No pooling at all: every greenlet maps its own stack and releases it.
    set_pool_limit(0);
    let stats = pool_stats();
    assert_eq!((stats.pooled, stats.mapped), (0, base.mapped), "{stats:?}");
    for i in 0..10 {
        let g = Greenlet::new(|x: i32| Ok(x + 1));
        assert_eq!(pool_stats().mapped, base.mapped + 1);
        assert_eq!(g.switch::<i32, i32>(i).unwrap(), i + 1);
        drop(g);
        let stats = pool_stats();
        assert_eq!((stats.pooled, stats.mapped), (0, base.mapped), "{stats:?}");
    }
    assert!(
        pool_stats().slabs <= base.slabs,
        "no slab outlives its stacks"
    );

    set_pool_limit(1024);
    for _ in 0..10 {
        let g = Greenlet::new(|()| Ok(()));
        g.switch::<(), ()>(()).unwrap();
    }
    assert_eq!(pool_stats().pooled, 1, "pooling is back");
}

#[test]
fn exhausting_the_pool_maps_new_stacks_and_a_full_pool_drops_the_rest() {
    let _serial = util::serial();
    const LIMIT: usize = 8;
    const TAKEN: usize = 3 * LIMIT;
    let spawn = || {
        Greenlet::builder()
            .stack_size(MIN_STACK_SIZE)
            .spawn(|()| Ok(()))
            .expect("a stack, pooled or new")
    };
    set_pool_limit(0);
    set_pool_limit(LIMIT);
    let base = pool_stats();
    assert_eq!(base.pooled, 0, "{base:?}");
    for round in 0..3 {
        // More greenlets than the pool can hold: once its free stacks are
        // used up (all of them after the first round), new stacks are
        // carved, from new slabs as needed.
        let live: Vec<Greenlet> = (0..TAKEN).map(|_| spawn()).collect();
        let stats = pool_stats();
        assert_eq!(
            (stats.pooled, stats.mapped),
            (0, base.mapped + TAKEN),
            "round {round}, {TAKEN} live: {stats:?}"
        );
        assert!(stats.slabs > base.slabs, "round {round}: {stats:?}");
        // Dropping them all fills the pool up to its limit and drops the
        // rest (giving their pages back).
        drop(live);
        let stats = pool_stats();
        assert_eq!(
            (stats.pooled, stats.mapped),
            (LIMIT, base.mapped + LIMIT),
            "round {round}, all dropped: {stats:?}"
        );
    }
    // Half as many as the limit: all from the pool, nothing new.
    let live: Vec<Greenlet> = (0..LIMIT / 2).map(|_| spawn()).collect();
    let stats = pool_stats();
    assert_eq!(
        (stats.pooled, stats.mapped),
        (LIMIT / 2, base.mapped + LIMIT),
        "{stats:?}"
    );
    drop(live);
    set_pool_limit(0);
    let end = pool_stats();
    assert_eq!(
        (end.pooled, end.mapped, end.slabs),
        (0, base.mapped, base.slabs),
        "no pool: every stack and slab released: {end:?}"
    );
    set_pool_limit(1024);
}
