//! [`StreamServer`]: accept connections and serve each in its own task
//! (gevent's `StreamServer`).
//!
//! One accept loop runs in a task of its own. Each connection is handed to
//! the handler in a new task, through a [`Pool`] when the server has a size
//! limit (the loop then stops accepting while the pool is full, leaving new
//! connections in the kernel's backlog) or a [`Group`] otherwise, so that
//! [`StreamServer::stop`] can wait for the handlers.
//!
//! Invariants:
//!
//! - one connection's failure reaches only its handler: an error returned
//!   by a handler is reported ([`StreamServer::set_error_handler`]) and the
//!   other connections go on;
//! - an `accept` failure never ends the loop: a connection aborted before
//!   it was accepted is skipped, and running out of descriptors (`EMFILE`,
//!   `ENFILE`) or memory is reported and retried after a pause that grows
//!   from 5 ms to 1 s, since the pending connection keeps the listener
//!   readable and retrying at once would spin;
//! - `stop` closes the listener first (no new connection is accepted),
//!   then lets running handlers finish within its timeout, then kills the
//!   rest.

use crate::error::Error;
use crate::event::Event;
use crate::hub::sleep;
use crate::net::{TcpListener, TcpStream, ToSocketAddrs};
use crate::pool::{Group, Pool};
use crate::task::Task;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The shortest and longest pause after an `accept` that failed for want of
/// resources.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// What a [`StreamServer`] reports to its error handler.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// `accept` failed; the server goes on (after a pause for `EMFILE` and
    /// the like).
    Accept(Arc<io::Error>),
    /// A handler returned an error.
    Handler {
        /// The connection's peer.
        peer: SocketAddr,
        /// What the handler returned.
        error: Error,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Accept(e) => write!(f, "accept failed: {e}"),
            ServerError::Handler { peer, error } => {
                write!(f, "the handler of {peer} failed: {error}")
            }
        }
    }
}

type Handler = Rc<dyn Fn(TcpStream, SocketAddr) -> Result<(), Error>>;
type ErrorHandler = Rc<dyn Fn(&ServerError)>;

enum Handlers {
    Group(Group),
    Pool(Pool),
}

struct Inner {
    local_addr: SocketAddr,
    handler: Handler,
    handlers: Handlers,
    on_error: RefCell<Option<ErrorHandler>>,
    listener: RefCell<Option<TcpListener>>,
    accept_loop: RefCell<Option<Task<()>>>,
    stopped: Event,
}

impl Inner {
    fn report(&self, error: &ServerError) {
        let hook = self.on_error.borrow().clone();
        match hook {
            Some(hook) => hook(error),
            None => eprintln!("StreamServer {}: {error}", self.local_addr),
        }
    }
}

/// A TCP server that serves each connection in its own task.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{StreamServer, TcpStream};
/// use std::io::{Read, Write};
///
/// let server = StreamServer::bind("127.0.0.1:0", |mut conn, _peer| {
///     let mut buf = [0; 64];
///     loop {
///         let n = conn.read(&mut buf)?;
///         if n == 0 {
///             return Ok(());
///         }
///         conn.write_all(&buf[..n])?; // echo
///     }
/// })?;
/// server.start()?;
/// let mut client = TcpStream::connect(server.local_addr())?;
/// client.write_all(b"hello")?;
/// let mut reply = [0; 5];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"hello");
/// drop(client);
/// server.stop(None)?; // the handler sees end of file and finishes
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
#[derive(Clone)]
pub struct StreamServer {
    inner: Rc<Inner>,
}

