//! Cooperative sockets shaped like `std::net`: [`TcpListener`],
//! [`TcpStream`] and [`UdpSocket`] block the calling greenlet, never the
//! thread, so code written against `Read`/`Write` runs unchanged and
//! concurrently (Rust's answer to gevent's monkey-patched `socket`).
//!
//! Every operation is the plain non-blocking one (a `TcpStream` read may be
//! a `recvmsg` that also asks how much is left queued: see below) run
//! through the hub's one I/O helper ([`IoSource::read_with`] /
//! [`IoSource::write_with`]): try it; on `WouldBlock` wait for readiness
//! through the hub; retry.
//!
//! Invariants:
//!
//! - every descriptor is non-blocking and close-on-exec (mio and socket2
//!   open them with `SOCK_NONBLOCK | SOCK_CLOEXEC`; [`TcpStream::from_std`]
//!   and friends switch adopted ones to non-blocking);
//! - a socket is registered with the hub of the thread that made it, once,
//!   and deregistered when dropped; the types are `!Send`;
//! - timeouts (`set_read_timeout`, ...) are enforced by the hub's timers and
//!   fail with `io::ErrorKind::TimedOut` (std allows `WouldBlock` or
//!   `TimedOut`; this kind also turns back into [`Error::TimedOut`] with
//!   `?`); a handle and its `try_clone`s share them, as std's share the
//!   socket option;
//! - a `TcpStream` read that is known to have emptied the receive queue (it
//!   did not fill its buffer; or, once a read has filled one, the kernel's
//!   `TCP_INQ` count says nothing is left) makes the next read wait for the
//!   next readiness edge instead of trying and failing with `WouldBlock`;
//!   nothing is ever read ahead or buffered in user space;
//! - a hub error met while waiting ([`Error::Exit`] for a killed task,
//!   [`Error::Timeout`] for a scope) travels inside the `io::Error` and
//!   comes back out as itself with `?` into [`Error`].
//!
//! Host names are resolved on the blocking pool ([`crate::resolve`]), so a
//! `connect("localhost:80")` does not block the thread either.

use crate::blocking;
use crate::error::Error;
use crate::io::IoSource;
use inq::Inq;
use std::cell::Cell;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

mod inq;

/// The listen backlog of [`TcpListener::bind`] (mio's and most servers').
const BACKLOG: i32 = 1024;

// ---------------------------------------------------------------------------
// Addresses

/// What names one or more socket addresses: the cooperative counterpart of
/// `std::net::ToSocketAddrs`. Literal addresses convert in place; host names
/// are looked up on the blocking pool ([`crate::resolve`]) so the thread
/// keeps running other greenlets meanwhile.
///
/// Implemented for the same types as std's trait.
///
/// # Examples
///
/// ```
/// use greenlet_hub::net::ToSocketAddrs;
///
/// let addrs = ("localhost", 8080).to_socket_addrs()?;
/// assert!(addrs.iter().all(|a| a.ip().is_loopback()));
/// assert_eq!("127.0.0.1:1".to_socket_addrs()?.len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait ToSocketAddrs {
    /// The addresses, in the order to try them.
    ///
    /// # Errors
    ///
    /// The lookup's error; a hub error while it waits.
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>>;
}

macro_rules! literal_addrs {
    ($($t:ty),*) => {$(
        impl ToSocketAddrs for $t {
            fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
                Ok(std::net::ToSocketAddrs::to_socket_addrs(self)?.collect())
            }
        }
    )*};
}

literal_addrs!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl ToSocketAddrs for str {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        blocking::resolve(self)
    }
}

impl ToSocketAddrs for String {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        blocking::resolve(self)
    }
}

impl ToSocketAddrs for (&str, u16) {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        blocking::resolve_host(self.0, self.1)
    }
}

impl ToSocketAddrs for (String, u16) {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        blocking::resolve_host(&self.0, self.1)
    }
}

impl ToSocketAddrs for [SocketAddr] {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(self.to_vec())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    fn to_socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        (**self).to_socket_addrs()
    }
}

/// Runs `f` on each address until one succeeds, returning the last error
/// (std's `each_addr`). A hub error (kill, scope timeout) stops at once.
fn each_addr<A: ToSocketAddrs + ?Sized, T>(
    addr: &A,
    f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    first_that_works(addr.to_socket_addrs()?, f)
}

