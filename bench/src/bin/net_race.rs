//! net_race: the same network workloads on greenlet-hub, tokio, may and
//! gevent, side by side in one run, on loopback (127.0.0.1) only.
//!
//! Workloads:
//!
//! - `echo/64B x1`: one connection, 64-byte write then 64-byte read, in a
//!   loop (round-trip latency);
//! - `echo/64B x50`: the same over 50 concurrent connections (time per
//!   round trip, amortised over all of them);
//! - `echo/64KiB x1`: 64 KiB written and read back, one connection;
//! - `http/1 core`, `http/2 cores`: a keep-alive hello-world HTTP server
//!   loaded by `wrk` (1 thread, 50 connections).
//!
//! Every runtime serves and drives the echo in one process, its server and
//! its clients on the same runtime: hub on one thread, tokio's
//! current-thread runtime, may with one worker, gevent. For two cores: two
//! hubs on two threads sharing the port (`SO_REUSEPORT`), tokio's
//! multi-thread runtime with 2 workers, `tokio-ct` (two tokio
//! current-thread runtimes on two threads sharing the port, the hubs'
//! design), may with 2 workers, gevent in two processes sharing the port.
//!
//! `raw-mio` is the floor, not a competitor: the echo and one-core HTTP
//! workloads written straight on mio, no runtime, with only the system
//! calls a readiness-based runtime would at best make (module `raw_mio`).
//! It measures the kernel's loopback TCP path, which bounds them all.
//!
//! ```text
//! net_race report [--runs N] [--ms MS] [--wrk-secs S] [--python PATH] [--md PATH] [--quick]
//! net_race echo IMPL CONNS SIZE MS RUNS    one runtime's echo runs (µs per round trip)
//! net_race http IMPL THREADS               serve hello world until stdin closes
//! ```
//!
//! `bench/net_race.sh` builds this in release and runs `report`, which
//! runs each measurement in a child process and writes
//! `bench/NET_RESULTS.md`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";
/// Echo and HTTP on one core; `raw-mio` (the floor) right after the hub,
/// which it bounds.
const IMPLS: [&str; 4] = ["hub", "raw-mio", "tokio", "may"];
/// HTTP on two cores adds `tokio-ct`, tokio in the hubs' design; on one
/// core it would be the `tokio` row again (one current-thread runtime).
/// The floor is one thread: no two-core row.
const IMPLS_2_CORES: [&str; 4] = ["hub", "tokio", "tokio-ct", "may"];
const BUF: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["echo", imp, conns, size, ms, runs] => echo_cmd(imp, conns, size, ms, runs),
        ["http", imp, threads] => http_cmd(imp, threads),
        ["report", options @ ..] => report(options),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("net_race: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  net_race report [--runs N] [--ms MS] [--wrk-secs S] [--python PATH] [--md PATH] [--quick]
  net_race echo IMPL CONNS SIZE MS RUNS
  net_race http IMPL THREADS";

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{what}: not a number: {s}"))
}

// ---------------------------------------------------------------------------
// Echo

fn echo_cmd(imp: &str, conns: &str, size: &str, ms: &str, runs: &str) -> Result<(), String> {
    let conns: usize = num(conns, "CONNS")?;
    let size: usize = num(size, "SIZE")?;
    let run_for = Duration::from_millis(num(ms, "MS")?);
    let runs: usize = num(runs, "RUNS")?;
    let figures = match imp {
        "hub" => hub::echo(conns, size, run_for, runs).map_err(|e| e.to_string()),
        "tokio" => tokio_impl::echo(conns, size, run_for, runs).map_err(|e| e.to_string()),
        "may" => may_impl::echo(conns, size, run_for, runs).map_err(|e| e.to_string()),
        "raw-mio" => raw_mio::echo(conns, size, run_for, runs).map_err(|e| e.to_string()),
        other => return Err(format!("unknown IMPL {other}")),
    }
    .map_err(|e| format!("{imp} echo: {e}"))?;
    let values: Vec<String> = figures.iter().map(|v| format!("{v:.3}")).collect();
    println!("us {}", values.join(" "));
    Ok(())
}

/// Microseconds per round trip of one run.
fn per_round_trip(elapsed: Duration, round_trips: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / round_trips.max(1) as f64
}

/// Runs the echo clients `runs` times for `run_for` each, after one
/// warm-up run: `round` starts them with the deadline of the run and
/// returns the round trips they made in all. Microseconds per round trip,
/// one figure per run but the warm-up.
fn timed_runs<E>(
    runs: usize,
    run_for: Duration,
    mut round: impl FnMut(Instant) -> Result<u64, E>,
) -> Result<Vec<f64>, E> {
    let mut figures = Vec::new();
    for run in 0..=runs {
        let deadline = Instant::now() + run_for;
        let start = Instant::now();
        let total = round(deadline)?;
        if run > 0 {
            figures.push(per_round_trip(start.elapsed(), total));
        }
    }
    Ok(figures)
}

/// One echo client over a blocking-style stream (a green or a may socket):
/// `size`-byte round trips until `deadline`; how many it made.
fn round_trips<S: Read + Write>(s: &mut S, size: usize, deadline: Instant) -> std::io::Result<u64> {
    let out = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut n = 0u64;
    while Instant::now() < deadline {
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        n += 1;
    }
    Ok(n)
}

