//! The per-thread hub: the greenlet that runs the event loop, and the one
//! blocking primitive everything else is built on.
//!
//! # The loop
//!
//! The hub greenlet (a child of main) repeats:
//!
//! 1. run a *batch*: the entries that were in the ready queue when the batch
//!    began (a greenlet that yields with `sleep(ZERO)` goes to the back and
//!    runs in the next batch, so timers and I/O are looked at between
//!    batches and never starve);
//! 2. fire the timers that are due;
//! 3. if nothing is ready: block in `epoll_wait` (through mio) until the
//!    next live timer, rounded *up* to whole milliseconds, or forever if
//!    only I/O or another thread can wake someone; if not even that can,
//!    raise LoopExit in main instead of hanging. While the ready queue is
//!    busy the hub looks at I/O without blocking every few batches only, so
//!    that a ready-queue round trip makes no system call.
//!
//! A `sleep(ZERO)` with nothing else to run (no entry left in the batch or
//! queued for the next, no timer due, and not a turn that looks at I/O)
//! does not switch to the hub: the hub would only count the turn and resume
//! the caller, so the caller counts it and goes on. Every 32nd such call
//! still goes to the hub, which looks at I/O and other threads then, as it
//! does on a busy loop.
//!
//! # Blocking
//!
//! A blocking call in any greenlet but the hub: [`Hub::prepare`] starts a
//! wait (raising a pending kill or expired scope first), the caller registers
//! the wait's [`Entry`] where a wake-up can come from, and [`Hub::park`]
//! switches to the hub, which resumes the greenlet with a [`Wake`] reason.
//! Whoever wakes a wait goes through [`Hub::schedule`], so the first wake
//! wins and later ones are no-ops (see [`crate::wait`]).
//!
//! # Cost
//!
//! These paths are measured in instructions (`examples/perf_probe.rs`
//! under callgrind), so they are written to be cheap: waiter records are
//! thin `Rc<Waiter>`s reached without a virtual call, a blocking call finds
//! its record through the greenlet the hub resumed last, the rare cases
//! (a pending kill or scope, shutdown, an interrupted wait) are out of
//! line, and finished task records and their waiters are reused by the
//! next spawns instead of being freed and allocated again.
//!
//! # Lifetime
//!
//! The hub is made on first use and lives in a thread-local. At thread exit
//! a guard registered after main's creation (so that it runs before the
//! core's own teardown) throws `GreenletExit` into the hub, which kills
//! every task still alive (their cleanup runs; blocking calls made during
//! shutdown fail with [`Error::Exit`] at once) and drops what it queued.

use crate::error::Error;
use crate::timer::{Action, Timers, poll_timeout};
use crate::wait::{Entry, State, WaitList, Waiter, WaiterRef, Waits, Wake};
use greenlet::{Greenlet, GreenletExit, SwitchError};
use std::any::{Any, TypeId};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The token of the cross-thread waker; I/O sources use the others.
const WAKER_TOKEN: mio::Token = mio::Token(usize::MAX);

/// While the ready queue is busy, look at I/O (without blocking) once per
/// this many batches.
const BUSY_POLL_EVERY: u32 = 32;

/// Waiter records of finished tasks kept for reuse (each saves an
/// allocation and a free per spawn).
const SPARE_WAITERS: usize = 64;

/// Task records kept for reuse, per type of task (a record holds no
/// greenlet or stack while it waits, only its own few hundred bytes).
const SPARE_TASKS: usize = 32;

/// Finished task records of one type (`TaskCell<T>`), ready for reuse.
struct SpareTasks {
    kind: TypeId,
    records: Vec<Rc<dyn Any>>,
}

// ---------------------------------------------------------------------------
// Errors and the error hook

/// A task or a hub callback that failed, as handed to the error hook.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Failure, set_error_hook, spawn};
/// use std::{cell::RefCell, rc::Rc};
///
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let log = seen.clone();
/// set_error_hook(Some(Rc::new(move |f: &Failure| log.borrow_mut().push(f.to_string()))));
/// # std::panic::set_hook(Box::new(|_| {}));
/// let t = spawn(|| -> Result<(), greenlet_hub::Error> { panic!("boom") });
/// t.join(None)?;
/// assert_eq!(*seen.borrow(), [format!("task #{} failed with panic: boom", t.id())]);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Debug)]
pub struct Failure {
    task_id: Option<u64>,
    message: String,
}

impl Failure {
    pub(crate) fn task_panic(task_id: u64, payload: &(dyn Any + Send)) -> Failure {
        Failure {
            task_id: Some(task_id),
            message: panic_message(payload),
        }
    }

    fn callback_panic(payload: &(dyn Any + Send)) -> Failure {
        Failure {
            task_id: None,
            message: panic_message(payload),
        }
    }

    /// The task that failed, or `None` for a callback run by the hub (a
    /// [`link`](crate::Task::link)).
    ///
    /// # Examples
    ///
    /// ```
    /// let f = std::rc::Rc::new(std::cell::RefCell::new(None));
    /// let f2 = f.clone();
    /// greenlet_hub::set_error_hook(Some(std::rc::Rc::new(move |x: &greenlet_hub::Failure| *f2.borrow_mut() = x.task_id())));
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let t = greenlet_hub::spawn(|| -> Result<(), greenlet_hub::Error> { panic!("no") });
    /// t.join(None)?;
    /// assert_eq!(*f.borrow(), Some(t.id()));
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn task_id(&self) -> Option<u64> {
        self.task_id
    }

    /// The panic's message (`<non-string payload>` if it had none).
    ///
    /// # Examples
    ///
    /// ```
    /// let f = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
    /// let f2 = f.clone();
    /// greenlet_hub::set_error_hook(Some(std::rc::Rc::new(move |x: &greenlet_hub::Failure| *f2.borrow_mut() = x.message().into())));
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// greenlet_hub::spawn(|| -> Result<(), greenlet_hub::Error> { panic!("no") }).join(None)?;
    /// assert_eq!(*f.borrow(), "no");
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    /// gevent's line: `task #3 failed with panic: boom`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task_id {
            Some(id) => write!(f, "task #{id} failed with panic: {}", self.message),
            None => write!(f, "a hub callback failed with panic: {}", self.message),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_owned()
    }
}

