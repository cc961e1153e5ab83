//! `TcpListener` and `TcpStream`: std's methods, cooperative blocking,
//! timeouts through the hub's timers, descriptor flags. Loopback only.

mod net_util;
mod util;

use greenlet_hub::{Error, Event, TcpListener, TcpStream, Timeout, sleep, spawn};
use net_util::{V4, is_cloexec, is_nonblocking, v6_loopback};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{Log, ms};

/// A connected pair on loopback: (client side, server side).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(V4).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, peer) = listener.accept().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    (client, server)
}

#[test]
fn every_descriptor_is_nonblocking_and_close_on_exec() {
    let listener = TcpListener::bind(V4).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let clone = accepted.try_clone().unwrap();
    let listener_clone = listener.try_clone().unwrap();
    let adopted =
        TcpStream::from_std(std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .unwrap();
    let udp = greenlet_hub::UdpSocket::bind(V4).unwrap();
    let udp_clone = udp.try_clone().unwrap();
    for (what, fd) in [
        ("listener", listener.as_raw_fd()),
        ("listener clone", listener_clone.as_raw_fd()),
        ("connected", client.as_raw_fd()),
        ("accepted", accepted.as_raw_fd()),
        ("stream clone", clone.as_raw_fd()),
        ("adopted std stream", adopted.as_raw_fd()),
        ("udp", udp.as_raw_fd()),
        ("udp clone", udp_clone.as_raw_fd()),
    ] {
        assert!(is_nonblocking(fd), "{what} (fd {fd}) is blocking");
        assert!(is_cloexec(fd), "{what} (fd {fd}) lacks FD_CLOEXEC");
    }
}

#[test]
fn echo_with_std_methods() {
    let listener = TcpListener::bind(V4).unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let server = spawn(move || {
        let (mut conn, peer) = listener.accept()?;
        assert!(peer.ip().is_loopback());
        conn.set_nodelay(true)?;
        assert!(conn.nodelay()?);
        let mut buf = [0; 256];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        }
    });
    let mut client = TcpStream::connect(addr).unwrap();
    assert_eq!(client.peer_addr().unwrap(), addr);
    for i in 0..100u32 {
        let msg = format!("message {i}");
        client.write_all(msg.as_bytes()).unwrap();
        let mut reply = vec![0; msg.len()];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(reply, msg.as_bytes());
    }
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    server.get(None).unwrap();
}

#[test]
fn ipv6_loopback() {
    let Some(addr) = v6_loopback() else {
        eprintln!("skipped: no IPv6 loopback ([::1]) on this machine");
        return;
    };
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    let server = spawn(move || {
        let (mut conn, _) = listener.accept()?;
        conn.write_all(b"v6")?;
        Ok(())
    });
    let mut reply = String::new();
    TcpStream::connect(local)
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert_eq!(reply, "v6");
    server.get(None).unwrap();
}

#[test]
fn hundred_clients_served_concurrently_in_one_thread() {
    let listener = TcpListener::bind(V4).unwrap();
    let addr = listener.local_addr().unwrap();
    // Every handler waits until all hundred have read their line: they can
    // only finish if all are alive and blocked at once. (Served one at a
    // time, the first would wait forever: a hang, no time-free failure.)
    let all_in = Event::new();
    let arrived = Rc::new(Cell::new(0u32));
    let acceptor = spawn(move || {
        let mut handlers = Vec::new();
        for conn in listener.incoming().take(100) {
            let mut conn = conn?;
            let (all_in, arrived) = (all_in.clone(), arrived.clone());
            handlers.push(spawn(move || {
                let mut line = [0; 8];
                conn.read_exact(&mut line)?;
                arrived.set(arrived.get() + 1);
                if arrived.get() == 100 {
                    all_in.set();
                }
                all_in.wait(None)?; // every handler waits at once
                conn.write_all(&line)?;
                Ok(())
            }));
        }
        greenlet_hub::joinall(&handlers, None, None)?;
        Ok(())
    });
    let clients: Vec<_> = (0..100u32)
        .map(|i| {
            spawn(move || {
                let mut s = TcpStream::connect(addr)?;
                s.write_all(format!("{i:08}").as_bytes())?;
                let mut reply = String::new();
                s.read_to_string(&mut reply)?;
                Ok(reply == format!("{i:08}"))
            })
        })
        .collect();
    for c in &clients {
        assert!(c.get(None).unwrap());
    }
    acceptor.get(None).unwrap();
}

#[test]
fn one_task_reads_while_another_writes_through_shared_references() {
    let (client, server) = pair();
    let server = Rc::new(server);
    let log = Log::new();
    let (s, l) = (server.clone(), log.clone());
    let reader = spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0; 64];
        loop {
            let n = (&*s).read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            l.push("read");
            got.extend_from_slice(&buf[..n]);
        }
    });
    let (s, l) = (server.clone(), log.clone());
    let writer = spawn(move || {
        for _ in 0..3 {
            (&*s).write_all(b"tick")?;
            l.push("wrote");
            sleep(ms(2))?;
        }
        Ok(())
    });
    let mut client_ref = &client;
    let mut seen = [0; 12];
    client_ref.read_exact(&mut seen).unwrap();
    assert_eq!(seen.as_slice(), "tick".repeat(3).as_bytes());
    client_ref.write_all(b"bye").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    writer.get(None).unwrap();
    assert_eq!(reader.get(None).unwrap(), b"bye");
    assert!(log.take().contains(&"read".to_string()));
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let port = {
        let l = std::net::TcpListener::bind(V4).unwrap();
        l.local_addr().unwrap().port()
    }; // closed now
    let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    // A timeout that never fires: the refusal must come first.
    let e = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(3600),
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn connect_by_name_resolves_on_the_pool() {
    let listener = TcpListener::bind(V4).unwrap();
    let port = listener.local_addr().unwrap().port();
    // "localhost" may resolve to ::1 first: each address is tried in turn.
    let s = TcpStream::connect(format!("localhost:{port}")).unwrap();
    assert_eq!(s.peer_addr().unwrap().port(), port);
    let s = TcpStream::connect(("localhost", port)).unwrap();
    assert_eq!(s.peer_addr().unwrap().port(), port);
}

