//! The timed workloads: ours and the Rust peers', one function each.
//!
//! Every function has the shape [`Timed`]: it sets up, times only its loop
//! of `iterations`, tears down, and returns the loop's time. With zero
//! iterations it still sets up and tears down, which is what the callgrind
//! measurement subtracts.
//!
//! Invariants the raw and `context` workloads keep (their `unsafe` relies on
//! them): a saved context is resumed at most once, its stack outlives it, and
//! a coroutine left suspended at the end owns nothing that needs dropping, so
//! unmapping its stack is all the cleanup it needs.
#![allow(unsafe_code)]

use crate::harness::Timed;
use greenlet::raw::{self, StackPointer};
use greenlet::stack::{self, Stack};
use greenlet::{Greenlet, SwitchError, getcurrent};
use std::hint::black_box;
use std::sync::Once;
use std::time::{Duration, Instant};

/// One timed workload.
pub struct Workload {
    /// `group/implementation`, as the command line and the report name it.
    pub id: &'static str,
    /// What exactly one iteration does, for the report.
    pub what: &'static str,
    pub timed: Timed,
    /// Iterations for the callgrind count (`None`: not counted).
    pub callgrind: Option<u64>,
}

/// Every Rust workload, ours first in each group. An id's group (before the
/// slash) says what one iteration is:
///
/// - `switch`: one round trip, two switches, there and back;
/// - `create`: create, run to completion and destroy an empty coroutine;
/// - `drop-suspended`: create, start (it suspends), destroy while suspended
///   so that its cleanup runs.
pub const ALL: &[Workload] = &[
    Workload {
        id: "switch/greenlet-raw",
        what: "`raw::switch` ping-pong between main and a context on a `Stack`",
        timed: switch_raw,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/greenlet-raw-mxcsr",
        what: "the same, with a different FP rounding mode in each context, so every switch reloads the control word",
        timed: switch_raw_other_rounding,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/greenlet-raw-nofp",
        what: "the same ping-pong through a build of the same switch with its FP control lines left out (never shipped: shows what keeping MXCSR and the x87 control word costs)",
        timed: switch_raw_without_fp_control,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/greenlet",
        what: "`Greenlet::switch::<(), ()>` ping-pong with a greenlet that loops `parent.switch(())?`",
        timed: switch_safe,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/corosensei",
        what: "`Coroutine::resume` + `Yielder::suspend`",
        timed: switch_corosensei,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/context",
        what: "`Context::resume` there and back (Boost.Context's `jump_fcontext`)",
        timed: switch_context,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/generator",
        what: "`Generator::resume` + `Scope::yield_`",
        timed: switch_generator,
        callgrind: Some(200_000),
    },
    Workload {
        id: "switch/may",
        what: "two coroutines taking turns with `yield_now` on one worker (each turn goes through the scheduler)",
        timed: switch_may,
        callgrind: Some(100_000),
    },
    Workload {
        id: "create/greenlet-pooled",
        what: "`Greenlet::new(|()| Ok(())).switch::<(), ()>(())`, stack from the per-thread pool",
        timed: create_pooled,
        callgrind: Some(50_000),
    },
    Workload {
        id: "create/greenlet-fresh",
        what: "the same with `set_pool_limit(0)`: a new mapping and guard per greenlet",
        timed: create_fresh,
        callgrind: Some(20_000),
    },
    Workload {
        id: "create/corosensei-reused",
        what: "`Coroutine::with_stack` on a recovered 128 KiB `DefaultStack`, `resume`, `into_stack`",
        timed: create_corosensei_reused,
        callgrind: Some(50_000),
    },
    Workload {
        id: "create/corosensei-fresh",
        what: "`Coroutine::with_stack` on a new 128 KiB `DefaultStack`, `resume`, drop",
        timed: create_corosensei_fresh,
        callgrind: Some(20_000),
    },
    Workload {
        id: "create/generator",
        what: "`Gn::new_scoped` (a new default stack), `resume`, drop",
        timed: create_generator,
        callgrind: Some(10_000),
    },
    Workload {
        id: "create/may",
        what: "`spawn` + `join` of an empty coroutine, from a coroutine on one worker (pooled)",
        timed: create_may,
        callgrind: Some(20_000),
    },
    Workload {
        id: "drop-suspended/greenlet",
        what: "new, switch in (it switches back), drop the last handle: `GreenletExit`, `?`, dead",
        timed: drop_suspended_greenlet,
        callgrind: Some(50_000),
    },
    Workload {
        id: "drop-suspended/corosensei",
        what: "`with_stack` (recovered stack), `resume` (it suspends), `force_unwind` (what drop does), `into_stack`",
        timed: drop_suspended_corosensei,
        callgrind: Some(5_000),
    },
    Workload {
        id: "drop-suspended/generator",
        what: "`Gn::new_scoped`, `resume` (it yields), drop (cancel: a panic unwinds it)",
        timed: drop_suspended_generator,
        callgrind: Some(5_000),
    },
    Workload {
        id: "hub-sleep0/greenlet-hub",
        what: "`greenlet_hub::sleep(Duration::ZERO)` from main, nothing else ready: the hub's turn counted in place, every 32nd to the hub (it looks at I/O)",
        timed: hub_sleep0,
        callgrind: Some(50_000),
    },
    Workload {
        id: "hub-sleep0-pair/greenlet-hub",
        what: "main and a task alternate `sleep(Duration::ZERO)`: each hands over through the hub (two calls a round)",
        timed: hub_sleep0_pair,
        callgrind: Some(20_000),
    },
    Workload {
        id: "hub-spawn-join/greenlet-hub",
        what: "`greenlet_hub::spawn(|| Ok(())).get(None)`: a task on the hub, run and joined",
        timed: hub_spawn_join,
        callgrind: Some(20_000),
    },
    Workload {
        id: "hub-sleep0/tokio",
        what: "`tokio::task::yield_now().await` in a task on a current-thread runtime (I/O and time drivers on), nothing else ready: tokio polls its I/O driver (`epoll_wait`) at every yield",
        timed: hub_sleep0_tokio,
        callgrind: Some(50_000),
    },
    Workload {
        id: "hub-sleep0-pair/tokio",
        what: "two tasks alternate `yield_now().await` on a current-thread runtime (two calls a round)",
        timed: hub_sleep0_pair_tokio,
        callgrind: Some(20_000),
    },
    Workload {
        id: "hub-spawn-join/tokio",
        what: "`tokio::spawn(async {}).await` in a task on a current-thread runtime: a task run and joined",
        timed: hub_spawn_join_tokio,
        callgrind: Some(20_000),
    },
    Workload {
        id: "hub-spawn-join/may",
        what: "`spawn` + `join` of an empty coroutine, from a coroutine on one worker (pooled)",
        timed: create_may,
        callgrind: Some(20_000),
    },
];

