//! Tasks: greenlets spawned as children of the hub, with a handle to join,
//! kill, link and read them (gevent's `Greenlet`).
//!
//! A task's record ([`TaskCell`]) holds its outcome, its completion
//! callbacks and its waiter, shared by every [`Task`] handle and the hub's
//! task registry; the waiter (shared with the hub's queues) holds its
//! greenlet, the waiters joining it and its registry slot.
//!
//! Records are reused: when the last handle of a finished task goes, its
//! value (if nobody took it) and its dead greenlet are dropped as before,
//! and the record, reset, waits in the hub for the next spawn of the same
//! type, which then allocates nothing of its own (the core pools the
//! greenlet and its stack). A record that anything else still refers to
//! (a queue entry, a `Timeout` owner link) is simply dropped.
//!
//! Invariants:
//!
//! - the body runs inside `catch_unwind`, stores its outcome and returns `()`
//!   to the hub: a task's panic never unwinds into the hub, and the hub's
//!   switch into a task always gets back the one type it waits for;
//! - a task is registered with the hub from spawn until its outcome is
//!   stored, so shutdown can kill it even if nothing else refers to it;
//! - a kill never switches into the task from the killer: an unstarted task
//!   is dropped without running, a blocked one is woken with `Kill` by the
//!   hub, and one that is not blocked gets it at its next blocking call.

use crate::error::Error;
use crate::hub::{self, Failure, Hub};
use crate::timer::Action;
use crate::wait::{Entry, State, WaitList, WaiterRef, Wake};
use greenlet::{Greenlet, GreenletExit, SwitchError};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The rare outcomes are boxed, so that the record stays small (cheap to
/// make and to drop) when `T` is.
pub(crate) enum Outcome<T> {
    Pending,
    Value(T),
    /// The value was taken by `get`.
    Taken,
    Failed(Box<Error>),
    Killed,
    Panicked(Box<Panic>),
}

pub(crate) struct Panic {
    payload: Option<Box<dyn Any + Send>>,
    message: String,
}

/// The hub's view of a task of any type.
pub(crate) trait TaskObj {
    /// The task's waiter record.
    fn waiter_ref(&self) -> &WaiterRef;

    /// Kills the task during shutdown, from the hub: an unstarted task is
    /// dropped, a suspended one gets `GreenletExit` at its pending switch.
    fn shutdown_kill(self: Rc<Self>);

    /// [`Task::kill_nowait`].
    fn kill_nowait(self: Rc<Self>);
}

/// Internal completion hooks (a pool's slot, a group's membership).
type DoneHook = Box<dyn FnOnce()>;

/// A user's completion callback, run in the hub.
type Link<T> = Box<dyn FnOnce(&Task<T>)>;

/// What runs when a task finishes, in the order it was added.
enum Completion<T> {
    /// A user's callback, run in the hub.
    Link(Link<T>),
    /// An internal hook, run at once by whoever finishes the task.
    Hook(DoneHook),
}

/// The completions of a task, in order. The first lives inline, so a task
/// with one (a pool's or group's hook) allocates no list for it.
struct Completions<T> {
    first: Option<Completion<T>>,
    rest: Vec<Completion<T>>,
}

impl<T> Completions<T> {
    const fn new() -> Completions<T> {
        Completions {
            first: None,
            rest: Vec::new(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn push(&mut self, c: Completion<T>) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(c);
        } else {
            self.rest.push(c);
        }
    }

    /// Takes them all, in order.
    fn take(&mut self) -> impl Iterator<Item = Completion<T>> + use<T> {
        let first = self.first.take();
        first.into_iter().chain(std::mem::take(&mut self.rest))
    }
}

/// The typed part of a task. The rest (its greenlet, the waiters joining
/// it, its registry slot) is in its waiter record, which the hub reuses
/// from one task to the next.
pub(crate) struct TaskCell<T> {
    /// Shared with the hub's queues (a thin `Rc`, reached without a
    /// virtual call).
    waiter: WaiterRef,
    outcome: RefCell<Outcome<T>>,
    completions: RefCell<Completions<T>>,
    /// Offers the record to the hub for a later spawn once its last handle
    /// goes (`recycle::<T>`, chosen where `T: 'static` is known).
    recycle: fn(&Rc<TaskCell<T>>),
}

/// Hands a finished task's record, whose last handle is going, to the hub
/// for a later spawn of the same type: its value (if nobody took it) and
/// its dead greenlet are dropped now, as they would be with the record.
fn recycle<T: 'static>(cell: &Rc<TaskCell<T>>) {
    let w = &cell.waiter;
    if !w.task.done.get()
        || Rc::weak_count(cell) != 0
        || Rc::strong_count(w) != 1
        || Rc::weak_count(w) != 0
        || !cell.completions.borrow().is_empty()
    {
        return;
    }
    drop(w.take_greenlet());
    let outcome = std::mem::replace(&mut *cell.outcome.borrow_mut(), Outcome::Pending);
    drop(outcome);
    if w.reset_for_reuse() {
        Hub::with_existing(|hub| hub.keep_spare_task(cell.clone()));
    }
}

impl<T> Drop for TaskCell<T> {
    fn drop(&mut self) {
        // Nothing else refers to a finished task's waiter once its record
        // goes (the record's greenlet, dead or never run, is dropped
        // first): the hub keeps it for the next spawn.
        if Rc::strong_count(&self.waiter) == 1 {
            drop(self.waiter.take_greenlet());
            Hub::with_existing(|hub| hub.recycle_waiter(&self.waiter));
        }
    }
}

impl<T: 'static> TaskObj for TaskCell<T> {
    fn waiter_ref(&self) -> &WaiterRef {
        &self.waiter
    }

    fn kill_nowait(self: Rc<Self>) {
        self.ask_to_exit();
    }

    fn shutdown_kill(self: Rc<Self>) {
        if self.waiter.state() == State::Dead {
            return;
        }
        if !self.waiter.is_started() {
            self.kill_unstarted();
            return;
        }
        if let Some(g) = self.waiter.greenlet()
            && !g.is_dead()
        {
            let _ = g.throw::<GreenletExit, ()>(GreenletExit);
        }
    }
}

