//! The blocking pool: `spawn_blocking` and name resolution run on worker
//! threads while the hub's other greenlets go on.

mod util;

use greenlet_hub::{Error, resolve, resolve_host, sleep, spawn, spawn_blocking};
use std::time::{Duration, Instant};
use util::ms;

#[test]
fn other_tasks_run_while_a_thread_blocks() {
    let (ticks, ticker) = util::ticker();
    let thread = spawn_blocking(|| {
        std::thread::sleep(ms(100));
        std::thread::current().id()
    })
    .unwrap();
    assert_ne!(thread, std::thread::current().id());
    assert!(
        ticks.get() >= 5,
        "only {} ticks while the thread slept",
        ticks.get()
    );
    ticker.kill(None).unwrap();
}

#[test]
fn many_blocking_calls_overlap() {
    let start = Instant::now();
    let calls: Vec<_> = (0..8u64)
        .map(|i| {
            spawn(move || {
                spawn_blocking(move || {
                    std::thread::sleep(ms(100));
                    i * i
                })
            })
        })
        .collect();
    let results: Vec<u64> = calls.iter().map(|c| c.get(None).unwrap()).collect();
    assert_eq!(results, [0, 1, 4, 9, 16, 25, 36, 49]);
    // Eight 100 ms sleeps on eight workers: well under their sum.
    assert!(start.elapsed() < ms(700), "{:?}", start.elapsed());
}

#[test]
fn a_panic_on_the_worker_is_an_error_for_the_caller() {
    util::quiet_expected_panics();
    let e = spawn_blocking(|| -> u8 { panic!("expected: worker panic") }).unwrap_err();
    assert!(
        matches!(&e, Error::Panicked(m) if m.contains("worker panic")),
        "{e}"
    );
    // The pool still works.
    assert_eq!(spawn_blocking(|| 7).unwrap(), 7);
}

#[test]
fn a_killed_caller_stops_waiting_at_once() {
    let waiter = spawn(|| {
        spawn_blocking(|| std::thread::sleep(ms(300)))?;
        Ok(())
    });
    sleep(ms(10)).unwrap();
    let start = Instant::now();
    waiter.kill(None).unwrap();
    assert!(start.elapsed() < ms(200), "{:?}", start.elapsed());
    assert!(matches!(waiter.error(), Some(Error::Killed)));
}

#[test]
fn a_scope_timeout_bounds_a_blocking_call() {
    let start = Instant::now();
    let r = greenlet_hub::with_timeout(ms(20), || spawn_blocking(|| std::thread::sleep(ms(300))));
    assert!(matches!(r, Ok(None)), "the scope expired: {r:?}");
    assert!(start.elapsed() < ms(250), "{:?}", start.elapsed());
}

#[test]
fn resolve_localhost_through_the_pool() {
    let addrs = resolve("localhost:80").unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
        "{addrs:?}"
    );
    let addrs = resolve_host("localhost", 443).unwrap();
    assert!(addrs.iter().all(|a| a.port() == 443));
    // Literals never reach the pool.
    assert_eq!(resolve("[::1]:5").unwrap(), ["[::1]:5".parse().unwrap()]);
    // A malformed name fails like std's lookup.
    assert!(resolve("no port here").is_err());
}

#[test]
fn resolution_does_not_block_the_others() {
    let ticker = spawn(|| {
        for _ in 0..3 {
            sleep(Duration::from_millis(1))?;
        }
        Ok(())
    });
    for _ in 0..3 {
        resolve("localhost:1").unwrap();
    }
    ticker.get(None).unwrap();
}