/// The workload named `id`.
pub fn find(id: &str) -> Option<&'static Workload> {
    ALL.iter().find(|w| w.id == id)
}

// ---------------------------------------------------------------------------
// Switch round trip

/// The two save slots of a raw ping-pong: where each side is suspended.
struct PingPong {
    main: Option<StackPointer>,
    coroutine: Option<StackPointer>,
}

/// The raw coroutine: hand every word straight back to main.
unsafe extern "C" fn echo(arg: usize, data: *mut u8) -> ! {
    // SAFETY: `data` is the `PingPong` that `raw_ping_pong` passed to
    // `init_stack`; it outlives this context (see `raw_ping_pong`).
    unsafe { echo_loop(arg, data.cast()) }
}

/// [`echo`] through the switch built without FP control.
unsafe extern "C" fn echo_without_fp_control(arg: usize, data: *mut u8) -> ! {
    // SAFETY: as in `echo`.
    unsafe { echo_loop_through::<false>(arg, data.cast()) }
}

/// The raw coroutine of the rounding-mode variant: set a rounding mode that
/// main does not use, then echo like [`echo`].
unsafe extern "C" fn echo_rounding_toward_zero(arg: usize, data: *mut u8) -> ! {
    set_rounding_toward_zero();
    // SAFETY: as in `echo`.
    unsafe { echo_loop(arg, data.cast()) }
}

