//! `UdpSocket`: datagrams between green tasks, timeouts, clones. Loopback
//! only.

mod net_util;
mod util;

use greenlet_hub::{Error, UdpSocket, spawn};
use net_util::{V4, v6_loopback};
use std::io;
use std::time::Instant;
use util::ms;

#[test]
fn ping_pong_between_tasks() {
    let server = UdpSocket::bind(V4).unwrap();
    let addr = server.local_addr().unwrap();
    let echo = spawn(move || {
        let mut buf = [0; 64];
        for _ in 0..10 {
            let (n, from) = server.recv_from(&mut buf)?;
            server.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let client = UdpSocket::bind(V4).unwrap();
    client.connect(addr).unwrap();
    assert_eq!(client.peer_addr().unwrap(), addr);
    for i in 0..10u8 {
        client.send(&[i; 8]).unwrap();
        let mut buf = [0; 64];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i; 8]);
    }
    echo.get(None).unwrap();
}

#[test]
fn many_tasks_wait_for_datagrams_at_once() {
    let receivers: Vec<_> = (0..20).map(|_| UdpSocket::bind(V4).unwrap()).collect();
    let addrs: Vec<_> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|r| {
            spawn(move || {
                let mut buf = [0; 16];
                let (n, _) = r.recv_from(&mut buf)?;
                Ok(buf[..n].to_vec())
            })
        })
        .collect();
    let sender = UdpSocket::bind(V4).unwrap();
    for (i, a) in addrs.iter().enumerate() {
        sender.send_to(format!("#{i}").as_bytes(), a).unwrap();
    }
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.get(None).unwrap(), format!("#{i}").as_bytes());
    }
}

#[test]
fn recv_timeout_and_peek() {
    let s = UdpSocket::bind(V4).unwrap();
    s.set_read_timeout(Some(ms(30))).unwrap();
    let start = Instant::now();
    let e = s.recv_from(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(matches!(Error::from(e), Error::TimedOut));
    assert!(start.elapsed() >= ms(30));

    let clone = s.try_clone().unwrap();
    assert_eq!(clone.read_timeout().unwrap(), Some(ms(30)));
    clone.send_to(b"self", s.local_addr().unwrap()).unwrap();
    let mut buf = [0; 8];
    assert_eq!(s.peek_from(&mut buf).unwrap().0, 4);
    let (n, from) = clone.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"self"[..], s.local_addr().unwrap()));
}

#[test]
fn ipv6_loopback_datagram() {
    let Some(addr) = v6_loopback() else {
        eprintln!("skipped: no IPv6 loopback ([::1]) on this machine");
        return;
    };
    let a = UdpSocket::bind(addr).unwrap();
    let b = UdpSocket::bind(addr).unwrap();
    a.send_to(b"six", b.local_addr().unwrap()).unwrap();
    let mut buf = [0; 8];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"six"[..], a.local_addr().unwrap()));
}

#[test]
fn send_to_a_closed_port_is_refused_on_the_next_call() {
    let port = std::net::UdpSocket::bind(V4)
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = UdpSocket::bind(V4).unwrap();
    s.connect(("127.0.0.1", port)).unwrap();
    // No read timeout: the refusal must come (a hang otherwise; no time
    // bound in tests).
    s.send(b"anyone?").unwrap();
    // The ICMP port unreachable comes back as the socket's error.
    let e = s.recv(&mut [0; 8]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
}