/// The error hook: called with every task panic and every panic of a
/// callback run by the hub, on the thread of that hub.
pub type ErrorHook = Rc<dyn Fn(&Failure)>;

/// Sets this thread's error hook, returning the previous one; `None`
/// restores the default, which prints the failure on stderr like gevent
/// (after Rust's panic hook has printed the panic itself).
///
/// The hook runs where the failure happened: in the task's greenlet as it
/// ends, or in the hub for a callback. The task's joiners see the panic
/// either way; the other tasks go on.
///
/// # Examples
///
/// ```
/// use greenlet_hub::set_error_hook;
/// use std::rc::Rc;
///
/// let previous = set_error_hook(Some(Rc::new(|f: &greenlet_hub::Failure| eprintln!("oops: {f}"))));
/// assert!(previous.is_none());
/// set_error_hook(None);
/// ```
pub fn set_error_hook(hook: Option<ErrorHook>) -> Option<ErrorHook> {
    match Hub::current() {
        Ok(hub) => hub.error_hook.replace(hook),
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------
// Cross-thread wake-ups

/// What another thread tells the hub.
pub(crate) enum RemoteMessage {
    /// Target `id` has something to deliver.
    Deliver(u64),
    /// Target `id` has no sender left: deliver what remains and forget it.
    Closed(u64),
}

/// The part of the hub other threads can reach: a queue of messages and the
/// mio waker that makes the hub look at it.
pub(crate) struct Remote {
    waker: mio::Waker,
    queue: Mutex<Vec<RemoteMessage>>,
}

impl Remote {
    pub(crate) fn send(&self, message: RemoteMessage) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message);
        // A failure means the hub's poller is gone (its thread exited):
        // nobody is left to wake.
        let _ = self.waker.wake();
    }
}

/// A hub-side object that other threads deliver to (an `AsyncResult`).
pub(crate) trait RemoteTarget {
    /// Moves what other threads left into the local object and wakes its
    /// waiters.
    fn deliver(&self);
}

// ---------------------------------------------------------------------------
// The hub

/// What the ready queue holds.
pub(crate) enum Ready {
    /// Resume a woken wait.
    Resume(Entry),
    /// Run a callback in the hub (task links). Boxed twice so that an
    /// entry is two words, as a `Resume` is.
    Call(Box<Box<dyn FnOnce()>>),
}

/// A wait that ended other than by being notified: the error, and whether a
/// waker had handed it something first (a permit, an item) that the
/// primitive must pass on.
pub(crate) struct Interrupted {
    pub(crate) error: Error,
    pub(crate) notified: bool,
}

impl From<Error> for Interrupted {
    fn from(error: Error) -> Interrupted {
        Interrupted {
            error,
            notified: false,
        }
    }
}

/// Registered tasks, so that shutdown can kill them even when nothing else
/// refers to them (a task blocked on an event only it can see). Free slots
/// form a list threaded through the vector, so registering and
/// unregistering touch one slot each.
struct Slab {
    slots: Vec<Slot>,
    /// The first free slot (`usize::MAX`: none).
    free: usize,
    len: usize,
}

enum Slot {
    Used(Rc<dyn crate::task::TaskObj>),
    /// Free, with the next free slot.
    Free(usize),
}

impl Default for Slab {
    fn default() -> Slab {
        Slab {
            slots: Vec::new(),
            free: usize::MAX,
            len: 0,
        }
    }
}

impl Slab {
    #[inline]
    fn insert(&mut self, t: Rc<dyn crate::task::TaskObj>) -> usize {
        self.len += 1;
        let i = self.free;
        match self.slots.get_mut(i) {
            Some(slot) => {
                if let Slot::Free(next) = *slot {
                    self.free = next;
                }
                *slot = Slot::Used(t);
                i
            }
            None => {
                self.slots.push(Slot::Used(t));
                self.slots.len() - 1
            }
        }
    }

    #[inline]
    fn remove(&mut self, i: usize) -> Option<Rc<dyn crate::task::TaskObj>> {
        let slot = self.slots.get_mut(i)?;
        if let Slot::Free(_) = slot {
            return None;
        }
        let Slot::Used(t) = std::mem::replace(slot, Slot::Free(self.free)) else {
            unreachable!("checked above")
        };
        self.free = i;
        self.len -= 1;
        Some(t)
    }

    fn iter(&self) -> impl Iterator<Item = &Rc<dyn crate::task::TaskObj>> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Used(t) => Some(t),
            Slot::Free(_) => None,
        })
    }

    fn all(&self) -> Vec<Rc<dyn crate::task::TaskObj>> {
        self.iter().cloned().collect()
    }
}

/// Counters describing a hub, for tests and diagnostics.
///
/// # Examples
///
/// ```
/// let s = greenlet_hub::stats();
/// assert_eq!(s.tasks, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tasks alive (spawned, not yet finished).
    pub tasks: usize,
    /// Entries in the ready queue (stale ones included).
    pub ready: usize,
    /// Entries in the timer heap (cancelled ones that were not yet dropped
    /// included).
    pub timers: usize,
    /// Objects other threads can still deliver to.
    pub remote_targets: usize,
    /// Registered I/O sources.
    pub io_sources: usize,
}

