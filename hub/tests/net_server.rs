//! `StreamServer`: a task per connection, a pool limit, graceful stop,
//! failures confined to their connection, and several hubs on one port
//! through `SO_REUSEPORT`. Loopback only.

mod net_util;
mod util;

use greenlet_hub::{
    Error, Event, ServerError, StreamServer, TcpStream, idle, serve_on_threads, sleep, spawn,
};
use net_util::V4;
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use util::ms;

fn echo(mut conn: TcpStream, _peer: std::net::SocketAddr) -> Result<(), Error> {
    let mut buf = [0; 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

fn round_trip(addr: std::net::SocketAddr, msg: &str) -> Result<String, Error> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(msg.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn serves_many_connections_at_once() {
    let server = StreamServer::bind(V4, echo).unwrap();
    server.start().unwrap();
    server.start().unwrap(); // idempotent
    let addr = server.local_addr();
    let clients: Vec<_> = (0..50)
        .map(|i| spawn(move || round_trip(addr, &format!("client {i}"))))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.get(None).unwrap(), format!("client {i}"));
    }
    server.stop(None).unwrap();
    assert_eq!(server.connections(), 0);
}

#[test]
fn a_pool_limits_the_handlers_running_at_once() {
    let running = Rc::new(Cell::new(0));
    let most = Rc::new(Cell::new(0));
    let (r, m) = (running.clone(), most.clone());
    let server = StreamServer::bind(V4, move |conn, peer| {
        r.set(r.get() + 1);
        m.set(m.get().max(r.get()));
        sleep(ms(10))?;
        let result = echo(conn, peer);
        r.set(r.get() - 1);
        result
    })
    .unwrap()
    .with_pool_size(2);
    assert_eq!(server.pool_size(), Some(2));
    server.start().unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = (0..8)
        .map(|i| spawn(move || round_trip(addr, &format!("{i}"))))
        .collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.get(None).unwrap(), i.to_string());
    }
    assert_eq!(most.get(), 2, "the pool's size bounds the running handlers");
    server.stop(None).unwrap();
}

#[test]
fn stop_closes_the_listener_and_lets_handlers_finish() {
    let finished = Rc::new(Cell::new(false));
    let (started, release) = (Event::new(), Event::new());
    let (f, s, r) = (finished.clone(), started.clone(), release.clone());
    let server = StreamServer::bind(V4, move |mut conn, _| {
        s.set();
        r.wait(None)?; // still busy when stop is called
        conn.write_all(b"done")?;
        f.set(true);
        Ok(())
    })
    .unwrap();
    server.start().unwrap();
    let addr = server.local_addr();
    let client = spawn(move || {
        let mut s = TcpStream::connect(addr)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    });
    started.wait(None).unwrap(); // the handler is running
    assert_eq!(server.connections(), 1);
    // The handler is released only once the hub has nothing else to do:
    // while stop waits for it. A stop that did not wait would return
    // first, with the handler unfinished.
    let releaser = spawn(move || {
        idle()?;
        release.set();
        Ok(())
    });
    server.stop(None).unwrap();
    assert!(finished.get(), "stop waited for the handler");
    releaser.get(None).unwrap();
    assert_eq!(client.get(None).unwrap(), "done");
    assert!(!server.is_started());
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(server.start().is_err(), "a stopped server stays stopped");
}

