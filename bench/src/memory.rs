//! Memory and address-space limits, each measured in a child process of its
//! own (the parent re-executes this binary with `mem` or `wall`), so that one
//! measurement's mappings and heap never pollute the next.
//!
//! - `mem IMPL COUNT`: resident bytes per suspended coroutine, from
//!   `/proc/self/statm` before and after making `COUNT` of them, and the
//!   time each took to create and start (`create_start_ns`). If the
//!   process hits a limit first, it reports how many it reached, the error,
//!   and the figure for those.
//! - `wall IMPL`: make suspended coroutines until something gives, and say
//!   what: for us an `Err` from `Builder::spawn` (its message is printed);
//!   for corosensei a panic, caught by a hook that prints the count.

use crate::harness::Line;
use crate::system;
use greenlet::{Greenlet, SwitchError, getcurrent};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The implementations `mem` knows, with what they are.
pub const MEM_IMPLS: &[(&str, &str)] = &[
    ("greenlet-16k", "ours, `Builder::stack_size(16 * 1024)`"),
    ("greenlet-default", "ours, default stack size (128 KiB)"),
    (
        "corosensei-16k",
        "corosensei, `DefaultStack::new(16 * 1024)`",
    ),
];

/// The implementations `wall` knows, with what they are.
pub const WALL_IMPLS: &[(&str, &str)] = &[
    (
        "greenlet",
        "ours, `Greenlet::builder().spawn` with the default stack size",
    ),
    (
        "greenlet-mprotect",
        "ours, the same with guards made by `mprotect` (`GREENLET_STACK_GUARD=mprotect`), as on kernels before 6.13",
    ),
    (
        "corosensei",
        "corosensei, `Coroutine::new` (its default 1 MiB stack)",
    ),
];

/// The environment a `wall` child of implementation `imp` runs with.
pub fn wall_environment(imp: &str) -> Option<(&'static str, &'static str)> {
    (imp == "greenlet-mprotect").then_some(("GREENLET_STACK_GUARD", "mprotect"))
}

fn guard_name() -> &'static str {
    match greenlet::stack::guard_kind() {
        greenlet::stack::GuardKind::Madvise => "madvise",
        greenlet::stack::GuardKind::Mprotect => "mprotect",
    }
}

/// A suspended greenlet whose body waits in one switch to main.
fn suspended_greenlet(size: Option<usize>) -> Result<Greenlet, greenlet::Error> {
    let main = getcurrent();
    let mut builder = Greenlet::builder();
    if let Some(size) = size {
        builder = builder.stack_size(size);
    }
    let g = builder.spawn(move |()| -> Result<(), SwitchError> {
        main.switch::<(), ()>(())?;
        Ok(())
    })?;
    g.switch::<(), ()>(())
        .expect("start: it switches straight back");
    Ok(g)
}

type SuspendedCoroutine = corosensei::Coroutine<(), (), ()>;

fn suspended_coroutine(stack: corosensei::stack::DefaultStack) -> SuspendedCoroutine {
    let mut co =
        corosensei::Coroutine::with_stack(stack, |yielder: &corosensei::Yielder<(), ()>, ()| {
            yielder.suspend(());
        });
    co.resume(());
    co
}