/// `f` of each address in turn until one succeeds; the last error if none
/// does. A hub error (a kill, a timeout) stops the search at once.
fn first_that_works<T>(
    addrs: impl IntoIterator<Item = SocketAddr>,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addrs {
        match f(a) {
            Ok(t) => return Ok(t),
            Err(e) if is_hub_error(&e) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

/// A listening std socket on the first of `addr`'s addresses that takes one:
/// non-blocking, close-on-exec, `SO_REUSEADDR`, and `SO_REUSEPORT` when
/// asked; not yet registered with any hub (for a listener bound on one
/// thread and served on another). It resolves with std, blocking: it runs
/// before any hub exists.
pub(crate) fn bind_std_listener(
    addr: impl std::net::ToSocketAddrs,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    first_that_works(addr.to_socket_addrs()?, |a| listen_on(a, reuse_port))
}

fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// True if `e` carries a hub error (a kill, a scope timeout, ...) rather
/// than the operating system's.
fn is_hub_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Error>())
}

fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

/// Read and write timeouts, shared by a socket and its clones.
#[derive(Default)]
struct Timeouts {
    read: Cell<Option<Duration>>,
    write: Cell<Option<Duration>>,
}

impl fmt::Debug for Timeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeouts")
            .field("read", &self.read.get())
            .field("write", &self.write.get())
            .finish()
    }
}

/// What `TcpStream` and `UdpSocket` share: a registered socket whose reads
/// and writes wait at most the timeouts that it shares with its clones.
struct TimedSource<S: mio::event::Source> {
    source: IoSource<S>,
    timeouts: Rc<Timeouts>,
}

impl<S: mio::event::Source> TimedSource<S> {
    /// Registers `socket`, with no timeouts.
    fn new(socket: S) -> io::Result<TimedSource<S>> {
        TimedSource::sharing(socket, Rc::default())
    }

    /// Registers `socket` (a duplicate of this one), sharing the timeouts.
    fn clone_with(&self, socket: S) -> io::Result<TimedSource<S>> {
        TimedSource::sharing(socket, self.timeouts.clone())
    }

    fn sharing(socket: S, timeouts: Rc<Timeouts>) -> io::Result<TimedSource<S>> {
        Ok(TimedSource {
            source: IoSource::new(socket)?,
            timeouts,
        })
    }

    fn get_ref(&self) -> &S {
        self.source.get_ref()
    }

    /// Runs the read operation `op`, waiting within the read timeout.
    fn read<R>(&self, op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.source.read_with(self.timeouts.read.get(), op)
    }

    /// Runs the write operation `op`, waiting within the write timeout.
    fn write<R>(&self, op: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.source.write_with(self.timeouts.write.get(), op)
    }

    /// As [`read`](Self::read), for an operation that also says whether it
    /// left the receive queue empty ([`IoSource::read_with_hint`]).
    fn read_hinted<R>(&self, op: impl FnMut(&S) -> io::Result<(R, bool)>) -> io::Result<R> {
        self.source.read_with_hint(self.timeouts.read.get(), op)
    }

    /// As [`write`](Self::write), for an operation that also says whether
    /// it filled the send queue.
    fn write_hinted<R>(&self, op: impl FnMut(&S) -> io::Result<(R, bool)>) -> io::Result<R> {
        self.source.write_with_hint(self.timeouts.write.get(), op)
    }

    /// Sets the read timeout; a zero duration is refused, as std does.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.timeouts.read.set(timeout);
        Ok(())
    }

    /// Sets the write timeout; a zero duration is refused, as std does.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.timeouts.write.set(timeout);
        Ok(())
    }

    fn read_timeout(&self) -> Option<Duration> {
        self.timeouts.read.get()
    }

    fn write_timeout(&self) -> Option<Duration> {
        self.timeouts.write.get()
    }
}

/// A std socket duplicated (`F_DUPFD_CLOEXEC`), for `try_clone`.
fn duplicate<F: AsFd>(fd: &F) -> io::Result<socket2::Socket> {
    socket2::SockRef::from(fd).try_clone()
}

