//! `Event` (a flag greenlets wait for) and `AsyncResult` (a value or error
//! that greenlets wait for, settable from another thread).
//!
//! Both keep their waiters in a FIFO [`WaitList`] and wake all of them when
//! they become ready. `AsyncResult`'s cross-thread side is an
//! [`AsyncResultSender`]: it writes into a mutex-protected slot shared with
//! the hub, then wakes the hub through its mio `Waker`; the hub moves the
//! value into the local object and wakes the waiters. While any sender is
//! alive the hub counts it as something that can still wake a greenlet (so
//! waiting for it is not a LoopExit), and stops counting it once the last
//! sender is dropped.

use crate::error::Error;
use crate::hub::{self, Hub, Remote, RemoteMessage, RemoteTarget};
use crate::wait::WaitList;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Event

/// A flag that greenlets can wait for (gevent's `Event`). Clones share the
/// flag.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Event, spawn};
///
/// let ready = Event::new();
/// let r = ready.clone();
/// let waiter = spawn(move || { r.wait(None)?; Ok("woken") });
/// let _setter = spawn(move || { ready.set(); Ok(()) });
/// assert_eq!(waiter.get(None)?, "woken");
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Event {
    inner: Rc<EventInner>,
}

#[derive(Default)]
struct EventInner {
    flag: Cell<bool>,
    waiters: RefCell<WaitList>,
}

impl Event {
    /// A new, clear event.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet_hub::Event::new().is_set());
    /// ```
    pub fn new() -> Event {
        Event::default()
    }

    /// Sets the flag and wakes every waiter. Waiters that arrive while it is
    /// set return at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = greenlet_hub::Event::new();
    /// e.set();
    /// e.wait(None)?; // returns at once
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    #[inline]
    pub fn set(&self) {
        self.inner.flag.set(true);
        hub::wake_all(&self.inner.waiters);
    }

    /// Clears the flag. Greenlets already woken by an earlier `set` still
    /// return from their wait.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = greenlet_hub::Event::new();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    #[inline]
    pub fn clear(&self) {
        self.inner.flag.set(false);
    }

    /// Whether the flag is set.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = greenlet_hub::Event::new();
    /// assert!(!e.is_set());
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    #[inline]
    pub fn is_set(&self) -> bool {
        self.inner.flag.get()
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first (a zero timeout never
    /// blocks); [`Error::LoopExit`] if nothing can ever set it; those of any
    /// blocking call ([`Error::Exit`], [`Error::Timeout`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Error, Event};
    /// use std::time::Duration;
    ///
    /// let e = Event::new();
    /// assert!(matches!(e.wait(Duration::from_millis(1)), Err(Error::TimedOut)));
    /// e.set();
    /// e.wait(None)?;
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn wait(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if self.is_set() {
            return Ok(());
        }
        self.wait_unset(timeout.into())
    }

    #[inline(never)]
    fn wait_unset(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = hub::deadline(timeout)?;
        hub::wait_in(&self.inner.waiters, "Event::wait", deadline).map_err(|i| i.error)
    }

    /// Greenlets registered as waiting (for tests and diagnostics).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Event::new().waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .field("waiters", &self.waiter_count())
            .finish()
    }
}

impl crate::waitable::sealed::Sealed for Event {
    fn ready_now(&self) -> bool {
        self.is_set()
    }

