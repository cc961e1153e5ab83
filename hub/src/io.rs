//! Readiness-based cooperative I/O: any mio event source, registered with
//! the hub's poller.
//!
//! Sources are registered once, edge-triggered, for both directions, and
//! never modified afterwards (no `epoll_ctl` per operation). The hub keeps
//! per direction a readiness flag and an event count (a tick, as tokio's
//! `ScheduledIo` does): an event sets the flag, bumps the tick and wakes the
//! greenlets waiting on that direction; an operation that returns
//! `WouldBlock` clears the flag, and so may one that learned that its queue
//! is now empty (a read that did not fill its buffer, a write that was cut
//! short: see [`IoSource::read_with_hint`]; never once the peer has
//! closed). The one helper ([`IoSource::read_with`] /
//! [`IoSource::write_with`]) tries the operation, waits for readiness on
//! `WouldBlock` and retries, so every cooperative socket operation is the
//! plain non-blocking one wrapped in it; when the flag is already clear it
//! waits first, sparing the system call that would only say `WouldBlock`.
//!
//! No wake-up is lost: the flag is cleared only if the tick is still the
//! one read before the operation started, so an event dispatched while the
//! operation ran (an operation that itself switched to the hub) leaves the
//! flag set and the operation is simply tried again. Edge-triggered epoll
//! raises a new edge for anything that arrives after the operation, and the
//! hub only dispatches events when this thread is in it.
//!
//! Only sources with a greenlet waiting on them count as something that can
//! wake a greenlet (as an active watcher does in gevent); an idle
//! registration does not prevent LoopExit.

use crate::error::Error;
use crate::hub::{self, Hub};
use crate::wait::WaitList;
use mio::{Interest, Token};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// One direction (read or write) of a registered source.
struct Readiness {
    /// An event came since the last `WouldBlock` or drained operation: the
    /// next operation may succeed.
    ready: Cell<bool>,
    /// Events dispatched for this direction, wrapping. An operation reads
    /// it before it starts; the flag is cleared after it only if no event
    /// came meanwhile (see [`Readiness::clear_if_unchanged`]).
    tick: Cell<u32>,
    /// The peer closed this direction (or the socket failed): final, so the
    /// direction is never marked drained after it (its edge was seen and
    /// will not come again).
    closed: Cell<bool>,
    waiters: RefCell<WaitList>,
}

impl Readiness {
    fn new() -> Readiness {
        Readiness {
            ready: Cell::new(true),
            tick: Cell::new(0),
            closed: Cell::new(false),
            waiters: RefCell::default(),
        }
    }

    /// An event for this direction: ready, one more tick, wake the waiters.
    fn fire(&self, hub: &Hub) {
        self.ready.set(true);
        self.tick.set(self.tick.get().wrapping_add(1));
        hub.wake_all(&self.waiters);
    }

    /// Clears the flag after an operation that started at `tick` and found
    /// the queue empty (`WouldBlock`, or a drained read or write), unless an
    /// event came since: that event may be for what arrived after the
    /// operation looked, and its edge will not come again.
    fn clear_if_unchanged(&self, tick: u32) {
        if self.tick.get() == tick {
            self.ready.set(false);
        }
    }
}

pub(crate) struct IoState {
    read: Readiness,
    write: Readiness,
}

/// The hub's registered sources, by token.
#[derive(Default)]
pub(crate) struct Sources {
    slots: Vec<Option<Rc<IoState>>>,
    free: Vec<usize>,
    len: usize,
    /// Greenlets waiting for readiness right now.
    waiting: usize,
}

impl Sources {
    fn insert(&mut self, s: Rc<IoState>) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<Rc<IoState>> {
        let s = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        self.free.push(i);
        Some(s)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True if nobody waits for I/O.
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting == 0
    }

    pub(crate) fn clear(&mut self) -> Vec<Rc<IoState>> {
        self.free.clear();
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect()
    }
}

/// An event for `event.token()`: set the flags, bump the ticks, wake the
/// waiters.
pub(crate) fn dispatch(hub: &Hub, event: &mio::event::Event) {
    let state = hub
        .io
        .borrow()
        .slots
        .get(event.token().0)
        .cloned()
        .flatten();
    let Some(state) = state else { return };
    if event.is_read_closed() || event.is_error() {
        state.read.closed.set(true);
    }
    if event.is_write_closed() || event.is_error() {
        state.write.closed.set(true);
    }
    if event.is_readable() || event.is_read_closed() || event.is_error() {
        state.read.fire(hub);
    }
    if event.is_writable() || event.is_write_closed() || event.is_error() {
        state.write.fire(hub);
    }
}

