//! Queues between greenlets: `Queue` (unbounded or bounded), `JoinableQueue`
//! (with `task_done`/`join`) and the rendezvous `Channel`.
//!
//! Fairness is FIFO on both sides, by hand-off:
//!
//! - a `put` that finds a getter waiting leaves the item in the queue
//!   *reserved* for that getter and wakes it; greenlets that arrive later
//!   only see unreserved items, so they cannot take it first;
//! - a `put` that finds no room waits *with its item*; the `get` that frees
//!   a slot moves the first waiting putter's item into the queue and wakes
//!   that putter (for a `Channel`, with no room at all, the getter takes the
//!   item straight from the putter).
//!
//! Invariants: `reserved <= items.len()`; getters wait only while no
//! unreserved item exists; putters wait only while there is no room and no
//! getter. A wait that ends otherwise (timeout, kill) removes its own
//! registration, and its item for a putter; a getter that was handed an
//! item and is then interrupted before it ran passes the item on.

use crate::error::Error;
use crate::hub::{self, Hub};
use crate::wait::{Entry, WaitList, WaiterRef, Wake};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;
use std::time::Duration;

struct Putter<T> {
    item: T,
    who: WaiterRef,
    generation: u64,
}

struct Inner<T> {
    items: RefCell<VecDeque<T>>,
    /// Items at the front promised to getters that were woken and have not
    /// run yet.
    reserved: Cell<usize>,
    /// `None`: unbounded; `Some(0)`: rendezvous.
    maxsize: Option<usize>,
    getters: RefCell<WaitList>,
    putters: RefCell<VecDeque<Putter<T>>>,
    /// Items put and not yet marked done (JoinableQueue).
    unfinished: Cell<usize>,
    joiners: RefCell<WaitList>,
}

impl<T: 'static> Inner<T> {
    fn new(maxsize: Option<usize>) -> Inner<T> {
        Inner {
            items: RefCell::new(VecDeque::new()),
            reserved: Cell::new(0),
            maxsize,
            getters: RefCell::new(WaitList::default()),
            putters: RefCell::new(VecDeque::new()),
            unfinished: Cell::new(0),
            joiners: RefCell::new(WaitList::default()),
        }
    }

    #[inline]
    fn available(&self) -> usize {
        self.items.borrow().len() - self.reserved.get()
    }

    #[inline]
    fn has_room(&self) -> bool {
        self.maxsize
            .is_none_or(|max| self.items.borrow().len() < max)
    }

    /// Pops the first waiting putter that is still blocked and wakes it; its
    /// item is now accepted. Stale putters met on the way (timed out, not
    /// yet resumed) are dropped with their items.
    #[inline(never)]
    fn accept_putter(&self) -> Option<T> {
        let mut stale = Vec::new();
        let accepted = loop {
            let next = self.putters.borrow_mut().pop_front();
            let Some(p) = next else { break None };
            let entry = Entry::new(p.who.clone(), p.generation);
            if Hub::with_existing(|h| h.schedule(entry, Wake::Notify)).unwrap_or(false) {
                break Some(p.item);
            }
            stale.push(p);
        };
        if accepted.is_some() {
            self.unfinished.set(self.unfinished.get() + 1);
        }
        drop(stale);
        accepted
    }

    /// Takes an item without waiting.
    #[inline]
    fn try_take(&self) -> Option<T> {
        if self.available() > 0 {
            let item = self.items.borrow_mut().pop_front();
            self.refill();
            return item;
        }
        // Every item is promised to someone (or there is no room at all, a
        // channel): take straight from the first waiting putter.
        if self.putters.borrow().is_empty() {
            return None;
        }
        self.accept_putter()
    }

    /// A slot was freed: move the first waiting putter's item in.
    #[inline]
    fn refill(&self) {
        if !self.putters.borrow().is_empty() && self.has_room() {
            self.refill_from_putter();
        }
    }

    #[inline(never)]
    fn refill_from_putter(&self) {
        if let Some(item) = self.accept_putter() {
            self.items.borrow_mut().push_back(item);
        }
    }

    #[inline]
    fn get(&self, timeout: Option<Duration>) -> Result<T, Error> {
        if let Some(item) = self.try_take() {
            return Ok(item);
        }
        self.get_slow(timeout)
    }

    #[inline(never)]
    fn get_slow(&self, timeout: Option<Duration>) -> Result<T, Error> {
        let deadline = hub::deadline(timeout)?;
        match hub::wait_in(&self.getters, "Queue::get", deadline) {
            Ok(()) => {
                // Woken by a put that reserved the front item for us.
                self.reserved.set(self.reserved.get() - 1);
                let item = self
                    .items
                    .borrow_mut()
                    .pop_front()
                    .expect("an item was reserved for this getter");
                self.refill();
                Ok(item)
            }
            Err(i) => {
                if i.notified {
                    // Reserved an item, then interrupted: pass it on.
                    self.reserved.set(self.reserved.get() - 1);
                    if hub::wake_one(&self.getters) {
                        self.reserved.set(self.reserved.get() + 1);
                    }
                }
                Err(i.error)
            }
        }
    }

    /// Puts without waiting; gives the item back if it would have to wait.
    #[inline]
    fn try_put(&self, item: T) -> Result<(), T> {
        if hub::wake_one(&self.getters) {
            self.items.borrow_mut().push_back(item);
            self.reserved.set(self.reserved.get() + 1);
        } else if self.has_room() {
            self.items.borrow_mut().push_back(item);
        } else {
            return Err(item);
        }
        self.unfinished.set(self.unfinished.get() + 1);
        Ok(())
    }

    #[inline]
    fn put(&self, item: T, timeout: Option<Duration>) -> Result<(), Error> {
        match self.try_put(item) {
            Ok(()) => Ok(()),
            Err(item) => self.put_slow(item, timeout),
        }
    }

    #[inline(never)]
    fn put_slow(&self, item: T, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = hub::deadline(timeout)?;
        let hub = Hub::current()?;
        let (me, generation) = hub.prepare("Queue::put")?;
        self.putters.borrow_mut().push_back(Putter {
            item,
            who: me.clone(),
            generation,
        });
        let result = hub.park(&me, generation, deadline);
        if result.is_err() {
            // Still queued unless a getter accepted the item first.
            let mine = {
                let mut putters = self.putters.borrow_mut();
                putters
                    .iter()
                    .rposition(|p| {
                        p.generation == generation && crate::wait::same_waiter(&p.who, &me)
                    })
                    .and_then(|i| putters.remove(i))
            };
            drop(mine);
        }
        hub.forget_if_idle(&me);
        result.map_err(|i| i.error)
    }

    fn task_done(&self) -> Result<(), Error> {
        let n = self.unfinished.get();
        if n == 0 {
            return Err(Error::ReleasedTooOften("JoinableQueue::task_done"));
        }
        self.unfinished.set(n - 1);
        if n == 1 {
            hub::wake_all(&self.joiners);
        }
        Ok(())
    }

    fn join(&self, timeout: Option<Duration>) -> Result<(), Error> {
        if self.unfinished.get() == 0 {
            return Ok(());
        }
        let deadline = hub::deadline(timeout)?;
        while self.unfinished.get() > 0 {
            hub::wait_in(&self.joiners, "JoinableQueue::join", deadline).map_err(|i| i.error)?;
        }
        Ok(())
    }
}