/// How many complete requests (`\r\n\r\n`-terminated heads) `pending`
/// holds; drops them from it.
fn take_requests(pending: &mut Vec<u8>) -> usize {
    let mut count = 0;
    let mut start = 0;
    while let Some(i) = pending[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        start += i + 4;
        count += 1;
    }
    pending.drain(..start);
    count
}

mod hub {
    use super::*;
    use greenlet_hub::{Error, StreamServer, TcpStream, spawn};

    fn echo_conn(mut conn: TcpStream, _: SocketAddr) -> Result<(), Error> {
        conn.set_nodelay(true)?;
        let mut buf = vec![0; BUF];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        }
    }

    pub fn echo(
        conns: usize,
        size: usize,
        run_for: Duration,
        runs: usize,
    ) -> Result<Vec<f64>, Error> {
        let server = StreamServer::bind("127.0.0.1:0", echo_conn)?;
        server.start()?;
        let addr = server.local_addr();
        let figures = timed_runs(runs, run_for, |deadline| {
            let clients: Vec<_> = (0..conns)
                .map(|_| {
                    spawn(move || {
                        let mut s = TcpStream::connect(addr)?;
                        s.set_nodelay(true)?;
                        Ok(round_trips(&mut s, size, deadline)?)
                    })
                })
                .collect();
            let mut total = 0;
            for c in &clients {
                total += c.get(None)?;
            }
            Ok::<u64, Error>(total)
        })?;
        server.stop(None)?;
        Ok(figures)
    }

    /// wrk ends with resets: a peer's reset ends the connection quietly.
    fn http_conn(conn: TcpStream, peer: SocketAddr) -> Result<(), Error> {
        match serve_http(conn, peer) {
            Err(Error::Io(_)) => Ok(()),
            other => other,
        }
    }

    fn serve_http(mut conn: TcpStream, _: SocketAddr) -> Result<(), Error> {
        conn.set_nodelay(true)?;
        let mut buf = vec![0; 4096];
        let mut pending = Vec::new();
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            for _ in 0..take_requests(&mut pending) {
                conn.write_all(RESPONSE)?;
            }
        }
    }

    pub fn http(threads: usize) -> Result<(), Error> {
        if threads == 1 {
            let server = StreamServer::bind("127.0.0.1:0", http_conn)?;
            announce(server.local_addr());
            let stopper = server.clone();
            // Stop when the parent closes our stdin.
            std::thread::spawn(wait_for_stdin_close);
            spawn(move || {
                while !STDIN_CLOSED.load(std::sync::atomic::Ordering::SeqCst) {
                    greenlet_hub::sleep(Duration::from_millis(100))?;
                }
                stopper.stop(Duration::from_millis(100))
            });
            return server.serve_forever();
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            wait_for_stdin_close();
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        greenlet_hub::serve_on_threads(threads, "127.0.0.1:0", stop, announce, |_| http_conn)
    }
}

static STDIN_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn wait_for_stdin_close() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    STDIN_CLOSED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// An implementation's name in the report: the floor says what it is.
fn label(imp: &str) -> &str {
    if imp == "raw-mio" {
        "raw mio (floor)"
    } else {
        imp
    }
}

fn announce(addr: SocketAddr) {
    println!("port {}", addr.port());
    let _ = std::io::stdout().flush();
}

mod tokio_impl {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    async fn echo_conn(mut conn: TcpStream) -> Res<()> {
        conn.set_nodelay(true)?;
        let mut buf = vec![0; BUF];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n]).await?;
        }
    }

    pub fn echo(conns: usize, size: usize, run_for: Duration, runs: usize) -> Res<Vec<f64>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(echo_conn(conn));
                }
            });
            let mut figures = Vec::new();
            for run in 0..=runs {
                let deadline = Instant::now() + run_for;
                let start = Instant::now();
                let clients: Vec<_> = (0..conns)
                    .map(|_| {
                        tokio::spawn(async move {
                            let mut s = TcpStream::connect(addr).await?;
                            s.set_nodelay(true)?;
                            let out = vec![7u8; size];
                            let mut back = vec![0u8; size];
                            let mut n = 0u64;
                            while Instant::now() < deadline {
                                s.write_all(&out).await?;
                                s.read_exact(&mut back).await?;
                                n += 1;
                            }
                            Ok::<u64, std::io::Error>(n)
                        })
                    })
                    .collect();
                let mut total = 0;
                for c in clients {
                    total += c.await??;
                }
                if run > 0 {
                    figures.push(per_round_trip(start.elapsed(), total));
                }
            }
            Ok(figures)
        })
    }

    async fn http_conn(mut conn: TcpStream) -> Res<()> {
        conn.set_nodelay(true)?;
        let mut buf = vec![0; 4096];
        let mut pending = Vec::new();
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            for _ in 0..take_requests(&mut pending) {
                conn.write_all(RESPONSE).await?;
            }
        }
    }

    /// Accepts until the listener fails, a task per connection.
    async fn accept_http(listener: TcpListener) {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(http_conn(conn));
        }
    }

    pub fn http(threads: usize) -> Res<()> {
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_io()
                .build()?
        };
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            announce(listener.local_addr()?);
            tokio::spawn(accept_http(listener));
            tokio::task::spawn_blocking(wait_for_stdin_close).await?;
            Ok(())
        })
    }

    /// `tokio-ct`: the hubs' `serve_on_threads` design with tokio, one
    /// current-thread runtime on each of `threads` threads, each accepting
    /// on a listener of its own, all bound to one port with `SO_REUSEPORT`.
    /// The kernel spreads the connections over the listeners and each
    /// stays on its thread for good, as with the hubs; the multi-thread
    /// runtime (`http`) instead balances its tasks over its workers.
    pub fn http_per_thread(threads: usize) -> Res<()> {
        let threads = threads.max(1);
        // Bind every socket here, as `serve_on_threads` does, the first
        // to learn the port (`SO_REUSEADDR` too, as the hubs' and mio's
        // listeners have it).
        let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
        let mut sockets = Vec::new();
        for _ in 0..threads {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        let (listening, ready) = std::sync::mpsc::channel();
        for socket in sockets {
            let listening = listening.clone();
            std::thread::spawn(move || {
                // A tokio listener registers with the runtime it is made
                // in: this thread's. Backlog 1024, the hubs' and gevent's
                // (tokio's `TcpListener::bind` takes std's 128; wrk's 50
                // connections fit in either).
                let started = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .and_then(|rt| {
                        let listener = {
                            let _in = rt.enter();
                            socket.listen(1024)?
                        };
                        Ok((rt, listener))
                    });
                match started {
                    Ok((rt, listener)) => {
                        let _ = listening.send(Ok(()));
                        rt.block_on(accept_http(listener));
                    }
                    Err(e) => {
                        let _ = listening.send(Err(e));
                    }
                }
            });
        }
        drop(listening);
        for _ in 0..threads {
            ready.recv()??;
        }
        announce(addr);
        // Returning ends the process, and the serving threads with it.
        wait_for_stdin_close();
        Ok(())
    }
}

