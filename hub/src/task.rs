//! Tasks: greenlets spawned as children of the hub, with a handle to join,
//! kill, link and read them (gevent's `Greenlet`).
//!
//! A task's record ([`TaskCell`]) holds its waiter, its greenlet, its
//! outcome and the waiters joining it, in one allocation shared by every
//! [`Task`] handle, the hub's ready queue and the hub's task registry.
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
use crate::wait::{Entry, State, WaitList, Waiter, Waits, Wake};
use greenlet::{Greenlet, GreenletExit, SwitchError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub(crate) enum Outcome<T> {
    Pending,
    Value(T),
    /// The value was taken by `get`.
    Taken,
    Failed(Error),
    Killed,
    Panicked {
        payload: Option<Box<dyn Any + Send>>,
        message: String,
    },
}

/// The hub's view of a task of any type.
pub(crate) trait TaskObj: Waits {
    /// Kills the task during shutdown, from the hub: an unstarted task is
    /// dropped, a suspended one gets `GreenletExit` at its pending switch.
    fn shutdown_kill(self: Rc<Self>);
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

pub(crate) struct TaskCell<T> {
    waiter: Waiter,
    slot: Cell<usize>,
    outcome: RefCell<Outcome<T>>,
    joiners: RefCell<WaitList>,
    completions: RefCell<Vec<Completion<T>>>,
    /// When it finished, on the hub's id clock (for `wait`'s order).
    finished_at: Cell<u64>,
}

impl<T: 'static> Waits for TaskCell<T> {
    fn waiter(&self) -> &Waiter {
        &self.waiter
    }
}

impl<T: 'static> TaskObj for TaskCell<T> {
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
    fn is_ready(&self) -> bool {
        !matches!(*self.outcome.borrow(), Outcome::Pending)
    }

    /// Stores the outcome and tells everyone: joiners, links, hooks.
    fn complete(self: &Rc<Self>, outcome: Outcome<T>) {
        *self.outcome.borrow_mut() = outcome;
        self.waiter.invalidate(State::Dead);
        Hub::with_existing(|hub| {
            self.finished_at.set(hub.next_id());
            hub.unregister_task(self.slot.get());
            hub.wake_all(&self.joiners);
        });
        if self.completions.borrow().is_empty() {
            return;
        }
        let completions = std::mem::take(&mut *self.completions.borrow_mut());
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

    fn kill_unstarted(self: &Rc<Self>) {
        self.waiter.invalidate(State::Dead);
        // Dropping the unstarted greenlet drops its body (and the reference
        // to this record that the body holds) without running it and without
        // switching anywhere (hub/CORE_REQUESTS.md, request 3).
        let g = self.waiter.take_greenlet();
        drop(g);
        self.complete(Outcome::Killed);
    }

    fn request_kill(self: &Rc<Self>) {
        let w = &self.waiter;
        match w.state() {
            State::Dead => {}
            _ if !w.is_started() => self.kill_unstarted(),
            State::Blocked => {
                let entry = Entry::new(self.clone(), w.generation());
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
        Ok(Err(e)) => Outcome::Failed(e),
        Err(payload) => {
            let failure = Failure::task_panic(cell.waiter.greenlet_id(), &*payload);
            Hub::with_existing(|hub| hub.report(&failure));
            Outcome::Panicked {
                payload: Some(payload),
                message: failure.message().to_owned(),
            }
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
    let cell = Rc::new(TaskCell {
        waiter: Waiter::new(None, State::Active),
        slot: Cell::new(usize::MAX),
        outcome: RefCell::new(Outcome::Pending),
        joiners: RefCell::new(WaitList::default()),
        completions: RefCell::new(Vec::new()),
        finished_at: Cell::new(0),
    });
    let body_cell = cell.clone();
    let g = Greenlet::builder()
        .parent(hub.greenlet())
        .spawn(move |_: Wake| run_body(body_cell, f))?;
    cell.waiter.set_greenlet(g);
    cell.slot.set(hub.register_task(cell.clone()));
    // An unstarted task waits for its start like any wait, so a kill or
    // shutdown makes every entry of it stale.
    let generation = cell.waiter.begin("start");
    let entry = Entry::new(cell.clone(), generation);
    match (delayed, start) {
        (false, _) => {
            hub.schedule(entry, Wake::Start);
        }
        (true, Some(at)) => hub
            .timers
            .borrow_mut()
            .push(at, Action::Wake(entry, Wake::Start)),
        // A delay too large to represent: it never starts.
        (true, None) => {}
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
            Outcome::Panicked { .. } => "panicked",
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
            Outcome::Failed(e) => Some(e.clone()),
            Outcome::Killed => Some(Error::Killed),
            Outcome::Panicked { message, .. } => Some(Error::Panicked(message.clone())),
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
    pub fn join(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if self.ready() {
            return Ok(());
        }
        let deadline = hub::deadline(timeout.into())?;
        hub::wait_in(&self.cell.joiners, "Task::join", deadline).map_err(|i| i.error)
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
            Outcome::Failed(e) => Err(e.clone()),
            Outcome::Killed => Err(Error::Killed),
            Outcome::Panicked { payload, message } => {
                let payload = payload.take().unwrap_or_else(|| Box::new(message.clone()));
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
        if !self.is_current() {
            self.cell.request_kill();
        } else {
            self.cell.waiter.request_kill_later();
        }
    }

    fn is_current(&self) -> bool {
        self.cell.waiter.state() == State::Active
            && self.cell.waiter.is_started()
            && greenlet::current_id() == self.id()
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
        &self.cell.joiners
    }

    fn ready_order(&self) -> u64 {
        self.cell.finished_at.get()
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