/// A FIFO queue between greenlets (gevent's `Queue`), unbounded or bounded.
/// Clones share the queue.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Queue, spawn};
///
/// let q = Queue::bounded(1);
/// let producer = {
///     let q = q.clone();
///     spawn(move || { for i in 0..3 { q.put(i, None)?; } Ok(()) })
/// };
/// let got: Vec<i32> = (0..3).map(|_| q.get(None)).collect::<Result<_, _>>()?;
/// assert_eq!(got, [0, 1, 2]);
/// producer.join(None)?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct Queue<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T: 'static> Default for Queue<T> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<T: 'static> Queue<T> {
    /// An unbounded queue: `put` never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::Queue::new();
    /// q.put_nowait(1)?; // never full
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn new() -> Queue<T> {
        Queue {
            inner: Rc::new(Inner::new(None)),
        }
    }

    /// A queue of at most `maxsize` items: `put` waits while it is full.
    /// `bounded(0)` is a rendezvous, like [`Channel`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q: greenlet_hub::Queue<u8> = greenlet_hub::Queue::bounded(8);
    /// assert_eq!(q.maxsize(), Some(8));
    /// ```
    pub fn bounded(maxsize: usize) -> Queue<T> {
        Queue {
            inner: Rc::new(Inner::new(Some(maxsize))),
        }
    }

    /// Adds `item` at the back, waiting (FIFO among putters) while the queue
    /// is full. A waiting getter gets it before any greenlet that arrives
    /// later.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first (a zero timeout never
    /// blocks); [`Error::LoopExit`] if nobody can ever get; those of any
    /// blocking call. On an error the item was not put, and is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::Queue::new();
    /// q.put("a", None)?;
    /// assert_eq!(q.get(None)?, "a");
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn put(&self, item: T, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.inner.put(item, timeout.into())
    }

    /// Adds `item` if that needs no waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] (and the item is dropped) otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::Queue::bounded(1);
    /// q.put_nowait(1)?;
    /// assert!(matches!(q.put_nowait(2), Err(greenlet_hub::Error::Full)));
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> Result<(), Error> {
        self.inner.try_put(item).map_err(|_| Error::Full)
    }

    /// Removes and returns the front item, waiting (FIFO among getters)
    /// while there is none.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put); on an error nothing was taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: greenlet_hub::Queue<u8> = greenlet_hub::Queue::new();
    /// assert!(matches!(q.get(Duration::from_millis(1)), Err(greenlet_hub::Error::TimedOut)));
    /// ```
    pub fn get(&self, timeout: impl Into<Option<Duration>>) -> Result<T, Error> {
        self.inner.get(timeout.into())
    }

    /// Returns the front item if that needs no waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let q: greenlet_hub::Queue<u8> = greenlet_hub::Queue::new();
    /// assert!(matches!(q.get_nowait(), Err(greenlet_hub::Error::Empty)));
    /// ```
    pub fn get_nowait(&self) -> Result<T, Error> {
        self.inner.try_take().ok_or(Error::Empty)
    }

    /// Items a getter could take now (items promised to woken getters
    /// excluded).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::Queue::new();
    /// q.put(1, None)?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.inner.available()
    }

    /// True if [`len`](Self::len) is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Queue::<u8>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if a `put` would wait.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::Queue::bounded(1);
    /// q.put(1, None)?;
    /// assert!(q.is_full());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        !self.inner.has_room() && self.inner.getters.borrow().is_empty()
    }

    /// The bound, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Queue::<u8>::new().maxsize(), None);
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.inner.maxsize
    }

    /// Greenlets registered as waiting to get (for tests and diagnostics).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Queue::<u8>::new().getter_count(), 0);
    /// ```
    pub fn getter_count(&self) -> usize {
        self.inner.getters.borrow().len()
    }

    /// Greenlets registered as waiting to put, with their items.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet_hub::Queue::<u8>::new().putter_count(), 0);
    /// ```
    pub fn putter_count(&self) -> usize {
        self.inner.putters.borrow().len()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("items", &self.inner.items.borrow().len())
            .field("maxsize", &self.inner.maxsize)
            .field("getters", &self.inner.getters.borrow().len())
            .field("putters", &self.inner.putters.borrow().len())
            .finish()
    }
}