/// # Safety
///
/// `slots` is valid for the life of this context, and `slots.main` holds
/// main's saved context whenever this context runs.
#[inline(always)]
unsafe fn echo_loop(word: usize, slots: *mut PingPong) -> ! {
    // SAFETY: the caller's contract.
    unsafe { echo_loop_through::<true>(word, slots) }
}

/// [`echo_loop`], through the shipped switch (`FP`) or through the build
/// without FP control.
///
/// # Safety
///
/// As for [`echo_loop`].
#[inline(always)]
unsafe fn echo_loop_through<const FP: bool>(mut word: usize, slots: *mut PingPong) -> ! {
    loop {
        // SAFETY: main saved itself in `slots.main` by the switch that
        // resumed us, and nobody else resumes it.
        let main = unsafe { (*slots).main.unwrap_unchecked() };
        // SAFETY: `main` was saved by main's switch and is resumed once; our
        // save slot lives as long as the ping-pong.
        word = unsafe { switch_through::<FP>(word, main, &raw mut (*slots).coroutine) };
    }
}

unsafe extern "C" {
    /// `greenlet_switch` assembled without its FP control lines (see
    /// `build.rs`); the same private convention, called only through
    /// `greenlet::__switch_through!`.
    fn greenlet_bench_nofp_switch();
}

/// [`raw::switch`] (`FP`), or the same `asm!` block calling the switch built
/// without FP control.
///
/// # Safety
///
/// As for [`raw::switch`]; without `FP`, also that both contexts run with the
/// same FP control state, which the raw workloads never change.
#[inline(always)]
unsafe fn switch_through<const FP: bool>(
    arg: usize,
    to: StackPointer,
    save: *mut Option<StackPointer>,
) -> usize {
    if FP {
        // SAFETY: the caller's contract.
        unsafe { raw::switch(arg, to, save) }
    } else {
        // SAFETY: the same assembly and convention as `raw::switch` minus
        // the FP control state, which neither side changes (the caller's
        // contract); a save slot has the layout of a raw pointer.
        unsafe {
            greenlet::__switch_through!(
                greenlet_bench_nofp_switch,
                arg,
                to.as_ptr(),
                save.cast::<*mut u8>()
            )
        }
    }
}

fn raw_ping_pong(iterations: u64, entry: raw::Entry) -> Duration {
    raw_ping_pong_through::<true>(iterations, entry)
}

/// [`raw_ping_pong`] through the shipped switch (`FP`) or the build without
/// FP control (whose `entry` must switch through the same).
fn raw_ping_pong_through<const FP: bool>(iterations: u64, entry: raw::Entry) -> Duration {
    let stack = Stack::new(64 * 1024).expect("a 64 KiB stack");
    let slots: *mut PingPong = Box::into_raw(Box::new(PingPong {
        main: None,
        coroutine: None,
    }));
    // SAFETY: `stack.top()` is the top of a writable region of 64 KiB, more
    // than `min_stack_size`, kept until after the last switch below; `entry`
    // never returns; `slots` outlives the context.
    let fresh = unsafe { raw::init_stack(stack.top().as_ptr(), entry, slots.cast()) };
    // SAFETY: `slots` is a live box only this function and the context use,
    // and the context is not running.
    unsafe { (*slots).coroutine = Some(fresh) };
    let mxcsr_before = control_word();
    let start = Instant::now();
    for i in 0..iterations {
        // SAFETY: the context saved itself in `slots.coroutine` (or it holds
        // the fresh frame), and only this loop resumes it.
        let to = unsafe { (*slots).coroutine.unwrap_unchecked() };
        // SAFETY: `to` is resumed once; `slots.main` stays valid while we are
        // suspended; nothing of ours is unwound meanwhile.
        black_box(unsafe {
            switch_through::<FP>(black_box(i as usize), to, &raw mut (*slots).main)
        });
    }
    let elapsed = start.elapsed();
    assert_eq!(
        control_word(),
        mxcsr_before,
        "main's FP control state leaked across a switch"
    );
    // The context is suspended inside `echo_loop`, which owns nothing: it is
    // abandoned, and its stack unmapped, with nothing left to run or drop.
    drop(stack);
    // SAFETY: `slots` came from `Box::into_raw` above and the context that
    // used it will never run again.
    drop(unsafe { Box::from_raw(slots) });
    elapsed
}

