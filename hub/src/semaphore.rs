//! Counting primitives: `Semaphore`, `BoundedSemaphore`, `Lock`, `RLock`.
//!
//! All of them rest on one counter with a FIFO of waiters and *hand-off*:
//! `release` with a greenlet waiting gives the permit straight to the first
//! one (the counter does not move), so a greenlet that arrives later cannot
//! take it first, and waiters are served in the order they came.
//!
//! Invariant: while permits are available, nobody is waiting (a waiter that
//! timed out and has not run yet may still have a stale entry in the list;
//! release skips it).

use crate::error::Error;
use crate::hub;
use crate::wait::WaitList;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

struct Counter {
    permits: Cell<usize>,
    /// The most permits there can be (bounded kinds).
    bound: Option<usize>,
    waiters: RefCell<WaitList>,
    /// For messages: `Semaphore`, `BoundedSemaphore`, `Lock`, `RLock`.
    name: &'static str,
    what: &'static str,
}

impl Counter {
    fn new(
        permits: usize,
        bound: Option<usize>,
        name: &'static str,
        what: &'static str,
    ) -> Counter {
        Counter {
            permits: Cell::new(permits),
            bound,
            waiters: RefCell::new(WaitList::default()),
            name,
            what,
        }
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        let n = self.permits.get();
        if n > 0 {
            self.permits.set(n - 1);
            true
        } else {
            false
        }
    }

    #[inline]
    fn acquire(&self, timeout: Option<Duration>) -> Result<(), Error> {
        if self.try_acquire() {
            return Ok(());
        }
        self.acquire_slow(timeout)
    }

    #[inline(never)]
    fn acquire_slow(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = hub::deadline(timeout)?;
        match hub::wait_in(&self.waiters, self.what, deadline) {
            // A releaser handed us its permit.
            Ok(()) => Ok(()),
            Err(i) => {
                if i.notified {
                    // Handed a permit, then interrupted: pass it on.
                    self.give_back();
                }
                Err(i.error)
            }
        }
    }

    /// Hands the permit to the first waiter, or puts it back.
    #[inline]
    fn give_back(&self) {
        if self.waiters.borrow().is_empty() || !self.hand_off() {
            self.permits.set(self.permits.get() + 1);
        }
    }

    /// Gives the permit to the first live waiter; false if there is none.
    #[inline(never)]
    fn hand_off(&self) -> bool {
        hub::wake_one(&self.waiters)
    }

    #[inline]
    fn release(&self) -> Result<(), Error> {
        if let Some(bound) = self.bound
            && self.permits.get() >= bound
        {
            return Err(Error::ReleasedTooOften(self.name));
        }
        self.give_back();
        Ok(())
    }
}

// ---------------------------------------------------------------------------

/// A counting semaphore (gevent's `Semaphore`): `acquire` takes one of its
/// permits, waiting in FIFO order while there is none; `release` gives one
/// back (to the first waiter, if any). Clones share the semaphore.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Semaphore, sleep, spawn};
/// use std::time::Duration;
///
/// let sem = Semaphore::new(1);
/// let s = sem.clone();
/// let t = spawn(move || {
///     let _permit = s.guard(None)?; // waits until main releases
///     Ok("got it")
/// });
/// sem.acquire(None)?;
/// sleep(Duration::ZERO)?; // the task waits
/// assert_eq!(sem.waiter_count(), 1);
/// sem.release();
/// assert_eq!(t.get(None)?, "got it");
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    counter: Rc<Counter>,
}

impl Semaphore {
    /// A semaphore with `permits` permits.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Semaphore::new(3).available(), 3);
    /// ```
    pub fn new(permits: usize) -> Semaphore {
        Semaphore {
            counter: Rc::new(Counter::new(
                permits,
                None,
                "Semaphore",
                "Semaphore::acquire",
            )),
        }
    }

    /// Takes a permit, waiting for one if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first (a zero timeout never
    /// blocks); [`Error::LoopExit`] if nobody can ever release; those of
    /// any blocking call ([`Error::Exit`], [`Error::Timeout`]). In every
    /// case no permit is held.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let sem = greenlet_hub::Semaphore::new(1);
    /// sem.acquire(None)?;
    /// assert!(sem.acquire(Duration::from_millis(1)).is_err());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.counter.acquire(timeout.into())
    }

    /// Takes a permit if one is available, without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::Semaphore::new(1);
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.counter.try_acquire()
    }

    /// Gives a permit back: to the first waiter, or to the count.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::Semaphore::new(0);
    /// sem.release();
    /// assert_eq!(sem.available(), 1);
    /// ```
    #[inline]
    pub fn release(&self) {
        self.counter.give_back();
    }

    /// [`acquire`](Self::acquire), returning a guard that releases on drop.
    ///
    /// # Errors
    ///
    /// As `acquire`.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::Semaphore::new(1);
    /// {
    ///     let _permit = sem.guard(None)?;
    ///     assert!(sem.locked());
    /// }
    /// assert!(!sem.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn guard(&self, timeout: impl Into<Option<Duration>>) -> Result<SemaphoreGuard<'_>, Error> {
        self.acquire(timeout)?;
        Ok(SemaphoreGuard {
            counter: &self.counter,
        })
    }

    /// Permits available now (gevent's `counter`).
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::Semaphore::new(2);
    /// assert!(sem.try_acquire());
    /// assert_eq!(sem.available(), 1);
    /// ```
    pub fn available(&self) -> usize {
        self.counter.permits.get()
    }

    /// True if `acquire` would wait.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Semaphore::new(0).locked());
    /// ```
    pub fn locked(&self) -> bool {
        self.available() == 0
    }

    /// Greenlets registered as waiting (for tests and diagnostics).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Semaphore::new(1).waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.counter.waiters.borrow().len()
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .field("waiters", &self.waiter_count())
            .finish()
    }
}

