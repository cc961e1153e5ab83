//! `TcpStream`'s readiness tracking: a read that is known to have emptied
//! the receive queue (it did not fill its buffer, or the kernel said so
//! through `TCP_INQ`) makes the next read wait for the next edge instead of
//! trying. None of that may ever lose data or a wake-up: whatever arrives
//! later, or was already queued behind a full buffer, or is an end of file,
//! is still read. No read here has a timeout: a lost wake-up hangs the test
//! (tests bound no time; the CI's overall timeout catches a hang).

mod net_util;
mod util;

use greenlet_hub::{TcpListener, TcpStream, sleep, spawn};
use net_util::V4;
use std::io::{self, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::time::Duration;
use util::ms;

/// A connected pair on loopback (client side, server side), `TCP_NODELAY`
/// on both.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(V4).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    for s in [&client, &server] {
        s.set_nodelay(true).unwrap();
    }
    (client, server)
}

/// Writes `data` from another task after `delay`, so the reader is parked
/// (or about to park) when it arrives.
fn write_later(
    mut to: TcpStream,
    delay: Duration,
    data: &'static [u8],
) -> greenlet_hub::Task<TcpStream> {
    spawn(move || {
        sleep(delay)?;
        to.write_all(data)?;
        Ok(to)
    })
}

#[test]
fn a_read_after_a_short_read_sees_data_that_arrives_later() {
    let (client, mut server) = pair();
    let mut buf = [0; 64];
    let writer = write_later(client, ms(0), b"short");
    assert_eq!(server.read(&mut buf).unwrap(), 5); // short: drained
    let client = writer.get(None).unwrap();
    let writer = write_later(client, ms(20), b"later");
    assert_eq!(server.read(&mut buf).unwrap(), 5); // waits for the new edge
    assert_eq!(&buf[..5], b"later");
    writer.get(None).unwrap();
}

#[test]
fn reads_that_fill_their_buffer_still_see_what_is_queued_behind() {
    let (mut client, mut server) = pair();
    // 256 bytes in one write, read 64 at a time: each read fills its
    // buffer, with more queued behind all but the last.
    let data: Vec<u8> = (0..=255).collect();
    client.write_all(&data).unwrap();
    // The hub sees the data's edge before the first read: from then on only
    // the readiness flag remembers that something is queued.
    sleep(ms(5)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 64];
    while got.len() < data.len() {
        let n = server.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
    // The queue is now empty: the next read waits for what comes later.
    let writer = write_later(
        client,
        ms(20),
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    server.read_exact(&mut buf).unwrap();
    assert_eq!(
        &buf,
        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    writer.get(None).unwrap();
}

#[test]
fn an_end_of_file_behind_a_full_buffer_is_seen() {
    let (mut client, mut server) = pair();
    let mut buf = [0; 8];
    // A first exact read turns the queue count on.
    client.write_all(b"warm-up!").unwrap();
    server.read_exact(&mut buf).unwrap();
    // Then exactly a buffer's worth and the end of file: the count says
    // one byte is left (the FIN), so the next read tries and sees it.
    client.write_all(b"last one").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    sleep(ms(5)).unwrap(); // both in the queue before the read
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"last one");
    assert_eq!(server.read(&mut buf).unwrap(), 0);
    assert_eq!(server.read(&mut buf).unwrap(), 0); // and again: end of file is final
}

/// The two ways a read marks the queue drained.
#[derive(Clone, Copy, Debug)]
enum Drain {
    /// A read that did not fill its buffer.
    Short,
    /// A read that filled it, told by the kernel's count that nothing is
    /// left (after a first full read turned the count on).
    Counted,
}

/// Makes `server`'s next read wait for an edge, the way `how` says.
fn drain(client: &mut TcpStream, server: &mut TcpStream, how: Drain) {
    match how {
        Drain::Short => {
            client.write_all(b"abc").unwrap();
            let mut buf = [0; 8];
            assert_eq!(server.read(&mut buf).unwrap(), 3);
        }
        Drain::Counted => {
            let mut buf = [0; 4];
            client.write_all(b"abcd").unwrap();
            server.read_exact(&mut buf).unwrap();
            client.write_all(b"efgh").unwrap();
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"efgh");
        }
    }
}

#[test]
fn an_end_of_file_after_a_drained_read_wakes_the_reader() {
    for how in [Drain::Short, Drain::Counted] {
        let (mut client, mut server) = pair();
        drain(&mut client, &mut server, how);
        let closer = spawn(move || {
            sleep(ms(20))?;
            client.shutdown(Shutdown::Write)?;
            Ok(client)
        });
        assert_eq!(server.read(&mut [0; 8]).unwrap(), 0, "{how:?}");
        closer.get(None).unwrap();
    }
}

#[test]
fn data_after_a_drained_read_wakes_the_reader() {
    for how in [Drain::Short, Drain::Counted] {
        let (mut client, mut server) = pair();
        drain(&mut client, &mut server, how);
        let writer = write_later(client, ms(20), b"later");
        let mut buf = [0; 5];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"later", "{how:?}");
        writer.get(None).unwrap();
    }
}

