//! The one error type of the hub: what a blocking call, a task handle or a
//! primitive can fail with.
//!
//! Two variants are *requests*, not results, and must be propagated (usually
//! with `?`) so that the greenlet's cleanup runs:
//!
//! - [`Error::Exit`]: the running greenlet is asked to exit (its task was
//!   killed, or the hub is shutting down). It converts to and from
//!   [`greenlet::SwitchError::Exit`], so `?` carries it through bodies that
//!   return either error type.
//! - [`Error::Timeout`]: a [`Timeout`](crate::Timeout) scope expired. Only the
//!   scope it names may swallow it ([`Timeout::is`](crate::Timeout::is)):
//!   handling another one would lose an outer deadline.
//!
//! Everything else is a result: a call's own `timeout` argument elapsing
//! ([`Error::TimedOut`]), a task that was killed, a misuse of a primitive.
//!
//! The type is `Clone + Send + Sync`, so a task's error can be read by every
//! joiner and an error can be set on an [`AsyncResult`](crate::AsyncResult)
//! from another thread.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Identifies one [`Timeout`](crate::Timeout) scope within its thread.
///
/// # Examples
///
/// ```
/// use greenlet_hub::Timeout;
/// use std::time::Duration;
///
/// let a = Timeout::new(Duration::from_secs(1));
/// let b = Timeout::new(Duration::from_secs(1));
/// assert_ne!(a.id(), b.id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeoutId(pub(crate) u64);