mod may_impl {
    use super::*;
    use may::go;
    use may::net::{TcpListener, TcpStream};

    type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

    fn echo_conn(mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut buf = vec![0; BUF];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }

    pub fn echo(conns: usize, size: usize, run_for: Duration, runs: usize) -> Res<Vec<f64>> {
        may::config().set_workers(1);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        // SAFETY (of may's `go!`, which spawns through an unsafe fn): the
        // coroutines use no thread-local storage and do not block the
        // thread outside may's own I/O.
        go!(move || {
            while let Ok((conn, _)) = listener.accept() {
                go!(move || echo_conn(conn));
            }
        });
        timed_runs(runs, run_for, |deadline| {
            let clients: Vec<_> = (0..conns)
                .map(|_| {
                    go!(move || -> std::io::Result<u64> {
                        let mut s = TcpStream::connect(addr)?;
                        s.set_nodelay(true)?;
                        round_trips(&mut s, size, deadline)
                    })
                })
                .collect();
            let mut total = 0;
            for c in clients {
                total += c.join().map_err(|_| "a may client panicked")??;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(total)
        })
    }

    fn http_conn(mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let mut buf = vec![0; 4096];
        let mut pending = Vec::new();
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                return;
            }
            pending.extend_from_slice(&buf[..n]);
            for _ in 0..take_requests(&mut pending) {
                if conn.write_all(RESPONSE).is_err() {
                    return;
                }
            }
        }
    }

    pub fn http(threads: usize) -> Res<()> {
        may::config().set_workers(threads);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        announce(listener.local_addr()?);
        // SAFETY: as in `echo`.
        go!(move || {
            while let Ok((conn, _)) = listener.accept() {
                go!(move || http_conn(conn));
            }
        });
        wait_for_stdin_close();
        Ok(())
    }
}