impl<T: 'static> TaskCell<T> {
    #[inline]
    fn is_ready(&self) -> bool {
        self.waiter.task.done.get()
    }

    /// Stores the outcome and tells everyone: joiners, links, hooks.
    fn complete(self: &Rc<Self>, outcome: Outcome<T>) {
        let previous = std::mem::replace(&mut *self.outcome.borrow_mut(), outcome);
        // Completed once: what was there is `Pending`, which owns nothing.
        match previous {
            Outcome::Pending => std::mem::forget(previous),
            other => drop(other),
        }
        let task = &self.waiter.task;
        task.done.set(true);
        self.waiter.invalidate(State::Dead);
        Hub::with_existing(|hub| {
            task.finished_at.set(hub.next_id());
            hub.unregister_task(task.slot.get());
            hub.wake_all(&task.joiners);
        });
        if self.completions.borrow().is_empty() {
            return;
        }
        self.run_completions();
    }

    #[cold]
    #[inline(never)]
    fn run_completions(self: &Rc<Self>) {
        let completions = self.completions.borrow_mut().take();
        for c in completions {
            match c {
                Completion::Hook(hook) => hook(),
                Completion::Link(link) => {
                    let task = Task { cell: self.clone() };
                    Hub::with_existing(|hub| hub.call_soon(Box::new(move || link(&task))));
                }
            }
        }
    }

    #[inline(never)]
    fn join_unfinished(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = hub::deadline(timeout)?;
        hub::wait_in(&self.waiter.task.joiners, "Task::join", deadline).map_err(|i| i.error)
    }

    fn kill_unstarted(self: &Rc<Self>) {
        self.waiter.invalidate(State::Dead);
        // Dropping the unstarted greenlet drops its body (and the reference
        // to this record that the body holds) without running it and without
        // switching anywhere (hub/CORE_REQUESTS.md, request 3).
        let g = self.waiter.take_greenlet();
        drop(g);
        self.complete(Outcome::Killed);
    }

    fn is_current(&self) -> bool {
        self.waiter.state() == State::Active
            && self.waiter.is_started()
            && greenlet::current_id() == self.waiter.greenlet_id()
    }

    fn ask_to_exit(self: &Rc<Self>) {
        if !self.is_current() {
            self.request_kill();
        } else {
            self.waiter.request_kill_later();
        }
    }

    fn request_kill(self: &Rc<Self>) {
        let w = &self.waiter;
        match w.state() {
            State::Dead => {}
            _ if !w.is_started() => self.kill_unstarted(),
            State::Blocked => {
                let entry = Entry::new(w.clone(), w.generation());
                Hub::with_existing(|hub| hub.schedule(entry, Wake::Kill));
            }
            State::Scheduled | State::Active => w.request_kill_later(),
        }
    }
}