/// This thread's hub counters (all zero if the hub was never used).
pub fn stats() -> Stats {
    HUB.try_with(|cell| cell.get().map(|h| h.stats()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

pub(crate) struct Hub {
    greenlet: Greenlet,
    main: Rc<Waiter>,
    /// What became ready since the current batch began, in order. The loop
    /// swaps it with its (empty) batch buffer at the start of each batch,
    /// so that pushing is a plain `Vec` push and running a batch is a walk
    /// over a local buffer.
    ready: RefCell<Vec<Ready>>,
    /// Entries of the current batch not yet run (for [`Stats::ready`]).
    batch_left: Cell<usize>,
    pub(crate) timers: RefCell<Timers>,
    /// The waiter the hub resumed last (the running greenlet, usually): the
    /// record the hub's ready entry held, moved here for the switch.
    running: Cell<Option<WaiterRef>>,
    /// The greenlet id of `running` (`u64::MAX` for none), so that finding
    /// the current waiter compares ids without reaching into the record.
    running_id: Cell<u64>,
    /// Waiters of greenlets that are neither main nor tasks, by greenlet id,
    /// kept while they wait or have a `Timeout` scope.
    others: RefCell<HashMap<u64, Rc<Waiter>>>,
    tasks: RefCell<Slab>,
    /// Waiter records of finished tasks, for the next spawns.
    spare_waiters: RefCell<Vec<WaiterRef>>,
    /// Records of finished tasks whose last handle went, by type, for the
    /// next spawns of that type.
    spare_tasks: RefCell<Vec<SpareTasks>>,
    pub(crate) idle: RefCell<WaitList>,
    poll: RefCell<mio::Poll>,
    events: RefCell<mio::Events>,
    pub(crate) remote: Arc<Remote>,
    remote_targets: RefCell<HashMap<u64, Rc<dyn RemoteTarget>>>,
    pub(crate) io: RefCell<crate::io::Sources>,
    next_id: Cell<u64>,
    error_hook: RefCell<Option<ErrorHook>>,
    stopping: Cell<bool>,
    busy_rounds: Cell<u32>,
    loop_exit: RefCell<String>,
}

std::thread_local! {
    static HUB: OnceCell<Rc<Hub>> = const { OnceCell::new() };
    static SHUTDOWN: ShutdownGuard = const { ShutdownGuard };
}

/// Shuts the hub down at thread exit. Registered after the core made main,
/// so that (destructors running in reverse order of registration) it runs
/// while greenlets can still be switched (interim: see hub/CORE_REQUESTS.md,
/// request 2).
struct ShutdownGuard;

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if let Ok(Some(hub)) = HUB.try_with(|cell| cell.get().cloned()) {
            hub.shutdown();
        }
    }
}

impl Hub {
    /// This thread's hub, made on first use.
    ///
    /// # Errors
    ///
    /// [`Error::LoopExit`] if the thread is exiting and its hub is gone, or
    /// the poller cannot be made.
    #[inline]
    pub(crate) fn current() -> Result<Rc<Hub>, Error> {
        match HUB.try_with(|cell| cell.get().cloned()) {
            Ok(Some(hub)) => Ok(hub),
            _ => Hub::current_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn current_slow() -> Result<Rc<Hub>, Error> {
        match HUB.try_with(|cell| cell.get().is_some()) {
            Ok(false) => Hub::init(),
            Ok(true) => Hub::current(),
            Err(_) => Err(Error::LoopExit(
                "the hub of this thread is gone (the thread is exiting)".into(),
            )),
        }
    }

    /// Calls `f` with this thread's hub, made on first use (the fast path of
    /// every blocking call).
    ///
    /// # Errors
    ///
    /// As [`Hub::current`], or `f`'s.
    #[inline(always)]
    pub(crate) fn with<R, E: From<Error>>(f: impl FnOnce(&Hub) -> Result<R, E>) -> Result<R, E> {
        // A reference taken out of the thread-local (one increment) is
        // cheaper than running `f` inside `LocalKey::try_with`, whose
        // nested results cost copies on every blocking call.
        let hub = Hub::current()?;
        f(&hub)
    }

    /// Calls `f` with this thread's hub if it exists (never makes one).
    #[inline]
    pub(crate) fn with_existing<R>(f: impl FnOnce(&Hub) -> R) -> Option<R> {
        let hub = HUB.try_with(|cell| cell.get().cloned()).ok().flatten()?;
        Some(f(&hub))
    }

    #[cold]
    fn init() -> Result<Rc<Hub>, Error> {
        // Main first: the core registers its thread teardown when main is
        // made, and our shutdown guard must be registered after it.
        let main = greenlet::main_greenlet();
        let poll = mio::Poll::new()
            .map_err(|e| Error::LoopExit(format!("cannot create the poller: {e}")))?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)
            .map_err(|e| Error::LoopExit(format!("cannot create the cross-thread waker: {e}")))?;
        // The body finds its hub in the thread-local: it first runs after
        // `init` stored it there.
        let greenlet = Greenlet::builder().parent(&main).spawn(|(): ()| {
            if let Ok(Some(hub)) = HUB.try_with(|cell| cell.get().cloned()) {
                hub.run();
            }
            Ok::<(), SwitchError>(())
        })?;
        let hub = Rc::new(Hub {
            greenlet,
            main: Rc::new(Waiter::new(Some(main), State::Active)),
            ready: RefCell::new(Vec::new()),
            batch_left: Cell::new(0),
            timers: RefCell::new(Timers::default()),
            running: Cell::new(None),
            running_id: Cell::new(u64::MAX),
            others: RefCell::new(HashMap::new()),
            tasks: RefCell::new(Slab::default()),
            spare_waiters: RefCell::new(Vec::new()),
            spare_tasks: RefCell::new(Vec::new()),
            idle: RefCell::new(WaitList::default()),
            poll: RefCell::new(poll),
            events: RefCell::new(mio::Events::with_capacity(256)),
            remote: Arc::new(Remote {
                waker,
                queue: Mutex::new(Vec::new()),
            }),
            remote_targets: RefCell::new(HashMap::new()),
            io: RefCell::new(crate::io::Sources::default()),
            next_id: Cell::new(1),
            error_hook: RefCell::new(None),
            stopping: Cell::new(false),
            busy_rounds: Cell::new(0),
            loop_exit: RefCell::new(String::new()),
        });
        HUB.with(|cell| {
            let _ = cell.set(hub.clone());
        });
        SHUTDOWN.with(|_| ());
        Ok(hub)
    }

    pub(crate) fn greenlet(&self) -> &Greenlet {
        &self.greenlet
    }

    pub(crate) fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn stats(&self) -> Stats {
        Stats {
            tasks: self.tasks.borrow().len,
            ready: self.ready.borrow().len() + self.batch_left.get(),
            timers: self.timers.borrow().len(),
            remote_targets: self.remote_targets.borrow().len(),
            io_sources: self.io.borrow().len(),
        }
    }

    // -- tasks ---------------------------------------------------------------

    /// A waiter record for a new task: a spare one, or a new one.
    #[inline(always)]
    pub(crate) fn task_waiter(&self) -> WaiterRef {
        let spare = self.spare_waiters.borrow_mut().pop();
        match spare {
            Some(w) => w,
            None => Rc::new(Waiter::new(None, State::Active)),
        }
    }

    /// A spare task record of type `C` (a `TaskCell<T>`), if one was kept.
    #[inline(always)]
    pub(crate) fn spare_task<C: 'static>(&self) -> Option<Rc<C>> {
        let kind = TypeId::of::<C>();
        let record = self
            .spare_tasks
            .borrow_mut()
            .iter_mut()
            .find(|s| s.kind == kind)?
            .records
            .pop()?;
        record.downcast().ok()
    }

    /// Keeps a finished task record (reset by its type's `recycle`) for the
    /// next spawn of its type.
    pub(crate) fn keep_spare_task<C: 'static>(&self, record: Rc<C>) {
        let kind = TypeId::of::<C>();
        let mut spare = self.spare_tasks.borrow_mut();
        let at = match spare.iter().position(|s| s.kind == kind) {
            Some(i) => i,
            None => {
                spare.push(SpareTasks {
                    kind,
                    records: Vec::new(),
                });
                spare.len() - 1
            }
        };
        let records = &mut spare[at].records;
        if records.len() < SPARE_TASKS {
            records.push(record);
        }
    }

    /// Keeps the waiter record of a task record being dropped for a later
    /// spawn, if nothing else refers to it (no queue entry, no `Timeout`
    /// owner link) and it holds nothing (`Waiter::reset_for_reuse`).
    #[inline]
    pub(crate) fn recycle_waiter(&self, w: &WaiterRef) {
        if Rc::strong_count(w) == 1 && Rc::weak_count(w) == 0 && w.reset_for_reuse() {
            let mut spare = self.spare_waiters.borrow_mut();
            if spare.len() < SPARE_WAITERS {
                spare.push(w.clone());
            }
        }
    }

    #[inline(always)]
    pub(crate) fn register_task(&self, t: Rc<dyn crate::task::TaskObj>) -> usize {
        self.tasks.borrow_mut().insert(t)
    }

    #[inline(always)]
    pub(crate) fn unregister_task(&self, slot: usize) {
        let t = self.tasks.borrow_mut().remove(slot);
        drop(t);
    }

    // -- waking --------------------------------------------------------------

    /// Wakes the wait of `e` with `reason` if it is still blocked (the first
    /// wake wins); true if it did.
    #[inline(always)]
    pub(crate) fn schedule(&self, e: Entry, reason: Wake) -> bool {
        if e.who.try_wake(e.generation, reason) {
            self.ready.borrow_mut().push(Ready::Resume(e));
            true
        } else {
            false
        }
    }

    /// Queues the entry of a wait that was just woken (`Scheduled`) by its
    /// own greenlet.
    #[inline(always)]
    pub(crate) fn push_ready(&self, e: Entry) {
        debug_assert!(e.who.state() == State::Scheduled && e.who.generation() == e.generation);
        self.ready.borrow_mut().push(Ready::Resume(e));
    }

    /// Runs `f` in the hub soon (after the greenlets already ready).
    pub(crate) fn call_soon(&self, f: Box<dyn FnOnce()>) {
        self.ready.borrow_mut().push(Ready::Call(Box::new(f)));
    }

    /// Notifies the first live entry of `list`; false if there is none.
    #[inline(always)]
    pub(crate) fn wake_one(&self, list: &RefCell<WaitList>) -> bool {
        loop {
            let e = list.borrow_mut().pop();
            match e {
                None => return false,
                Some(e) => {
                    if self.schedule(e, Wake::Notify) {
                        return true;
                    }
                }
            }
        }
    }

    /// Notifies every entry of `list`.
    #[inline(always)]
    pub(crate) fn wake_all(&self, list: &RefCell<WaitList>) {
        // Waking runs no user code, so nobody adds to the list meanwhile.
        loop {
            let (e, more) = {
                let mut list = list.borrow_mut();
                let e = list.pop();
                (e, !list.is_empty())
            };
            let Some(e) = e else { return };
            // A stale entry is dropped by `schedule`; only a scheduled one
            // (moved, not dropped) lets the emptiness seen above stand.
            if self.schedule(e, Wake::Notify) && !more {
                return;
            }
        }
    }

    // -- blocking ------------------------------------------------------------
    //
    // The hot path of every blocking call is three inlined steps (`me`,
    // `begin_wait`, `park_waiter`) with every rare case (a kill or scope
    // pending, shutdown, an interrupted wait, a greenlet the hub did not
    // resume) out of line.

    /// The waiter of the running greenlet, as the owner a `Timeout` scope
    /// keeps a weak reference to.
    pub(crate) fn current_waiter(&self) -> Result<Rc<dyn Waits>, Error> {
        Ok(self.me()?)
    }

    /// The waiter of the running greenlet.
    #[inline(always)]
    fn me(&self) -> Result<WaiterRef, Error> {
        let id = greenlet::current_id();
        if self.running_id.get() == id
            && let Some(w) = self.running.take()
        {
            let me = w.clone();
            self.running.set(Some(w));
            return Ok(me);
        }
        if self.main.greenlet_id() == id {
            return Ok(self.main.clone());
        }
        self.slow_waiter(greenlet::getcurrent())
    }

    #[cold]
    #[inline(never)]
    fn slow_waiter(&self, current: Greenlet) -> Result<WaiterRef, Error> {
        if current == self.greenlet {
            return Err(Error::BlockingInHub);
        }
        let id = current.id();
        // A task that was not resumed by the hub (it got control back
        // through a direct switch).
        if let Some(t) = self
            .tasks
            .borrow()
            .iter()
            .find(|t| t.waiter_ref().greenlet_id() == id)
        {
            return Ok(t.waiter_ref().clone());
        }
        let w = self
            .others
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| Rc::new(Waiter::transient(current)))
            .clone();
        Ok(w)
    }

    /// Forgets the waiter of a non-task greenlet once it neither waits nor
    /// has a scope, so that its handle is not kept.
    #[inline]
    pub(crate) fn forget_if_idle<W: Waits + ?Sized>(&self, me: &Rc<W>) {
        let w = me.waiter();
        if w.is_transient() {
            self.forget_transient(w);
        }
    }

    #[cold]
    #[inline(never)]
    fn forget_transient(&self, w: &Waiter) {
        if w.state() == State::Active && w.scopes.borrow().is_empty() {
            let id = w.greenlet_id();
            let mut others = self.others.borrow_mut();
            if others.get(&id).is_some_and(|o| std::ptr::eq(&**o, w)) {
                let removed = others.remove(&id);
                drop(others);
                drop(removed);
            }
        }
    }

    /// Starts a wait of the running greenlet: raises a pending kill or
    /// expired scope, then returns its waiter and the wait's generation.
    ///
    /// # Errors
    ///
    /// [`Error::BlockingInHub`] in the hub; [`Error::Exit`] for a pending
    /// kill or during shutdown; [`Error::Timeout`] for an expired scope.
    #[inline]
    pub(crate) fn prepare(&self, what: &'static str) -> Result<(WaiterRef, u64), Error> {
        let me = self.me()?;
        let generation = self.begin_wait(&me, what)?;
        Ok((me, generation))
    }

    /// [`Hub::prepare`] once the waiter is known.
    #[inline]
    fn begin_wait(&self, me: &WaiterRef, what: &'static str) -> Result<u64, Error> {
        if self.stopping.get() || me.has_pending() || self.greenlet.is_dead() {
            self.raise_pending(me)?;
        }
        Ok(me.begin(what))
    }

    /// The rare checks before a wait: shutdown, a pending kill, scopes.
    #[cold]
    #[inline(never)]
    fn raise_pending(&self, me: &WaiterRef) -> Result<(), Error> {
        let w: &Waiter = me;
        if self.stopping.get() || self.greenlet.is_dead() {
            return Err(if crate::wait::same_waiter(me, &self.main) {
                Error::LoopExit("the hub of this thread has shut down".into())
            } else {
                Error::Exit
            });
        }
        if w.take_kill_pending() {
            return Err(Error::Exit);
        }
        if !w.scopes.borrow().is_empty() {
            crate::timeout::raise_pending(w)?;
        }
        Ok(())
    }

    /// Switches to the hub until the wait `(me, generation)` is woken; with a
    /// deadline, a timer ends it with [`Error::TimedOut`].
    #[inline]
    pub(crate) fn park(
        &self,
        me: &WaiterRef,
        generation: u64,
        deadline: Option<Instant>,
    ) -> Result<(), Interrupted> {
        self.park_waiter(me, generation, deadline)
    }

    /// [`Hub::park`], inlined into the blocking calls of this module.
    #[inline(always)]
    fn park_waiter(
        &self,
        me: &WaiterRef,
        generation: u64,
        deadline: Option<Instant>,
    ) -> Result<(), Interrupted> {
        if let Some(at) = deadline {
            self.timers.borrow_mut().push(
                at,
                Action::Wake(Entry::new(me.clone(), generation), Wake::TimedOut),
            );
        }
        let switched = self.greenlet.switch::<(), Wake>(());
        if let Ok(Wake::Notify | Wake::Start) = switched {
            // The wait is over: every entry of it (in lists, the timer heap,
            // the ready queue) is now stale.
            me.invalidate(State::Active);
            if deadline.is_some() {
                self.timers.borrow_mut().note_cancelled();
            }
            return Ok(());
        }
        self.park_interrupted(me, generation, deadline, switched)
    }

    /// The end of a wait that was not notified.
    #[cold]
    #[inline(never)]
    fn park_interrupted(
        &self,
        w: &Waiter,
        generation: u64,
        deadline: Option<Instant>,
        switched: Result<Wake, SwitchError>,
    ) -> Result<(), Interrupted> {
        // Notified before the switch failed (a shutdown's throw found it
        // scheduled): the primitive must pass on what it was handed.
        let notified_then_thrown = w.generation() == generation
            && w.state() == State::Scheduled
            && w.wake_reason() == Wake::Notify;
        w.invalidate(State::Active);
        let timed_out = matches!(switched, Ok(Wake::TimedOut));
        let result = match switched {
            Ok(Wake::Notify | Wake::Start) => Ok(()),
            Ok(Wake::TimedOut) => Err(Error::TimedOut.into()),
            Ok(Wake::Timeout(id)) => Err(crate::timeout::elapsed(w, id).into()),
            Ok(Wake::Kill) => Err(Error::Exit.into()),
            Ok(Wake::LoopExit) => Err(Error::LoopExit(self.loop_exit.borrow().clone()).into()),
            Err(e) => Err(Interrupted {
                error: e.into(),
                notified: notified_then_thrown,
            }),
        };
        if deadline.is_some() && !timed_out {
            self.timers.borrow_mut().note_cancelled();
        }
        result
    }

    /// Blocks the running greenlet on `list` (see [`wait_in`]).
    #[inline(always)]
    fn wait_in(
        &self,
        list: &RefCell<WaitList>,
        what: &'static str,
        deadline: Option<Instant>,
    ) -> Result<(), Interrupted> {
        let me = self.me()?;
        let generation = self.begin_wait(&me, what)?;
        list.borrow_mut().push(Entry::new(me.clone(), generation));
        let result = self.park_waiter(&me, generation, deadline);
        if result.is_err() {
            list.borrow_mut().remove(&me, generation);
        }
        self.forget_if_idle(&me);
        result
    }

    /// Lets every other ready greenlet run once (`sleep(ZERO)`): the waiter
    /// queues itself, already woken, at the back of the ready queue and
    /// switches to the hub, which resumes it after the greenlets ready
    /// before it (and the timers and I/O looked at between batches).
    ///
    /// When the hub, given control, would do nothing but count a busy turn
    /// and resume the caller ([`Hub::turn_is_empty`]), the caller counts the
    /// turn itself and goes on without the two switches.
    #[inline(always)]
    fn yield_now(&self) -> Result<(), Error> {
        let me = self.me()?;
        if self.stopping.get() || me.has_pending() || self.greenlet.is_dead() {
            self.raise_pending(&me)?;
        } else if self.turn_is_empty() {
            self.forget_if_idle(&me);
            return Ok(());
        }
        let generation = me.begin_scheduled("sleep", Wake::Notify);
        self.push_ready(Entry::new(me.clone(), generation));
        let switched = self.greenlet.switch::<(), Wake>(());
        if let Ok(Wake::Notify | Wake::Start) = switched {
            me.invalidate(State::Active);
            self.forget_if_idle(&me);
            return Ok(());
        }
        self.yield_interrupted(&me, generation, switched)
    }

    /// Whether a switch to the hub now would come straight back: the hub
    /// is running a batch (it has started and is not stopping), nothing is
    /// left in that batch or queued for the next, no timer is due, and the
    /// next busy turn is not one that looks at I/O. Then the hub's loop would
    /// end the batch, find no timer to fire, count one busy turn (the caller,
    /// queued, makes the queue busy) and resume the caller first; this counts
    /// the turn instead, so that the look at I/O and other threads every
    /// [`BUSY_POLL_EVERY`] turns still happens, in the hub, on schedule.
    #[inline(always)]
    fn turn_is_empty(&self) -> bool {
        if self.batch_left.get() != 0
            || !self.ready.borrow().is_empty()
            || !self.greenlet.is_started()
            || (!self.timers.borrow().is_empty() && self.timer_due())
        {
            return false;
        }
        if self.busy_turn_polls() {
            return false;
        }
        self.count_busy_turn();
        true
    }

    /// Whether the next busy turn is one that looks at I/O.
    #[inline(always)]
    fn busy_turn_polls(&self) -> bool {
        self.busy_rounds
            .get()
            .wrapping_add(1)
            .is_multiple_of(BUSY_POLL_EVERY)
    }

    #[inline(always)]
    fn count_busy_turn(&self) {
        self.busy_rounds.set(self.busy_rounds.get().wrapping_add(1));
    }

    /// Whether the earliest live timer is due (what the loop's next turn
    /// would fire).
    #[inline(never)]
    fn timer_due(&self) -> bool {
        let next = self.timers.borrow_mut().next_deadline();
        next.is_some_and(|at| at <= Instant::now())
    }

    /// The end of a `sleep(ZERO)` that was not resumed by its own entry.
    #[cold]
    #[inline(never)]
    fn yield_interrupted(
        &self,
        me: &WaiterRef,
        generation: u64,
        switched: Result<Wake, SwitchError>,
    ) -> Result<(), Error> {
        let result = self.park_interrupted(me, generation, None, switched);
        self.forget_if_idle(me);
        result.map_err(|i| i.error)
    }

    // -- the loop ------------------------------------------------------------

    /// The hub greenlet's body.
    fn run(&self) {
        // The batch being run: what was ready when it began, in order. What
        // becomes ready meanwhile goes to `self.ready`, for the next batch.
        let mut batch: Vec<Ready> = Vec::new();
        while !self.stopping.get() {
            std::mem::swap(&mut batch, &mut *self.ready.borrow_mut());
            // Run from the back: popping a `Vec` is the cheapest way to take
            // its entries out one by one and keep its buffer.
            batch.reverse();
            self.batch_left.set(batch.len());
            let mut exit = false;
            while let Some(next) = batch.pop() {
                self.batch_left.set(batch.len());
                exit = match next {
                    Ready::Resume(e) => self.resume(e),
                    Ready::Call(f) => {
                        self.call(*f);
                        false
                    }
                };
                if exit {
                    break;
                }
            }
            if exit {
                self.stopping.set(true);
                self.requeue_front(&mut batch);
                break;
            }
            if self.stopping.get() {
                break;
            }
            self.turn();
        }
        drop(batch);
        self.teardown();
    }

    /// Puts the rest of an interrupted batch (reversed) back in front of
    /// the ready queue, for teardown to drop with the rest.
    #[cold]
    fn requeue_front(&self, rest: &mut Vec<Ready>) {
        self.batch_left.set(0);
        rest.reverse();
        let mut ready = self.ready.borrow_mut();
        let later = std::mem::replace(&mut *ready, std::mem::take(rest));
        ready.extend(later);
    }

    /// Makes `w` (with greenlet id `id`) the running waiter; returns the
    /// previous one.
    #[inline]
    fn set_running(&self, w: Option<WaiterRef>, id: u64) -> Option<WaiterRef> {
        self.running_id.set(id);
        self.running.replace(w)
    }

    /// Puts back the running waiter that `set_running` replaced.
    #[inline]
    fn restore_running(&self, previous: Option<WaiterRef>) {
        let id = match &previous {
            None => u64::MAX,
            Some(p) => p.greenlet_id(),
        };
        drop(self.set_running(previous, id));
    }

    /// Resumes a woken wait; true if the hub itself is asked to exit.
    #[inline]
    fn resume(&self, e: Entry) -> bool {
        let w: &Waiter = &e.who;
        if w.generation() != e.generation || w.state() != State::Scheduled {
            return false;
        }
        // The greenlet is borrowed, not cloned, for the switch: its cell is
        // only written when a task is spawned or killed before it started,
        // and this one has started or is starting now (so it is not killed
        // unstarted meanwhile); `e` keeps the record alive.
        let greenlet = w.greenlet_ref();
        let Some(g) = greenlet.as_ref() else {
            return false;
        };
        let reason = w.wake_reason();
        w.set_state(State::Active);
        // Only the loop resumes, and nothing runs between its resumes: no
        // waiter is running here, so there is nothing to put back after.
        self.running_id.set(w.greenlet_id());
        self.running.set(Some(e.who.clone()));
        // The closure returns the switch's error boxed (it is rare), so that
        // what comes out of `catch_unwind` on the happy path is one word.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            g.switch::<Wake, ()>(reason).map_err(Box::new)
        }));
        drop(greenlet);
        self.running_id.set(u64::MAX);
        let resumed = self.running.take();
        drop(resumed);
        match outcome {
            Ok(Ok(())) => false,
            Ok(Err(e)) => self.switch_failed(*e),
            Err(payload) => self.resume_panicked(payload),
        }
    }

    /// A waiter switched back to the hub with an error: true if the hub is
    /// asked to exit.
    #[cold]
    #[inline(never)]
    fn switch_failed(&self, error: SwitchError) -> bool {
        if let SwitchError::Exit = error {
            return true;
        }
        // A greenlet that is not a task ended with an error or switched a
        // value of another type to the hub.
        self.report(&Failure {
            task_id: None,
            message: format!("unexpected switch into the hub: {error}"),
        });
        false
    }

    /// Tasks catch their own panics; this one escaped a greenlet that is
    /// not a task and whose parent is the hub.
    #[cold]
    #[inline(never)]
    fn resume_panicked(&self, payload: Box<dyn Any + Send>) -> bool {
        self.report(&Failure::callback_panic(&*payload));
        false
    }

    fn call(&self, f: Box<dyn FnOnce()>) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
            self.report(&Failure::callback_panic(&*payload));
        }
    }

    pub(crate) fn report(&self, failure: &Failure) {
        let hook = self.error_hook.borrow().clone();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| match hook {
            Some(hook) => hook(failure),
            None => eprintln!("{failure}"),
        }));
        if outcome.is_err() {
            eprintln!("the hub's error hook panicked while reporting: {failure}");
        }
    }

    /// Whether something outside the ready queue and the timers can still
    /// wake a greenlet: another thread's sender, or I/O someone waits for.
    fn has_io_sources(&self) -> bool {
        !self.remote_targets.borrow().is_empty() || !self.io.borrow().is_idle()
    }

    /// Calls `f` with the poller's registry.
    pub(crate) fn registry<R>(
        &self,
        f: impl FnOnce(&mio::Registry) -> std::io::Result<R>,
    ) -> std::io::Result<R> {
        let poll = self
            .poll
            .try_borrow()
            .map_err(|_| std::io::Error::other("the hub's poller is busy"))?;
        f(poll.registry())
    }

    /// Everything between two batches: timers, I/O, idle waiters, and the
    /// decision to block or to raise LoopExit.
    #[inline]
    fn turn(&self) {
        if !self.timers.borrow().is_empty() {
            self.fire_timers(Instant::now());
        }
        if !self.ready.borrow().is_empty() {
            // Busy: look at I/O and other threads now and then without
            // blocking, so that neither a spinning `sleep(ZERO)` nor a
            // timer that is always due (a `sleep(1 ms)` loop on a machine
            // slower than that) starves them. The batch is counted first:
            // the sources are only looked up on the rounds that may poll.
            let polls = self.busy_turn_polls();
            self.count_busy_turn();
            if polls {
                self.busy_poll();
            }
            return;
        }
        self.turn_not_busy();
    }

    /// A busy turn's look at I/O and other threads, without blocking.
    #[inline(never)]
    fn busy_poll(&self) {
        if self.has_io_sources() {
            self.poll(Some(Duration::ZERO));
        }
    }

    /// A turn with nothing ready: idle waiters, or block until a timer, I/O
    /// or another thread wakes someone (or raise LoopExit).
    #[inline(never)]
    fn turn_not_busy(&self) {
        if !self.idle.borrow().is_empty() {
            if self.has_io_sources() {
                self.poll(Some(Duration::ZERO));
            }
            if self.ready.borrow().is_empty() {
                self.wake_all(&self.idle);
            }
            return;
        }
        let deadline = self.timers.borrow_mut().next_deadline();
        if deadline.is_none() && !self.has_io_sources() {
            self.loop_exit();
            return;
        }
        self.poll(deadline.map(|at| poll_timeout(at, Instant::now())));
        if !self.timers.borrow().is_empty() {
            self.fire_timers(Instant::now());
        }
    }

    fn fire_timers(&self, now: Instant) {
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            match due {
                None => return,
                Some(Action::Wake(e, reason)) => {
                    self.schedule(e, reason);
                }
                Some(Action::Scope(scope)) => crate::timeout::fire(self, &scope),
            }
        }
    }

    fn poll(&self, timeout: Option<Duration>) {
        let mut remote = false;
        {
            let mut poll = self.poll.borrow_mut();
            let mut events = self.events.borrow_mut();
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.report(&Failure {
                        task_id: None,
                        message: format!("polling failed: {e}"),
                    });
                }
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    remote = true;
                } else {
                    crate::io::dispatch(self, event);
                }
            }
        }
        if remote {
            self.drain_remote();
        }
    }

    // -- other threads -------------------------------------------------------

    /// Registers what other threads deliver to under `id` (from
    /// [`Hub::next_id`]), until a `Closed(id)` message.
    pub(crate) fn add_remote_target(&self, id: u64, target: Rc<dyn RemoteTarget>) {
        self.remote_targets.borrow_mut().insert(id, target);
    }

    fn drain_remote(&self) {
        let messages = std::mem::take(
            &mut *self
                .remote
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for m in messages {
            match m {
                RemoteMessage::Deliver(id) => {
                    let target = self.remote_targets.borrow().get(&id).cloned();
                    if let Some(t) = target {
                        t.deliver();
                    }
                }
                RemoteMessage::Closed(id) => {
                    let target = self.remote_targets.borrow_mut().remove(&id);
                    if let Some(t) = target {
                        t.deliver();
                    }
                }
            }
        }
    }

    // -- loop exit -------------------------------------------------------------

    #[cold]
    fn loop_exit(&self) {
        let blocked = self.tasks.borrow().len;
        let main = self.main.clone();
        let what = main.what();
        let others = if blocked == 0 {
            String::new()
        } else {
            format!(
                " (and {blocked} task{} blocked too)",
                if blocked == 1 { " is" } else { "s are" }
            )
        };
        let message = format!(
            "the hub has nothing left to run: the main greenlet waits in {what}{others}, and no ready \
             greenlet, timer, I/O source or other thread can wake it; it would block forever"
        );
        *self.loop_exit.borrow_mut() = message.clone();
        let generation = main.generation();
        if !self.schedule(Entry::new(main, generation), Wake::LoopExit) {
            // Main is not in a hub wait (it switched to a greenlet that then
            // blocked): raise it at main's pending switch.
            let error = Error::LoopExit(message);
            let _ = self.main.greenlet().map(|m| m.throw::<Error, ()>(error));
        }
    }

    // -- shutdown ------------------------------------------------------------

    /// Kills every task and stops the hub greenlet. Called at thread exit,
    /// from main.
    fn shutdown(&self) {
        if self.greenlet.is_dead() {
            return;
        }
        self.stopping.set(true);
        let current = greenlet::getcurrent();
        if !self.greenlet.is_started() {
            // Only unstarted tasks can exist: nothing to switch to.
            self.teardown();
            return;
        }
        if self.greenlet.parent().as_ref() != Some(&current) {
            // Not main, or the core already released main: switching now is
            // not safe. What is left leaks rather than crashes.
            return;
        }
        let _ = self.greenlet.throw::<GreenletExit, ()>(GreenletExit);
    }

    /// Kills the remaining tasks and drops everything queued.
    fn teardown(&self) {
        self.stopping.set(true);
        for _round in 0..4 {
            let tasks = self.tasks.borrow().all();
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                let w = t.waiter_ref().clone();
                let id = w.greenlet_id();
                let previous = self.set_running(Some(w), id);
                t.shutdown_kill();
                self.restore_running(previous);
            }
        }
        // Drop outside the borrows: dropping can run user destructors.
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        drop(ready);
        let timers = self.timers.borrow_mut().take_all();
        drop(timers);
        let targets = std::mem::take(&mut *self.remote_targets.borrow_mut());
        drop(targets);
        let idle = self.idle.borrow_mut().take_all();
        drop(idle);
        let others = std::mem::take(&mut *self.others.borrow_mut());
        drop(others);
        // Spare task records first: dropping them gives their waiters back.
        let spare = std::mem::take(&mut *self.spare_tasks.borrow_mut());
        drop(spare);
        let spare = std::mem::take(&mut *self.spare_waiters.borrow_mut());
        drop(spare);
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
        let sources = self.io.borrow_mut().clear();
        drop(sources);
    }
}