impl StreamServer {
    /// Binds a listener to `addr` and makes a server that calls
    /// `handler(connection, peer)` in a new task for each connection. It
    /// accepts nothing until [`start`](Self::start) or
    /// [`serve_forever`](Self::serve_forever).
    ///
    /// # Errors
    ///
    /// Those of [`TcpListener::bind`].
    ///
    /// # Examples
    ///
    /// See [`StreamServer`].
    pub fn bind<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) -> Result<(), Error> + 'static,
    {
        Ok(StreamServer::new(TcpListener::bind(addr)?, handler))
    }

    /// As [`bind`](Self::bind), with `SO_REUSEPORT`: one server per thread
    /// (each thread with its own hub) on the same port makes a multi-core
    /// server, the kernel spreading connections over them.
    ///
    /// # Errors
    ///
    /// Those of [`TcpListener::bind_reuse_port`].
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::StreamServer;
    /// let a = StreamServer::bind_reuse_port("127.0.0.1:0", |_, _| Ok(()))?;
    /// let port = a.local_addr().port();
    /// let b = std::thread::spawn(move || {
    ///     let b = StreamServer::bind_reuse_port(("127.0.0.1", port), |_, _| Ok(())).unwrap();
    ///     b.local_addr()
    /// });
    /// assert_eq!(b.join().unwrap(), a.local_addr());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_reuse_port<A, F>(addr: A, handler: F) -> io::Result<StreamServer>
    where
        A: ToSocketAddrs,
        F: Fn(TcpStream, SocketAddr) -> Result<(), Error> + 'static,
    {
        Ok(StreamServer::new(
            TcpListener::bind_reuse_port(addr)?,
            handler,
        ))
    }

    /// A server over an existing listener.
    ///
    /// # Panics
    ///
    /// If the listener has no local address (it always has once bound).
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// let server = greenlet_hub::StreamServer::new(listener, |_, _| Ok(()));
    /// assert_eq!(server.local_addr(), addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new<F>(listener: TcpListener, handler: F) -> StreamServer
    where
        F: Fn(TcpStream, SocketAddr) -> Result<(), Error> + 'static,
    {
        let local_addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        StreamServer {
            inner: Rc::new(Inner {
                local_addr,
                handler: Rc::new(handler),
                handlers: Handlers::Group(Group::new()),
                on_error: RefCell::new(None),
                listener: RefCell::new(Some(listener)),
                accept_loop: RefCell::new(None),
                stopped: Event::new(),
            }),
        }
    }

    /// Serves at most `size` connections at once (gevent's `spawn=size`):
    /// while that many handlers run, the server accepts nothing more and new
    /// connections wait in the kernel's backlog.
    ///
    /// # Panics
    ///
    /// If `size` is zero, or the server was started or cloned already.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = greenlet_hub::StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?
    ///     .with_pool_size(100);
    /// assert_eq!(server.pool_size(), Some(100));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_pool_size(self, size: usize) -> StreamServer {
        self.with_pool(Pool::new(size))
    }

    /// Spawns the handlers in `pool` (shared with other work, say).
    ///
    /// # Panics
    ///
    /// If the server was started or cloned already (set the pool first).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = greenlet_hub::Pool::new(8);
    /// let server = greenlet_hub::StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?.with_pool(pool);
    /// assert_eq!(server.pool_size(), Some(8));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_pool(self, pool: Pool) -> StreamServer {
        assert!(
            self.inner.accept_loop.borrow().is_none(),
            "set the pool before starting the server"
        );
        let inner = Rc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("set the pool before cloning the server"));
        StreamServer {
            inner: Rc::new(Inner {
                handlers: Handlers::Pool(pool),
                ..inner
            }),
        }
    }

    /// The size limit, if the server has one.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = greenlet_hub::StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?;
    /// assert_eq!(server.pool_size(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pool_size(&self) -> Option<usize> {
        match &self.inner.handlers {
            Handlers::Group(_) => None,
            Handlers::Pool(p) => Some(p.size()),
        }
    }

    /// Sets what receives the server's failures (accept errors, handlers
    /// that returned an error); by default they are printed on stderr.
    /// Handlers killed by [`stop`](Self::stop) are not failures.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Error, StreamServer, TcpStream};
    /// use std::{cell::RefCell, io::Read, rc::Rc};
    ///
    /// let server = StreamServer::bind("127.0.0.1:0", |_, _| Err(Error::failed(std::fmt::Error)))?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let log = seen.clone();
    /// server.set_error_handler(move |e| log.borrow_mut().push(e.to_string()));
    /// server.start()?;
    /// let mut client = TcpStream::connect(server.local_addr())?;
    /// client.read_to_end(&mut Vec::new())?; // served (and failed): closed
    /// server.stop(None)?;
    /// assert_eq!(seen.borrow().len(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_error_handler(&self, handler: impl Fn(&ServerError) + 'static) {
        *self.inner.on_error.borrow_mut() = Some(Rc::new(handler));
    }

    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// See [`StreamServer`].
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Connections being served now.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = greenlet_hub::StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?;
    /// assert_eq!(server.connections(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connections(&self) -> usize {
        match &self.inner.handlers {
            Handlers::Group(g) => g.len(),
            Handlers::Pool(p) => p.len(),
        }
    }

    /// True between [`start`](Self::start) and [`stop`](Self::stop).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = greenlet_hub::StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?;
    /// assert!(!server.is_started());
    /// server.start()?;
    /// assert!(server.is_started());
    /// server.stop(None)?;
    /// assert!(!server.is_started());
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn is_started(&self) -> bool {
        self.inner.accept_loop.borrow().is_some()
    }

    /// Starts accepting in a task of its own and returns at once; the
    /// connections are served as the current greenlet blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the server was stopped (its listener is closed);
    /// [`Error::Spawn`] if the accept task cannot be made. Starting a
    /// started server does nothing.
    ///
    /// # Examples
    ///
    /// See [`StreamServer`].
    pub fn start(&self) -> Result<(), Error> {
        if self.is_started() {
            return Ok(());
        }
        let Some(listener) = self.inner.listener.borrow_mut().take() else {
            return Err(Error::from(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server was stopped: its listener is closed",
            )));
        };
        let inner = self.inner.clone();
        let task = crate::task::try_spawn(move || accept_loop(&inner, &listener))?;
        *self.inner.accept_loop.borrow_mut() = Some(task);
        Ok(())
    }

    /// Starts (if needed) and blocks until [`stop`](Self::stop) is called
    /// from another greenlet.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); those of any blocking call.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{StreamServer, spawn};
    /// let server = StreamServer::bind("127.0.0.1:0", |_, _| Ok(()))?;
    /// let stopper = server.clone();
    /// spawn(move || stopper.stop(None));
    /// server.serve_forever()?; // returns once stopped
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn serve_forever(&self) -> Result<(), Error> {
        self.start()?;
        self.inner.stopped.wait(None)
    }

    /// Stops: closes the listener (nothing more is accepted), waits up to
    /// `timeout` (`None`: as long as it takes) for the running handlers to
    /// finish, then kills those still running. Unlike gevent, the default is
    /// to wait: pass a timeout to bound it.
    ///
    /// Call it from outside the handlers: a handler that stops its own
    /// server waits for itself until the timeout.
    ///
    /// # Errors
    ///
    /// Those of any blocking call while it waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{StreamServer, TcpStream, sleep};
    /// use std::time::Duration;
    ///
    /// let server = StreamServer::bind("127.0.0.1:0", |_, _| sleep(Duration::from_millis(5)))?;
    /// server.start()?;
    /// let _client = TcpStream::connect(server.local_addr())?;
    /// sleep(Duration::from_millis(1))?; // the handler starts
    /// server.stop(Duration::from_secs(5))?; // and finishes its sleep
    /// assert!(TcpStream::connect(server.local_addr()).is_err()); // closed
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn stop(&self, timeout: impl Into<Option<Duration>>) -> Result<(), Error> {
        let task = self.inner.accept_loop.borrow_mut().take();
        // The listener lives in the accept task: killing it closes it.
        drop(self.inner.listener.borrow_mut().take());
        if let Some(task) = task {
            task.kill(None)?;
        }
        let finished = match &self.inner.handlers {
            Handlers::Group(g) => g.join(timeout),
            Handlers::Pool(p) => p.join(timeout),
        };
        match finished {
            Err(Error::TimedOut) => match &self.inner.handlers {
                Handlers::Group(g) => g.kill(None)?,
                Handlers::Pool(p) => p.kill(None)?,
            },
            other => other?,
        }
        self.inner.stopped.set();
        Ok(())
    }
}