// ---------------------------------------------------------------------------
// TcpStream

/// A TCP connection whose reads and writes block only the calling greenlet.
/// Shaped like `std::net::TcpStream`: `Read` and `Write` for it and for
/// `&TcpStream` (so one task can read while another writes), `connect`,
/// `shutdown`, `set_nodelay`, timeouts, `try_clone`.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{TcpListener, TcpStream, spawn};
/// use std::io::{Read, Write};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let server = spawn(move || {
///     let (mut conn, _) = listener.accept()?;
///     let mut buf = [0; 4];
///     conn.read_exact(&mut buf)?;
///     conn.write_all(&buf)?; // echo
///     Ok(())
/// });
/// let mut client = TcpStream::connect(addr)?;
/// client.write_all(b"ping")?;
/// let mut reply = [0; 4];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"ping");
/// server.get(None)?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct TcpStream {
    io: TimedSource<mio::net::TcpStream>,
    /// Whether reads learn what they leave queued (`TCP_INQ`).
    inq: Cell<Inq>,
}

impl TcpStream {
    fn new(io: TimedSource<mio::net::TcpStream>) -> TcpStream {
        TcpStream {
            io,
            inq: Cell::new(Inq::Off),
        }
    }

    /// Connects to `addr`, trying each address it resolves to in turn; the
    /// greenlet waits for the handshake, the thread does not.
    ///
    /// # Errors
    ///
    /// The last address's error (`ConnectionRefused` for a closed port,
    /// ...); a hub error while waiting (a kill, a scope timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// assert_eq!(stream.peer_addr()?, listener.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(&addr, |a| TcpStream::connect_to(a, None))
    }

    /// Connects to one address, failing with `TimedOut` if the handshake
    /// takes longer than `timeout`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero timeout (as std); `TimedOut`; as
    /// [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = listener.local_addr()?;
    /// greenlet_hub::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        check_timeout(Some(timeout))?;
        TcpStream::connect_to(*addr, Some(timeout))
    }

    fn connect_to(addr: SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let stream = TcpStream::new(TimedSource::new(mio::net::TcpStream::connect(addr)?)?);
        // Connected once writable with no pending error and a peer (mio's
        // recipe); until then the check is one more `WouldBlock`.
        stream.io.source.write_with(timeout, |s| {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => Err(e),
            }
        })?;
        Ok(stream)
    }

    /// Adopts a connected std stream (made on any thread), switching it to
    /// non-blocking mode and registering it with this thread's hub.
    ///
    /// # Errors
    ///
    /// If the mode cannot be set or the hub refuses the registration.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let std_stream = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let stream = greenlet_hub::TcpStream::from_std(std_stream)?;
    /// assert!(stream.peer_addr().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        Ok(TcpStream::new(TimedSource::new(
            mio::net::TcpStream::from_std(stream),
        )?))
    }

    /// The remote address.
    ///
    /// # Errors
    ///
    /// `NotConnected` once the connection is gone.
    ///
    /// # Examples
    ///
    /// See [`connect`](Self::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// assert!(stream.local_addr()?.ip().is_loopback());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Shuts down the read half, the write half (the peer reads end of
    /// file) or both.
    ///
    /// # Errors
    ///
    /// The operating system's (`NotConnected`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{TcpListener, TcpStream};
    /// use std::{io::Read, net::Shutdown};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server_side, _) = listener.accept()?;
    /// client.shutdown(Shutdown::Write)?;
    /// let mut rest = Vec::new();
    /// assert_eq!(server_side.read_to_end(&mut rest)?, 0); // end of file
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.get_ref().shutdown(how)
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_nodelay(true)?;
    /// assert!(stream.nodelay()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`set_nodelay`](Self::set_nodelay).
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.get_ref().nodelay()
    }

    /// Sets the IP time-to-live.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_ttl(42)?;
    /// assert_eq!(stream.ttl()?, 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }

    /// The IP time-to-live.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`set_ttl`](Self::set_ttl).
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get_ref().ttl()
    }

    /// Takes the socket's pending error (`SO_ERROR`).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// assert!(stream.take_error()?.is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// Sets the timeout of every later read (`None`: wait forever). A read
    /// that times out fails with `io::ErrorKind::TimedOut`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{io::Read, time::Duration};
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let mut stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_read_timeout(Some(Duration::from_millis(5)))?;
    /// let e = stream.read(&mut [0; 8]).unwrap_err(); // the peer says nothing
    /// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.io.set_read_timeout(timeout)
    }

    /// Sets the timeout of every later write (`None`: wait forever).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    /// assert_eq!(stream.write_timeout()?, Some(Duration::from_secs(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.io.set_write_timeout(timeout)
    }

    /// The read timeout.
    ///
    /// # Errors
    ///
    /// Never (std's signature).
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let stream = greenlet_hub::TcpStream::connect(listener.local_addr()?)?;
    /// assert_eq!(stream.read_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.io.read_timeout())
    }

    /// The write timeout.
    ///
    /// # Errors
    ///
    /// Never (std's signature).
    ///
    /// # Examples
    ///
    /// See [`set_write_timeout`](Self::set_write_timeout).
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.io.write_timeout())
    }

    /// Reads without consuming (`MSG_PEEK`), waiting for data like `read`.
    ///
    /// # Errors
    ///
    /// As `read`.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{TcpListener, TcpStream};
    /// use std::io::{Read, Write};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server_side, _) = listener.accept()?;
    /// client.write_all(b"abc")?;
    /// let mut buf = [0; 3];
    /// assert_eq!(server_side.peek(&mut buf)?, 3);
    /// server_side.read_exact(&mut buf)?; // still there
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Never marks the direction drained: the data stays queued.
        self.io.read(|s| s.peek(buf))
    }

    /// A second handle to the same connection (a duplicated descriptor,
    /// registered on its own), sharing the timeouts.
    ///
    /// # Errors
    ///
    /// If the descriptor cannot be duplicated or registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{TcpListener, TcpStream};
    /// use std::io::{Read, Write};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server_side, _) = listener.accept()?;
    /// let mut writer = client.try_clone()?;
    /// writer.write_all(b"x")?;
    /// let mut buf = [0; 1];
    /// server_side.read_exact(&mut buf)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let std_stream: std::net::TcpStream = duplicate(self.io.get_ref())?.into();
        Ok(TcpStream {
            io: self
                .io
                .clone_with(mio::net::TcpStream::from_std(std_stream))?,
            // The same socket, so the same socket option.
            inq: Cell::new(self.inq.get()),
        })
    }

    fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.receive(len, |s, counted| {
            if counted {
                inq::recv(s.as_fd(), &mut [IoSliceMut::new(buf)])
            } else {
                Ok(((&*s).read(buf)?, None))
            }
        })
    }

    fn read_into_vectored(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.receive(len, |s, counted| {
            if counted {
                inq::recv(s.as_fd(), bufs)
            } else {
                Ok(((&*s).read_vectored(bufs)?, None))
            }
        })
    }

    /// Runs a read of at most `len` bytes: `op(stream, counted)` reads
    /// with `recvmsg` and returns the kernel's count of the bytes it left
    /// queued when `counted` (`TCP_INQ` is on), plainly otherwise. The
    /// direction is drained when nothing is left (by the count; without
    /// one, when the read did not fill its buffer), so the next read
    /// waits for the next edge instead of failing with `WouldBlock`.
    fn receive(
        &self,
        len: usize,
        mut op: impl FnMut(&mio::net::TcpStream, bool) -> io::Result<(usize, Option<usize>)>,
    ) -> io::Result<usize> {
        self.io.read_hinted(|s| {
            let mode = self.inq.get();
            let (n, left) = op(s, mode == Inq::On)?;
            if n == 0 {
                // End of file (final: never drained), or an empty buffer.
                return Ok((0, false));
            }
            let drained = match left {
                Some(left) => left == 0,
                None => {
                    if mode == Inq::On {
                        // Asked but not told: plain reads from now on.
                        self.inq.set(Inq::Unavailable);
                    } else if mode == Inq::Off && n == len {
                        // A full buffer leaves the queue unknown: ask from
                        // now on.
                        self.inq.set(if inq::enable(s.as_fd()) {
                            Inq::On
                        } else {
                            Inq::Unavailable
                        });
                    }
                    n < len
                }
            };
            Ok((n, drained))
        })
    }

    fn write_from(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write_hinted(|mut s| {
            let n = s.write(buf)?;
            Ok((n, n > 0 && n < buf.len()))
        })
    }

    fn write_from_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.io.write_hinted(|mut s| {
            let n = s.write_vectored(bufs)?;
            Ok((n, n > 0 && n < len))
        })
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_into(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_into_vectored(bufs)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_into(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_into_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_from(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_from_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_from(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_from_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// TcpListener

/// A listening TCP socket whose `accept` blocks only the calling greenlet.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{TcpListener, TcpStream, spawn};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let clients = spawn(move || {
///     for _ in 0..3 {
///         TcpStream::connect(addr)?;
///     }
///     Ok(())
/// });
/// for conn in listener.incoming().take(3) {
///     assert!(conn?.peer_addr()?.ip().is_loopback());
/// }
/// clients.get(None)?;
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub struct TcpListener {
    io: IoSource<mio::net::TcpListener>,
}

impl TcpListener {
    /// Binds to `addr` (`SO_REUSEADDR`, as std and mio do) and listens.
    ///
    /// # Errors
    ///
    /// The last address's error (`AddrInUse`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// assert_ne!(listener.local_addr()?.port(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |a| TcpListener::bind_one(a, false))
    }

    /// Binds with `SO_REUSEPORT` as well: several listeners (one per thread,
    /// each with its own hub) share the port and the kernel spreads the
    /// incoming connections over them, for a multi-core server.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::TcpListener;
    /// let first = TcpListener::bind_reuse_port("127.0.0.1:0")?;
    /// let second = TcpListener::bind_reuse_port(first.local_addr()?)?; // same port
    /// assert_eq!(first.local_addr()?, second.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_reuse_port<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(&addr, |a| TcpListener::bind_one(a, true))
    }

    fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
        TcpListener::from_std(listen_on(addr, reuse_port)?)
    }

    /// Adopts a listening std socket, switching it to non-blocking mode and
    /// registering it with this thread's hub.
    ///
    /// # Errors
    ///
    /// If the mode cannot be set or the hub refuses the registration.
    ///
    /// # Examples
    ///
    /// ```
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let listener = greenlet_hub::TcpListener::from_std(std_listener)?;
    /// assert!(listener.local_addr().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            io: IoSource::new(mio::net::TcpListener::from_std(listener))?,
        })
    }

    /// Waits for a connection and accepts it (non-blocking and
    /// close-on-exec, through `accept4`).
    ///
    /// # Errors
    ///
    /// The operating system's (`EMFILE` when out of descriptors, ...): the
    /// pending connection stays queued; a hub error while waiting.
    ///
    /// # Examples
    ///
    /// See [`TcpListener`].
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.io.read_with(None, |s| s.accept())?;
        let io = TimedSource::new(stream)?;
        Ok((TcpStream::new(io), peer))
    }

    /// An endless iterator of accepted connections (`accept` in a loop).
    ///
    /// # Examples
    ///
    /// See [`TcpListener`].
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The local address (with the port the system chose for port 0).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`bind`](Self::bind).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Sets the IP time-to-live of accepted connections.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// listener.set_ttl(64)?;
    /// assert_eq!(listener.ttl()?, 64);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get_ref().set_ttl(ttl)
    }

    /// The IP time-to-live.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`set_ttl`](Self::set_ttl).
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get_ref().ttl()
    }

    /// Takes the socket's pending error (`SO_ERROR`).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// assert!(listener.take_error()?.is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// A second handle to the same listening socket.
    ///
    /// # Errors
    ///
    /// If the descriptor cannot be duplicated or registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = greenlet_hub::TcpListener::bind("127.0.0.1:0")?;
    /// let other = listener.try_clone()?;
    /// assert_eq!(other.local_addr()?, listener.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let std_listener: std::net::TcpListener = duplicate(self.io.get_ref())?.into();
        Ok(TcpListener {
            io: IoSource::new(mio::net::TcpListener::from_std(std_listener))?,
        })
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

