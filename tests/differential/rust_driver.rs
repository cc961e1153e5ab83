//! Runs a [`Program`] on this crate and records its trace: the Rust half of
//! the differential test, the mirror of `driver.py`.
//!
//! Everything the Python driver does with an exception, this one does with
//! the crate's `Result`s and panics; where the two languages differ by
//! design, the mapping is written down at the spot (search for "Mapping").
//! Most of it lives in `driver.py`, which bends Python's behaviour to
//! Rust's (its mappings M1 to M5); this side only maps the types.
//!
//! # Mapping of outcomes
//!
//! | Python, at a `switch` / `throw`            | Rust                                          | trace       |
//! |--------------------------------------------|-----------------------------------------------|-------------|
//! | returns an `int`                           | `Ok(i64)`                                     | `v N`       |
//! | returns a `GreenletExit` instance          | `Err(SwitchError::Exited)`                    | `exited`    |
//! | raises `GreenletExit`                      | `Err(SwitchError::Exit)`                      | `exit`      |
//! | raises `Thrown(tag)`                       | `Err(SwitchError::Thrown(Box<Tag>))`          | `thrown T`  |
//! | raises `Panic(tag)`                        | a panic with a `Tag` payload (`catch_unwind`) | `panic T`   |
//!
//! # Trace lines
//!
//! `gC` is the greenlet running the operation; `nog` ends a line whose
//! greenlet is not in the table.
//!
//! | line                                   | when                                        |
//! |----------------------------------------|---------------------------------------------|
//! | `gK start V`                           | `gK`'s body starts with `V`                 |
//! | `gC sw K V -> OUTCOME`                 | `gC`'s switch to `gK` came back             |
//! | `gC th K T -> OUTCOME`, `gC tx K -> ..` | a throw of `Thrown(T)` / `GreenletExit`     |
//! | `gC new K pP`, `gC par K P ok`         | `gK` made with parent `gP`; a parent set    |
//! | `gC q K sS dD aA pP`                   | started, dead, active, parent (`-`: none)   |
//! | `gC cur K`, `gC del K`, `gC deld K`    | `getcurrent()`; before and after a drop     |
//! | `gK end ret V` / `raise T` / ...       | how `gK`'s body ends (`prop OUTCOME`, ...)  |
//! | `trace EVENT O T`                      | the tracer saw `EVENT` from `gO` to `gT`    |
//! | `cleanup`, `unfinished gK`, `done`     | the end: table dropped; bodies never ended  |
//!
//! # References
//!
//! Who holds a greenlet decides when dropping a handle kills it, so both
//! drivers hold exactly the same references: the table (one per `gK`), the
//! greenlets' parent links, the running greenlet, and, for the duration of
//! a switch or throw, the target (a cloned handle here, an evaluation-stack
//! entry in Python). No other handle outlives the operation that made it,
//! and none is dropped while the shared state is borrowed, since a drop can
//! run other greenlets.

use crate::program::{Handler, Op, Program};
use greenlet::{Builder, Error, Event, Greenlet, GreenletExit, SwitchError, getcurrent, settrace};
use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

/// The payload of every error and panic the programs raise, so a driver can
/// tell its own tags from anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(pub i64);

/// What a switch or throw came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Value(i64),
    Exited,
    Exit,
    Thrown(i64),
    Panic(i64),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(v) => write!(f, "v {v}"),
            Outcome::Exited => f.write_str("exited"),
            Outcome::Exit => f.write_str("exit"),
            Outcome::Thrown(t) => write!(f, "thrown {t}"),
            Outcome::Panic(t) => write!(f, "panic {t}"),
        }
    }
}

/// The last value a body received, for `retlast`.
#[derive(Clone, Copy)]
enum Last {
    Value(i64),
    Exited,
}

/// How a body ends.
enum End {
    Return(i64),
    Raise(i64),
    Panic(i64),
    Exit,
    Exited,
    Propagate(Outcome),
}