    fn waiters(&self) -> &RefCell<WaitList> {
        &self.inner.waiters
    }
}

impl crate::Waitable for Event {}

// ---------------------------------------------------------------------------
// AsyncResult

/// A value, or an error, that greenlets wait for (gevent's `AsyncResult`).
/// It can be set from another OS thread through an [`AsyncResultSender`].
/// Clones share the result.
///
/// # Examples
///
/// ```
/// use greenlet_hub::AsyncResult;
///
/// let result = AsyncResult::new();
/// let sender = result.sender();
/// let worker = std::thread::spawn(move || sender.set(6 * 7));
/// assert_eq!(result.get(None)?, 42); // the hub sleeps until the thread delivers
/// worker.join().unwrap();
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct AsyncResult<T> {
    inner: Rc<ResultInner<T>>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        AsyncResult {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for AsyncResult<T> {
    fn default() -> Self {
        AsyncResult {
            inner: Rc::new(ResultInner {
                value: RefCell::new(None),
                waiters: RefCell::new(WaitList::default()),
                shared: RefCell::new(None),
            }),
        }
    }
}

struct ResultInner<T> {
    value: RefCell<Option<Result<T, Error>>>,
    waiters: RefCell<WaitList>,
    /// The slot the current senders write to.
    shared: RefCell<Option<Arc<Shared<T>>>>,
}

impl<T> ResultInner<T> {
    fn put(&self, value: Result<T, Error>) {
        let old = self.value.replace(Some(value));
        hub::wake_all(&self.waiters);
        drop(old);
    }
}

/// What senders on other threads share with the hub.
struct Shared<T> {
    slot: Mutex<Option<Result<T, Error>>>,
    /// Live senders; once it drops to zero this slot is closed for good.
    senders: AtomicUsize,
    remote: Arc<Remote>,
    id: u64,
}

/// The hub's registration of one `Shared` slot.
struct Target<T> {
    local: Rc<ResultInner<T>>,
    shared: Arc<Shared<T>>,
}

impl<T> RemoteTarget for Target<T> {
    fn deliver(&self) {
        let value = self
            .shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(v) = value {
            self.local.put(v);
        }
    }
}

impl<T: 'static> AsyncResult<T> {
    /// A new, unset result.
    ///
    /// # Examples
    ///
    /// ```
    /// let r: greenlet_hub::AsyncResult<u8> = greenlet_hub::AsyncResult::new();
    /// assert!(!r.ready());
    /// ```
    pub fn new() -> AsyncResult<T> {
        AsyncResult::default()
    }

    /// Stores `value` and wakes every waiter (a later `set` replaces it).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = greenlet_hub::AsyncResult::new();
    /// r.set(1);
    /// assert_eq!(r.get(None)?, 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        self.inner.put(Ok(value));
    }

    /// Stores an error and wakes every waiter: they get it from
    /// [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let r: greenlet_hub::AsyncResult<u8> = greenlet_hub::AsyncResult::new();
    /// r.set_error(greenlet_hub::Error::Empty);
    /// assert!(r.ready() && !r.successful());
    /// ```
    pub fn set_error(&self, error: Error) {
        self.inner.put(Err(error));
    }

    /// Whether a value or an error is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = greenlet_hub::AsyncResult::new();
    /// assert!(!r.ready());
    /// r.set(());
    /// assert!(r.ready());
    /// ```
    pub fn ready(&self) -> bool {
        self.inner.value.borrow().is_some()
    }

    /// Whether a value (not an error) is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = greenlet_hub::AsyncResult::new();
    /// r.set("ok");
    /// assert!(r.successful());
    /// ```
    pub fn successful(&self) -> bool {
        matches!(*self.inner.value.borrow(), Some(Ok(_)))
    }

    /// Waits until a value or an error is stored.
    ///
    /// # Errors
    ///
    /// As [`Event::wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let r: greenlet_hub::AsyncResult<u8> = greenlet_hub::AsyncResult::new();
    /// assert!(r.wait(Duration::from_millis(1)).is_err());
    /// r.set(3);
    /// r.wait(None)?;
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn wait(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        if self.ready() {
            return Ok(());
        }
        let deadline = hub::deadline(timeout.into())?;
        hub::wait_in(&self.inner.waiters, "AsyncResult::get", deadline).map_err(|i| i.error)
    }

    /// Waits, then returns a copy of the value, or the stored error.
    ///
    /// # Errors
    ///
    /// As [`Event::wait`], then the stored error.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{AsyncResult, Error};
    ///
    /// let r: AsyncResult<u8> = AsyncResult::new();
    /// r.set_error(Error::failed(std::fmt::Error));
    /// assert!(matches!(r.get(None), Err(Error::Failed(_))));
    /// ```
    pub fn get(&self, timeout: impl Into<Option<Duration>>) -> Result<T, Error>
    where
        T: Clone,
    {
        self.wait(timeout)?;
        match &*self.inner.value.borrow() {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => unreachable!("waited until set"),
        }
    }

    /// A handle that sets this result from any thread. While a sender (or a
    /// clone of it) is alive, greenlets waiting here are not considered
    /// stuck: the hub sleeps in `epoll_wait` until the sender delivers or
    /// is dropped.
    ///
    /// # Panics
    ///
    /// If this thread's hub cannot be made (no poller).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = greenlet_hub::AsyncResult::new();
    /// let s = r.sender();
    /// std::thread::spawn(move || s.set("from afar")).join().unwrap();
    /// assert_eq!(r.get(None)?, "from afar");
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn sender(&self) -> AsyncResultSender<T>
    where
        T: Send,
    {
        let mut current = self.inner.shared.borrow_mut();
        if let Some(shared) = &*current {
            // Reuse the slot only while it is open (at least one sender).
            let open = shared
                .senders
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n > 0).then_some(n + 1)
                });
            if open.is_ok() {
                return AsyncResultSender {
                    shared: shared.clone(),
                };
            }
        }
        let hub = Hub::current().unwrap_or_else(|e| panic!("{e}"));
        let id = hub.next_id();
        let shared = Arc::new(Shared {
            slot: Mutex::new(None),
            senders: AtomicUsize::new(1),
            remote: hub.remote.clone(),
            id,
        });
        let target = Rc::new(Target {
            local: self.inner.clone(),
            shared: shared.clone(),
        });
        hub.add_remote_target(id, target);
        *current = Some(shared.clone());
        AsyncResultSender { shared }
    }

    /// Greenlets registered as waiting (for tests and diagnostics).
    ///
    /// # Examples
    ///
    /// ```
    /// let r: greenlet_hub::AsyncResult<u8> = greenlet_hub::AsyncResult::new();
    /// assert_eq!(r.waiter_count(), 0);
    /// ```
    pub fn waiter_count(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

impl<T: 'static> crate::waitable::sealed::Sealed for AsyncResult<T> {
    fn ready_now(&self) -> bool {
        self.ready()
    }

    fn waiters(&self) -> &RefCell<WaitList> {
        &self.inner.waiters
    }
}