/// Releases a permit of a [`Semaphore`], [`BoundedSemaphore`] or [`Lock`]
/// when dropped.
#[must_use = "the permit is released when the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    counter: &'a Counter,
}

impl Drop for SemaphoreGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Cannot be released too often: the guard holds one permit.
        self.counter.give_back();
    }
}

// ---------------------------------------------------------------------------

/// A semaphore that cannot be released more often than it was acquired
/// (gevent's `BoundedSemaphore`).
///
/// # Examples
///
/// ```
/// use greenlet_hub::{BoundedSemaphore, Error};
///
/// let sem = BoundedSemaphore::new(2);
/// sem.acquire(None)?;
/// sem.release()?;
/// assert!(matches!(sem.release(), Err(Error::ReleasedTooOften("BoundedSemaphore"))));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    counter: Rc<Counter>,
}

impl BoundedSemaphore {
    /// A semaphore with `permits` permits, at most.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::BoundedSemaphore::new(2).available(), 2);
    /// ```
    pub fn new(permits: usize) -> BoundedSemaphore {
        let counter = Counter::new(
            permits,
            Some(permits),
            "BoundedSemaphore",
            "BoundedSemaphore::acquire",
        );
        BoundedSemaphore {
            counter: Rc::new(counter),
        }
    }

    /// As [`Semaphore::acquire`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::BoundedSemaphore::new(1);
    /// sem.acquire(None)?;
    /// assert_eq!(sem.available(), 0);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.counter.acquire(timeout.into())
    }

    /// As [`Semaphore::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::BoundedSemaphore::new(1);
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.counter.try_acquire()
    }

    /// Gives a permit back.
    ///
    /// # Errors
    ///
    /// [`Error::ReleasedTooOften`] if all permits are already back.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::BoundedSemaphore::new(1);
    /// sem.acquire(None)?;
    /// sem.release()?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<(), Error> {
        self.counter.release()
    }

    /// As [`Semaphore::guard`].
    ///
    /// # Errors
    ///
    /// As [`Semaphore::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = greenlet_hub::BoundedSemaphore::new(1);
    /// drop(sem.guard(None)?);
    /// assert_eq!(sem.available(), 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn guard(&self, timeout: impl Into<Option<Duration>>) -> Result<SemaphoreGuard<'_>, Error> {
        self.acquire(timeout)?;
        Ok(SemaphoreGuard {
            counter: &self.counter,
        })
    }

    /// Permits available now.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::BoundedSemaphore::new(1).available(), 1);
    /// ```
    pub fn available(&self) -> usize {
        self.counter.permits.get()
    }

    /// Greenlets registered as waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::BoundedSemaphore::new(1).waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.counter.waiters.borrow().len()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("available", &self.available())
            .finish()
    }
}

// ---------------------------------------------------------------------------

/// A mutual-exclusion lock without an owner (gevent's `Lock`, a bounded
/// semaphore of one): any greenlet may release it, but only while it is
/// held.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Error, Lock};
///
/// let lock = Lock::new();
/// {
///     let _held = lock.lock(None)?;
///     assert!(lock.locked());
/// }
/// assert!(!lock.locked());
/// assert!(matches!(lock.release(), Err(Error::ReleasedTooOften("Lock"))));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    counter: Rc<Counter>,
}

impl Default for Lock {
    fn default() -> Self {
        Lock::new()
    }
}

impl Lock {
    /// An unlocked lock.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet_hub::Lock::new().locked());
    /// ```
    pub fn new() -> Lock {
        Lock {
            counter: Rc::new(Counter::new(1, Some(1), "Lock", "Lock::acquire")),
        }
    }

