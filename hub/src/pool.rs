//! `Group` (a set of tasks to join or kill together) and `Pool` (a group
//! with a size limit: `spawn` waits for a free slot), with `map`, `imap`
//! and `imap_unordered` over both.
//!
//! Membership is kept by one completion hook per task: a task frees its
//! pool slot and leaves its group as it finishes, in the greenlet that
//! finishes it. The hook holds the group weakly, so a group and its tasks
//! form no cycle; members are the tasks' own records, seen typeless, so
//! adding one allocates only that hook.

use crate::error::Error;
use crate::hub;
use crate::semaphore::Semaphore;
use crate::task::{Task, TaskObj};
use crate::wait::WaitList;
use crate::waitable::{Waitable, wait};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// A task of any type, as a group sees it.
type Member = Rc<dyn TaskObj>;

struct Inner {
    members: RefCell<Vec<Member>>,
    /// Waiting for the group to be empty.
    empty: RefCell<WaitList>,
    /// A pool's free slots.
    slots: Option<Semaphore>,
    size: Option<usize>,
}

impl Inner {
    /// Makes `task` a member until it finishes; `slot` is the pool slot it
    /// holds, freed as it finishes (at once if it already has).
    fn add<T: 'static>(self: &Rc<Self>, task: &Task<T>, slot: Option<Semaphore>) {
        if task.ready() {
            if let Some(slots) = slot {
                slots.release();
            }
            return;
        }
        let member = task.as_member();
        self.members.borrow_mut().push(member);
        let group: Weak<Inner> = Rc::downgrade(self);
        let id = task.id();
        task.on_done(Box::new(move || {
            if let Some(slots) = slot {
                slots.release();
            }
            let Some(group) = group.upgrade() else { return };
            let removed = {
                let mut members = group.members.borrow_mut();
                members
                    .iter()
                    .position(|m| m.waiter_ref().greenlet_id() == id)
                    .map(|i| members.swap_remove(i))
            };
            drop(removed);
            if group.members.borrow().is_empty() {
                hub::wake_all(&group.empty);
            }
        }));
    }

    fn spawn<T, F>(self: &Rc<Self>, f: F, timeout: Option<Duration>) -> Result<Task<T>, Error>
    where
        T: 'static,
        F: FnOnce() -> Result<T, Error> + 'static,
    {
        if let Some(slots) = &self.slots {
            slots.acquire(timeout)?;
        }
        let task = match crate::task::try_spawn(f) {
            Ok(t) => t,
            Err(e) => {
                if let Some(slots) = &self.slots {
                    slots.release();
                }
                return Err(e);
            }
        };
        self.add(&task, self.slots.clone());
        Ok(task)
    }

    fn join(&self, timeout: Option<Duration>) -> Result<(), Error> {
        if self.members.borrow().is_empty() {
            return Ok(());
        }
        let deadline = hub::deadline(timeout)?;
        while !self.members.borrow().is_empty() {
            hub::wait_in(&self.empty, "Group::join", deadline).map_err(|i| i.error)?;
        }
        Ok(())
    }

    fn kill(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let members: Vec<Member> = self.members.borrow().clone();
        for m in members {
            m.kill_nowait();
        }
        self.join(timeout)
    }
}

/// A set of tasks to join or kill together (gevent's `Group`). Tasks leave
/// it as they finish. Clones share the group.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Group, sleep};
/// use std::time::Duration;
///
/// let group = Group::new();
/// for i in 0..3 {
///     group.spawn(move || { sleep(Duration::from_millis(i))?; Ok(()) });
/// }
/// assert_eq!(group.len(), 3);
/// group.join(None)?;
/// assert!(group.is_empty());
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Clone)]
pub struct Group {
    inner: Rc<Inner>,
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    /// An empty group without a size limit.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Group::new().is_empty());
    /// ```
    pub fn new() -> Group {
        Group {
            inner: Rc::new(Inner {
                members: RefCell::default(),
                empty: RefCell::default(),
                slots: None,
                size: None,
            }),
        }
    }