/// The body of every task's greenlet.
fn run_body<T: 'static, F>(cell: Rc<TaskCell<T>>, f: F) -> Result<(), SwitchError>
where
    F: FnOnce() -> Result<T, Error>,
{
    let outcome = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Outcome::Value(value),
        Ok(Err(Error::Exit)) => Outcome::Killed,
        Ok(Err(e)) => Outcome::Failed(Box::new(e)),
        Err(payload) => {
            let failure = Failure::task_panic(cell.waiter.greenlet_id(), &*payload);
            Hub::with_existing(|hub| hub.report(&failure));
            Outcome::Panicked(Box::new(Panic {
                payload: Some(payload),
                message: failure.message().to_owned(),
            }))
        }
    };
    cell.complete(outcome);
    Ok(())
}

fn spawn_at<T, F>(f: F, start: Option<Instant>, delayed: bool) -> Result<Task<T>, Error>
where
    T: 'static,
    F: FnOnce() -> Result<T, Error> + 'static,
{
    Hub::with(|hub| spawn_in(hub, f, start, delayed))
}

fn spawn_in<T, F>(hub: &Hub, f: F, start: Option<Instant>, delayed: bool) -> Result<Task<T>, Error>
where
    T: 'static,
    F: FnOnce() -> Result<T, Error> + 'static,
{
    let cell = match hub.spare_task::<TaskCell<T>>() {
        Some(cell) => cell,
        None => Rc::new(TaskCell {
            waiter: hub.task_waiter(),
            outcome: RefCell::new(Outcome::Pending),
            completions: RefCell::new(Completions::new()),
            recycle: recycle::<T>,
        }),
    };
    let body_cell = cell.clone();
    let g = Greenlet::builder()
        .parent(hub.greenlet())
        .spawn(move |_: Wake| run_body(body_cell, f))?;
    cell.waiter.set_greenlet(g);
    cell.waiter.task.slot.set(hub.register_task(cell.clone()));
    // An unstarted task waits for its start like any wait, so a kill or
    // shutdown makes every entry of it stale.
    if !delayed {
        // Woken at once: queued like any woken wait.
        let generation = cell.waiter.begin_scheduled("start", Wake::Start);
        hub.push_ready(Entry::new(cell.waiter.clone(), generation));
    } else if let Some(at) = start {
        let generation = cell.waiter.begin("start");
        let entry = Entry::new(cell.waiter.clone(), generation);
        hub.timers
            .borrow_mut()
            .push(at, Action::Wake(entry, Wake::Start));
    } else {
        // A delay too large to represent: it never starts.
        cell.waiter.begin("start");
    }
    Ok(Task { cell })
}