impl fmt::Display for TimeoutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a blocking call, a task or a primitive failed with.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Error, Queue};
/// use std::time::Duration;
///
/// let q: Queue<i32> = Queue::new();
/// // The call's own timeout: a result the caller may handle.
/// assert!(matches!(q.get(Duration::from_millis(1)), Err(Error::TimedOut)));
/// // Nothing can ever put into the queue: the hub says so instead of hanging.
/// assert!(matches!(q.get(None), Err(Error::LoopExit(_))));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The `timeout` argument of this call elapsed before it could complete.
    /// Nothing was taken, acquired or left registered.
    TimedOut,
    /// A [`Timeout`](crate::Timeout) scope expired while the greenlet was
    /// blocked inside it (or was about to block). Propagate it unless
    /// [`Timeout::is`](crate::Timeout::is) says it is yours.
    Timeout {
        /// Which scope fired.
        id: TimeoutId,
        /// The duration that scope was created with.
        after: Duration,
    },
    /// The current greenlet is asked to exit: its task was killed, or the
    /// hub is shutting down. Propagate it with `?` so cleanup runs; a task
    /// body that returns it counts as killed.
    Exit,
    /// The task that was joined ended because it was killed (it let
    /// [`Error::Exit`] escape, or was killed before it started).
    Killed,
    /// The task panicked with this message. [`Task::get`](crate::Task::get)
    /// re-raises the panic itself; this variant is what
    /// [`Task::error`](crate::Task::error) and joins of many tasks report.
    Panicked(String),
    /// Blocking with nothing able to wake the greenlet: no ready greenlet,
    /// no timer, no I/O and no other thread can ever end the wait
    /// (gevent's `LoopExit`). The message says who waited on what.
    LoopExit(String),
    /// A blocking call was made in the hub greenlet itself (from a
    /// [`link`](crate::Task::link) callback, say); the hub cannot wait for
    /// itself. Spawn a task to do the blocking work.
    BlockingInHub,
    /// A primitive was released more often than it was acquired; the string
    /// names which (`BoundedSemaphore`, `Lock`, `JoinableQueue::task_done`).
    ReleasedTooOften(&'static str),
    /// An [`RLock`](crate::RLock) was released by a greenlet that does not
    /// own it.
    NotOwner,
    /// A non-blocking get found the queue empty.
    Empty,
    /// A non-blocking put found the queue full.
    Full,
    /// The task's value was already taken by an earlier
    /// [`Task::get`](crate::Task::get).
    ValueTaken,
    /// The task's greenlet could not be created (its stack could not be
    /// mapped); the message names the cause and what to raise.
    Spawn(String),
    /// An I/O error from an [`IoSource`](crate::IoSource) operation or
    /// registration.
    Io(Arc<std::io::Error>),
    /// An application error, carried so that it can cross threads and be
    /// read by several joiners. Made with [`Error::failed`].
    Failed(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The greenlet core reported something the hub did not expect (a
    /// value of the wrong type at a switch, an error thrown by non-hub
    /// code); the message is the core's.
    Switch(String),
}

impl Error {
    /// Wraps an application error.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = greenlet_hub::Error::failed(std::io::Error::other("disk on fire"));
    /// assert_eq!(e.to_string(), "disk on fire");
    /// ```
    pub fn failed<E: std::error::Error + Send + Sync + 'static>(error: E) -> Error {
        Error::Failed(Arc::new(error))
    }

    /// True for [`Error::Exit`], the request that must be propagated.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Error::Exit.is_exit());
    /// assert!(!greenlet_hub::Error::Killed.is_exit());
    /// ```
    pub fn is_exit(&self) -> bool {
        matches!(self, Error::Exit)
    }

    /// True for either kind of timeout: the call's own
    /// ([`Error::TimedOut`]) or a scope's ([`Error::Timeout`]).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet_hub::Error::TimedOut.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::TimedOut | Error::Timeout { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TimedOut => f.write_str("the call timed out"),
            Error::Timeout { id, after } => write!(f, "timeout {id} expired after {after:?}"),
            Error::Exit => f.write_str("the greenlet is asked to exit (GreenletExit)"),
            Error::Killed => f.write_str("the task was killed"),
            Error::Panicked(m) => write!(f, "the task panicked: {m}"),
            Error::LoopExit(m) => write!(f, "LoopExit: {m}"),
            Error::BlockingInHub => f.write_str(
                "cannot block in the hub greenlet (in a link callback or an error hook): \
                 the hub would wait for itself; spawn a task to do blocking work",
            ),
            Error::ReleasedTooOften(what) => {
                write!(f, "{what} was released more times than it was acquired")
            }
            Error::NotOwner => f.write_str("the RLock is not owned by the current greenlet"),
            Error::Empty => f.write_str("the queue is empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::ValueTaken => {
                f.write_str("the task's value was already taken by an earlier get()")
            }
            Error::Spawn(m) => write!(f, "cannot spawn a task: {m}"),
            Error::Io(e) => e.fmt(f),
            Error::Failed(e) => e.fmt(f),
            Error::Switch(m) => write!(f, "unexpected greenlet switch error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(e) => Some(&**e),
            Error::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<greenlet::SwitchError> for Error {
    /// `Exit` stays `Exit`; an `Error` thrown through the core comes back as
    /// itself; anything else becomes [`Error::Switch`].
    fn from(e: greenlet::SwitchError) -> Error {
        match e {
            greenlet::SwitchError::Exit => Error::Exit,
            greenlet::SwitchError::Exited => Error::Killed,
            greenlet::SwitchError::Thrown(payload) => match payload.downcast::<Error>() {
                Ok(e) => *e,
                Err(payload) => {
                    Error::Switch(format!("{:?}", greenlet::SwitchError::Thrown(payload)))
                }
            },
            other => Error::Switch(other.to_string()),
        }
    }
}

impl From<Error> for greenlet::SwitchError {
    /// `Exit` becomes the core's `Exit`, so a killed task's cleanup runs
    /// through bodies written against the core API; anything else is carried
    /// as a thrown `Error` (and converts back losslessly).
    fn from(e: Error) -> greenlet::SwitchError {
        match e {
            Error::Exit => greenlet::SwitchError::Exit,
            other => greenlet::SwitchError::Thrown(Box::new(other)),
        }
    }
}

impl From<greenlet::Error> for Error {
    fn from(e: greenlet::Error) -> Error {
        Error::Spawn(e.to_string())
    }
}