impl fmt::Debug for StreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamServer")
            .field("local_addr", &self.inner.local_addr)
            .field("started", &self.is_started())
            .field("connections", &self.connections())
            .field("pool_size", &self.pool_size())
            .finish()
    }
}

/// True for `accept` errors that mean "out of a resource": retrying at once
/// would spin.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn accept_loop(inner: &Rc<Inner>, listener: &TcpListener) -> Result<(), Error> {
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        if let Handlers::Pool(pool) = &inner.handlers {
            // Accept only what can be served; the rest waits in the backlog.
            pool.wait_available(None)?;
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                let error = Error::from(e);
                let Error::Io(e) = error else {
                    // A kill (stop), a scope: not the listener's failure.
                    return Err(error);
                };
                match e.kind() {
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => continue,
                    _ => {}
                }
                inner.report(&ServerError::Accept(e.clone()));
                if is_resource_exhaustion(&e) {
                    sleep(backoff)?;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                } else {
                    sleep(ACCEPT_BACKOFF.0)?;
                }
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF.0;
        let handler = inner.handler.clone();
        let reporter = Rc::downgrade(inner);
        let serve = move || {
            let result = handler(stream, peer);
            if let Err(error) = &result
                && !error.is_exit()
                && let Some(inner) = reporter.upgrade()
            {
                inner.report(&ServerError::Handler {
                    peer,
                    error: error.clone(),
                });
            }
            result
        };
        match &inner.handlers {
            Handlers::Group(g) => {
                g.spawn(serve);
            }
            Handlers::Pool(p) => {
                p.spawn(serve)?;
            }
        }
    }
}