    /// Spawns a task in the group (never waits).
    ///
    /// # Panics
    ///
    /// As [`spawn`](crate::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet_hub::Group::new();
    /// let t = g.spawn(|| Ok(1));
    /// assert_eq!(g.len(), 1);
    /// assert_eq!(t.get(None)?, 1);
    /// assert!(g.is_empty());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn spawn<T, F>(&self, f: F) -> Task<T>
    where
        T: 'static,
        F: FnOnce() -> Result<T, Error> + 'static,
    {
        self.inner.spawn(f, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Adds a task spawned elsewhere (a finished one is not added).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet_hub::Group::new();
    /// let t = greenlet_hub::spawn(|| Ok(()));
    /// g.add(&t);
    /// g.join(None)?;
    /// assert!(t.ready());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn add<T: 'static>(&self, task: &Task<T>) {
        self.inner.add(task, None);
    }

    /// Tasks in the group (not finished yet).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet_hub::Group::new();
    /// g.spawn(|| Ok(()));
    /// assert_eq!(g.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.members.borrow().len()
    }

    /// True if every task has finished.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Group::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until every task in the group has finished, those added while
    /// waiting included.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first; those of any blocking
    /// call.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet_hub::Group::new();
    /// g.spawn(|| greenlet_hub::sleep(std::time::Duration::from_millis(1)));
    /// g.join(None)?;
    /// assert!(g.is_empty());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn join(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.inner.join(timeout.into())
    }

    /// Kills every task in the group and waits until they have finished.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet_hub::Group::new();
    /// let t = g.spawn(|| greenlet_hub::sleep(std::time::Duration::from_secs(3600)));
    /// g.kill(None)?;
    /// assert!(t.ready() && !t.successful());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn kill(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.inner.kill(timeout.into())
    }

    /// Runs `f` on every item in its own task and returns the results in
    /// order; the first error (or a task's panic) stops it, and the tasks
    /// still running are killed.
    ///
    /// # Errors
    ///
    /// The first error of a task, or of the waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// let squares = greenlet_hub::Group::new().map(|x: u32| Ok(x * x), 1..=4)?;
    /// assert_eq!(squares, [1, 4, 9, 16]);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn map<I, T, F>(&self, f: F, items: I) -> Result<Vec<T>, Error>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        self.imap(f, items).collect()
    }

    /// Like [`map`](Self::map), lazily: an iterator of the results in the
    /// order of the items. On a `Group` every item gets its task as soon as
    /// the first result is asked for (use a [`Pool`] to bound that);
    /// dropping the iterator kills the tasks still running.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = greenlet_hub::Group::new();
    /// let mut results = group.imap(|x: i32| Ok(-x), vec![1, 2]);
    /// assert_eq!(results.next().unwrap()?, -1);
    /// assert_eq!(results.next().unwrap()?, -2);
    /// assert!(results.next().is_none());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn imap<I, T, F>(&self, f: F, items: I) -> IMap<I::IntoIter, T, F>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        IMap::new(self.inner.clone(), f, items.into_iter(), true)
    }

    /// Like [`imap`](Self::imap), but yields each result as soon as its task
    /// finishes.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::sleep;
    /// use std::time::Duration;
    ///
    /// let group = greenlet_hub::Group::new();
    /// let order: Vec<u64> = group
    ///     .imap_unordered(|ms: u64| { sleep(Duration::from_millis(ms))?; Ok(ms) }, [100, 1])
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(order, [1, 100]);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn imap_unordered<I, T, F>(&self, f: F, items: I) -> IMap<I::IntoIter, T, F>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        IMap::new(self.inner.clone(), f, items.into_iter(), false)
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group").field("len", &self.len()).finish()
    }
}

/// A group with a size limit (gevent's `Pool`): at most `size` of its tasks
/// run at once, and [`spawn`](Self::spawn) waits for a free slot.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Pool, sleep};
/// use std::time::Duration;
///
/// let pool = Pool::new(2);
/// for _ in 0..2 {
///     pool.spawn(|| sleep(Duration::from_millis(1)))?;
/// }
/// assert!(pool.full());
/// pool.spawn(|| Ok(()))?; // waits until one of the first two has finished
/// pool.join(None)?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    group: Group,
}