/// Spawns a task: `f` runs in a new greenlet, a child of the hub, once the
/// current greenlet blocks (or yields with `sleep(ZERO)`).
///
/// The body returns `Result<T, Error>`, so `?` propagates the errors of the
/// blocking calls inside it; a body that lets [`Error::Exit`] escape (it
/// was killed) counts as killed.
///
/// # Panics
///
/// If the greenlet's stack cannot be mapped; [`try_spawn`] returns that as
/// an error instead.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{sleep, spawn};
/// use std::time::Duration;
///
/// let t = spawn(|| {
///     sleep(Duration::from_millis(1))?;
///     Ok(6 * 7)
/// });
/// assert_eq!(t.get(None)?, 42);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn spawn<T, F>(f: F) -> Task<T>
where
    T: 'static,
    F: FnOnce() -> Result<T, Error> + 'static,
{
    match spawn_at(f, None, false) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// [`spawn`], returning a failure to make the greenlet as an error.
///
/// # Errors
///
/// [`Error::Spawn`] if the stack cannot be mapped (the message names the
/// cause and the limit to raise).
///
/// # Examples
///
/// ```
/// let t = greenlet_hub::try_spawn(|| Ok("hi"))?;
/// assert_eq!(t.get(None)?, "hi");
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn try_spawn<T, F>(f: F) -> Result<Task<T>, Error>
where
    T: 'static,
    F: FnOnce() -> Result<T, Error> + 'static,
{
    spawn_at(f, None, false)
}

/// Spawns a task that starts no earlier than `delay` from now.
///
/// # Panics
///
/// As [`spawn`].
///
/// # Examples
///
/// ```
/// use greenlet_hub::spawn_later;
/// use std::time::{Duration, Instant};
///
/// let start = Instant::now();
/// let t = spawn_later(Duration::from_millis(2), move || Ok(start.elapsed()));
/// assert!(t.get(None)? >= Duration::from_millis(2));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn spawn_later<T, F>(delay: Duration, f: F) -> Task<T>
where
    T: 'static,
    F: FnOnce() -> Result<T, Error> + 'static,
{
    match spawn_at(f, Instant::now().checked_add(delay), true) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// A handle to a spawned task (gevent's `Greenlet`). Clones share the task.
///
/// Handles are neither `Send` nor `Sync`: a task belongs to its thread's hub.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<greenlet_hub::Task<()>>();
/// ```
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Error, Event, spawn};
///
/// let go = Event::new();
/// let g = go.clone();
/// let t = spawn(move || { g.wait(None)?; Ok("done") });
/// assert!(!t.ready());
/// go.set();
/// t.join(None)?;
/// assert!(t.ready() && t.successful());
/// assert_eq!(t.get(None)?, "done");
/// # Ok::<(), Error>(())
/// ```
pub struct Task<T> {
    cell: Rc<TaskCell<T>>,
}

impl<T> Drop for Task<T> {
    #[inline]
    fn drop(&mut self) {
        if Rc::strong_count(&self.cell) == 1 {
            (self.cell.recycle)(&self.cell);
        }
    }
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task {
            cell: self.cell.clone(),
        }
    }
}

impl<T: 'static> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.cell.outcome.borrow() {
            Outcome::Pending if !self.cell.waiter.is_started() => "unstarted",
            Outcome::Pending => "running",
            Outcome::Value(_) | Outcome::Taken => "successful",
            Outcome::Failed(_) => "failed",
            Outcome::Killed => "killed",
            Outcome::Panicked(_) => "panicked",
        };
        f.debug_struct("Task")
            .field("id", &self.id())
            .field("state", &format_args!("{state}"))
            .finish()
    }
}