/// The deadline of a call's `timeout` argument: `Ok(None)` waits forever
/// (also for durations too large to represent), `Err(TimedOut)` for a zero
/// timeout, which never blocks.
#[inline]
pub(crate) fn deadline(timeout: Option<Duration>) -> Result<Option<Instant>, Error> {
    match timeout {
        None => Ok(None),
        Some(d) if d.is_zero() => Err(Error::TimedOut),
        Some(d) => Ok(Instant::now().checked_add(d)),
    }
}

/// Blocks the running greenlet on `list` until a waker takes its entry (Ok),
/// or the deadline, a scope timeout, a kill or loop exit ends the wait; its
/// entry is removed from `list` on every way out.
#[inline]
pub(crate) fn wait_in(
    list: &RefCell<WaitList>,
    what: &'static str,
    deadline: Option<Instant>,
) -> Result<(), Interrupted> {
    Hub::current()?.wait_in(list, what, deadline)
}

/// Notifies the first live waiter of `list` (false if none, or no hub).
#[inline]
pub(crate) fn wake_one(list: &RefCell<WaitList>) -> bool {
    if list.borrow().is_empty() {
        return false;
    }
    wake_one_in_hub(list)
}

#[inline(never)]
fn wake_one_in_hub(list: &RefCell<WaitList>) -> bool {
    match HUB.try_with(|cell| cell.get().cloned()) {
        Ok(Some(hub)) => hub.wake_one(list),
        _ => false,
    }
}

