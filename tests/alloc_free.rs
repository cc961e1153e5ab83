//! Allocation and leak accounting with a counting global allocator: a
//! switch allocates nothing on the heap (for `()` and for a 64-byte value),
//! and 100,000 greenlets that panic, return or are dropped suspended leave
//! no allocation and no stack mapping behind.
//!
//! The allocator counts per thread (each test runs on its own thread, so the
//! harness's own allocations do not count), as does `pool_stats().mapped`.
//! The panic hook and `pool_stats().slabs` are process-wide, so the tests
//! here run one at a time under `SERIAL`, each holding it until its thread
//! has exited.

use greenlet::{Greenlet, SwitchError, getcurrent, stack::pool_stats};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// The system allocator, counting this thread's allocations.
struct Counting;

std::thread_local! {
    /// Allocations (including reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Allocations made by this thread minus those it freed.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn count(allocations: u64, live: i64) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    // These cells are const-initialised and have no destructor, so reading
    // them never allocates.
    let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + allocations));
    let _ = LIVE.try_with(|l| l.set(l.get() + live));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counting touches only
// thread-local cells and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, 1);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, 1);
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, 0);
        // SAFETY: forwarded as is; `ptr` came from this allocator, which is
        // `System`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -1);
        // SAFETY: forwarded as is; `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// Serialises the tests of this file (process-wide counts and hook).
static SERIAL: Mutex<()> = Mutex::new(());

std::thread_local! {
    /// The test thread's hold on `SERIAL`. Taken first thing in a test, so
    /// this thread-local is destroyed after the thread's stack pool: the
    /// next test starts only once this one's stacks and slabs are gone.
    static SERIAL_HELD: RefCell<Option<MutexGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// Takes `SERIAL` for the rest of the calling test's thread.
fn serial() {
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    SERIAL_HELD.with(|held| *held.borrow_mut() = Some(guard));
}

/// Runs `f` with a panic hook that prints nothing, then restores the hook.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    drop(panic::take_hook());
    panic::set_hook(previous);
    out.unwrap_or_else(|payload| panic::resume_unwind(payload))
}

const ROUND_TRIPS: u64 = 10_000;
const MANY: usize = 100_000;

#[test]
fn the_counting_allocator_counts() {
    serial();
    let before = (allocations(), live());
    let v = std::hint::black_box(vec![1u8; 100]);
    assert_eq!(allocations(), before.0 + 1);
    assert_eq!(live(), before.1 + 1);
    drop(v);
    assert_eq!(live(), before.1);
    // And a greenlet's body that allocates is seen (it runs on this thread).
    let g = Greenlet::new(|n: usize| Ok(std::hint::black_box(vec![0u8; n]).len()));
    let mid = allocations();
    assert_eq!(g.switch::<usize, usize>(64).unwrap(), 64);
    assert!(allocations() > mid);
}

#[test]
fn a_switch_of_unit_allocates_nothing() {
    serial();
    let main = getcurrent();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        loop {
            main.switch::<(), ()>(())?;
        }
    });
    for _ in 0..100 {
        g.switch::<(), ()>(()).unwrap();
    }
    let before = allocations();
    for _ in 0..ROUND_TRIPS {
        g.switch::<(), ()>(()).unwrap();
    }
    let made = allocations() - before;
    assert_eq!(
        made, 0,
        "{made} allocations in {ROUND_TRIPS} round trips of ()"
    );
}

/// A 64-byte value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block64([u64; 8]);

#[test]
fn a_switch_of_a_64_byte_value_allocates_nothing() {
    serial();
    assert_eq!(std::mem::size_of::<Block64>(), 64);
    let main = getcurrent();
    let g = Greenlet::new(move |mut b: Block64| -> Result<(), SwitchError> {
        loop {
            b.0[0] += 1;
            b = main.switch::<Block64, Block64>(b)?;
        }
    });
    let mut b = Block64([0, 1, 2, 3, 4, 5, 6, 7]);
    for _ in 0..100 {
        b = g.switch::<Block64, Block64>(b).unwrap();
    }
    let before = allocations();
    for _ in 0..ROUND_TRIPS {
        b = g.switch::<Block64, Block64>(b).unwrap();
    }
    let made = allocations() - before;
    assert_eq!(
        made, 0,
        "{made} allocations in {ROUND_TRIPS} round trips of a 64-byte value"
    );
    assert_eq!(b, Block64([100 + ROUND_TRIPS, 1, 2, 3, 4, 5, 6, 7]));
}