impl<T: 'static> Task<T> {
    /// The id of the task's greenlet (unique within the thread).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = greenlet_hub::spawn(|| Ok(()));
    /// let b = greenlet_hub::spawn(|| Ok(()));
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.cell.waiter.greenlet_id()
    }

    /// True once the task has finished: returned, failed, panicked or was
    /// killed.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::spawn(|| Ok(()));
    /// assert!(!t.ready());
    /// t.join(None)?;
    /// assert!(t.ready());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn ready(&self) -> bool {
        self.cell.is_ready()
    }

    /// True if the task finished by returning `Ok`. Unlike gevent, where a
    /// killed greenlet counts as successful with a `GreenletExit` value, a
    /// killed task has no value of type `T`, so it is not successful.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::spawn(|| Err::<(), _>(greenlet_hub::Error::Empty));
    /// t.join(None)?;
    /// assert!(t.ready() && !t.successful());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn successful(&self) -> bool {
        matches!(
            *self.cell.outcome.borrow(),
            Outcome::Value(_) | Outcome::Taken
        )
    }

    /// How the task failed, if it did: its error, [`Error::Killed`], or
    /// [`Error::Panicked`] with the panic's message (gevent's `exception`).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::spawn(|| Ok(1));
    /// t.kill(None)?; // killed before it ever ran
    /// assert!(matches!(t.error(), Some(greenlet_hub::Error::Killed)));
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn error(&self) -> Option<Error> {
        match &*self.cell.outcome.borrow() {
            Outcome::Failed(e) => Some((**e).clone()),
            Outcome::Killed => Some(Error::Killed),
            Outcome::Panicked(p) => Some(Error::Panicked(p.message.clone())),
            _ => None,
        }
    }

    /// Waits until the task has finished, however it finished.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first (a zero timeout never
    /// blocks); [`Error::LoopExit`] if nothing can ever finish it; the
    /// errors of any blocking call ([`Error::Exit`], [`Error::Timeout`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Error, Event, spawn};
    /// use std::time::Duration;
    ///
    /// let never = Event::new();
    /// let n = never.clone();
    /// let t = spawn(move || n.wait(None));
    /// assert!(matches!(t.join(Duration::from_millis(1)), Err(Error::TimedOut)));
    /// t.kill(None)?;
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn join(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if self.ready() {
            return Ok(());
        }
        self.cell.join_unfinished(timeout.into())
    }

    /// Waits for the task and returns its value, moving it out of the task.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join), then: the task's own error,
    /// [`Error::Killed`] if it was killed, [`Error::ValueTaken`] if an
    /// earlier `get` took the value.
    ///
    /// # Panics
    ///
    /// If the task panicked, its panic is raised again here (with the
    /// original payload the first time).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::spawn(|| Ok(String::from("value")));
    /// assert_eq!(t.get(None)?, "value");
    /// assert!(matches!(t.get(None), Err(greenlet_hub::Error::ValueTaken)));
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn get(&self, timeout: impl Into<Option<Duration>>) -> Result<T, Error> {
        self.join(timeout)?;
        let mut outcome = self.cell.outcome.borrow_mut();
        match &mut *outcome {
            Outcome::Value(_) => match std::mem::replace(&mut *outcome, Outcome::Taken) {
                Outcome::Value(v) => Ok(v),
                _ => unreachable!("matched a value"),
            },
            Outcome::Taken => Err(Error::ValueTaken),
            Outcome::Failed(e) => Err((**e).clone()),
            Outcome::Killed => Err(Error::Killed),
            Outcome::Panicked(p) => {
                let payload = p
                    .payload
                    .take()
                    .unwrap_or_else(|| Box::new(p.message.clone()));
                drop(outcome);
                panic::resume_unwind(payload)
            }
            Outcome::Pending => unreachable!("joined"),
        }
    }

    /// Kills the task and waits until it has finished (gevent's `kill`).
    ///
    /// The task gets [`Error::Exit`] at the blocking call it is in (or at
    /// its next one, if it is ready to run); its cleanup runs as the error
    /// propagates. An unstarted task never runs. Killing a finished task
    /// does nothing, and a second kill while the first is pending adds
    /// nothing. Killing the current task returns [`Error::Exit`] at once,
    /// for the caller to propagate.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join): [`Error::TimedOut`] if the task is still
    /// running its cleanup (or swallowed the request) when `timeout` elapses.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{sleep, spawn};
    /// use std::time::Duration;
    ///
    /// let t = spawn(|| { sleep(Duration::from_secs(3600))?; Ok(()) });
    /// greenlet_hub::sleep(Duration::ZERO)?; // let it start and block
    /// t.kill(None)?;
    /// assert!(matches!(t.error(), Some(greenlet_hub::Error::Killed)));
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn kill(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if self.is_current() {
            return Err(Error::Exit);
        }
        self.cell.request_kill();
        self.join(timeout)
    }

    /// Asks the task to exit without waiting for it (gevent's
    /// `kill(block=False)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::spawn(|| Ok(()));
    /// t.kill_nowait(); // unstarted: it is finished at once
    /// assert!(t.ready());
    /// ```
    pub fn kill_nowait(&self) {
        self.cell.ask_to_exit();
    }

    fn is_current(&self) -> bool {
        self.cell.is_current()
    }

    /// The task as its group sees it (the same record, typeless).
    pub(crate) fn as_member(&self) -> Rc<dyn TaskObj> {
        self.cell.clone()
    }

    /// Calls `callback` with this task in the hub once it has finished (at
    /// once, as a hub callback, if it already has). Callbacks run in the
    /// order they were linked; they must not block ([`Error::BlockingInHub`])
    /// and a panic in one is reported to the error hook.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::spawn;
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let seen = Rc::new(Cell::new(0));
    /// let s = seen.clone();
    /// let t = spawn(|| Ok(5));
    /// t.link(move |t| s.set(t.get(None).unwrap()));
    /// t.join(None)?;
    /// greenlet_hub::sleep(std::time::Duration::ZERO)?; // let the hub run the callback
    /// assert_eq!(seen.get(), 5);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn link(&self, callback: impl FnOnce(&Task<T>) + 'static) {
        if self.ready() {
            let task = self.clone();
            if let Ok(hub) = Hub::current() {
                hub.call_soon(Box::new(move || callback(&task)));
            }
        } else {
            self.cell
                .completions
                .borrow_mut()
                .push(Completion::Link(Box::new(callback)));
        }
    }

    /// Runs `hook` when the task finishes, in whatever greenlet finishes it
    /// (internal: pools and groups).
    pub(crate) fn on_done(&self, hook: DoneHook) {
        if self.ready() {
            hook();
        } else {
            self.cell
                .completions
                .borrow_mut()
                .push(Completion::Hook(hook));
        }
    }
}

