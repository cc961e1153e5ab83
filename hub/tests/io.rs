//! `IoSource`: readiness through the hub's poller, with mio sockets.

mod util;

use greenlet_hub::{Error, IoSource, Timeout, sleep, spawn};
use mio::net::UnixStream;
use std::io::{self, Read, Write};
use std::time::Duration;
use util::{Log, ms};

fn pair() -> (IoSource<UnixStream>, IoSource<UnixStream>) {
    let (a, b) = UnixStream::pair().unwrap();
    (IoSource::new(a).unwrap(), IoSource::new(b).unwrap())
}

#[test]
fn a_reader_waits_for_data_while_others_run() {
    let (a, b) = pair();
    let log = Log::new();
    let l = log.clone();
    let reader = spawn(move || {
        let mut buf = [0u8; 16];
        l.push("reading");
        let n = a.read_with(None, |mut s| s.read(&mut buf))?;
        l.push("read");
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    sleep(ms(2)).unwrap();
    log.push("writing");
    b.write_with(None, |mut s| s.write(b"ping")).unwrap();
    assert_eq!(reader.get(None).unwrap(), "ping");
    assert_eq!(log.take(), ["reading", "writing", "read"]);
    assert_eq!(greenlet_hub::stats().io_sources, 1);
}

#[test]
fn a_read_times_out() {
    let (a, _b) = pair();
    let mut buf = [0u8; 4];
    let e = a.read_with(ms(2), |mut s| s.read(&mut buf)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(matches!(Error::from(e), Error::TimedOut));
    let e = a
        .read_with(Duration::ZERO, |mut s| s.read(&mut buf))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn a_scope_timeout_and_a_kill_survive_the_trip_through_io_errors() {
    let (a, _b) = pair();
    let mut buf = [0u8; 4];
    let scope = Timeout::new(ms(1));
    let e: Error = a
        .read_with(None, |mut s| s.read(&mut buf))
        .unwrap_err()
        .into();
    assert!(scope.is(&e), "{e}");

    let reader = spawn(move || {
        let mut buf = [0u8; 4];
        a.read_with(None, |mut s| s.read(&mut buf))?;
        Ok(())
    });
    sleep(ms(1)).unwrap();
    reader.kill(None).unwrap();
    assert!(matches!(reader.error(), Some(Error::Killed)));
}

#[test]
fn many_round_trips() {
    let (a, b) = pair();
    let echo = spawn(move || -> Result<(), Error> {
        let mut buf = [0u8; 64];
        loop {
            let n = a.read_with(None, |mut s| s.read(&mut buf))?;
            if n == 0 {
                return Ok(());
            }
            a.write_with(None, |mut s| s.write_all(&buf[..n]).map(|()| n))?;
        }
    });
    let mut buf = [0u8; 64];
    for i in 0..200u32 {
        let msg = i.to_string();
        b.write_with(None, |mut s| s.write(msg.as_bytes())).unwrap();
        let n = b.read_with(None, |mut s| s.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    drop(b); // the echo task reads end of file
    echo.get(None).unwrap();
}

#[test]
fn an_event_that_comes_while_the_operation_runs_is_not_lost() {
    // The race the readiness tick closes, provoked deterministically: the
    // operation makes data arrive, lets the hub poll (which consumes the
    // edge and marks the source ready), then reports `WouldBlock` as a
    // read that looked just before the data came would. Clearing the flag
    // now would wait for an edge that never comes again; the tick shows an
    // event came during the operation, so it is simply tried again.
    let (a, b) = pair();
    let mut buf = [0u8; 8];
    let mut calls = 0;
    let n = a
        .read_with(None, |mut s| {
            calls += 1;
            if calls == 1 {
                b.write_with(None, |mut s| s.write(b"late"))?;
                sleep(ms(5))?; // the hub polls: the edge is seen and spent
                return Err(io::ErrorKind::WouldBlock.into());
            }
            s.read(&mut buf)
        })
        .unwrap();
    assert_eq!(&buf[..n], b"late");
    assert_eq!(calls, 2, "tried again at once, without waiting");
}

#[test]
fn a_would_block_with_no_event_meanwhile_waits_for_the_next_edge() {
    // The other half: with no event during the operation, `WouldBlock`
    // clears the flag and the next try waits for the data's edge.
    let (a, b) = pair();
    let writer = spawn(move || {
        sleep(ms(20))?;
        b.write_with(None, |mut s| s.write(b"edge"))?;
        Ok(b)
    });
    let mut buf = [0u8; 8];
    let mut calls = 0;
    let n = a
        .read_with(None, |mut s| {
            calls += 1;
            s.read(&mut buf)
        })
        .unwrap();
    assert_eq!(&buf[..n], b"edge");
    assert_eq!(calls, 2, "one WouldBlock, then one read after the edge");
    writer.get(None).unwrap();
}