/// An I/O source (a mio socket, pipe, …) registered with this thread's hub,
/// so that greenlets wait for it cooperatively.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{IoSource, spawn};
/// use mio::net::UnixStream;
/// use std::io::{Read, Write};
///
/// let (a, b) = UnixStream::pair().unwrap();
/// let a = IoSource::new(a)?;
/// let b = IoSource::new(b)?;
/// let reader = spawn(move || {
///     let mut buf = [0; 5];
///     let n = a.read_with(None, |mut s| s.read(&mut buf))?; // waits for the writer
///     Ok(buf[..n].to_vec())
/// });
/// b.write_with(None, |mut s| s.write(b"hello"))?;
/// assert_eq!(reader.get(None)?, b"hello");
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct IoSource<S: mio::event::Source> {
    source: S,
    state: Rc<IoState>,
    token: usize,
}

impl<S: mio::event::Source> IoSource<S> {
    /// Registers `source` (which must be in non-blocking mode, as mio's own
    /// types are) with this thread's hub.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the poller refuses it.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// assert_eq!(greenlet_hub::stats().io_sources, 1);
    /// # drop(a);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn new(mut source: S) -> Result<IoSource<S>, Error> {
        let hub = Hub::current()?;
        let state = Rc::new(IoState {
            read: Readiness::new(),
            write: Readiness::new(),
        });
        let token = hub.io.borrow_mut().insert(state.clone());
        let registered = hub.registry(|r| {
            r.register(
                &mut source,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
        });
        if let Err(e) = registered {
            let removed = hub.io.borrow_mut().remove(token);
            drop(removed);
            return Err(Error::from(e));
        }
        Ok(IoSource {
            source,
            state,
            token,
        })
    }

    /// The source.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// assert!(a.get_ref().peer_addr().is_ok());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The source, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// let (a, _b) = mio::net::UnixStream::pair().unwrap();
    /// let mut a = greenlet_hub::IoSource::new(a)?;
    /// assert_eq!(a.get_mut().write(b"x")?, 1);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Waits until the source may be readable (an event since the last
    /// `WouldBlock`).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `timeout` elapses first; those of any blocking
    /// call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{io::Write, time::Duration};
    /// let (a, mut b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// b.write_all(b"x")?;
    /// a.wait_readable(Duration::from_secs(5))?; // registered as ready: no wait
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn wait_readable(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.wait(&self.state.read, "IoSource::wait_readable", timeout.into())
    }

    /// Waits until the source may be writable.
    ///
    /// # Errors
    ///
    /// As [`wait_readable`](Self::wait_readable).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// a.wait_writable(None)?;
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn wait_writable(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        self.wait(&self.state.write, "IoSource::wait_writable", timeout.into())
    }