/// Notifies every waiter of `list`.
#[inline]
pub(crate) fn wake_all(list: &RefCell<WaitList>) {
    if list.borrow().is_empty() {
        return;
    }
    wake_all_in_hub(list);
}

#[inline(never)]
fn wake_all_in_hub(list: &RefCell<WaitList>) {
    if let Ok(Some(hub)) = HUB.try_with(|cell| cell.get().cloned()) {
        hub.wake_all(list);
    }
}

// ---------------------------------------------------------------------------
// The basic blocking calls

/// Suspends the running greenlet for at least `duration`, letting the others
/// run; `sleep(Duration::ZERO)` just lets every other ready greenlet run once
/// (and the timers that are due fire) before this one goes on. With nothing
/// else ready and no timer due it returns without switching to the hub (a
/// few nanoseconds), except every 32nd time, when the hub looks at I/O and
/// other threads, so a loop of `sleep(ZERO)` never starves them.
///
/// # Errors
///
/// [`Error::Exit`] if the task is killed meanwhile, [`Error::Timeout`] if a
/// [`Timeout`](crate::Timeout) scope expires, [`Error::BlockingInHub`] in a
/// hub callback.
///
/// # Examples
///
/// ```
/// use greenlet_hub::sleep;
/// use std::time::{Duration, Instant};
///
/// let start = Instant::now();
/// sleep(Duration::from_millis(2))?;
/// assert!(start.elapsed() >= Duration::from_millis(2));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[inline]
pub fn sleep(duration: Duration) -> Result<(), Error> {
    if duration.is_zero() {
        return yield_now();
    }
    sleep_for(duration)
}