struct World {
    program: Rc<Program>,
    table: Vec<Option<Greenlet>>,
    /// Greenlet id -> program index, for parents and `getcurrent()`.
    index: HashMap<u64, usize>,
    trace: Vec<String>,
    started: BTreeSet<usize>,
    finished: BTreeSet<usize>,
}

std::thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Runs `f` on the shared state. Never hold it across anything that can
/// switch or drop a handle.
fn with<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with(|w| f(w.borrow_mut().as_mut().expect("a program is running")))
}

fn log(line: String) {
    with(|w| w.trace.push(line));
}

/// A new handle to `gK`, if the table has one.
fn handle(k: usize) -> Option<Greenlet> {
    with(|w| w.table.get(k).cloned().flatten())
}

fn index_of(g: &Greenlet) -> String {
    with(|w| {
        w.index
            .get(&g.id())
            .map_or_else(|| "?".to_owned(), |k| k.to_string())
    })
}

fn main_handle() -> Greenlet {
    handle(0).expect("main is always in the table")
}

fn parent_index(g: &Greenlet) -> String {
    g.parent().map_or_else(|| "-".to_owned(), |p| index_of(&p))
}

/// Installs or removes the tracer that logs `trace EVENT ORIGIN TARGET`.
fn set_tracing(on: bool) {
    let tracer = on.then(|| {
        Rc::new(|event: Event, origin: &Greenlet, target: &Greenlet| {
            log(format!(
                "trace {} {} {}",
                event.as_str(),
                index_of(origin),
                index_of(target)
            ))
        }) as greenlet::Tracer
    });
    drop(settrace(tracer));
}

/// Runs `program` on the current thread and returns its trace.
pub fn run(program: &Program) -> Vec<String> {
    let n = program.greenlets();
    let main = getcurrent();
    let mut index = HashMap::new();
    index.insert(main.id(), 0);
    let mut table = vec![None; n + 1];
    table[0] = Some(main);
    WORLD.with(|w| {
        *w.borrow_mut() = Some(World {
            program: Rc::new(program.clone()),
            table,
            index,
            trace: Vec::new(),
            started: BTreeSet::new(),
            finished: BTreeSet::new(),
        })
    });
    interp(0, Last::Value(0));
    log("cleanup".to_owned());
    // Bodies killed here may create greenlets, so sweep until empty.
    while let Some(k) = with(|w| (1..w.table.len()).find(|&k| w.table[k].is_some())) {
        drop_op(0, k);
    }
    let unfinished: Vec<usize> = with(|w| w.started.difference(&w.finished).copied().collect());
    for k in unfinished {
        log(format!("unfinished g{k}"));
    }
    log("done".to_owned());
    set_tracing(false);
    let world = WORLD
        .with(|w| w.borrow_mut().take())
        .expect("a program was running");
    let World { trace, table, .. } = world;
    drop(table);
    trace
}

fn body(k: usize) -> impl FnOnce(i64) -> Result<i64, SwitchError> + 'static {
    move |arg: i64| {
        log(format!("g{k} start {arg}"));
        with(|w| w.started.insert(k));
        let end = interp(k, Last::Value(arg));
        with(|w| w.finished.insert(k));
        match end {
            Some(End::Return(v)) => Ok(v),
            None => Ok(Program::fall_value(k)),
            Some(End::Raise(t)) | Some(End::Propagate(Outcome::Thrown(t))) => {
                Err(SwitchError::Thrown(Box::new(Tag(t))))
            }
            // A fresh panic, through the hook (which keeps quiet for tags).
            Some(End::Panic(t)) => panic::panic_any(Tag(t)),
            // Propagating a caught panic: resumed, as `?` would not.
            Some(End::Propagate(Outcome::Panic(t))) => panic::resume_unwind(Box::new(Tag(t))),
            Some(End::Exit) | Some(End::Propagate(Outcome::Exit)) => Err(SwitchError::Exit),
            // Mapping: Python's body returns the `GreenletExit` instance it
            // received as a value; Rust's returns `Err(Exited)`, which its
            // parent sees as the same `Exited`.
            Some(End::Exited) => Err(SwitchError::Exited),
            Some(End::Propagate(o)) => unreachable!("{o} is not propagated"),
        }
    }
}

