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
        "greenlet-16k-mprotect",
        "ours, 16 KiB, guards made by `mprotect` (`GREENLET_STACK_GUARD=mprotect`), as on kernels before 6.13",
    ),
    (
        "corosensei-16k",
        "corosensei, `DefaultStack::new(16 * 1024)`",
    ),
    (
        "generator-16k",
        "generator, `Gn::new_scoped_opt` with 16 KiB (2,048 words), resumed once (it yields)",
    ),
    (
        "context-16k",
        "context, `ProtectedFixedSizeStack::new(16 * 1024)`, resumed once (it resumes back)",
    ),
    (
        "may-16k",
        "may, `Builder::stack_size` 16 KiB (2,048 words), each parked (`coroutine::park`), one worker",
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
    (
        "generator",
        "generator, `Gn::new_scoped` (its default 32 KiB stack)",
    ),
    (
        "context",
        "context, `ProtectedFixedSizeStack::new` with its default size",
    ),
    (
        "may",
        "may, `coroutine::spawn` (its default 32 KiB stack), each parked, one worker",
    ),
];

/// The environment a `mem` or `wall` child of implementation `imp` runs
/// with: the `mprotect` variants force the fallback guards.
pub fn child_environment(imp: &str) -> Option<(&'static str, &'static str)> {
    imp.ends_with("-mprotect")
        .then_some(("GREENLET_STACK_GUARD", "mprotect"))
}