impl Pool {
    /// A pool that runs at most `size` tasks at once.
    ///
    /// # Panics
    ///
    /// If `size` is zero: such a pool could never run anything.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(4);
    /// assert_eq!(pool.free_count(), 4);
    /// ```
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "a Pool needs a size of at least 1");
        let inner = Inner {
            members: RefCell::default(),
            empty: RefCell::default(),
            slots: Some(Semaphore::new(size)),
            size: Some(size),
        };
        Pool {
            group: Group {
                inner: Rc::new(inner),
            },
        }
    }

    /// Spawns a task once a slot is free, waiting for one.
    ///
    /// # Errors
    ///
    /// Those of any blocking call while it waits ([`Error::LoopExit`],
    /// [`Error::Exit`], [`Error::Timeout`]), or [`Error::Spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(1);
    /// let t = pool.spawn(|| Ok("ran"))?;
    /// assert_eq!(t.get(None)?, "ran");
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn spawn<T, F>(&self, f: F) -> Result<Task<T>, Error>
    where
        T: 'static,
        F: FnOnce() -> Result<T, Error> + 'static,
    {
        self.group.inner.spawn(f, None)
    }

    /// [`spawn`](Self::spawn), waiting at most `timeout` for a slot.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if no slot freed in time (a zero timeout never
    /// waits); as `spawn`.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Error, Event, Pool};
    ///
    /// let pool = Pool::new(1);
    /// let never = Event::new();
    /// let n = never.clone();
    /// pool.spawn(move || n.wait(None))?;
    /// assert!(matches!(pool.spawn_timeout(std::time::Duration::ZERO, || Ok(())), Err(Error::TimedOut)));
    /// pool.kill(None)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn spawn_timeout<T, F>(
        &self,
        timeout: impl Into<Option<Duration>>,
        f: F,
    ) -> Result<Task<T>, Error>
    where
        T: 'static,
        F: FnOnce() -> Result<T, Error> + 'static,
    {
        self.group.inner.spawn(f, timeout.into())
    }

    /// The limit.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Pool::new(3).size(), 3);
    /// ```
    pub fn size(&self) -> usize {
        self.group.inner.size.unwrap_or(usize::MAX)
    }

    /// Slots free now.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// pool.spawn(|| Ok(()))?;
    /// assert_eq!(pool.free_count(), 1);
    /// pool.join(None)?;
    /// assert_eq!(pool.free_count(), 2);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn free_count(&self) -> usize {
        self.group
            .inner
            .slots
            .as_ref()
            .map_or(usize::MAX, Semaphore::available)
    }

    /// True if `spawn` would wait.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(1);
    /// assert!(!pool.full());
    /// pool.spawn(|| Ok(()))?;
    /// assert!(pool.full());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn full(&self) -> bool {
        self.free_count() == 0
    }

    /// Waits until a slot is free (without taking it).
    ///
    /// # Errors
    ///
    /// As [`spawn_timeout`](Self::spawn_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(1);
    /// pool.spawn(|| Ok(()))?;
    /// pool.wait_available(None)?; // the task ran and freed its slot
    /// assert!(!pool.full());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn wait_available(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if let Some(slots) = &self.group.inner.slots {
            slots.acquire(timeout)?;
            slots.release();
        }
        Ok(())
    }

    /// Tasks running or waiting to start.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// pool.spawn(|| Ok(()))?;
    /// assert_eq!(pool.len(), 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.group.len()
    }

    /// True if no task is running.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Pool::new(1).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// As [`Group::join`].
    ///
    /// # Errors
    ///
    /// As [`Group::join`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// pool.spawn(|| Ok(()))?;
    /// pool.join(None)?;
    /// assert!(pool.is_empty());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn join(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.group.join(timeout)
    }

    /// As [`Group::kill`].
    ///
    /// # Errors
    ///
    /// As [`Group::join`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// pool.spawn(|| greenlet_hub::sleep(std::time::Duration::from_secs(3600)))?;
    /// pool.kill(None)?;
    /// assert!(pool.is_empty());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn kill(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.group.kill(timeout)
    }

    /// As [`Group::map`], with at most `size` items in flight.
    ///
    /// # Errors
    ///
    /// As [`Group::map`].
    ///
    /// # Examples
    ///
    /// ```
    /// let doubled = greenlet_hub::Pool::new(2).map(|x: i32| Ok(x * 2), [1, 2, 3])?;
    /// assert_eq!(doubled, [2, 4, 6]);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn map<I, T, F>(&self, f: F, items: I) -> Result<Vec<T>, Error>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        self.group.map(f, items)
    }

    /// As [`Group::imap`], with at most `size` items in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// let out: Vec<u8> = pool.imap(|x: u8| Ok(x + 1), [1, 2, 3]).collect::<Result<_, _>>()?;
    /// assert_eq!(out, [2, 3, 4]);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn imap<I, T, F>(&self, f: F, items: I) -> IMap<I::IntoIter, T, F>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        self.group.imap(f, items)
    }

    /// As [`Group::imap_unordered`], with at most `size` items in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(2);
    /// let mut out: Vec<u8> = pool.imap_unordered(|x: u8| Ok(x), [1, 2, 3]).collect::<Result<_, _>>()?;
    /// out.sort();
    /// assert_eq!(out, [1, 2, 3]);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn imap_unordered<I, T, F>(&self, f: F, items: I) -> IMap<I::IntoIter, T, F>
    where
        I: IntoIterator,
        I::Item: 'static,
        T: 'static,
        F: Fn(I::Item) -> Result<T, Error> + 'static,
    {
        self.group.imap_unordered(f, items)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("len", &self.len())
            .finish()
    }
}