#[test]
fn request_response_with_exact_reads_of_every_size() {
    // The echo pattern whose spared `WouldBlock` this is about, over sizes
    // that straddle segment and buffer boundaries, with plain and vectored
    // reads, in both directions.
    let (mut client, mut server) = pair();
    let echo = spawn(move || {
        let mut buf = vec![0; 100_000];
        loop {
            let mut len = [0; 4];
            server.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                return Ok(());
            }
            server.read_exact(&mut buf[..len])?;
            server.write_all(&buf[..len])?;
        }
    });
    for (i, len) in [
        1usize, 2, 63, 64, 65, 1000, 1448, 4096, 65_536, 70_000, 7, 1,
    ]
    .into_iter()
    .cycle()
    .take(60)
    .enumerate()
    {
        let out: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        client.write_all(&(len as u32).to_le_bytes()).unwrap();
        client.write_all(&out).unwrap();
        let mut back = vec![0; len];
        if i % 2 == 0 {
            client.read_exact(&mut back).unwrap();
        } else {
            // Vectored, split in two, until full.
            let mut done = 0;
            while done < len {
                let (a, b) = back[done..].split_at_mut((len - done) / 2);
                let mut bufs = [IoSliceMut::new(a), IoSliceMut::new(b)];
                let n = client.read_vectored(&mut bufs).unwrap();
                assert!(n > 0, "end of file in the middle of a reply");
                done += n;
            }
        }
        assert_eq!(back, out, "round trip {i} of {len} bytes");
    }
    client.write_all(&0u32.to_le_bytes()).unwrap();
    echo.get(None).unwrap();
}

#[test]
fn a_clone_reads_what_the_original_left_queued() {
    let (mut client, server) = pair();
    let mut buf = [0; 4];
    client.write_all(b"abcdefgh").unwrap();
    (&server).read_exact(&mut buf).unwrap(); // a full buffer, more queued
    let mut clone = server.try_clone().unwrap();
    clone.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"efgh");
    // The original, drained by its clone, waits for new data.
    let writer = write_later(client, ms(20), b"ijkl");
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ijkl");
    writer.get(None).unwrap();
}

#[test]
fn a_read_timeout_still_fires_after_a_drained_read() {
    for how in [Drain::Short, Drain::Counted] {
        let (mut client, mut server) = pair();
        drain(&mut client, &mut server, how);
        server.set_read_timeout(Some(ms(20))).unwrap();
        let mut buf = [0; 4];
        let e = server.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{how:?}");
        // And the stream still works afterwards.
        server.set_read_timeout(None).unwrap();
        client.write_all(b"more").unwrap();
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"more", "{how:?}");
    }
}

#[test]
fn a_reset_after_a_drained_read_is_reported() {
    for how in [Drain::Short, Drain::Counted] {
        let (mut client, mut server) = pair();
        drain(&mut client, &mut server, how);
        // Unread data in the client's queue makes its close a reset.
        server.write_all(b"unread").unwrap();
        let resetter = spawn(move || {
            sleep(ms(20))?;
            drop(client);
            Ok(())
        });
        let e = server.read(&mut [0; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{how:?}: {e}");
        resetter.get(None).unwrap();
    }
}
