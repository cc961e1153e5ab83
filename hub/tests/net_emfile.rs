//! A listener out of file descriptors (EMFILE): the accept loop reports the
//! error, backs off instead of spinning, and serves the waiting clients as
//! soon as descriptors are free again. Nothing leaks.
//!
//! The descriptor limit is per process, so this file is its own test binary
//! with a single test: lowering RLIMIT_NOFILE here disturbs nobody.

mod net_util;
mod util;

use greenlet_hub::{ServerError, StreamServer, TcpStream, sleep};
use net_util::{V4, fd_count};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

fn get_nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to the valid pointer it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: setrlimit reads one rlimit from the valid pointer it is given.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// The highest descriptor number open now.
fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    sleep(Duration::ZERO).unwrap(); // the hub's own descriptors exist now
    let fds_before = fd_count();
    let original = get_nofile();
    {
        let accept_errors: Rc<RefCell<Vec<i32>>> = Rc::default();
        let server = StreamServer::bind(V4, |mut conn, _| {
            conn.write_all(b"ok")?;
            Ok(())
        })
        .unwrap();
        let log = accept_errors.clone();
        server.set_error_handler(move |e| match e {
            ServerError::Accept(e) => log.borrow_mut().push(e.raw_os_error().unwrap_or(0)),
            other => panic!("unexpected: {other}"),
        });
        let addr = server.local_addr();
        // The clients connect first: the kernel queues them in the backlog.
        let mut clients: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();

        // No descriptor left: the limit is just above the highest one in
        // use, and every hole below it is filled.
        set_nofile(libc::rlimit {
            rlim_cur: highest_fd() + 1,
            rlim_max: original.rlim_max,
        });
        let mut fillers = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => fillers.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
        }

        server.start().unwrap();
        let (ticks, ticker) = util::ticker();
        // The ticker arms its first 5 ms timer before main arms its 300 ms
        // one, so it ticks at least once before main wakes, however slow.
        sleep(Duration::ZERO).unwrap();
        sleep(Duration::from_millis(300)).unwrap();
        let errors = accept_errors.borrow().clone();
        assert!(!errors.is_empty(), "accept should have failed");
        assert!(errors.iter().all(|&e| e == libc::EMFILE), "{errors:?}");
        // Backing off (5, 10, 20, ... ms), not spinning on the readable
        // listener: the attempts are the backoff deadlines before main's,
        // about six; a slow machine only makes fewer.
        assert!(
            errors.len() < 20,
            "{} accept attempts in 300 ms",
            errors.len()
        );
        assert_eq!(server.connections(), 0);
        assert!(ticks.get() >= 1, "the other tasks kept running");

        // Free one descriptor: the first client in the backlog is served.
        // No read timeout: a server that never retried would leave these
        // reads waiting forever (a hang; there is no time-free bound).
        drop(fillers.pop());
        let mut reply = String::new();
        clients[0].read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "ok");

        // All of them back, and the limit: everyone is served.
        drop(fillers);
        set_nofile(original);
        for c in &mut clients[1..] {
            let mut reply = String::new();
            c.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, "ok");
        }
        ticker.kill(None).unwrap();
        server.stop(None).unwrap();
    }
    set_nofile(original);
    assert_eq!(fd_count(), fds_before, "descriptors leaked");
    assert_eq!(greenlet_hub::stats().io_sources, 0);
}