/// The iterator of [`Group::imap`] / [`Group::imap_unordered`] (and the
/// pool's): each `next` waits for a result. Dropping it kills the tasks it
/// started that are still running.
pub struct IMap<I, T: 'static, F> {
    group: Rc<Inner>,
    f: Rc<F>,
    input: I,
    in_flight: VecDeque<Task<T>>,
    ordered: bool,
}

impl<I, T, F> IMap<I, T, F>
where
    I: Iterator,
    I::Item: 'static,
    T: 'static,
    F: Fn(I::Item) -> Result<T, Error> + 'static,
{
    fn new(group: Rc<Inner>, f: F, input: I, ordered: bool) -> Self {
        IMap {
            group,
            f: Rc::new(f),
            input,
            in_flight: VecDeque::new(),
            ordered,
        }
    }

    /// Starts tasks until the pool's limit of this iterator's own tasks.
    fn fill(&mut self) -> Result<(), Error> {
        let limit = self.group.size.unwrap_or(usize::MAX);
        while self.in_flight.len() < limit {
            let Some(item) = self.input.next() else { break };
            let f = self.f.clone();
            let task = self.group.spawn(move || f(item), None)?;
            self.in_flight.push_back(task);
        }
        Ok(())
    }
}

impl<I, T, F> Iterator for IMap<I, T, F>
where
    I: Iterator,
    I::Item: 'static,
    T: 'static,
    F: Fn(I::Item) -> Result<T, Error> + 'static,
{
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.ordered {
            let task = self.in_flight.pop_front()?;
            return Some(task.get(None));
        }
        if self.in_flight.is_empty() {
            return None;
        }
        let objects: Vec<&dyn Waitable> =
            self.in_flight.iter().map(|t| t as &dyn Waitable).collect();
        let first = match wait(&objects, None, 1) {
            Ok(ready) => ready[0],
            Err(e) => return Some(Err(e)),
        };
        let task = self.in_flight.remove(first).expect("a ready index");
        Some(task.get(None))
    }
}

impl<I, T: 'static, F> Drop for IMap<I, T, F> {
    fn drop(&mut self) {
        for t in self.in_flight.drain(..) {
            t.kill_nowait();
        }
    }
}

impl<I, T: 'static, F> fmt::Debug for IMap<I, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("in_flight", &self.in_flight.len())
            .field("ordered", &self.ordered)
            .finish()
    }
}