/// The `mem` child: prints one result line with the bytes per coroutine.
pub fn mem(imp: &str, count: usize) -> ExitCode {
    // Everything that happens once per process happens before the first
    // reading: the main greenlet, the overflow handler, the pool, the Vec.
    drop(suspended_greenlet(Some(16 * 1024)));
    let mut greenlets: Vec<Greenlet> = Vec::with_capacity(count);
    let mut coroutines: Vec<SuspendedCoroutine> = Vec::with_capacity(count);
    // Empty the pool (the warm-up's stack has touched pages), then pool as
    // usual.
    greenlet::stack::set_pool_limit(0);
    greenlet::stack::set_pool_limit(crate::workloads::DEFAULT_POOL_LIMIT);
    let maps_before = system::mapping_count();
    let before = system::resident_bytes();
    let mut error = None;
    let started = std::time::Instant::now();
    for _ in 0..count {
        let made = match imp {
            "greenlet-16k" => suspended_greenlet(Some(16 * 1024))
                .map(|g| greenlets.push(g))
                .map_err(|e| e.to_string()),
            "greenlet-default" => suspended_greenlet(None)
                .map(|g| greenlets.push(g))
                .map_err(|e| e.to_string()),
            "corosensei-16k" => corosensei::stack::DefaultStack::new(16 * 1024)
                .map(|s| coroutines.push(suspended_coroutine(s)))
                .map_err(|e| format!("DefaultStack::new: {e}")),
            other => {
                eprintln!("unknown mem implementation {other:?}; known: {MEM_IMPLS:?}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(message) = made {
            error = Some(message);
            break;
        }
    }
    let elapsed = started.elapsed();
    let after = system::resident_bytes();
    let maps_after = system::mapping_count();
    let reached = greenlets.len() + coroutines.len();
    let create_start_ns = elapsed.as_nanos() as f64 / reached.max(1) as f64;
    let per = (after.saturating_sub(before)) as f64 / reached.max(1) as f64;
    let mut line = Line::new(&format!("mem-{count}/{imp}"));
    line.field("unit", "bytes")
        .field("median", format_args!("{per:.0}"))
        .field("min", format_args!("{per:.0}"))
        .field("max", format_args!("{per:.0}"))
        .field("runs", 1)
        .field("requested", count)
        .field("reached", reached)
        .field("rss_before", before)
        .field("rss_after", after)
        .field("maps_before", maps_before)
        .field("maps_after", maps_after)
        .field("create_start_ns", format_args!("{create_start_ns:.0}"));
    if let Some(message) = &error {
        line.field("error", message);
    }
    line.print();
    // Dropping them all makes each exit (ours: GreenletExit; corosensei:
    // force_unwind): a last check that nothing breaks at scale.
    drop(greenlets);
    drop(coroutines);
    ExitCode::SUCCESS
}

/// How many coroutines the `wall` child has made so far, for its panic hook.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// The `wall` child: prints one result line with the count reached and
/// what stopped it, or exits through a panic (corosensei) after its hook
/// printed that line.
pub fn wall(imp: &str, cap: usize) -> ExitCode {
    let id = format!("wall/{imp}");
    match imp {
        "greenlet" | "greenlet-mprotect" => {
            if imp == "greenlet-mprotect" && guard_name() != "mprotect" {
                eprintln!("wall greenlet-mprotect: run it with GREENLET_STACK_GUARD=mprotect");
                return ExitCode::FAILURE;
            }
            let mut greenlets = Vec::with_capacity(cap);
            let mut stopped = None;
            while greenlets.len() < cap {
                match suspended_greenlet(None) {
                    Ok(g) => greenlets.push(g),
                    Err(e) => {
                        stopped = Some(e.to_string());
                        break;
                    }
                }
            }
            let reached = greenlets.len();
            let maps = system::mapping_count();
            drop(greenlets);
            // After the wall, the process is still usable: make one more.
            let recovered = suspended_greenlet(None).is_ok();
            let mut line = Line::new(&id);
            line.field("unit", "greenlets")
                .field("reached", reached)
                .field("outcome", if stopped.is_some() { "err" } else { "cap" })
                .field("recovered", recovered)
                .field("guard", guard_name())
                .field("maps", maps)
                .field(
                    "message",
                    stopped
                        .as_deref()
                        .unwrap_or("(cap reached before any error)"),
                );
            line.print();
            ExitCode::SUCCESS
        }
        "corosensei" => {
            let id_for_hook = id.clone();
            std::panic::set_hook(Box::new(move |info| {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string payload>".into());
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let mut line = Line::new(&id_for_hook);
                line.field("unit", "coroutines")
                    .field("reached", MADE.load(Ordering::Relaxed))
                    .field("maps", system::mapping_count())
                    .field("outcome", "panic")
                    .field("message", format_args!("{message}{location}"));
                line.print();
            }));
            let mut coroutines: Vec<SuspendedCoroutine> = Vec::with_capacity(cap);
            while coroutines.len() < cap {
                // `Coroutine::new` takes a `DefaultStack::default()`, which
                // panics when the mapping fails.
                let mut co =
                    corosensei::Coroutine::new(|yielder: &corosensei::Yielder<(), ()>, ()| {
                        yielder.suspend(());
                    });
                co.resume(());
                coroutines.push(co);
                MADE.store(coroutines.len(), Ordering::Relaxed);
            }
            let mut line = Line::new(&id);
            line.field("unit", "coroutines")
                .field("reached", coroutines.len())
                .field("maps", system::mapping_count())
                .field("outcome", "cap")
                .field("message", "(cap reached before any error)");
            line.print();
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown wall implementation {other:?}; known: {WALL_IMPLS:?}");
            ExitCode::FAILURE
        }
    }
}

/// How many coroutines a wall search makes at most: twice
/// `vm.max_map_count`, so that an implementation needing even one mapping
/// per stack meets the wall before the cap, within 100,000..=300,000 so that
/// a host with a huge limit reports "cap" instead of eating its memory.
pub fn wall_cap() -> usize {
    system::max_map_count().map_or(100_000, |limit| {
        limit.saturating_mul(2).clamp(100_000, 300_000)
    })
}