/// Runs a server on each of `threads` threads, each with its own hub, all
/// on one port through `SO_REUSEPORT`: the kernel spreads the connections
/// over them (gevent's multi-process pre-fork, with threads). `make_handler`
/// runs once on each thread (with its index) and returns that thread's
/// handler; `ready` gets the bound address once every thread listens.
///
/// Blocks the calling thread until every server thread has ended, which
/// they do when `stop` is set (checked every 50 ms).
///
/// # Errors
///
/// The first bind error; [`Error::Panicked`] if a server thread panicked.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{TcpStream, serve_on_threads};
/// use std::io::{Read, Write};
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
///
/// let stop = Arc::new(AtomicBool::new(false));
/// let (tx, rx) = std::sync::mpsc::channel();
/// let flag = stop.clone();
/// let servers = std::thread::spawn(move || {
///     serve_on_threads(2, "127.0.0.1:0", flag, move |addr| tx.send(addr).unwrap(), |_thread| {
///         |mut conn: greenlet_hub::TcpStream, _| {
///             conn.write_all(b"hi")?;
///             Ok(())
///         }
///     })
/// });
/// let addr = rx.recv().unwrap();
/// let mut reply = String::new();
/// TcpStream::connect(addr)?.read_to_string(&mut reply)?;
/// assert_eq!(reply, "hi");
/// stop.store(true, Ordering::SeqCst);
/// servers.join().unwrap()?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn serve_on_threads<A, H, M>(
    threads: usize,
    addr: A,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: impl FnOnce(SocketAddr),
    make_handler: M,
) -> Result<(), Error>
where
    A: std::net::ToSocketAddrs,
    M: Fn(usize) -> H + Send + Sync + 'static,
    H: Fn(TcpStream, SocketAddr) -> Result<(), Error> + 'static,
{
    use std::sync::atomic::Ordering;
    let threads = threads.max(1);
    // Bind the first listener here, in blocking std, to learn the port (the
    // caller may have asked for port 0); the others bind to that port.
    let first = crate::net::bind_std_listener(addr, true)?;
    let addr = first.local_addr()?;
    let make_handler = Arc::new(make_handler);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut first = Some(first);
    let mut joins = Vec::new();
    for index in 0..threads {
        let listener = match first.take() {
            Some(l) => l,
            None => crate::net::bind_std_listener(addr, true)?,
        };
        let make_handler = make_handler.clone();
        let stop = stop.clone();
        let bound_tx = bound_tx.clone();
        joins.push(std::thread::spawn(move || -> Result<(), Error> {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e.into());
                }
            };
            let server = StreamServer::new(listener, make_handler(index));
            server.start()?;
            let _ = bound_tx.send(Ok(()));
            while !stop.load(Ordering::SeqCst) {
                sleep(Duration::from_millis(50))?;
            }
            server.stop(Duration::from_secs(1))
        }));
    }
    drop(bound_tx);
    let mut first_error = None;
    for _ in 0..threads {
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(Error::from(e));
            }
            Err(_) => break,
        }
    }
    if first_error.is_none() {
        ready(addr);
    } else {
        stop.store(true, Ordering::SeqCst);
    }
    for join in joins {
        let outcome = join
            .join()
            .unwrap_or_else(|payload| Err(Error::Panicked(crate::hub::panic_message(&*payload))));
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