fn switch_raw(iterations: u64) -> Duration {
    raw_ping_pong(iterations, echo)
}

fn switch_raw_without_fp_control(iterations: u64) -> Duration {
    raw_ping_pong_through::<false>(iterations, echo_without_fp_control)
}

fn switch_raw_other_rounding(iterations: u64) -> Duration {
    raw_ping_pong(iterations, echo_rounding_toward_zero)
}

/// Sets the SSE rounding mode of the running context to toward-zero (bits
/// 13-14 of MXCSR), all exceptions masked as by default.
#[cfg(target_arch = "x86_64")]
fn set_rounding_toward_zero() {
    let mxcsr: u32 = 0x1f80 | (0b11 << 13);
    // SAFETY: loads a valid MXCSR (reserved bits zero); only this context's
    // floating-point environment changes, which the switch keeps per context.
    unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr, options(nostack, readonly)) };
}

/// MXCSR of the running context.
#[cfg(target_arch = "x86_64")]
fn control_word() -> u64 {
    let mut mxcsr: u32 = 0;
    // SAFETY: stores MXCSR into a local u32; no other effect.
    unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack)) };
    u64::from(mxcsr)
}

/// Sets FPCR's rounding mode (bits 22-23) to toward-zero.
#[cfg(target_arch = "aarch64")]
fn set_rounding_toward_zero() {
    let fpcr: u64 = 0b11 << 22;
    // SAFETY: a valid FPCR (toward-zero, no traps); only this context's
    // floating-point environment changes, which the switch keeps per context.
    unsafe { core::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack)) };
}

/// FPCR of the running context.
#[cfg(target_arch = "aarch64")]
fn control_word() -> u64 {
    let fpcr: u64;
    // SAFETY: reads FPCR; no other effect.
    unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
    fpcr
}

fn switch_safe(iterations: u64) -> Duration {
    let g = Greenlet::new(|()| -> Result<(), SwitchError> {
        let parent = getcurrent().parent().expect("a greenlet has a parent");
        loop {
            parent.switch::<(), ()>(())?;
        }
    });
    g.switch::<(), ()>(()).expect("start");
    let start = Instant::now();
    for _ in 0..iterations {
        g.switch::<(), ()>(()).expect("round trip");
    }
    let elapsed = start.elapsed();
    drop(g); // GreenletExit: its `?` ends it
    elapsed
}

fn switch_corosensei(iterations: u64) -> Duration {
    use corosensei::{Coroutine, Yielder};
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|yielder: &Yielder<(), ()>, ()| {
        loop {
            yielder.suspend(());
        }
    });
    black_box(co.resume(()));
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(co.resume(()));
    }
    let elapsed = start.elapsed();
    drop(co); // force_unwind
    elapsed
}

extern "C" fn bounce(mut transfer: context::Transfer) -> ! {
    loop {
        // SAFETY: `transfer.context` is the context that resumed us, resumed
        // once; this frame owns nothing that would need dropping.
        transfer = unsafe { transfer.context.resume(transfer.data) };
    }
}

fn switch_context(iterations: u64) -> Duration {
    use context::stack::ProtectedFixedSizeStack;
    use context::{Context, Transfer};
    let stack = ProtectedFixedSizeStack::new(64 * 1024).expect("a 64 KiB stack");
    // SAFETY: `stack` outlives every use of the context made on it (it is
    // dropped after the last resume below).
    let fresh = unsafe { Context::new(&stack, bounce) };
    let mut transfer = Transfer::new(fresh, 0);
    // SAFETY: resumes the fresh context once; it resumes us straight back.
    transfer = unsafe { transfer.context.resume(0) };
    let start = Instant::now();
    for i in 0..iterations {
        // SAFETY: the context `bounce` left us, resumed once.
        transfer = unsafe { transfer.context.resume(black_box(i as usize)) };
        black_box(transfer.data);
    }
    let elapsed = start.elapsed();
    // `bounce` is abandoned while suspended; it owns nothing.
    drop(stack);
    elapsed
}