impl<T: 'static> crate::waitable::sealed::Sealed for Task<T> {
    fn ready_now(&self) -> bool {
        self.ready()
    }

    fn waiters(&self) -> &RefCell<WaitList> {
        &self.cell.waiter.task.joiners
    }

    fn ready_order(&self) -> u64 {
        self.cell.waiter.task.finished_at.get()
    }
}

impl<T: 'static> crate::Waitable for Task<T> {}

/// Waits until `count` of `tasks` (all if `None`) have finished, or
/// `timeout` elapses, and returns the indices of the finished ones
/// (gevent's `joinall`). On a timeout the list is simply shorter.
///
/// # Errors
///
/// Those of any blocking call ([`Error::Exit`], [`Error::Timeout`],
/// [`Error::LoopExit`]), but not a timeout of its own.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{joinall, spawn};
///
/// let tasks: Vec<_> = (0..3).map(|i| spawn(move || Ok(i))).collect();
/// let done = joinall(&tasks, None, None)?;
/// assert_eq!(done.len(), 3);
/// assert_eq!(tasks[2].get(None)?, 2);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn joinall<T: 'static>(
    tasks: &[Task<T>],
    timeout: impl Into<Option<Duration>>,
    count: impl Into<Option<usize>>,
) -> Result<Vec<usize>, Error> {
    let objects: Vec<&dyn crate::Waitable> =
        tasks.iter().map(|t| t as &dyn crate::Waitable).collect();
    crate::waitable::wait(&objects, timeout, count)
}