#[test]
fn connect_timeout_when_the_backlog_is_full() {
    // A listener with backlog 0 that never accepts: once its accept queue
    // holds one connection, the kernel drops further SYNs and the
    // handshake stalls (the client would retransmit after a second).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let (ticks, ticker) = util::ticker();
    // The ticker's first 5 ms timer is armed before any connect's 150 ms
    // one, so it fires first: at least one tick, however slow the machine.
    sleep(Duration::ZERO).unwrap();
    let mut kept = Vec::new();
    let mut timed_out = None;
    for _ in 0..8 {
        let start = Instant::now();
        match TcpStream::connect_timeout(&addr, ms(150)) {
            Ok(s) => kept.push(s),
            Err(e) => {
                timed_out = Some((e, start.elapsed()));
                break;
            }
        }
    }
    let (e, took) = timed_out.expect("some connect stalls once the backlog is full");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(matches!(Error::from(e), Error::TimedOut));
    assert!(took >= ms(150), "{took:?}");
    assert!(ticks.get() > 0, "other tasks ran while connect waited");
    ticker.kill(None).unwrap();
    assert_eq!(
        TcpStream::connect_timeout(&addr, Duration::ZERO)
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn read_timeout_gives_timed_out_and_the_others_run() {
    let (mut client, _server) = pair();
    assert!(client.set_read_timeout(Some(Duration::ZERO)).is_err());
    client.set_read_timeout(Some(ms(50))).unwrap();
    assert_eq!(client.read_timeout().unwrap(), Some(ms(50)));
    let (ticks, ticker) = util::ticker();
    // As above: the ticker's first timer is armed before the read's.
    sleep(Duration::ZERO).unwrap();
    let start = Instant::now();
    let e = client.read(&mut [0; 16]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(start.elapsed() >= ms(50));
    assert!(ticks.get() >= 1, "{} ticks", ticks.get());
    ticker.kill(None).unwrap();
    // The timeout is shared with clones, as std's socket option is.
    let clone = client.try_clone().unwrap();
    assert_eq!(clone.read_timeout().unwrap(), Some(ms(50)));
    client.set_read_timeout(None).unwrap();
    assert_eq!(clone.read_timeout().unwrap(), None);
}

#[test]
fn write_timeout_when_the_peer_never_reads() {
    let (mut client, _server) = pair();
    socket2::SockRef::from(&client)
        .set_send_buffer_size(4096)
        .unwrap();
    client.set_write_timeout(Some(ms(50))).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    // The peer never reads, so the kernel's buffers (far less than 64 MiB
    // on loopback) fill up and a write must block: a bound in bytes, not
    // in time.
    let mut written = 0usize;
    let e = loop {
        match client.write(&chunk) {
            Ok(n) => {
                assert!(n > 0, "a write of nothing");
                written += n;
                assert!(written < 64 << 20, "never blocked: {written} bytes");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
}

#[test]
fn a_scope_timeout_and_a_kill_interrupt_a_read() {
    let (mut client, server) = pair();
    let scope = Timeout::new(ms(10));
    let e = client.read(&mut [0; 4]).unwrap_err();
    let e = Error::from(e);
    assert!(scope.is(&e), "{e}");
    drop(scope);

    let cleaned = util::flag();
    let c = cleaned.clone();
    let reader = spawn(move || {
        let _flag = util::DropFlag(c);
        let mut server = server;
        server.read_exact(&mut [0; 4])?;
        Ok(())
    });
    sleep(ms(2)).unwrap();
    reader.kill(None).unwrap();
    assert!(matches!(reader.error(), Some(Error::Killed)));
    assert!(util::is_set(&cleaned));
    // The killed reader's stream was dropped: the client sees end of file.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn half_close_leaves_the_other_direction_open() {
    let (mut client, mut server) = pair();
    let peer = spawn(move || {
        let mut request = String::new();
        server.read_to_string(&mut request)?; // until the client's shutdown
        server.write_all(format!("got {request}").as_bytes())?;
        Ok(())
    });
    client.write_all(b"question").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got question");
    peer.get(None).unwrap();
}

#[test]
fn peek_then_read_and_vectored_io() {
    let (mut client, mut server) = pair();
    let n = client
        .write_vectored(&[io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")])
        .unwrap();
    assert_eq!(n, 4);
    let mut buf = [0; 4];
    while server.peek(&mut buf).unwrap() < 4 {
        sleep(ms(1)).unwrap();
    }
    assert_eq!(&buf, b"abcd");
    let (mut a, mut b) = ([0; 2], [0; 2]);
    let mut bufs = [io::IoSliceMut::new(&mut a), io::IoSliceMut::new(&mut b)];
    assert_eq!(server.read_vectored(&mut bufs).unwrap(), 4); // still queued
    assert_eq!([a, b].concat(), b"abcd");
}

#[test]
fn ttl_and_take_error() {
    let (client, _server) = pair();
    client.set_ttl(33).unwrap();
    assert_eq!(client.ttl().unwrap(), 33);
    assert!(client.take_error().unwrap().is_none());
    assert!(format!("{client:?}").contains("TcpStream"));
}