fn switch_generator(iterations: u64) -> Duration {
    let mut g = generator::Gn::<()>::new_scoped(|mut scope| {
        loop {
            scope.yield_(());
        }
    });
    black_box(g.resume());
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(g.resume());
    }
    let elapsed = start.elapsed();
    drop(g); // cancel: a panic unwinds it
    elapsed
}

/// may's runtime, configured once per process: one worker, so two
/// coroutines take turns on one thread as ours do.
pub(crate) fn may_setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(1);
    });
}

fn switch_may(iterations: u64) -> Duration {
    may_setup();
    let start = Instant::now();
    let turns = move || {
        for _ in 0..iterations {
            may::coroutine::yield_now();
        }
    };
    // SAFETY: (may's contract for `spawn`) the closures neither block the
    // worker thread nor keep references into thread-locals across a yield.
    let a = unsafe { may::coroutine::spawn(turns) };
    // SAFETY: as above.
    let b = unsafe { may::coroutine::spawn(turns) };
    a.join().expect("may coroutine a");
    b.join().expect("may coroutine b");
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Create, run to completion, drop

fn create_pooled(iterations: u64) -> Duration {
    // One greenlet first, so that the pool holds a stack.
    Greenlet::new(|()| Ok(()))
        .switch::<(), ()>(())
        .expect("warm-up");
    let start = Instant::now();
    for _ in 0..iterations {
        Greenlet::new(|()| Ok(()))
            .switch::<(), ()>(())
            .expect("run");
    }
    start.elapsed()
}

/// The pool limit `greenlet` starts with (its `DEFAULT_LIMIT`).
pub const DEFAULT_POOL_LIMIT: usize = 1024;

fn create_fresh(iterations: u64) -> Duration {
    stack::set_pool_limit(0);
    let start = Instant::now();
    for _ in 0..iterations {
        Greenlet::new(|()| Ok(()))
            .switch::<(), ()>(())
            .expect("run");
    }
    let elapsed = start.elapsed();
    stack::set_pool_limit(DEFAULT_POOL_LIMIT);
    elapsed
}

/// The stack size the corosensei workloads use: ours by default.
const COROSENSEI_STACK: usize = stack::DEFAULT_STACK_SIZE;

fn create_corosensei_reused(iterations: u64) -> Duration {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, Yielder};
    let mut spare = Some(DefaultStack::new(COROSENSEI_STACK).expect("a stack"));
    let start = Instant::now();
    for _ in 0..iterations {
        let stack = spare.take().expect("the stack was recovered");
        let mut co = Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| {});
        black_box(co.resume(()));
        spare = Some(co.into_stack());
    }
    start.elapsed()
}

fn create_corosensei_fresh(iterations: u64) -> Duration {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, Yielder};
    let start = Instant::now();
    for _ in 0..iterations {
        let stack = DefaultStack::new(COROSENSEI_STACK).expect("a stack");
        let mut co = Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| {});
        black_box(co.resume(()));
    }
    start.elapsed()
}

fn create_generator(iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        let mut g = generator::Gn::<()>::new_scoped(|_scope| {});
        black_box(g.resume());
    }
    start.elapsed()
}

fn hub_sleep0(iterations: u64) -> Duration {
    // The hub exists before the clock starts.
    greenlet_hub::sleep(Duration::ZERO).expect("sleep(0)");
    let start = Instant::now();
    for _ in 0..iterations {
        greenlet_hub::sleep(Duration::ZERO).expect("sleep(0)");
    }
    start.elapsed()
}

