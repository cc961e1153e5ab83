//! Blocking calls offloaded to a thread pool, and name resolution through it
//! (gevent's `threadpool` and its thread-pool resolver).
//!
//! Some calls cannot be made cooperative: `getaddrinfo`, file I/O, a C
//! library that blocks. [`spawn_blocking`] runs one on a worker thread while
//! the calling greenlet waits on an [`AsyncResult`](crate::AsyncResult); the
//! worker delivers through the hub's cross-thread wake-up (mio's `Waker`),
//! so the other greenlets of the thread keep running meanwhile.
//!
//! Invariants:
//!
//! - one pool per process, made on first use, shared by every hub; workers
//!   are started on demand up to a limit ([`set_max_blocking_threads`],
//!   16 by default) and exit after [`IDLE_EXIT`] without work;
//! - a job always runs to completion, even if its caller stopped waiting
//!   (killed, or a [`Timeout`](crate::Timeout) scope fired): a thread
//!   cannot be interrupted, so its result is dropped on the worker instead;
//! - a job's panic is caught on the worker and reported to the caller as
//!   [`Error::Panicked`]; the worker lives on.

use crate::error::Error;
use crate::event::AsyncResult;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// A worker with nothing to do for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// The default limit on worker threads.
const DEFAULT_MAX_THREADS: usize = 16;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    state: Mutex<State>,
    work: Condvar,
    max_threads: AtomicUsize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
        max_threads: AtomicUsize::new(DEFAULT_MAX_THREADS),
    })
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, starting a worker if none is idle and the limit allows.
    fn submit(&'static self, job: Job) -> Result<(), Error> {
        let mut state = self.lock();
        state.queue.push_back(job);
        if state.idle > state.queue.len() - 1 {
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        if state.threads >= self.max_threads.load(Ordering::Relaxed) {
            // Every worker is busy: the job waits in the queue.
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        let spawned = std::thread::Builder::new()
            .name("greenlet-hub-blocking".into())
            .spawn(move || self.work_loop());
        if let Err(e) = spawned {
            let mut state = self.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody will ever run it: take it back and say why.
                let job = state.queue.pop_back();
                drop(state);
                drop(job);
                return Err(Error::Io(Arc::new(io::Error::new(
                    e.kind(),
                    format!("cannot start a thread for a blocking call: {e}"),
                ))));
            }
        }
        Ok(())
    }

    fn work_loop(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

/// Sets the most worker threads the blocking pool runs at once (for the
/// whole process), returning the previous limit. Jobs beyond it wait in a
/// queue. Lowering it lets extra workers finish their job and exit when
/// idle.
///
/// # Panics
///
/// If `threads` is zero: nothing would ever run.
///
/// # Examples
///
/// ```
/// let previous = greenlet_hub::set_max_blocking_threads(4);
/// greenlet_hub::set_max_blocking_threads(previous);
/// ```
pub fn set_max_blocking_threads(threads: usize) -> usize {
    assert!(threads > 0, "the blocking pool needs at least one thread");
    pool().max_threads.swap(threads, Ordering::Relaxed)
}

/// Runs `f` on a worker thread and waits for its result cooperatively: the
/// calling greenlet blocks, the others of this thread keep running, and the
/// worker's result wakes it through the hub's cross-thread wake-up.
///
/// Use it for calls that block the thread and have no cooperative form
/// (file I/O, `getaddrinfo`, a blocking C library).
///
/// # Errors
///
/// [`Error::Panicked`] with the message if `f` panicked; [`Error::Io`] if
/// no worker thread can be started; those of any blocking call while it
/// waits ([`Error::Exit`], [`Error::Timeout`]): then `f` still runs to its
/// end on the worker and its result is dropped there.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{sleep, spawn, spawn_blocking};
/// use std::time::Duration;
///
/// let ticker = spawn(|| {
///     let mut ticks = 0;
///     for _ in 0..3 {
///         sleep(Duration::from_millis(1))?;
///         ticks += 1;
///     }
///     Ok(ticks)
/// });
/// // The thread sleeps; this thread's hub keeps running the ticker.
/// let answer = spawn_blocking(|| {
///     std::thread::sleep(Duration::from_millis(20));
///     6 * 7
/// })?;
/// assert_eq!(answer, 42);
/// assert_eq!(ticker.get(None)?, 3);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn spawn_blocking<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let done: AsyncResult<()> = AsyncResult::new();
    let sender = done.sender();
    let slot: Arc<Mutex<Option<std::thread::Result<T>>>> = Arc::new(Mutex::new(None));
    let worker_slot = slot.clone();
    pool().submit(Box::new(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        *worker_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        sender.set(());
    }))?;
    done.wait(None)?;
    let result = slot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .expect("the worker stores the result before it wakes us");
    result.map_err(|payload| Error::Panicked(crate::hub::panic_message(&*payload)))
}

/// Resolves `"host:port"` (or `"[v6]:port"`) to socket addresses, like
/// `std::net::ToSocketAddrs` for `&str`, without blocking the thread: a
/// literal address is parsed in place, a name is looked up
/// (`getaddrinfo`) on the blocking pool while other greenlets run.
///
/// # Errors
///
/// The lookup's error (`io::Error`); a hub error while waiting, wrapped so
/// that `?` turns it back into the same [`Error`].
///
/// # Examples
///
/// ```
/// let addrs = greenlet_hub::resolve("localhost:80")?;
/// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
/// assert_eq!(greenlet_hub::resolve("127.0.0.1:7")?, ["127.0.0.1:7".parse().unwrap()]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resolve(host_and_port: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = host_and_port.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let owned = host_and_port.to_owned();
    spawn_blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(owned.as_str()).map(Iterator::collect)
    })?
}

/// Resolves a host name and a port (gevent's `getaddrinfo`), like
/// [`resolve`] for `(host, port)`.
///
/// # Errors
///
/// As [`resolve`].
///
/// # Examples
///
/// ```
/// let addrs = greenlet_hub::resolve_host("localhost", 8080)?;
/// assert!(addrs.iter().any(|a| a.port() == 8080));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resolve_host(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let owned = host.to_owned();
    spawn_blocking(move || {
        std::net::ToSocketAddrs::to_socket_addrs(&(owned.as_str(), port)).map(Iterator::collect)
    })?
}