#[test]
fn a_switch_between_two_greenlets_allocates_nothing() {
    serial();
    // ping and pong switch to each other directly, main is not involved.
    let pong = Greenlet::new(|mut n: u64| -> Result<(), SwitchError> {
        loop {
            let parent = getcurrent().parent().unwrap(); // ping, once set
            n = parent.switch::<u64, u64>(n + 1)?;
        }
    });
    let pong_handle = pong.clone();
    let ping = Greenlet::new(move |rounds: u64| {
        let mut n = 0;
        for _ in 0..rounds {
            n = pong.switch::<u64, u64>(n)?;
        }
        let before = allocations();
        for _ in 0..rounds {
            n = pong.switch::<u64, u64>(n)?;
        }
        Ok((allocations() - before, n))
    });
    // pong's parent is main; make it ping so its switch to its parent goes
    // back to ping.
    pong_handle.set_parent(&ping).unwrap();
    let (made, n) = ping.switch::<u64, (u64, u64)>(ROUND_TRIPS).unwrap();
    assert_eq!(n, 2 * ROUND_TRIPS);
    assert_eq!(
        made, 0,
        "{made} allocations in {ROUND_TRIPS} greenlet-to-greenlet round trips"
    );
}

/// Stack mappings and this thread's live allocations, after `warm_up` and
/// around `run`, must match.
fn assert_no_leak(what: &str, warm_up: impl Fn(usize), run: impl Fn(usize)) {
    warm_up(1_000);
    let mapped = pool_stats().mapped;
    let live_before = live();
    run(MANY);
    let live_after = live();
    let mapped_after = pool_stats().mapped;
    assert_eq!(
        mapped_after, mapped,
        "{what}: stack mappings before and after {MANY}"
    );
    assert_eq!(
        live_after, live_before,
        "{what}: live allocations before and after {MANY}"
    );
}

#[test]
fn a_hundred_thousand_panicking_greenlets_leak_nothing() {
    serial();
    quietly(|| {
        let run = |n: usize| {
            for i in 0..n {
                let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
                    if i % 2 == 0 {
                        panic!("static payload")
                    } else {
                        panic!("formatted payload {i}")
                    }
                });
                let payload =
                    panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(()))).unwrap_err();
                assert!(payload.is::<&str>() || payload.is::<String>());
                assert!(g.is_dead());
            }
        };
        assert_no_leak("panicking greenlets", run, run);
    });
}

#[test]
fn a_hundred_thousand_greenlets_that_return_or_are_dropped_leak_nothing() {
    serial();
    let run = |n: usize| {
        let main = getcurrent();
        for i in 0..n {
            let m = main.clone();
            let payload = vec![i; 4];
            let g = Greenlet::new(move |()| {
                let mut local = payload;
                local.push(m.switch::<(), usize>(())?);
                Ok(local.len())
            });
            g.switch::<(), ()>(()).unwrap();
            match i % 3 {
                0 => assert_eq!(g.switch::<usize, usize>(1).unwrap(), 5), // returns
                1 => drop(g),                                             // exits on drop
                _ => assert!(g.throw::<&str, usize>("x").is_err()),       // thrown, re-raised
            }
        }
    };
    assert_no_leak("returning and dropped greenlets", run, run);
    // Unstarted greenlets dropped without running.
    let unstarted = |n: usize| {
        for i in 0..n {
            let captured = vec![i; 2];
            drop(Greenlet::new(move |()| Ok(captured)));
        }
    };
    assert_no_leak("unstarted greenlets", unstarted, unstarted);
}

std::thread_local! {
    /// Holds suspended greenlets until its thread exits.
    static HELD: RefCell<Vec<Greenlet>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn threads_that_exit_with_suspended_greenlets_leave_no_slab_behind() {
    serial();
    let slabs = pool_stats().slabs;
    for _ in 0..4 {
        std::thread::spawn(|| {
            let main = getcurrent();
            for i in 0..100 {
                let m = main.clone();
                let g = Greenlet::new(move |()| {
                    let payload = format!("greenlet {i} holds this string");
                    m.switch::<(), ()>(())?;
                    Ok(payload.len())
                });
                g.switch::<(), ()>(()).unwrap();
                HELD.with(|held| held.borrow_mut().push(g));
            }
            assert_eq!(pool_stats().mapped, 100);
        })
        .join()
        .unwrap();
    }
    assert_eq!(
        pool_stats().slabs,
        slabs,
        "stack slabs of finished threads are still mapped"
    );
}
