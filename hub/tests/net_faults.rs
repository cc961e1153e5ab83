//! Faults on one connection stay with its task: a peer that resets (RST
//! through `SO_LINGER` 0), half-closes, stalls or never reads; a connect to
//! a closed port. The server keeps serving the others, and no descriptor
//! or registration leaks. Loopback only.
//!
//! The tests count this process's descriptors, so they run one at a time
//! (a lock), each on its own thread and hub.

mod net_util;
mod util;

use greenlet_hub::{Error, StreamServer, TcpStream, sleep, spawn, stats};
use net_util::{V4, fd_count};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Mutex;
use util::ms;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `f` on a fresh thread (its own hub) while no other test of this
/// file runs, and checks that the process has as many descriptors after the
/// thread (and so its hub) ended as before.
fn serially(f: impl FnOnce() + Send + 'static) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = fd_count();
    util::on_fresh_thread(f);
    assert_eq!(
        fd_count(),
        before,
        "descriptors leaked (the hub's own included)"
    );
}

/// How each connection's handler ended, by peer address.
type Outcomes = Rc<RefCell<HashMap<SocketAddr, Result<(), io::ErrorKind>>>>;

/// Echoes until end of file. On "flood", writes until the peer's buffers
/// are full, with a 100 ms write timeout; on "stall", expects nothing more,
/// with a 100 ms read timeout. Only the peers that provoke a timeout get
/// one: a good client is never timed (a slow machine cannot fail it).
fn handler(outcomes: Outcomes) -> impl Fn(TcpStream, SocketAddr) -> Result<(), Error> {
    move |mut conn, peer| {
        let result = (|| -> io::Result<()> {
            let mut buf = [0; 1024];
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                match &buf[..n] {
                    b"flood" => {
                        conn.set_write_timeout(Some(ms(100)))?;
                        let chunk = vec![0u8; 64 * 1024];
                        loop {
                            conn.write_all(&chunk)?;
                        }
                    }
                    // The peer says nothing more: the next read times out.
                    b"stall" => conn.set_read_timeout(Some(ms(100)))?,
                    echo => conn.write_all(echo)?,
                }
            }
        })();
        outcomes
            .borrow_mut()
            .insert(peer, result.as_ref().map(|_| ()).map_err(io::Error::kind));
        result.map_err(Error::from)
    }
}

fn echo_client(addr: SocketAddr, i: usize) -> Result<(), Error> {
    let mut s = TcpStream::connect(addr)?;
    for round in 0..5 {
        let msg = format!("client {i} round {round}");
        s.write_all(msg.as_bytes())?;
        let mut reply = vec![0; msg.len()];
        s.read_exact(&mut reply)?;
        assert_eq!(reply, msg.as_bytes());
        sleep(ms(5))?;
    }
    Ok(())
}

#[test]
fn every_fault_reaches_only_its_own_task_and_nothing_leaks() {
    serially(every_fault_reaches_only_its_own_task);
}

fn every_fault_reaches_only_its_own_task() {
    sleep(std::time::Duration::ZERO).unwrap(); // the hub's own descriptors exist now
    let fds_before = fd_count();
    let sources_before = stats().io_sources;
    {
        let outcomes: Outcomes = Rc::default();
        let server = StreamServer::bind(V4, handler(outcomes.clone())).unwrap();
        server.set_error_handler(|_| {}); // the faults below are expected
        server.start().unwrap();
        let addr = server.local_addr();

        // Well-behaved clients, running throughout.
        let good: Vec<_> = (0..20)
            .map(|i| spawn(move || echo_client(addr, i)))
            .collect();

        // A peer that resets: after one echo, close with SO_LINGER 0 (RST).
        let reset = spawn(move || {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b"x")?;
            s.read_exact(&mut [0; 1])?;
            socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO))?;
            let local = s.local_addr()?;
            drop(s);
            Ok(local)
        });
        // A peer that half-closes: the answer still comes back.
        let half = spawn(move || {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b"half")?;
            s.shutdown(Shutdown::Write)?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            assert_eq!(answer, "half");
            s.local_addr().map_err(Error::from)
        });
        // A peer that stalls: says it will, then says nothing.
        let stall = spawn(move || {
            let mut s = TcpStream::connect(addr)?;
            s.write_all(b"stall")?;
            let local = s.local_addr()?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?; // the server gives up and closes
            Ok(local)
        });
        // A peer that never reads what it asked for; its stream stays open
        // until the server's write has timed out (the server stopped).
        let flood = spawn(move || {
            let mut s = TcpStream::connect(addr)?;
            socket2::SockRef::from(&s).set_recv_buffer_size(4096)?;
            s.write_all(b"flood")?;
            let local = s.local_addr()?;
            Ok((local, s))
        });
        // A connect to a closed port.
        let closed_port = std::net::TcpListener::bind(V4)
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = spawn(move || Ok(TcpStream::connect(closed_port).map(|_| ())));

        for g in &good {
            g.get(None).unwrap();
        }
        let reset_peer = reset.get(None).unwrap();
        let half_peer = half.get(None).unwrap();
        let stall_peer = stall.get(None).unwrap();
        let (flood_peer, flood_stream) = flood.get(None).unwrap();
        let refused = refused.get(None).unwrap().unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

        // Stop waits (without a time limit) for every handler to end, the
        // flood's among them while its peer is still open.
        server.stop(None).unwrap();
        drop(flood_stream);
        let outcomes = outcomes.borrow();
        assert_eq!(outcomes[&reset_peer], Err(io::ErrorKind::ConnectionReset));
        assert_eq!(outcomes[&half_peer], Ok(()));
        assert_eq!(outcomes[&stall_peer], Err(io::ErrorKind::TimedOut));
        assert_eq!(outcomes[&flood_peer], Err(io::ErrorKind::TimedOut));
        let clean = outcomes.values().filter(|o| o.is_ok()).count();
        assert_eq!(
            clean, 21,
            "the 20 good clients and the half-close: {outcomes:?}"
        );
        drop(outcomes);
    }
    assert_eq!(stats().io_sources, sources_before, "registrations leaked");
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
}

#[test]
fn a_write_after_the_peer_reset_is_an_error_not_a_signal() {
    serially(a_write_after_the_peer_reset);
}

fn a_write_after_the_peer_reset() {
    let listener = greenlet_hub::TcpListener::bind(V4).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    socket2::SockRef::from(&client)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(client);
    // Wait for the reset itself (the read reports it), not a guessed time.
    let e = server_side.read(&mut [0; 1]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    // Now a write must fail with EPIPE/ECONNRESET (MSG_NOSIGNAL: no SIGPIPE
    // kills the process).
    let e = server_side.write(b"anyone?").unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
}

#[test]
fn connect_and_close_in_a_loop_leaves_no_descriptor() {
    serially(connect_and_close_in_a_loop);
}

fn connect_and_close_in_a_loop() {
    sleep(std::time::Duration::ZERO).unwrap();
    let fds_before = fd_count();
    let listener = greenlet_hub::TcpListener::bind(V4).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = spawn(move || {
        for conn in listener.incoming().take(200) {
            let mut conn = conn?;
            conn.write_all(b".")?;
        }
        Ok(())
    });
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.read_exact(&mut [0; 1]).unwrap();
        let clone = s.try_clone().unwrap();
        drop((s, clone));
    }
    acceptor.get(None).unwrap();
    assert_eq!(fd_count(), fds_before);
    assert_eq!(stats().io_sources, 0);
}