/// Runs the script of `gK` (the current greenlet); `None` if it ran out.
fn interp(k: usize, mut last: Last) -> Option<End> {
    let script = with(|w| w.program.clone());
    let main = k == 0;
    for &op in &script.scripts[k] {
        match op {
            Op::New { k: j, parent } => {
                let builder = match (handle(parent), handle(k)) {
                    (Some(p), _) => Builder::new().parent(&p),
                    (None, Some(_)) => Builder::new(),
                    // Mapping M4: the current greenlet has no table entry, so
                    // it may be being killed by a drop; a child of it would
                    // resurrect it in Python, which stops Python's kill but
                    // not Rust's. Avoided in both drivers: main is the parent.
                    (None, None) => Builder::new().parent(&main_handle()),
                };
                let g = builder.spawn(body(j)).expect("a stack for a new greenlet");
                with(|w| w.index.insert(g.id(), j));
                let p = parent_index(&g);
                let old = with(|w| w.table.get_mut(j).map(|slot| slot.replace(g)));
                drop(old);
                log(format!("g{k} new {j} p{p}"));
            }
            Op::Switch {
                k: j,
                value,
                handler,
            } => {
                let Some(g) = handle(j) else {
                    log(format!("g{k} sw {j} nog"));
                    continue;
                };
                let outcome = attempt(g, |g| g.switch::<i64, i64>(value));
                log(format!("g{k} sw {j} {value} -> {outcome}"));
                if let Some(end) = after(k, handler, outcome, &mut last) {
                    return Some(end);
                }
            }
            Op::Throw { k: j, tag, handler } => {
                let Some(g) = handle(j) else {
                    log(format!("g{k} th {j} nog"));
                    continue;
                };
                let outcome = attempt(g, |g| g.throw::<Tag, i64>(Tag(tag)));
                log(format!("g{k} th {j} {tag} -> {outcome}"));
                if let Some(end) = after(k, handler, outcome, &mut last) {
                    return Some(end);
                }
            }
            Op::ThrowExit { k: j, handler } => {
                let Some(g) = handle(j) else {
                    log(format!("g{k} tx {j} nog"));
                    continue;
                };
                let outcome = attempt(g, |g| g.throw::<GreenletExit, i64>(GreenletExit));
                log(format!("g{k} tx {j} -> {outcome}"));
                if let Some(end) = after(k, handler, outcome, &mut last) {
                    return Some(end);
                }
            }
            Op::Query { k: j } => {
                let Some(g) = handle(j) else {
                    log(format!("g{k} q {j} nog"));
                    continue;
                };
                let (s, d, a) = (g.is_started() as u8, g.is_dead() as u8, g.is_active() as u8);
                let p = parent_index(&g);
                drop(g);
                log(format!("g{k} q {j} s{s} d{d} a{a} p{p}"));
            }
            Op::Current => {
                let current = getcurrent();
                let i = index_of(&current);
                drop(current);
                log(format!("g{k} cur {i}"));
            }
            Op::Drop { k: j } => drop_op(k, j),
            Op::Trace { on } => {
                log(format!("g{k} tr {}", on as u8));
                set_tracing(on);
            }
            Op::TracePanic { tag } => {
                log(format!("g{k} tp {tag}"));
                drop(settrace(Some(Rc::new(
                    move |event: Event, origin: &Greenlet, target: &Greenlet| {
                        log(format!(
                            "trace {} {} {}",
                            event.as_str(),
                            index_of(origin),
                            index_of(target)
                        ));
                        panic::panic_any(Tag(tag));
                    },
                ))));
            }
            Op::SetParent { k: j, parent } => {
                let (Some(g), Some(p)) = (handle(j), handle(parent)) else {
                    log(format!("g{k} par {j} {parent} nog"));
                    continue;
                };
                let result = g.set_parent(&p);
                drop(p);
                drop(g);
                let r = match result {
                    Ok(()) => "ok",
                    Err(Error::ParentCycle) => "cycle",
                    Err(Error::MainParent) => "main",
                    Err(_) => "other",
                };
                log(format!("g{k} par {j} {parent} {r}"));
            }
            // Main never ends early; a hand-written program that asks is
            // ignored in both drivers.
            _ if main && op.ends_body() => log(format!("g{k} noend")),
            Op::Return { value } => {
                log(format!("g{k} end ret {value}"));
                return Some(End::Return(value));
            }
            Op::Raise { tag } => {
                log(format!("g{k} end raise {tag}"));
                return Some(End::Raise(tag));
            }
            Op::Panic { tag } => {
                log(format!("g{k} end panic {tag}"));
                return Some(End::Panic(tag));
            }
            Op::Exit => {
                log(format!("g{k} end exit"));
                return Some(End::Exit);
            }
            Op::ReturnLast => {
                return Some(match last {
                    Last::Value(v) => {
                        log(format!("g{k} end ret {v}"));
                        End::Return(v)
                    }
                    Last::Exited => {
                        log(format!("g{k} end exited"));
                        End::Exited
                    }
                });
            }
        }
    }
    if !main {
        log(format!("g{k} end fall {}", Program::fall_value(k)));
    }
    None
}