    fn wait(
        &self,
        dir: &Readiness,
        what: &'static str,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        if dir.ready.get() {
            return Ok(());
        }
        let deadline = hub::deadline(timeout)?;
        park_until_ready(dir, what, deadline)
    }

    /// Runs a non-blocking read operation, waiting for readability and
    /// retrying whenever it returns `WouldBlock` (the cooperative I/O
    /// helper). `timeout` bounds the whole call.
    ///
    /// # Errors
    ///
    /// The operation's own errors; a hub error ([`Error::Exit`],
    /// [`Error::Timeout`], ...) wrapped in an `io::Error` (`TimedOut` kind
    /// for [`Error::TimedOut`]) that converts back into the same [`Error`]
    /// with `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{io::{Read, Write}, time::Duration};
    /// let (a, mut b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// let mut buf = [0; 8];
    /// assert!(a.read_with(Duration::from_millis(1), |mut s| s.read(&mut buf)).is_err()); // nothing yet
    /// b.write_all(b"hi")?;
    /// assert_eq!(a.read_with(None, |mut s| s.read(&mut buf))?, 2);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn read_with<R>(
        &self,
        timeout: impl Into<Option<Duration>>,
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.with(
            &self.state.read,
            "IoSource::read",
            timeout.into(),
            with_no_hint(op),
        )
    }

    /// As [`read_with`](Self::read_with), for a write operation.
    ///
    /// # Errors
    ///
    /// As `read_with`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// let (a, _b) = mio::net::UnixStream::pair().unwrap();
    /// let a = greenlet_hub::IoSource::new(a)?;
    /// assert_eq!(a.write_with(None, |mut s| s.write(b"hey"))?, 3);
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn write_with<R>(
        &self,
        timeout: impl Into<Option<Duration>>,
        op: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        self.with(
            &self.state.write,
            "IoSource::write",
            timeout.into(),
            with_no_hint(op),
        )
    }

    /// As [`read_with`](Self::read_with), for an operation that also says
    /// whether it left the source's queue empty (`(value, drained)`): a read
    /// that filled less than its buffer, or one told by the kernel that
    /// nothing is left (`TCP_INQ`), as tokio does on epoll. The direction is
    /// then marked not ready, so the next operation waits for the next edge
    /// instead of spending a system call on `WouldBlock`.
    ///
    /// Sound because anything that arrives after the operation raises a new
    /// edge, seen at the next poll; an event that came while the operation
    /// ran keeps the direction ready (the tick); a direction whose peer has
    /// closed is never marked drained (its edge was already seen and will
    /// not come again).
    pub(crate) fn read_with_hint<R>(
        &self,
        timeout: Option<Duration>,
        op: impl FnMut(&S) -> io::Result<(R, bool)>,
    ) -> io::Result<R> {
        self.with(&self.state.read, "IoSource::read", timeout, op)
    }

    /// As [`read_with_hint`](Self::read_with_hint), for a write that says
    /// whether it filled the send queue (took less than it was given).
    pub(crate) fn write_with_hint<R>(
        &self,
        timeout: Option<Duration>,
        op: impl FnMut(&S) -> io::Result<(R, bool)>,
    ) -> io::Result<R> {
        self.with(&self.state.write, "IoSource::write", timeout, op)
    }

    fn with<R>(
        &self,
        dir: &Readiness,
        what: &'static str,
        timeout: Option<Duration>,
        mut op: impl FnMut(&S) -> io::Result<(R, bool)>,
    ) -> io::Result<R> {
        // The deadline covers every retry; a zero timeout (`None` here)
        // tries once.
        let deadline = hub::deadline(timeout).ok();
        // No edge since the last `WouldBlock` (or a drained read or write):
        // the operation would fail, so wait first and spare the system call.
        if !dir.ready.get()
            && let Some(deadline) = deadline
        {
            park_until_ready(dir, what, deadline)?;
        }
        loop {
            let tick = dir.tick.get();
            match op(&self.source) {
                Ok((value, drained)) => {
                    if drained && !dir.closed.get() {
                        dir.clear_if_unchanged(tick);
                    }
                    return Ok(value);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dir.clear_if_unchanged(tick);
                    let Some(deadline) = deadline else {
                        return Err(Error::TimedOut.into());
                    };
                    park_until_ready(dir, what, deadline)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The read direction's flag and tick, for tests.
    #[cfg(test)]
    pub(crate) fn read_state(&self) -> (bool, u32) {
        (self.state.read.ready.get(), self.state.read.tick.get())
    }
}

/// An operation that says nothing about the queue it leaves.
fn with_no_hint<S, R>(
    mut op: impl FnMut(&S) -> io::Result<R>,
) -> impl FnMut(&S) -> io::Result<(R, bool)> {
    move |s| op(s).map(|value| (value, false))
}

/// Blocks the running greenlet until the direction is ready again (an
/// event; or the deadline, a scope, a kill end the wait).
fn park_until_ready(
    dir: &Readiness,
    what: &'static str,
    deadline: Option<std::time::Instant>,
) -> Result<(), Error> {
    if dir.ready.get() {
        return Ok(());
    }
    Hub::with(|hub| {
        while !dir.ready.get() {
            hub.io.borrow_mut().waiting += 1;
            let result = hub::wait_in(&dir.waiters, what, deadline);
            hub.io.borrow_mut().waiting -= 1;
            result.map_err(|i| i.error)?;
        }
        Ok(())
    })
}

impl<S: mio::event::Source> Drop for IoSource<S> {
    fn drop(&mut self) {
        let _ = Hub::with_existing(|hub| {
            let _ = hub.registry(|r| r.deregister(&mut self.source));
            let removed = hub.io.borrow_mut().remove(self.token);
            drop(removed);
        });
    }
}

impl<S: mio::event::Source + fmt::Debug> fmt::Debug for IoSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoSource")
            .field("source", &self.source)
            .field("token", &self.token)
            .finish()
    }
}

impl From<Error> for io::Error {
    /// Wraps a hub error; [`Error::TimedOut`] gets the `TimedOut` kind.
    fn from(e: Error) -> io::Error {
        let kind = if matches!(e, Error::TimedOut) {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, e)
    }
}

impl From<io::Error> for Error {
    /// Unwraps a hub error carried by an `io::Error` (so [`Error::Exit`]
    /// survives a trip through `io::Result`); anything else is
    /// [`Error::Io`].
    fn from(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<Error>() {
                Ok(hub_error) => return *hub_error,
                Err(_) => unreachable!("checked above"),
            }
        }
        Error::Io(std::sync::Arc::new(e))
    }
}