/// `sleep(ZERO)`: one TLS access for the hub, then its yield.
#[inline(never)]
fn yield_now() -> Result<(), Error> {
    Hub::current()?.yield_now()
}

#[inline(never)]
fn sleep_for(duration: Duration) -> Result<(), Error> {
    Hub::with(|hub| {
        let (me, generation) = hub.prepare("sleep")?;
        if let Some(at) = Instant::now().checked_add(duration) {
            let entry = Entry::new(me.clone(), generation);
            hub.timers
                .borrow_mut()
                .push(at, Action::Wake(entry, Wake::Notify));
        }
        let result = hub.park(&me, generation, None).map_err(|i| i.error);
        hub.forget_if_idle(&me);
        result
    })
}

/// Waits until the hub has nothing else to do: no other greenlet is ready
/// and no timer is due (gevent's `idle`).
///
/// # Errors
///
/// As [`sleep`].
///
/// # Examples
///
/// ```
/// use greenlet_hub::{idle, spawn};
/// use std::{cell::Cell, rc::Rc};
///
/// let done = Rc::new(Cell::new(false));
/// let d = done.clone();
/// let _t = spawn(move || { d.set(true); Ok(()) });
/// idle()?; // the task ran first
/// assert!(done.get());
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn idle() -> Result<(), Error> {
    let hub = Hub::current()?;
    wait_in(&hub.idle, "idle", None).map_err(|i| i.error)
}