    /// Takes the lock, waiting (FIFO) while another greenlet holds it.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::Lock::new();
    /// lock.acquire(None)?;
    /// assert!(lock.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.counter.acquire(timeout.into())
    }

    /// Takes the lock if it is free.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::Lock::new();
    /// assert!(lock.try_acquire());
    /// assert!(!lock.try_acquire());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.counter.try_acquire()
    }

    /// Releases the lock (to the first waiter, if any).
    ///
    /// # Errors
    ///
    /// [`Error::ReleasedTooOften`] if it is not locked.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::Lock::new();
    /// lock.acquire(None)?;
    /// lock.release()?;
    /// assert!(!lock.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<(), Error> {
        self.counter.release()
    }

    /// [`acquire`](Self::acquire), returning a guard that releases on drop.
    ///
    /// # Errors
    ///
    /// As `acquire`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::Lock::new();
    /// let held = lock.lock(None)?;
    /// assert!(lock.locked());
    /// drop(held);
    /// assert!(!lock.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn lock(&self, timeout: impl Into<Option<Duration>>) -> Result<SemaphoreGuard<'_>, Error> {
        self.acquire(timeout)?;
        Ok(SemaphoreGuard {
            counter: &self.counter,
        })
    }

    /// Whether the lock is held.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet_hub::Lock::new().locked());
    /// ```
    pub fn locked(&self) -> bool {
        self.counter.permits.get() == 0
    }

    /// Greenlets registered as waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Lock::new().waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.counter.waiters.borrow().len()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.locked())
            .finish()
    }
}

// ---------------------------------------------------------------------------

/// A re-entrant lock (gevent's `RLock`): the greenlet that holds it may take
/// it again, and must release it as many times.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Error, RLock, spawn};
///
/// let lock = RLock::new();
/// lock.acquire(None)?;
/// lock.acquire(None)?; // again: the same greenlet
/// let l = lock.clone();
/// let other = spawn(move || l.release());
/// assert!(matches!(other.get(None), Err(Error::NotOwner)));
/// lock.release()?;
/// lock.release()?;
/// assert!(!lock.locked());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    inner: Rc<RLockInner>,
}

struct RLockInner {
    counter: Counter,
    owner: Cell<Option<u64>>,
    depth: Cell<usize>,
}

impl Default for RLock {
    fn default() -> Self {
        RLock::new()
    }
}

impl RLock {
    /// An unlocked lock.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet_hub::RLock::new().locked());
    /// ```
    pub fn new() -> RLock {
        RLock {
            inner: Rc::new(RLockInner {
                counter: Counter::new(1, Some(1), "RLock", "RLock::acquire"),
                owner: Cell::new(None),
                depth: Cell::new(0),
            }),
        }
    }

    /// Takes the lock (again, if the current greenlet holds it).
    ///
    /// # Errors
    ///
    /// As [`Semaphore::acquire`].
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::RLock::new();
    /// lock.acquire(None)?;
    /// lock.acquire(None)?;
    /// lock.release()?;
    /// assert!(lock.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn acquire(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        let me = greenlet::current_id();
        if self.inner.owner.get() == Some(me) {
            self.inner.depth.set(self.inner.depth.get() + 1);
            return Ok(());
        }
        self.inner.counter.acquire(timeout.into())?;
        self.inner.owner.set(Some(me));
        self.inner.depth.set(1);
        Ok(())
    }

    /// Releases one level; the last one unlocks.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwner`] if the current greenlet does not hold it.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::RLock::new();
    /// assert!(lock.release().is_err()); // not held
    /// lock.acquire(None)?;
    /// lock.release()?;
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn release(&self) -> Result<(), Error> {
        let me = greenlet::current_id();
        if self.inner.owner.get() != Some(me) {
            return Err(Error::NotOwner);
        }
        let depth = self.inner.depth.get() - 1;
        self.inner.depth.set(depth);
        if depth == 0 {
            self.inner.owner.set(None);
            self.inner.counter.release()?;
        }
        Ok(())
    }

    /// [`acquire`](Self::acquire), returning a guard that releases on drop.
    ///
    /// # Errors
    ///
    /// As `acquire`.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = greenlet_hub::RLock::new();
    /// let outer = lock.lock(None)?;
    /// let inner = lock.lock(None)?;
    /// drop(inner);
    /// assert!(lock.locked());
    /// drop(outer);
    /// assert!(!lock.locked());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn lock(&self, timeout: impl Into<Option<Duration>>) -> Result<RLockGuard<'_>, Error> {
        self.acquire(timeout)?;
        Ok(RLockGuard { lock: self })
    }

    /// Whether some greenlet holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet_hub::RLock::new().locked());
    /// ```
    pub fn locked(&self) -> bool {
        self.inner.owner.get().is_some()
    }

    /// Greenlets registered as waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::RLock::new().waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.inner.counter.waiters.borrow().len()
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("owner", &self.inner.owner.get())
            .field("depth", &self.inner.depth.get())
            .finish()
    }
}

/// Releases one level of an [`RLock`] when dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}