impl<T: 'static> crate::Waitable for AsyncResult<T> {}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.value.borrow() {
            None => "unset",
            Some(Ok(_)) => "set",
            Some(Err(_)) => "failed",
        };
        f.debug_struct("AsyncResult")
            .field("state", &format_args!("{state}"))
            .finish()
    }
}

/// Sets an [`AsyncResult`] from any thread (`Send` and `Sync` when `T` is
/// `Send`). Clones write to the same result.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<greenlet_hub::AsyncResultSender<std::rc::Rc<u8>>>();
/// ```
///
/// # Examples
///
/// ```
/// use greenlet_hub::{AsyncResult, Error};
///
/// let r: AsyncResult<i32> = AsyncResult::new();
/// let s = r.sender();
/// std::thread::spawn(move || s.set_error(Error::failed(std::fmt::Error))).join().unwrap();
/// assert!(r.get(None).is_err());
/// ```
pub struct AsyncResultSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> AsyncResultSender<T> {
    /// Delivers `value` (a later delivery replaces it).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = greenlet_hub::AsyncResult::new();
    /// let s = r.sender();
    /// std::thread::spawn(move || s.set(5u8)).join().unwrap();
    /// assert_eq!(r.get(None)?, 5);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        self.deliver(Ok(value));
    }

    /// Delivers an error.
    ///
    /// # Examples
    ///
    /// ```
    /// let r: greenlet_hub::AsyncResult<u8> = greenlet_hub::AsyncResult::new();
    /// let s = r.sender();
    /// std::thread::spawn(move || s.set_error(greenlet_hub::Error::Empty)).join().unwrap();
    /// assert!(matches!(r.get(None), Err(greenlet_hub::Error::Empty)));
    /// ```
    pub fn set_error(&self, error: Error) {
        self.deliver(Err(error));
    }

    fn deliver(&self, value: Result<T, Error>) {
        *self
            .shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(value);
        self.shared
            .remote
            .send(RemoteMessage::Deliver(self.shared.id));
    }
}

impl<T> Clone for AsyncResultSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        AsyncResultSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for AsyncResultSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared
                .remote
                .send(RemoteMessage::Closed(self.shared.id));
        }
    }
}

impl<T> fmt::Debug for AsyncResultSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResultSender")
            .field("id", &self.shared.id)
            .finish()
    }
}