/// Kills all of `tasks` and waits until they have finished (gevent's
/// `killall`).
///
/// # Errors
///
/// [`Error::TimedOut`] if some are still running when `timeout` elapses;
/// those of any blocking call; [`Error::Exit`] if the current task is one
/// of them (after the others have finished), for it to propagate.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Event, killall, spawn};
///
/// let never = Event::new();
/// let tasks: Vec<_> = (0..3).map(|_| { let n = never.clone(); spawn(move || n.wait(None)) }).collect();
/// killall(&tasks, None)?;
/// assert!(tasks.iter().all(|t| t.ready() && !t.successful()));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn killall<T: 'static>(
    tasks: &[Task<T>],
    timeout: impl Into<Option<Duration>>,
) -> Result<(), Error> {
    let current = greenlet::current_id();
    let others: Vec<Task<T>> = tasks
        .iter()
        .filter(|t| t.id() != current)
        .cloned()
        .collect();
    for t in &others {
        t.kill_nowait();
    }
    let done = joinall(&others, timeout, None)?;
    if done.len() < others.len() {
        return Err(Error::TimedOut);
    }
    if others.len() < tasks.len() {
        // The current task is one of them: it exits too, once the others
        // are done.
        return Err(Error::Exit);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Reuse of task records: a record (and its waiter) serves the next
    //! spawn of its type once its last handle is gone, and nothing of the
    //! finished task leaks into the next one.

    use super::{Task, spawn};
    use crate::{Error, Event, Timeout, sleep};
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    /// Counts its drops.
    struct Tracked(Rc<Cell<u32>>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn a_value_nobody_took_is_dropped_with_the_last_handle_and_the_record_starts_fresh() {
        let drops = Rc::new(Cell::new(0));
        let d = drops.clone();
        let first = spawn(move || Ok(Tracked(d)));
        let second = first.clone();
        first.join(None).unwrap();
        drop(first);
        assert_eq!(drops.get(), 0, "another handle still refers to the task");
        assert!(second.successful());
        drop(second);
        assert_eq!(drops.get(), 1, "the last handle drops the value");
        // The next task of this type reuses the record: it starts unfinished
        // and ends with its own value.
        let go = Event::new();
        let g = go.clone();
        let d = drops.clone();
        let next = spawn(move || {
            g.wait(None)?;
            Ok(Tracked(d))
        });
        assert!(!next.ready());
        assert!(next.error().is_none());
        assert!(matches!(next.join(Duration::ZERO), Err(Error::TimedOut)));
        sleep(Duration::ZERO).unwrap();
        assert!(!next.ready(), "it waits for the event");
        go.set();
        let value = next.get(None).unwrap();
        assert!(next.ready() && next.successful());
        assert_eq!(drops.get(), 1);
        drop(value);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_killed_or_failed_task_leaves_nothing_to_the_next_one() {
        for _ in 0..3 {
            let never = Event::new();
            let n = never.clone();
            let killed: Task<u8> = spawn(move || {
                n.wait(None)?;
                Ok(1)
            });
            sleep(Duration::ZERO).unwrap();
            killed.kill(None).unwrap();
            assert!(matches!(killed.error(), Some(Error::Killed)));
            drop(killed);
            // A kill that arrives once the task is woken stays pending; this
            // task ends without blocking again, so it is never raised.
            let go = Event::new();
            let g = go.clone();
            let pending: Task<u8> = spawn(move || {
                g.wait(None)?;
                Ok(2)
            });
            sleep(Duration::ZERO).unwrap();
            go.set();
            pending.kill_nowait();
            assert_eq!(pending.get(None).unwrap(), 2);
            drop(pending);
            let failed: Task<u8> = spawn(|| Err(Error::Empty));
            failed.join(None).unwrap();
            assert!(matches!(failed.error(), Some(Error::Empty)));
            drop(failed);
            let fine: Task<u8> = spawn(|| {
                sleep(Duration::ZERO)?;
                Ok(3)
            });
            assert_eq!(fine.get(None).unwrap(), 3);
            assert!(fine.successful());
        }
    }

    #[test]
    fn a_task_with_a_scope_and_joiners_hands_on_a_clean_waiter() {
        for round in 0..3 {
            let t: Task<u32> = spawn(move || {
                let _scope = Timeout::new(Duration::from_secs(60));
                sleep(Duration::ZERO)?;
                Ok(round)
            });
            let joiner = {
                let t = t.clone();
                spawn(move || t.get(None))
            };
            assert_eq!(joiner.get(None).unwrap(), round);
            drop(joiner);
            drop(t);
            // Nothing pending is inherited: a zero sleep is not interrupted
            // and the task ends normally.
            let next: Task<u32> = spawn(|| {
                sleep(Duration::ZERO)?;
                Ok(7)
            });
            assert_eq!(next.get(None).unwrap(), 7);
        }
        assert_eq!(crate::stats().tasks, 0);
    }
}