fn hub_sleep0_pair(iterations: u64) -> Duration {
    let other = greenlet_hub::spawn(move || {
        for _ in 0..iterations {
            greenlet_hub::sleep(Duration::ZERO)?;
        }
        Ok(())
    });
    // The task starts and yields before the clock starts.
    greenlet_hub::sleep(Duration::ZERO).expect("sleep(0)");
    let start = Instant::now();
    for _ in 0..iterations {
        greenlet_hub::sleep(Duration::ZERO).expect("sleep(0)");
    }
    let elapsed = start.elapsed();
    other.get(None).expect("task");
    elapsed
}

fn hub_spawn_join(iterations: u64) -> Duration {
    greenlet_hub::spawn(|| Ok(())).get(None).expect("task");
    let start = Instant::now();
    for _ in 0..iterations {
        greenlet_hub::spawn(|| Ok(())).get(None).expect("task");
    }
    start.elapsed()
}

/// Runs `body` as a task spawned on a fresh current-thread runtime, where
/// application code on tokio runs (rather than in the `block_on` future),
/// with the I/O and time drivers that a hub always has (tokio polls them
/// every 61 tasks, and whenever a task yields with `yield_now`).
fn in_tokio_task(body: impl std::future::Future<Output = Duration> + 'static + Send) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let task = runtime.spawn(body);
    runtime.block_on(task).expect("the timed task")
}

fn hub_sleep0_tokio(iterations: u64) -> Duration {
    in_tokio_task(async move {
        tokio::task::yield_now().await;
        let start = Instant::now();
        for _ in 0..iterations {
            tokio::task::yield_now().await;
        }
        start.elapsed()
    })
}

fn hub_sleep0_pair_tokio(iterations: u64) -> Duration {
    in_tokio_task(async move {
        let other = tokio::spawn(async move {
            for _ in 0..iterations {
                tokio::task::yield_now().await;
            }
        });
        // The task starts and yields before the clock starts.
        tokio::task::yield_now().await;
        let start = Instant::now();
        for _ in 0..iterations {
            tokio::task::yield_now().await;
        }
        let elapsed = start.elapsed();
        other.await.expect("task");
        elapsed
    })
}

fn hub_spawn_join_tokio(iterations: u64) -> Duration {
    in_tokio_task(async move {
        tokio::spawn(async {}).await.expect("task");
        let start = Instant::now();
        for _ in 0..iterations {
            tokio::spawn(async {}).await.expect("task");
        }
        start.elapsed()
    })
}

fn create_may(iterations: u64) -> Duration {
    may_setup();
    let start = Instant::now();
    let driver = move || {
        for _ in 0..iterations {
            // SAFETY: (may's contract for `spawn`) the empty closure neither
            // blocks nor touches thread-locals.
            let child = unsafe { may::coroutine::spawn(|| {}) };
            child.join().expect("may child");
        }
    };
    // SAFETY: the driver only spawns and joins coroutines, which parks it
    // as a coroutine, not the worker thread.
    let handle = unsafe { may::coroutine::spawn(driver) };
    handle.join().expect("may driver");
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Drop of a suspended coroutine

fn drop_suspended_greenlet(iterations: u64) -> Duration {
    let main = getcurrent();
    let start = Instant::now();
    for _ in 0..iterations {
        let back = main.clone();
        let g = Greenlet::new(move |()| {
            back.switch::<(), ()>(())?;
            Ok(())
        });
        g.switch::<(), ()>(()).expect("start");
        drop(black_box(g)); // GreenletExit, propagated by `?`
    }
    start.elapsed()
}

fn drop_suspended_corosensei(iterations: u64) -> Duration {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, Yielder};
    let mut spare = Some(DefaultStack::new(COROSENSEI_STACK).expect("a stack"));
    let start = Instant::now();
    for _ in 0..iterations {
        let stack = spare.take().expect("the stack was recovered");
        let mut co = Coroutine::with_stack(stack, |yielder: &Yielder<(), ()>, ()| {
            yielder.suspend(());
        });
        black_box(co.resume(()));
        co.force_unwind();
        spare = Some(co.into_stack());
    }
    start.elapsed()
}

fn drop_suspended_generator(iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        let mut g = generator::Gn::<()>::new_scoped(|mut scope| {
            scope.yield_(());
        });
        black_box(g.resume());
        drop(black_box(g));
    }
    start.elapsed()
}