/// `Err` with what to do when the child of an `mprotect` variant runs
/// without the environment that forces those guards.
fn check_guard(kind: &str, imp: &str) -> Result<(), ExitCode> {
    if imp.ends_with("-mprotect") && guard_name() != "mprotect" {
        eprintln!("{kind} {imp}: run it with GREENLET_STACK_GUARD=mprotect");
        return Err(ExitCode::FAILURE);
    }
    Ok(())
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

type SuspendedGenerator = generator::Generator<'static, (), ()>;

/// A generator with `words` words of stack, resumed once: it waits in its
/// first `yield_`. generator panics when its stack cannot be mapped.
fn suspended_generator(words: Option<usize>) -> SuspendedGenerator {
    let mut g = match words {
        Some(words) => generator::Gn::<()>::new_scoped_opt(words, |mut scope| {
            scope.yield_(());
        }),
        None => generator::Gn::<()>::new_scoped(|mut scope| {
            scope.yield_(());
        }),
    };
    g.resume();
    g
}

extern "C" fn park_context(transfer: context::Transfer) -> ! {
    // SAFETY: `transfer.context` is the context that resumed us, resumed
    // once. We are never resumed again: the frame is abandoned (it owns
    // nothing) when its stack is dropped.
    unsafe { transfer.context.resume(0) };
    unreachable!("a parked context is never resumed");
}

/// A context started on `stack`, which resumed straight back: suspended.
/// The pair keeps the stack alive as long as the context.
fn suspended_context(
    stack: context::stack::ProtectedFixedSizeStack,
) -> (context::stack::ProtectedFixedSizeStack, context::Context) {
    // SAFETY: the stack is kept beside the context and outlives it.
    let fresh = unsafe { context::Context::new(&stack, park_context) };
    // SAFETY: resumes the fresh context once; it resumes us straight back.
    let back = unsafe { fresh.resume(0) };
    (stack, back.context)
}

/// may coroutines that have reached `park` (they count themselves).
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Spawns a may coroutine with `words` words of stack (may's default when
/// `None`) that counts itself and parks. may panics when its stack cannot
/// be mapped.
fn parked_may(words: Option<usize>) -> may::coroutine::JoinHandle<()> {
    crate::workloads::may_setup();
    let mut builder = may::coroutine::Builder::new();
    if let Some(words) = words {
        builder = builder.stack_size(words);
    }
    let body = || {
        PARKED.fetch_add(1, Ordering::Relaxed);
        may::coroutine::park();
    };
    // SAFETY: (may's contract for `spawn`) the body neither blocks its
    // worker thread nor touches thread-locals: it parks as a coroutine.
    unsafe { builder.spawn(body) }.expect("may spawn")
}

/// Waits until `count` may coroutines have parked.
fn wait_parked(count: usize) {
    while PARKED.load(Ordering::Relaxed) < count {
        std::thread::yield_now();
    }
}

/// Unparks and joins may coroutines made by [`parked_may`].
fn release_may(handles: Vec<may::coroutine::JoinHandle<()>>) {
    for h in &handles {
        h.coroutine().unpark();
    }
    for h in handles {
        h.join().expect("a parked may coroutine");
    }
}

/// Runs `make`, turning a panic into `Err` with its message (the peers
/// that panic when a stack cannot be mapped).
fn catching<T>(what: &str, make: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(make))
        .map_err(|payload| format!("{what} panicked: {}", panic_text(payload.as_ref())))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string payload>".into())
}

/// The `mem` child: prints one result line with the bytes per coroutine.
pub fn mem(imp: &str, count: usize) -> ExitCode {
    if let Err(code) = check_guard("mem", imp) {
        return code;
    }
    // Everything that happens once per process happens before the first
    // reading: the main greenlet, the overflow handler, the pool, the Vec.
    drop(suspended_greenlet(Some(16 * 1024)));
    let mut greenlets: Vec<Greenlet> = Vec::with_capacity(count);
    let mut coroutines: Vec<SuspendedCoroutine> = Vec::with_capacity(count);
    let mut generators: Vec<SuspendedGenerator> = Vec::new();
    let mut contexts = Vec::new();
    let mut mays = Vec::new();
    match imp {
        "generator-16k" => {
            generators.reserve_exact(count);
            // generator's own once-per-process set-up.
            drop(suspended_generator(Some(GENERATOR_WORDS)));
        }
        "context-16k" => contexts.reserve_exact(count),
        "may-16k" => {
            mays.reserve_exact(count);
            // may's scheduler and worker start with the first coroutine.
            release_may(vec![parked_may(Some(GENERATOR_WORDS))]);
            PARKED.store(0, Ordering::Relaxed);
        }
        _ => {}
    }
    if imp.starts_with("generator") || imp.starts_with("may") {
        // Their panics at the wall are caught and reported, not printed.
        std::panic::set_hook(Box::new(|_| {}));
    }
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
            "greenlet-16k" | "greenlet-16k-mprotect" => suspended_greenlet(Some(16 * 1024))
                .map(|g| greenlets.push(g))
                .map_err(|e| e.to_string()),
            "greenlet-default" => suspended_greenlet(None)
                .map(|g| greenlets.push(g))
                .map_err(|e| e.to_string()),
            "corosensei-16k" => corosensei::stack::DefaultStack::new(16 * 1024)
                .map(|s| coroutines.push(suspended_coroutine(s)))
                .map_err(|e| format!("DefaultStack::new: {e}")),
            "generator-16k" => catching("Gn::new_scoped_opt", || {
                suspended_generator(Some(GENERATOR_WORDS))
            })
            .map(|g| generators.push(g)),
            "context-16k" => context::stack::ProtectedFixedSizeStack::new(16 * 1024)
                .map(|s| contexts.push(suspended_context(s)))
                .map_err(|e| format!("ProtectedFixedSizeStack::new: {e:?}")),
            "may-16k" => {
                catching("may's spawn", || parked_may(Some(GENERATOR_WORDS))).map(|h| mays.push(h))
            }
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
    // may's coroutines start on its worker: wait until each is parked.
    wait_parked(mays.len());
    let elapsed = started.elapsed();
    let after = system::resident_bytes();
    let maps_after = system::mapping_count();
    let reached =
        greenlets.len() + coroutines.len() + generators.len() + contexts.len() + mays.len();
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
        .field("create_start_ns", format_args!("{create_start_ns:.0}"))
        .field("guard", guard_name());
    if let Some(message) = &error {
        line.field("error", message);
    }
    line.print();
    // Dropping them all makes each exit (ours: GreenletExit; corosensei:
    // force_unwind): a last check that nothing breaks at scale.
    drop(greenlets);
    drop(coroutines);
    drop(generators);
    // The contexts are abandoned while suspended (they own nothing); their
    // stacks are unmapped here.
    drop(contexts);
    release_may(mays);
    ExitCode::SUCCESS
}

/// 16 KiB of stack in the words that generator and may count in.
const GENERATOR_WORDS: usize = 16 * 1024 / size_of::<usize>();

/// How many coroutines the `wall` child has made so far, for its panic hook.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// The `wall` child: prints one result line with the count reached and
/// what stopped it, or exits through a panic (corosensei) after its hook
/// printed that line.
pub fn wall(imp: &str, cap: usize) -> ExitCode {
    let id = format!("wall/{imp}");
    match imp {
        "greenlet" | "greenlet-mprotect" => {
            if let Err(code) = check_guard("wall", imp) {
                return code;
            }
            wall_by_err(&id, cap, "greenlets", Some(guard_name()), || {
                suspended_greenlet(None).map_err(|e| e.to_string())
            })
        }
        // `Coroutine::new` takes a `DefaultStack::default()`, which panics
        // when the mapping fails.
        "corosensei" => wall_by_panic(&id, cap, || {
            let mut co = corosensei::Coroutine::new(|yielder: &corosensei::Yielder<(), ()>, ()| {
                yielder.suspend(());
            });
            co.resume(());
            co
        }),
        "generator" => wall_by_panic(&id, cap, || suspended_generator(None)),
        // may maps the stack in `spawn`, on this thread: its panic is here.
        "may" => wall_by_panic(&id, cap, || parked_may(None)),
        // `Default` would panic; `new` says why it failed.
        "context" => wall_by_err(&id, cap, "coroutines", None, || {
            context::stack::ProtectedFixedSizeStack::new(context::stack::Stack::default_size())
                .map(suspended_context)
                .map_err(|e| format!("ProtectedFixedSizeStack::new: {e:?}"))
        }),
        other => {
            eprintln!("unknown wall implementation {other:?}; known: {WALL_IMPLS:?}");
            ExitCode::FAILURE
        }
    }
}

/// The `wall` of an implementation that returns `Err` when a stack cannot
/// be mapped: makes suspended coroutines with `make` until the cap or the
/// error, drops them all, then makes one more (is the process still
/// usable?) and prints the result line.
fn wall_by_err<T>(
    id: &str,
    cap: usize,
    unit: &str,
    guard: Option<&str>,
    mut make: impl FnMut() -> Result<T, String>,
) -> ExitCode {
    let mut held = Vec::with_capacity(cap);
    let mut stopped = None;
    while held.len() < cap {
        match make() {
            Ok(made) => held.push(made),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    let reached = held.len();
    let maps = system::mapping_count();
    drop(held);
    let recovered = make().is_ok();
    let mut line = Line::new(id);
    line.field("unit", unit)
        .field("reached", reached)
        .field("outcome", if stopped.is_some() { "err" } else { "cap" })
        .field("recovered", recovered)
        .field("maps", maps)
        .field(
            "message",
            stopped
                .as_deref()
                .unwrap_or("(cap reached before any error)"),
        );
    if let Some(guard) = guard {
        line.field("guard", guard);
    }
    line.print();
    ExitCode::SUCCESS
}

/// The `wall` of a peer that panics when a stack cannot be mapped: makes
/// suspended coroutines with `make` until the cap or the panic, whose hook
/// prints the result line before the panic ends the process (exit 101), as
/// it would end a program that uses the peer.
fn wall_by_panic<T>(id: &str, cap: usize, mut make: impl FnMut() -> T) -> ExitCode {
    let id_for_hook = id.to_string();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let mut line = Line::new(&id_for_hook);
        line.field("unit", "coroutines")
            .field("reached", MADE.load(Ordering::Relaxed))
            .field("maps", system::mapping_count())
            .field("outcome", "panic")
            .field(
                "message",
                format_args!("{}{location}", panic_text(info.payload())),
            );
        line.print();
    }));
    let mut held = Vec::with_capacity(cap);
    while held.len() < cap {
        held.push(make());
        MADE.store(held.len(), Ordering::Relaxed);
    }
    let mut line = Line::new(id);
    line.field("unit", "coroutines")
        .field("reached", held.len())
        .field("maps", system::mapping_count())
        .field("outcome", "cap")
        .field("message", "(cap reached before any error)");
    line.print();
    // The coroutines are not released: the process ends here.
    std::process::exit(0)
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