#[test]
fn stop_kills_handlers_still_running_after_its_timeout() {
    let cleaned = util::flag();
    let completed = Rc::new(Cell::new(false));
    let started = Event::new();
    let (c, d, s) = (cleaned.clone(), completed.clone(), started.clone());
    let server = StreamServer::bind(V4, move |mut conn, _| {
        let _flag = util::DropFlag(c.clone());
        s.set();
        let mut buf = [0; 8];
        conn.read_exact(&mut buf)?; // only the releaser below ever writes
        d.set(true);
        Ok(())
    })
    .unwrap();
    server.start().unwrap();
    let client = Rc::new(TcpStream::connect(server.local_addr()).unwrap());
    started.wait(None).unwrap();
    // A stop that ignored its timeout would wait forever. Instead of
    // hanging, the test then fails: once stop waits (the hub idle), this
    // task sleeps past stop's deadline (its timer, armed later with the
    // same delay, fires after stop's), waits for idle again and lets the
    // handler complete, which a working stop has killed by then.
    let peer = client.clone();
    let releaser = spawn(move || {
        idle()?;
        sleep(ms(20))?;
        idle()?;
        (&*peer).write_all(b"complete")?;
        Ok(())
    });
    server.stop(ms(20)).unwrap();
    assert!(!completed.get(), "stop waited past its timeout");
    assert!(util::is_set(&cleaned), "the killed handler's cleanup ran");
    assert_eq!(server.connections(), 0);
    releaser.kill(None).unwrap();
}

#[test]
fn a_failing_handler_is_reported_and_the_others_go_on() {
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let server = StreamServer::bind(V4, |mut conn, peer| {
        let mut first = [0; 1];
        conn.read_exact(&mut first)?;
        if first[0] == b'!' {
            return Err(Error::failed(std::io::Error::other(format!(
                "bad request from {peer}"
            ))));
        }
        conn.write_all(b"ok")?;
        Ok(())
    })
    .unwrap();
    let log = seen.clone();
    server.set_error_handler(move |e| {
        assert!(matches!(e, ServerError::Handler { .. }));
        log.borrow_mut().push(e.to_string());
    });
    server.start().unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = ["a", "!", "b", "!", "c"]
        .into_iter()
        .map(|m| spawn(move || round_trip(addr, m)))
        .collect();
    let replies: Vec<String> = clients.iter().map(|c| c.get(None).unwrap()).collect();
    assert_eq!(replies, ["ok", "", "ok", "", "ok"]);
    server.stop(None).unwrap();
    assert_eq!(seen.borrow().len(), 2);
    assert!(
        seen.borrow()[0].contains("bad request"),
        "{:?}",
        seen.borrow()
    );
}

#[test]
fn serve_forever_returns_once_stopped() {
    let server = StreamServer::bind(V4, echo).unwrap();
    let (s, addr) = (server.clone(), server.local_addr());
    let driver = spawn(move || {
        let reply = round_trip(addr, "hi")?;
        s.stop(None)?;
        Ok(reply)
    });
    server.serve_forever().unwrap();
    assert_eq!(driver.get(None).unwrap(), "hi");
}

#[test]
fn hubs_on_two_threads_share_a_port() {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let servers = std::thread::spawn(move || {
        serve_on_threads(
            2,
            "127.0.0.1:0",
            flag,
            move |addr| tx.send(addr).unwrap(),
            |index| {
                move |mut conn: TcpStream, _| {
                    let thread = std::thread::current().id();
                    conn.write_all(format!("{index} {thread:?}").as_bytes())?;
                    Ok(())
                }
            },
        )
    });
    let addr = rx.recv().unwrap();
    // Many connections from distinct source ports: the kernel's hash
    // spreads them; with 64 the chance that one listener gets none is 2^-63.
    let clients: Vec<_> = (0..64)
        .map(|_| {
            spawn(move || {
                let mut reply = String::new();
                TcpStream::connect(addr)?.read_to_string(&mut reply)?;
                Ok(reply)
            })
        })
        .collect();
    let replies: Vec<String> = clients.iter().map(|c| c.get(None).unwrap()).collect();
    let first = replies.iter().filter(|r| r.starts_with("0 ")).count();
    let second = replies.iter().filter(|r| r.starts_with("1 ")).count();
    assert_eq!(first + second, 64);
    assert!(first > 0 && second > 0, "{first} / {second}");
    let threads: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| r.split_once(' ').unwrap().1.to_owned())
        .collect();
    assert_eq!(threads.len(), 2, "two threads served");
    stop.store(true, Ordering::SeqCst);
    servers.join().unwrap().unwrap();
}
