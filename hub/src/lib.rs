//! A gevent-style hub over [`greenlet`]: one event loop per thread, run by a
//! hub greenlet; tasks are greenlets spawned as its children; every blocking
//! call is a switch to the hub and back.
//!
//! ```
//! use greenlet_hub::{Queue, sleep, spawn};
//! use std::time::Duration;
//!
//! let q = Queue::new();
//! let producer = {
//!     let q = q.clone();
//!     spawn(move || {
//!         for i in 0..3 {
//!             sleep(Duration::from_millis(1))?; // the hub runs others meanwhile
//!             q.put(i, None)?;
//!         }
//!         Ok("done")
//!     })
//! };
//! let received: Vec<i32> = (0..3).map(|_| q.get(None)).collect::<Result<_, _>>()?;
//! assert_eq!(received, [0, 1, 2]);
//! assert_eq!(producer.get(None)?, "done");
//! # Ok::<(), greenlet_hub::Error>(())
//! ```
//!
//! # The model
//!
//! - **The hub.** Made on first use, one per thread: a greenlet whose parent
//!   is main, running a loop over a ready queue, a timer heap and a mio
//!   poller (epoll). It never busy-waits: with nothing ready it sleeps in
//!   `epoll_wait` until the next timer (rounded up to whole milliseconds),
//!   an I/O event or a wake-up from another thread.
//! - **Blocking.** [`sleep`], [`Event::wait`], [`Queue::get`],
//!   [`Task::join`], ... register the current greenlet where the wake-up
//!   will come from, then switch to the hub; the hub switches back when it
//!   comes. Main blocks the same way, which is how the hub gets to run at
//!   all: spawned tasks start once the current greenlet blocks.
//! - **Tasks.** [`spawn`] makes a greenlet, a child of the hub, and returns
//!   a [`Task`] handle: `join`, `get` (the value, or the task's panic raised
//!   again), `kill`, `link`, `ready`, `successful`.
//! - **Errors.** Every blocking call returns `Result<_, Error>`. Two
//!   variants are requests to propagate with `?`: [`Error::Exit`] (your
//!   task was killed; its cleanup runs as it unwinds) and
//!   [`Error::Timeout`] (a [`Timeout`] scope expired; only that scope may
//!   handle it). Blocking with nothing able to wake you is
//!   [`Error::LoopExit`], never a hang.
//! - **Threads.** Everything is per thread and `!Send`, except
//!   [`AsyncResultSender`], which sets an [`AsyncResult`] from any thread
//!   and wakes the hub through its mio `Waker`. At thread exit the hub kills
//!   the tasks still alive, so their cleanup runs.
//!
//! Everything but the sender is tied to its thread, and the compiler says
//! so:
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<greenlet_hub::Queue<u8>>();
//! ```
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<greenlet_hub::Event>();
//! ```
//!
//! ```
//! fn assert_send_sync<T: Send + Sync>() {}
//! assert_send_sync::<greenlet_hub::AsyncResultSender<u8>>();
//! ```
//!
//! # I/O
//!
//! [`IoSource`] registers any mio event source (sockets, pipes) with the
//! hub's poller; [`IoSource::read_with`] and [`IoSource::write_with`] are the
//! one cooperative I/O helper: try the non-blocking operation, wait for
//! readiness on `WouldBlock`, retry.
//!
//! On it stand std-shaped sockets ([`TcpListener`], [`TcpStream`],
//! [`UdpSocket`]: `Read`/`Write`, timeouts, `try_clone`), so code generic
//! over `Read + Write` runs unchanged on green sockets; a
//! [`StreamServer`] that serves each connection in a task; and, for calls
//! that cannot be made cooperative, a thread pool ([`spawn_blocking`],
//! [`resolve`]) whose results wake the waiting greenlet through the hub.
//!
//! # Differences from gevent
//!
//! - Per-call timeouts are arguments (`None` waits forever; a zero timeout
//!   never blocks) and fail with [`Error::TimedOut`], distinct from a scope's
//!   [`Error::Timeout`], so handling one can never swallow the other.
//! - A killed task has no value, so it is not `successful` and `get` returns
//!   [`Error::Killed`].
//! - A kill or a scope timeout that finds the greenlet already woken by
//!   something else (about to run) is raised at its next blocking call, so
//!   a value handed over by a queue or semaphore is never lost.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod blocking;
mod error;
mod event;
mod hub;
mod io;
mod pool;
mod queue;
mod semaphore;
mod server;
mod task;
mod timeout;
mod timer;
mod wait;
mod waitable;

pub mod crawler;
pub mod demos;
pub mod net;

pub use blocking::{resolve, resolve_host, set_max_blocking_threads, spawn_blocking};
pub use error::{Error, TimeoutId};
pub use event::{AsyncResult, AsyncResultSender, Event};
pub use hub::{ErrorHook, Failure, Stats, idle, set_error_hook, sleep, stats};
pub use io::IoSource;
pub use net::{TcpListener, TcpStream, UdpSocket};
pub use pool::{Group, IMap, Pool};
pub use queue::{Channel, JoinableQueue, Queue};
pub use semaphore::{BoundedSemaphore, Lock, RLock, RLockGuard, Semaphore, SemaphoreGuard};
pub use server::{ServerError, StreamServer, serve_on_threads};
pub use task::{Task, joinall, killall, spawn, spawn_later, try_spawn};
pub use timeout::{Timeout, with_timeout};
pub use waitable::{Waitable, wait};