/// `raw-mio`, the floor: the same workloads written straight on mio, with
/// no runtime. One thread, one `Poll`, a hand-written state machine per
/// connection, every socket registered once for both directions
/// (edge-triggered), nothing allocated per operation. It makes only the
/// system calls a readiness-based runtime would at best make (per echo
/// round trip two sends, two reads and two `epoll_wait`s), so it is the
/// lower bound of any of them on this kernel, not a competitor.
mod raw_mio {
    use super::*;
    use mio::event::Event;
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Registry, Token, Waker};
    use std::io;

    const LISTENER: Token = Token(0);
    const WAKER: Token = Token(1);
    /// Slot `i` of a `Slab` has `Token(FIRST + i)`.
    const FIRST: usize = 2;

    /// One byte more than the largest echo message: a read that brings a
    /// whole message is then short, so known to have drained the socket
    /// without a read more that says `WouldBlock` (the hub learns as much
    /// from `TCP_INQ`).
    const READ_BUF: usize = BUF + 1;

    /// A stream and what the calls so far learned of it. The floor's rule:
    /// a read that returns less than its buffer drained the socket, a write
    /// that takes less than it was given filled it; either then waits for
    /// the next event rather than make a call that would only say
    /// `WouldBlock`. Edge-triggered epoll raises a new event for anything
    /// that comes after the call.
    struct Edge {
        stream: TcpStream,
        readable: bool,
        writable: bool,
    }

    impl Edge {
        /// Registers a connected stream for both directions, once: no
        /// `epoll_ctl` after this one.
        fn new(registry: &Registry, mut stream: TcpStream, token: Token) -> io::Result<Edge> {
            stream.set_nodelay(true)?;
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            // The registration reports what is already queued, as an event.
            Ok(Edge {
                stream,
                readable: false,
                writable: true,
            })
        }

        fn event(&mut self, event: &Event) {
            // A close or an error is told by the next call.
            self.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            self.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
        }

        /// The bytes read (0 at the end of the stream), or `None`: wait for
        /// the next event.
        fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            let stream = &mut self.stream;
            attempt(&mut self.readable, buf.len(), || stream.read(buf))
        }

        /// The bytes written, or `None`: wait for the next event.
        fn write(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
            let stream = &mut self.stream;
            attempt(&mut self.writable, buf.len(), || stream.write(buf))
        }
    }

    /// One read or write of `len` bytes, made only while `ready`: a call
    /// that moves less than `len`, or says `WouldBlock`, clears it.
    fn attempt(
        ready: &mut bool,
        len: usize,
        call: impl FnOnce() -> io::Result<usize>,
    ) -> io::Result<Option<usize>> {
        if !*ready {
            return Ok(None);
        }
        match call() {
            Ok(n) => {
                *ready = n == len;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *ready = false;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Connections by token, a closed one's slot reused by the next.
    struct Slab<T> {
        slots: Vec<Option<T>>,
        free: Vec<usize>,
    }

    impl<T> Slab<T> {
        fn new() -> Slab<T> {
            Slab {
                slots: Vec::new(),
                free: Vec::new(),
            }
        }

        /// Fills a free slot with what `make` makes of its token.
        fn insert(&mut self, make: impl FnOnce(Token) -> io::Result<T>) -> io::Result<()> {
            let i = self.free.last().copied().unwrap_or(self.slots.len());
            let value = make(Token(FIRST + i))?;
            if i == self.slots.len() {
                self.slots.push(Some(value));
            } else {
                self.free.pop();
                self.slots[i] = Some(value);
            }
            Ok(())
        }

        fn get_mut(&mut self, token: Token) -> Option<&mut T> {
            let i = token.0.checked_sub(FIRST)?;
            self.slots.get_mut(i)?.as_mut()
        }

        /// Drops the connection: closing its socket takes it out of the
        /// epoll set, with no `epoll_ctl`.
        fn remove(&mut self, token: Token) {
            self.slots[token.0 - FIRST] = None;
            self.free.push(token.0 - FIRST);
        }
    }

    fn listen(registry: &Registry) -> io::Result<TcpListener> {
        let mut listener = TcpListener::bind(([127, 0, 0, 1], 0).into())?;
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(listener)
    }

    /// Accepts every queued connection (until `WouldBlock`: accepting is
    /// not in the per-operation path) into a slot, as `make` makes it.
    fn accept<T>(
        listener: &TcpListener,
        registry: &Registry,
        slab: &mut Slab<T>,
        make: impl Fn(Edge) -> T,
    ) -> io::Result<()> {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    slab.insert(|token| Ok(make(Edge::new(registry, stream, token)?)))?
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next events (a signal's interruption is no event).
    fn wait(poll: &mut Poll, events: &mut Events) -> io::Result<()> {
        loop {
            match poll.poll(events, None) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => return done,
            }
        }
    }

    /// One echo client: `size`-byte round trips until the deadline, each
    /// written whole and then read back whole, as `round_trips` does.
    struct Client {
        edge: Edge,
        sent: usize,
        got: usize,
        round_trips: u64,
    }

    impl Client {
        /// Goes as far as it can: its round trips once the deadline ended
        /// it, `None` while it waits for an event.
        fn drive(
            &mut self,
            out: &[u8],
            back: &mut [u8],
            deadline: Instant,
        ) -> io::Result<Option<u64>> {
            loop {
                if self.sent == 0 && Instant::now() >= deadline {
                    return Ok(Some(self.round_trips));
                }
                if self.sent < out.len() {
                    match self.edge.write(&out[self.sent..])? {
                        Some(n) => self.sent += n,
                        None => return Ok(None),
                    }
                } else if self.got < out.len() {
                    // `back` is longer than what can come back: the server
                    // echoes only what was sent.
                    match self.edge.read(back)? {
                        Some(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Some(n) => self.got += n,
                        None => return Ok(None),
                    }
                } else {
                    self.round_trips += 1;
                    self.sent = 0;
                    self.got = 0;
                }
            }
        }
    }

    /// The server's end of an echo connection: what it read, written back
    /// whole before it reads again.
    struct Echoer {
        edge: Edge,
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    }

    impl Echoer {
        /// Goes as far as it can: false once the client closed.
        fn drive(&mut self) -> io::Result<bool> {
            loop {
                while self.start < self.end {
                    match self.edge.write(&self.buf[self.start..self.end])? {
                        Some(n) => self.start += n,
                        None => return Ok(true),
                    }
                }
                match self.edge.read(&mut self.buf)? {
                    Some(0) => return Ok(false),
                    Some(n) => (self.start, self.end) = (0, n),
                    None => return Ok(true),
                }
            }
        }
    }

    enum End {
        Client(Client),
        Echoer(Echoer),
    }

    pub fn echo(conns: usize, size: usize, run_for: Duration, runs: usize) -> io::Result<Vec<f64>> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let listener = listen(poll.registry())?;
        let addr = listener.local_addr()?;
        let out = vec![7u8; size];
        // Every client reads into this one: nothing looks at what it gets.
        let mut back = vec![0u8; READ_BUF];
        let mut ends = Slab::new();
        timed_runs(runs, run_for, |deadline| {
            for _ in 0..conns {
                // A blocking connect: on loopback the handshake is done
                // within the call (the listener's backlog holds it until
                // the accept), so a client has no connecting state. The
                // registration's first event, room to write, starts it.
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nonblocking(true)?;
                let stream = TcpStream::from_std(stream);
                ends.insert(|token| {
                    Ok(End::Client(Client {
                        edge: Edge::new(poll.registry(), stream, token)?,
                        sent: 0,
                        got: 0,
                        round_trips: 0,
                    }))
                })?;
            }
            let mut live = conns;
            let mut total = 0;
            while live > 0 {
                wait(&mut poll, &mut events)?;
                for event in &events {
                    let token = event.token();
                    if token == LISTENER {
                        accept(&listener, poll.registry(), &mut ends, |edge| {
                            End::Echoer(Echoer {
                                edge,
                                buf: vec![0; READ_BUF].into_boxed_slice(),
                                start: 0,
                                end: 0,
                            })
                        })?;
                        continue;
                    }
                    match ends.get_mut(token) {
                        Some(End::Client(c)) => {
                            c.edge.event(event);
                            if let Some(n) = c.drive(&out, &mut back, deadline)? {
                                total += n;
                                live -= 1;
                                ends.remove(token);
                            }
                        }
                        Some(End::Echoer(e)) => {
                            e.edge.event(event);
                            // The client gone, by its close or an error.
                            if !e.drive().unwrap_or(false) {
                                ends.remove(token);
                            }
                        }
                        None => {}
                    }
                }
            }
            Ok(total)
        })
    }

    /// A keep-alive HTTP connection: the responses it owes, written whole
    /// before it reads again.
    struct HttpConn {
        edge: Edge,
        pending: Vec<u8>,
        out: Vec<u8>,
        sent: usize,
    }

    impl HttpConn {
        /// Goes as far as it can, reading through `buf`: false once the
        /// client closed.
        fn drive(&mut self, buf: &mut [u8]) -> io::Result<bool> {
            loop {
                while self.sent < self.out.len() {
                    match self.edge.write(&self.out[self.sent..])? {
                        Some(n) => self.sent += n,
                        None => return Ok(true),
                    }
                }
                // Both buffers keep their capacity: no allocation once
                // they have grown to a request's and a response's size.
                self.out.clear();
                self.sent = 0;
                match self.edge.read(buf)? {
                    Some(0) => return Ok(false),
                    Some(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        for _ in 0..take_requests(&mut self.pending) {
                            self.out.extend_from_slice(RESPONSE);
                        }
                    }
                    None => return Ok(true),
                }
            }
        }
    }

    pub fn http(threads: usize) -> io::Result<()> {
        if threads != 1 {
            return Err(io::Error::other(
                "one thread only (the floor of the one-core row)",
            ));
        }
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let listener = listen(poll.registry())?;
        // Stop when the parent closes our stdin: a thread waits for it and
        // wakes the poll. This thread keeps the waker too: were the other
        // to drop it after waking, closing its eventfd would take the
        // wake-up out of the epoll set before the poll collected it.
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = waker.clone();
        std::thread::spawn(move || {
            wait_for_stdin_close();
            let _ = wake.wake();
        });
        announce(listener.local_addr()?);
        let mut conns = Slab::new();
        let mut buf = vec![0u8; 4096];
        loop {
            wait(&mut poll, &mut events)?;
            for event in &events {
                match event.token() {
                    LISTENER => accept(&listener, poll.registry(), &mut conns, |edge| HttpConn {
                        edge,
                        pending: Vec::new(),
                        out: Vec::new(),
                        sent: 0,
                    })?,
                    WAKER => return Ok(()),
                    token => {
                        let Some(conn) = conns.get_mut(token) else {
                            continue;
                        };
                        conn.edge.event(event);
                        // wrk ends with resets: an error ends the
                        // connection quietly, as a close does.
                        if !conn.drive(&mut buf).unwrap_or(false) {
                            conns.remove(token);
                        }
                    }
                }
            }
        }
    }
}

fn http_cmd(imp: &str, threads: &str) -> Result<(), String> {
    let threads: usize = num(threads, "THREADS")?;
    match imp {
        "hub" => hub::http(threads).map_err(|e| e.to_string()),
        "tokio" => tokio_impl::http(threads).map_err(|e| e.to_string()),
        "tokio-ct" => tokio_impl::http_per_thread(threads).map_err(|e| e.to_string()),
        "may" => may_impl::http(threads).map_err(|e| e.to_string()),
        "raw-mio" => raw_mio::http(threads).map_err(|e| e.to_string()),
        other => Err(format!("unknown IMPL {other}")),
    }
}

// ---------------------------------------------------------------------------
// Report

struct Options {
    runs: usize,
    ms: u64,
    wrk_secs: u64,
    python: Option<PathBuf>,
    md: PathBuf,
}

/// One workload: its name, its unit, and each implementation's figure.
type Row = (String, &'static str, Vec<(String, Option<Figure>)>);

/// Median, min, max of one measurement.
#[derive(Clone, Copy)]
struct Figure {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

fn figure(mut values: Vec<f64>) -> Option<Figure> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some(Figure {
        median,
        min: values[0],
        max: values[n - 1],
        runs: n,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn report(options: &[&str]) -> Result<(), String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        runs: 7,
        ms: 1000,
        wrk_secs: 3,
        python: None,
        md: here.join("NET_RESULTS.md"),
    };
    let mut it = options.iter();
    while let Some(&opt) = it.next() {
        let mut value = || it.next().copied().ok_or(format!("{opt} needs a value"));
        match opt {
            "--runs" => o.runs = num(value()?, "--runs")?,
            "--ms" => o.ms = num(value()?, "--ms")?,
            "--wrk-secs" => o.wrk_secs = num(value()?, "--wrk-secs")?,
            "--python" => o.python = Some(PathBuf::from(value()?)),
            "--md" => o.md = PathBuf::from(value()?),
            "--quick" => {
                o.runs = 3;
                o.ms = 200;
                o.wrk_secs = 1;
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let script = here.join("python").join("net_race.py");
    let gevent = o.python.as_ref().map(|p| (p.clone(), script.clone()));
    let mut loads = vec![("start".to_owned(), load_average())];

    // (workload, impl) -> figure; lower is better for echo (µs), higher for
    // http (req/s).
    let mut rows: Vec<Row> = Vec::new();
    let echoes = [
        ("echo/64B x1", 1, 64),
        ("echo/64B x50", 50, 64),
        ("echo/64KiB x1", 1, BUF),
    ];
    for (name, conns, size) in echoes {
        // The runs interleave the implementations (one run of each per
        // round, the order rotating), so that a burst of load on this
        // shared machine hits them all alike.
        let args = [
            conns.to_string(),
            size.to_string(),
            o.ms.to_string(),
            "1".to_owned(),
        ];
        let mut commands: Vec<(String, Command)> = IMPLS
            .iter()
            .map(|imp| {
                let mut cmd = Command::new(&me);
                cmd.arg("echo").arg(imp).args(&args);
                (imp.to_string(), cmd)
            })
            .collect();
        if let Some((python, script)) = &gevent {
            let mut cmd = Command::new(python);
            cmd.arg(script).arg("echo").args(&args);
            commands.push(("gevent".to_owned(), cmd));
        }
        let mut values: Vec<Vec<f64>> = vec![Vec::new(); commands.len()];
        for round in 0..o.runs {
            for k in 0..commands.len() {
                let i = (k + round) % commands.len();
                if let Some(v) = run_echo(&mut commands[i].1) {
                    values[i].push(v);
                }
            }
        }
        let mut cells = Vec::new();
        for ((imp, _), v) in commands.iter().zip(values) {
            let f = figure(v);
            eprintln!("{name:<14} {imp:<8} {}", show(f, "us"));
            cells.push((imp.clone(), f));
        }
        rows.push((
            name.to_owned(),
            "µs per round trip (lower is better)",
            cells,
        ));
        loads.push((name.to_owned(), load_average()));
    }

    let wrk = which("wrk");
    if wrk.is_none() {
        eprintln!("net_race: wrk is not installed (apt-get install -y wrk): HTTP skipped");
    }
    let https = [
        ("http/1 core", 1usize, &IMPLS[..]),
        ("http/2 cores", 2, &IMPLS_2_CORES[..]),
    ];
    for (name, threads, impls) in https {
        let Some(wrk) = &wrk else { break };
        let mut commands: Vec<(String, Command)> = impls
            .iter()
            .map(|imp| {
                let mut cmd = Command::new(&me);
                cmd.arg("http").arg(imp).arg(threads.to_string());
                (imp.to_string(), cmd)
            })
            .collect();
        if let Some((python, script)) = &gevent {
            let mut cmd = Command::new(python);
            cmd.arg(script).arg("http").arg(threads.to_string());
            commands.push(("gevent".to_owned(), cmd));
        }
        // Every server runs (idle) through the whole section; the wrk runs
        // interleave them as the echo runs do.
        let mut servers: Vec<(String, Option<Server>)> = commands
            .into_iter()
            .map(|(imp, mut cmd)| {
                let server = Server::start(&mut cmd);
                if server.is_none() {
                    eprintln!("net_race: the {imp} HTTP server did not start");
                }
                (imp, server)
            })
            .collect();
        for (_, server) in &servers {
            if let Some(server) = server {
                server.load(wrk, 1); // warm-up
            }
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
        for round in 0..o.runs {
            for k in 0..servers.len() {
                let i = (k + round) % servers.len();
                if let Some(server) = &servers[i].1
                    && let Some((rate, per_request)) = server.load(wrk, o.wrk_secs)
                {
                    rates[i].push(rate);
                    cpu[i].push(per_request);
                }
            }
        }
        let mut rate_cells = Vec::new();
        let mut cpu_cells = Vec::new();
        for (((imp, server), r), c) in servers.iter_mut().zip(rates).zip(cpu) {
            if let Some(server) = server.take() {
                server.stop();
            }
            let (r, c) = (figure(r), figure(c));
            eprintln!(
                "{name:<14} {imp:<8} {}; server CPU {}",
                show(r, "req/s"),
                show(c, "us/req")
            );
            rate_cells.push((imp.clone(), r));
            cpu_cells.push((imp.clone(), c));
        }
        rows.push((
            name.to_owned(),
            "requests per second (higher is better)",
            rate_cells,
        ));
        rows.push((
            format!("{name}, server CPU"),
            "µs of server CPU per request (lower is better)",
            cpu_cells,
        ));
        loads.push((name.to_owned(), load_average()));
    }

    let md = markdown(&o, &rows, &loads, gevent.as_ref().map(|(p, _)| p));
    std::fs::write(&o.md, md).map_err(|e| format!("{}: {e}", o.md.display()))?;
    eprintln!("net_race: wrote {}", o.md.display());
    // The report shows a failed cell as "failed"; the exit status says it
    // too, so that a smoke run (`ci/test`) fails with it.
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|(name, _, cells)| {
            cells
                .iter()
                .filter(|(_, f)| f.is_none())
                .map(move |(imp, _)| format!("{name} {imp}"))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("no figure for: {}", failed.join(", ")))
    }
}

fn show(f: Option<Figure>, unit: &str) -> String {
    match f {
        Some(f) => format!(
            "median {:.2} {unit} (min {:.2}, max {:.2}, {} runs)",
            f.median, f.min, f.max, f.runs
        ),
        None => "failed".into(),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

/// One echo run of a child (its own warm-up first): µs per round trip.
fn run_echo(cmd: &mut Command) -> Option<f64> {
    let out = cmd.stderr(Stdio::inherit()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("us "))?;
    line[3..].split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system, in clock ticks of 10 ms) used so far by
/// process `pid` and its live children (gevent's second process).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = |p: &str| -> Option<(u64, u32)> {
        let text = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let after = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ppid = fields.get(1)?.parse().ok()?;
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((ticks, ppid))
    };
    let mut total = stat(&pid.to_string()).map_or(0, |(t, _)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.bytes().all(|b| b.is_ascii_digit())
                && let Some((ticks, ppid)) = stat(name)
                && ppid == pid
            {
                total += ticks;
            }
        }
    }
    total
}

/// A running HTTP server child.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    /// Starts it and reads the port it announces.
    fn start(cmd: &mut Command) -> Option<Server> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).ok()? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            if let Some(p) = line.trim().strip_prefix("port ") {
                let port = p.parse::<u16>().ok()?;
                return Some(Server {
                    child,
                    url: format!("http://127.0.0.1:{port}/"),
                });
            }
        }
    }

    /// One wrk run: requests per second, and µs of server CPU per request.
    fn load(&self, wrk: &PathBuf, secs: u64) -> Option<(f64, f64)> {
        let pid = self.child.id();
        let before = cpu_ticks(pid);
        let out = Command::new(wrk)
            .args(["-t1", "-c50", &format!("-d{secs}s"), &self.url])
            .output()
            .ok()?;
        let used = cpu_ticks(pid).saturating_sub(before);
        let text = String::from_utf8_lossy(&out.stdout);
        let errors = text
            .lines()
            .any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
        if errors {
            eprintln!("wrk reported errors:\n{text}");
        }
        let requests: f64 = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.trim().parse().ok())?;
        let rate = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())?;
        // Ticks are 10 ms: µs of CPU per request.
        Some((rate, used as f64 * 10_000.0 / requests.max(1.0)))
    }

    /// Closes its stdin (it stops), killing it if it lingers.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn markdown(
    o: &Options,
    rows: &[Row],
    loads: &[(String, String)],
    python: Option<&PathBuf>,
) -> String {
    let mut md = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    md.push_str("# Network race: greenlet-hub against tokio, may and gevent\n\n");
    md.push_str(
        "Written by `bench/net_race.sh` (`net_race report`); every figure is the median of ",
    );
    md.push_str(&format!(
        "{} runs (echo: {} ms each, after a warm-up run; HTTP: `wrk -t1 -c50 -d{}s` each, after a \
         1 s warm-up), with min and max. The runs interleave the implementations (each round runs \
         each once, in a rotating order), so that bursts of load on this shared machine hit them \
         alike. Loopback (127.0.0.1) only.\n\n",
        o.runs, o.ms, o.wrk_secs
    ));
    md.push_str(&format!(
        "Machine: {cpu}, {cores} cores, Linux {}. Load average (1, 5, 15 min) as the run went: ",
        kernel.trim()
    ));
    let l: Vec<String> = loads.iter().map(|(w, l)| format!("{w}: {l}")).collect();
    md.push_str(&l.join("; "));
    md.push_str(".\n\n");
    md.push_str(
        "Setups. One core: hub on one thread; tokio `current_thread`; may with 1 worker; gevent in one \
         process. Two cores: two hubs on two threads sharing the port (`SO_REUSEPORT`, \
         `serve_on_threads`); tokio multi-thread with 2 workers; tokio-ct (HTTP only): two tokio \
         `current_thread` runtimes on two threads, each with its own listener on the port \
         (`SO_REUSEPORT`), the hubs' design; may with 2 workers; gevent in two processes sharing \
         the port. Echo: server and clients in the same process and runtime, \
         `TCP_NODELAY` on both ends. On this 2-core machine `wrk` itself needs a core, so the \
         two-core HTTP figures share the CPUs with the load generator.\n\n\
         raw mio (floor) is not a competitor but the lower bound: the same echo and one-core \
         HTTP workloads written straight on mio, with no runtime (one thread, one `Poll`, a \
         hand-written state machine per connection, edge-triggered, no allocation per \
         operation), making only the system calls a readiness-based runtime would at best make: \
         per echo round trip 2 sends, 2 reads and 2 `epoll_wait`s, per HTTP request a read and a \
         send and a share of an `epoll_wait`. It is there to show how much of each figure is the \
         kernel's loopback TCP path, which no runtime on this kernel can go below: the hub's \
         advantage over it can be above 1× only by noise (read the min and max), and its \
         distance below 1× is the runtime's own cost. For HTTP its server CPU row says more \
         than its requests per second, which wrk on the other core bounds as well.\n\n",
    );
    let lock =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
            .unwrap_or_default();
    let version = |name: &str| {
        let marker = format!("name = \"{name}\"\nversion = \"");
        lock.find(&marker)
            .and_then(|i| lock[i + marker.len()..].split('"').next())
            .unwrap_or("?")
            .to_owned()
    };
    md.push_str(&format!(
        "Versions: tokio {}, may {}, mio {} (the hub's poller, and the floor's).\n\n",
        version("tokio"),
        version("may"),
        version("mio")
    ));
    if let Some(p) = python {
        let gevent = Command::new(p)
            .args(["-c", "import gevent; print(gevent.__version__)"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        md.push_str(&format!("gevent {gevent}, run with `{}`.\n\n", p.display()));
    } else {
        md.push_str("gevent: not run (no `--python`).\n\n");
    }
    md.push_str("| workload | unit | implementation | median | min | max | hub's advantage |\n");
    md.push_str("|---|---|---|---:|---:|---:|---:|\n");
    for (name, unit, cells) in rows {
        let lower_is_better = unit.starts_with("µs");
        let hub = cells.iter().find(|(i, _)| i == "hub").and_then(|(_, f)| *f);
        for (imp, f) in cells {
            let (median, min, max) = match f {
                Some(f) => (
                    format!("{:.2}", f.median),
                    format!("{:.2}", f.min),
                    format!("{:.2}", f.max),
                ),
                None => ("failed".into(), "".into(), "".into()),
            };
            let ratio = match (hub, f, imp.as_str()) {
                (_, _, "hub") => "—".to_owned(),
                (Some(h), Some(p), _) => {
                    let r = if lower_is_better {
                        p.median / h.median
                    } else {
                        h.median / p.median
                    };
                    format!("{r:.2}×")
                }
                _ => "?".into(),
            };
            md.push_str(&format!(
                "| {name} | {} | {} | {median} | {min} | {max} | {ratio} |\n",
                short_unit(unit),
                label(imp)
            ));
        }
    }
    md.push_str(&floor_against_gevent(rows));
    md.push_str(
        "\n\"hub's advantage\" is the peer's median over the hub's for times, the hub's over the \
         peer's for requests per second: above 1× the hub is ahead. On two cores, the hub's \
         advantage over tokio-ct compares one design on both runtimes (a runtime per thread, \
         each connection kept by the thread whose listener took it); over tokio, it is against a \
         scheduler that moves tasks between its workers. \"server CPU\" is the \
         server process's user + system time (from /proc, gevent's second process included) \
         divided by the requests wrk completed: it depends less on how busy the machine is than \
         requests per second do.\n\nMost of an echo round trip or an HTTP request is the kernel's \
         loopback TCP path (about 85% of the hub's samples under `perf` in the 50-connection \
         echo; the floor row is that path with no runtime on top); the runtimes differ in the \
         rest. On this shared 2-core machine, differences \
         between the three Rust runtimes under about 20% are within the run-to-run noise: read \
         the min and max.\n",
    );
    md
}

/// A row's unit, as the tables print it.
fn short_unit(unit: &str) -> &'static str {
    if !unit.starts_with("µs") {
        "req/s"
    } else if unit.contains("CPU") {
        "CPU µs/req"
    } else {
        "µs/rt"
    }
}

/// A table of what the floor leaves for a runtime to win against gevent:
/// gevent's figure over the floor's is the largest advantage a
/// readiness-based runtime could show on this kernel, beside the hub's.
/// Empty when a row lacks either.
fn floor_against_gevent(rows: &[Row]) -> String {
    let median = |cells: &[(String, Option<Figure>)], imp: &str| {
        cells
            .iter()
            .find(|(i, _)| i == imp)
            .and_then(|(_, f)| f.map(|f| f.median))
    };
    let mut table = String::new();
    for (name, unit, cells) in rows {
        let (Some(floor), Some(gevent), Some(hub)) = (
            median(cells, "raw-mio"),
            median(cells, "gevent"),
            median(cells, "hub"),
        ) else {
            continue;
        };
        // Times and CPU per request: gevent's over ours; requests per
        // second: ours over gevent's.
        let (best, ours) = if unit.starts_with("µs") {
            (gevent / floor, gevent / hub)
        } else {
            (floor / gevent, hub / gevent)
        };
        table.push_str(&format!(
            "| {name} | {} | {best:.2}× | {ours:.2}× |\n",
            short_unit(unit)
        ));
    }
    if table.is_empty() {
        return table;
    }
    format!(
        "\nHow far ahead of gevent the floor itself is, the most any readiness-based runtime \
         could be on this kernel, beside the hub's own advantage over gevent:\n\n\
         | workload | unit | floor over gevent | hub over gevent |\n|---|---|---:|---:|\n{table}"
    )
}