/// Switches or throws through `g` (consumed: the handle lives exactly as
/// long as the call, like Python's evaluation-stack reference), catching a
/// panic that comes back as Python's `except` would.
fn attempt(g: Greenlet, call: impl FnOnce(&Greenlet) -> Result<i64, SwitchError>) -> Outcome {
    let result = panic::catch_unwind(AssertUnwindSafe(|| call(&g)));
    drop(g);
    match result {
        Ok(Ok(v)) => Outcome::Value(v),
        Ok(Err(SwitchError::Exited)) => Outcome::Exited,
        Ok(Err(SwitchError::Exit)) => Outcome::Exit,
        Ok(Err(SwitchError::Thrown(e))) => match e.downcast::<Tag>() {
            Ok(tag) => Outcome::Thrown(tag.0),
            Err(_) => panic!("a thrown error that no program raised"),
        },
        Ok(Err(e)) => panic!("unexpected switch error: {e}"),
        Err(payload) => Outcome::Panic(panic_tag(payload)),
    }
}

fn panic_tag(payload: Box<dyn Any + Send>) -> i64 {
    match payload.downcast::<Tag>() {
        Ok(tag) => tag.0,
        Err(other) => {
            let message = other
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| other.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(format!("FOREIGN PANIC: {message}"));
            -1
        }
    }
}

/// Applies the handler: `Some` if the body ends here.
fn after(k: usize, handler: Handler, outcome: Outcome, last: &mut Last) -> Option<End> {
    match outcome {
        Outcome::Value(v) => *last = Last::Value(v),
        // Mapping: `Exited` is a value (Python returns the `GreenletExit`
        // instance), so it never ends a body, although Rust spells it `Err`.
        Outcome::Exited => *last = Last::Exited,
        _ if handler == Handler::Propagate && k != 0 => {
            log(format!("g{k} end prop {outcome}"));
            return Some(End::Propagate(outcome));
        }
        _ => {}
    }
    None
}

/// The `del` operation: drops the table's handle to `gK`.
fn drop_op(k: usize, j: usize) {
    if handle(j).is_none() {
        log(format!("g{k} del {j} nog"));
        return;
    }
    log(format!("g{k} del {j}"));
    let old = with(|w| w.table[j].take());
    drop(old);
    log(format!("g{k} deld {j}"));
}

/// Makes the panics the programs raise on purpose quiet (they are traced);
/// anything else still reaches the default hook.
pub fn quiet_tag_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Tag>() {
                default(info);
            }
        }));
    });
}