/// The iterator of [`TcpListener::incoming`]: never ends; each item is an
/// accepted connection or `accept`'s error.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

// ---------------------------------------------------------------------------
// UdpSocket

/// A UDP socket whose receives (and sends, when the buffer is full) block
/// only the calling greenlet.
///
/// # Examples
///
/// ```
/// use greenlet_hub::UdpSocket;
///
/// let a = UdpSocket::bind("127.0.0.1:0")?;
/// let b = UdpSocket::bind("127.0.0.1:0")?;
/// a.send_to(b"hello", b.local_addr()?)?;
/// let mut buf = [0; 16];
/// let (n, from) = b.recv_from(&mut buf)?;
/// assert_eq!((&buf[..n], from), (&b"hello"[..], a.local_addr()?));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UdpSocket {
    io: TimedSource<mio::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr`.
    ///
    /// # Errors
    ///
    /// The last address's error.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(&addr, |a| {
            Ok(UdpSocket {
                io: TimedSource::new(mio::net::UdpSocket::bind(a)?)?,
            })
        })
    }

    /// Adopts a std socket, switching it to non-blocking mode.
    ///
    /// # Errors
    ///
    /// If the mode cannot be set or the hub refuses the registration.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::from_std(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// assert!(s.local_addr().is_ok());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        Ok(UdpSocket {
            io: TimedSource::new(mio::net::UdpSocket::from_std(socket))?,
        })
    }

    /// Sends a datagram to `addr` (its first address).
    ///
    /// # Errors
    ///
    /// The operating system's; the write timeout's `TimedOut`.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let Some(target) = addr.to_socket_addrs()?.into_iter().next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        self.io.write(|s| s.send_to(buf, target))
    }

    /// Waits for a datagram and receives it with its sender's address.
    ///
    /// # Errors
    ///
    /// The operating system's; the read timeout's `TimedOut`.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| s.recv_from(buf))
    }

    /// As [`recv_from`](Self::recv_from), leaving the datagram queued.
    ///
    /// # Errors
    ///
    /// As `recv_from`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// a.send_to(b"x", a.local_addr()?)?;
    /// let mut buf = [0; 4];
    /// assert_eq!(a.peek_from(&mut buf)?.0, 1);
    /// assert_eq!(a.recv_from(&mut buf)?.0, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.read(|s| s.peek_from(buf))
    }

    /// Sets the default peer of `send` and `recv` (and filters what `recv`
    /// gets to it).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::UdpSocket;
    /// let a = UdpSocket::bind("127.0.0.1:0")?;
    /// let b = UdpSocket::bind("127.0.0.1:0")?;
    /// a.connect(b.local_addr()?)?;
    /// b.connect(a.local_addr()?)?;
    /// a.send(b"hi")?;
    /// let mut buf = [0; 2];
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// assert_eq!(a.peer_addr()?, b.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |a| self.io.get_ref().connect(a))
    }

    /// Sends a datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// `NotConnected` without [`connect`](Self::connect); the operating
    /// system's (`ConnectionRefused` after an ICMP port unreachable).
    ///
    /// # Examples
    ///
    /// See [`connect`](Self::connect).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(|s| s.send(buf))
    }

    /// Waits for a datagram from the connected peer.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); the read timeout's `TimedOut`.
    ///
    /// # Examples
    ///
    /// See [`connect`](Self::connect).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(|s| s.recv(buf))
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`UdpSocket`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `NotConnected` without [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// See [`connect`](Self::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Sets the timeout of every later receive (`None`: wait forever).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// s.set_read_timeout(Some(Duration::from_millis(5)))?;
    /// let e = s.recv_from(&mut [0; 8]).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.io.set_read_timeout(timeout)
    }

    /// Sets the timeout of every later send (`None`: wait forever).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero duration, as std.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// assert!(s.set_write_timeout(Some(std::time::Duration::ZERO)).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.io.set_write_timeout(timeout)
    }

    /// The receive timeout.
    ///
    /// # Errors
    ///
    /// Never (std's signature).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(s.read_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.io.read_timeout())
    }

    /// The send timeout.
    ///
    /// # Errors
    ///
    /// Never (std's signature).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(s.write_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.io.write_timeout())
    }

    /// Allows sending to broadcast addresses.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// s.set_broadcast(true)?;
    /// assert!(s.broadcast()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.get_ref().set_broadcast(on)
    }

    /// Whether sending to broadcast addresses is allowed.
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// See [`set_broadcast`](Self::set_broadcast).
    pub fn broadcast(&self) -> io::Result<bool> {
        self.io.get_ref().broadcast()
    }

    /// Takes the socket's pending error (`SO_ERROR`).
    ///
    /// # Errors
    ///
    /// The operating system's.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// assert!(s.take_error()?.is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// A second handle to the same socket, sharing the timeouts.
    ///
    /// # Errors
    ///
    /// If the descriptor cannot be duplicated or registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet_hub::UdpSocket::bind("127.0.0.1:0")?;
    /// assert_eq!(s.try_clone()?.local_addr()?, s.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let std_socket: std::net::UdpSocket = duplicate(self.io.get_ref())?.into();
        Ok(UdpSocket {
            io: self
                .io
                .clone_with(mio::net::UdpSocket::from_std(std_socket))?,
        })
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local_addr().ok())
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! The readiness flag after each kind of read: what spares the
    //! `WouldBlock` (behaviour is tested in `tests/net_readiness.rs`).

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn readable(s: &TcpStream) -> bool {
        s.io.source.read_state().0
    }

    /// Waits until `n` bytes are queued for `s`, so one read sees them all.
    fn wait_queued(s: &TcpStream, n: usize) {
        let mut probe = vec![0; n];
        while s.peek(&mut probe).unwrap() < n {
            crate::sleep(Duration::from_millis(1)).unwrap();
        }
    }

    /// Waits until the peer's FIN has reached `s` (`POLLRDHUP`), asking the
    /// kernel rather than sleeping for a guessed time.
    #[allow(unsafe_code)]
    fn wait_fin(s: &TcpStream) {
        loop {
            let mut fd = libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one valid pollfd for an open descriptor; a zero
            // timeout never blocks.
            let n = unsafe { libc::poll(&mut fd, 1, 0) };
            assert!(n >= 0, "poll: {}", io::Error::last_os_error());
            if fd.revents & libc::POLLRDHUP != 0 {
                return;
            }
            crate::sleep(Duration::from_millis(1)).unwrap();
        }
    }

    #[test]
    fn a_short_read_drains_without_asking_the_kernel() {
        let (mut client, mut server) = pair();
        client.write_all(b"abc").unwrap();
        wait_queued(&server, 3);
        let mut buf = [0; 8];
        assert_eq!(server.read(&mut buf).unwrap(), 3);
        assert!(!readable(&server), "a short read empties the queue");
        assert_eq!(server.inq.get(), Inq::Off, "never needed the count");
    }

    #[test]
    fn a_full_read_asks_for_the_count_and_then_drains_by_it() {
        let (mut client, mut server) = pair();
        client.write_all(b"abcdefgh").unwrap();
        wait_queued(&server, 8);
        let mut buf = [0; 4];
        server.read_exact(&mut buf).unwrap();
        // Nothing said how much is left: still ready, and the count is on
        // from now on.
        assert!(readable(&server));
        let mode = server.inq.get();
        if cfg!(any(target_os = "linux", target_os = "android")) {
            assert_eq!(mode, Inq::On);
        }
        // The second full read learns that it took the last bytes.
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"efgh");
        if mode == Inq::On {
            assert_eq!(server.inq.get(), Inq::On, "the kernel gave the count");
            assert!(!readable(&server), "the count said the queue is empty");
        }
        // More queued behind a full buffer keeps it ready.
        client.write_all(b"ijklmnop").unwrap();
        wait_queued(&server, 8);
        server.read_exact(&mut buf).unwrap();
        assert!(readable(&server), "four bytes are left");
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"mnop");
    }

    #[test]
    fn an_end_of_file_is_never_drained() {
        let (mut client, mut server) = pair();
        let mut buf = [0; 4];
        client.write_all(b"abcd").unwrap();
        server.read_exact(&mut buf).unwrap(); // the count is on
        client.write_all(b"efgh").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        wait_queued(&server, 4);
        wait_fin(&server); // the FIN too
        server.read_exact(&mut buf).unwrap();
        assert!(readable(&server), "the FIN counts as a byte left");
        assert_eq!(server.read(&mut buf).unwrap(), 0);
        assert!(readable(&server));
    }
}