/// A [`Queue`] that also counts unfinished items: every `put` adds one,
/// [`task_done`](Self::task_done) removes one, and [`join`](Self::join)
/// waits until none is left (gevent's `JoinableQueue`). Dereferences to the
/// queue for `put` and `get`.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{JoinableQueue, spawn};
///
/// let q = JoinableQueue::new();
/// let worker = {
///     let q = q.clone();
///     spawn(move || -> Result<(), greenlet_hub::Error> {
///         loop {
///             let _job: u32 = q.get(None)?;
///             q.task_done()?;
///         }
///     })
/// };
/// for job in 0..5 { q.put(job, None)?; }
/// q.join(None)?; // every job was marked done
/// worker.kill(None)?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T: 'static> Default for JoinableQueue<T> {
    fn default() -> Self {
        JoinableQueue::new()
    }
}

impl<T: 'static> JoinableQueue<T> {
    /// An unbounded joinable queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q: greenlet_hub::JoinableQueue<u8> = greenlet_hub::JoinableQueue::new();
    /// q.join(None)?; // nothing unfinished
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn new() -> JoinableQueue<T> {
        JoinableQueue {
            queue: Queue::new(),
        }
    }

    /// A joinable queue of at most `maxsize` items.
    ///
    /// # Examples
    ///
    /// ```
    /// let q: greenlet_hub::JoinableQueue<u8> = greenlet_hub::JoinableQueue::bounded(2);
    /// assert_eq!(q.maxsize(), Some(2));
    /// ```
    pub fn bounded(maxsize: usize) -> JoinableQueue<T> {
        JoinableQueue {
            queue: Queue::bounded(maxsize),
        }
    }

    /// Marks one item as processed.
    ///
    /// # Errors
    ///
    /// [`Error::ReleasedTooOften`] if more items were marked done than put.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::JoinableQueue::new();
    /// q.put(1, None)?;
    /// q.get(None)?;
    /// q.task_done()?;
    /// assert!(q.task_done().is_err()); // once too often
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<(), Error> {
        self.queue.inner.task_done()
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = greenlet_hub::JoinableQueue::new();
    /// q.put(1, None)?;
    /// assert!(q.join(Duration::from_millis(1)).is_err()); // not done yet
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn join(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.queue.inner.join(timeout.into())
    }

    /// Items put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = greenlet_hub::JoinableQueue::new();
    /// q.put(1, None)?;
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn unfinished(&self) -> usize {
        self.queue.inner.unfinished.get()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.queue)
            .field("unfinished", &self.queue.inner.unfinished.get())
            .finish()
    }
}

/// A rendezvous (gevent's `Channel`): `put` waits until a getter takes the
/// item, and `get` until a putter offers one. Dereferences to a
/// [`Queue`] of size zero.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Channel, spawn};
///
/// let ch = Channel::new();
/// let c = ch.clone();
/// let t = spawn(move || { c.put("hello", None)?; Ok("taken") });
/// assert_eq!(ch.get(None)?, "hello");
/// assert_eq!(t.get(None)?, "taken");
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct Channel<T> {
    queue: Queue<T>,
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel {
            queue: self.queue.clone(),
        }
    }
}

impl<T: 'static> Default for Channel<T> {
    fn default() -> Self {
        Channel::new()
    }
}

impl<T: 'static> Channel<T> {
    /// A new channel.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch: greenlet_hub::Channel<u8> = greenlet_hub::Channel::new();
    /// assert!(ch.put_nowait(1).is_err()); // nobody is waiting to get
    /// ```
    pub fn new() -> Channel<T> {
        Channel {
            queue: Queue::bounded(0),
        }
    }
}

impl<T> Deref for Channel<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("queue", &self.queue)
            .finish()
    }
}
