//! The blocking pool: `spawn_blocking` and name resolution run on worker
//! threads while the hub's other greenlets go on.

mod util;

use greenlet_hub::{Error, idle, resolve, resolve_host, sleep, spawn, spawn_blocking};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;
use util::ms;

// No test here bounds a time. Each blocking job waits for an event that
// only this thread's hub can produce, so the job finishing at all proves
// the hub ran meanwhile; and where a broken pool would leave a job waiting
// forever, either the job notices it runs on the hub's own thread, or a
// task that runs once the hub has nothing else to do releases it, so the
// test fails instead of hanging.

#[test]
fn other_tasks_run_while_a_thread_blocks() {
    let hub_thread = std::thread::current().id();
    let (tx, rx) = mpsc::channel();
    let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let t = ticks.clone();
    let ticker = spawn(move || {
        for _ in 0..3 {
            sleep(ms(1))?;
            t.set(t.get() + 1);
        }
        let _ = tx.send(());
        Ok(())
    });
    // The job returns only after the ticker ticked three times: the hub ran
    // the ticker while this greenlet waited for the job.
    let thread = spawn_blocking(move || {
        let me = std::thread::current().id();
        if me != hub_thread {
            let _ = rx.recv();
        } // else run inline on the hub's thread: waiting would deadlock
        me
    })
    .unwrap();
    assert_ne!(thread, hub_thread, "the job ran on the hub's own thread");
    assert_eq!(ticks.get(), 3, "the job returned before the ticker ticked");
    ticker.get(None).unwrap();
}

#[test]
fn many_blocking_calls_overlap() {
    // All eight jobs meet at a barrier: they finish only if all eight run
    // at once (on a pool that ran them one at a time, the first would wait
    // forever: no time-free way to turn that into a failure, so it hangs).
    let barrier = Arc::new(Barrier::new(8));
    let calls: Vec<_> = (0..8u64)
        .map(|i| {
            let barrier = barrier.clone();
            spawn(move || {
                spawn_blocking(move || {
                    barrier.wait();
                    (i * i, std::thread::current().id())
                })
            })
        })
        .collect();
    let results: Vec<_> = calls.iter().map(|c| c.get(None).unwrap()).collect();
    let squares: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49]);
    let threads: std::collections::HashSet<_> = results.iter().map(|r| r.1).collect();
    assert_eq!(threads.len(), 8, "eight workers at once");
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

/// A blocking job that waits until released and then records that it
/// finished.
fn held_job(rx: mpsc::Receiver<()>, finished: &Arc<AtomicBool>) -> impl FnOnce() + Send + 'static {
    let finished = finished.clone();
    move || {
        let _ = rx.recv(); // released, or the test ended
        finished.store(true, Ordering::SeqCst);
    }
}

/// A task that releases the held job once the hub has nothing else to do,
/// after `delay`: a caller that kept waiting for the job (the bug) would
/// then get its result instead of hanging, and fail the test.
fn release_when_idle(tx: mpsc::Sender<()>, delay: Duration) -> greenlet_hub::Task<()> {
    spawn(move || {
        sleep(delay)?;
        idle()?;
        let _ = tx.send(());
        Ok(())
    })
}

#[test]
fn a_killed_caller_stops_waiting_at_once() {
    let (tx, rx) = mpsc::channel();
    let finished = util::flag();
    let (started, on_start) = {
        let r = greenlet_hub::AsyncResult::new();
        let s = r.sender();
        (r, s)
    };
    let job = held_job(rx, &finished);
    let waiter = spawn(move || {
        spawn_blocking(move || {
            on_start.set(());
            job()
        })?;
        Ok(())
    });
    started.get(None).unwrap(); // the job runs: the waiter waits for it
    let releaser = release_when_idle(tx.clone(), Duration::ZERO);
    waiter.kill(None).unwrap();
    // The job is still held: the kill did not wait for it.
    assert!(!util::is_set(&finished), "the kill waited for the job");
    assert!(matches!(waiter.error(), Some(Error::Killed)));
    releaser.kill(None).unwrap();
    tx.send(()).unwrap();
}

#[test]
fn a_scope_timeout_bounds_a_blocking_call() {
    let (tx, rx) = mpsc::channel();
    let finished = util::flag();
    let job = held_job(rx, &finished);
    // Its timer is armed after the scope's, with the same delay: it fires
    // after the scope's, whatever the machine's speed.
    let releaser = release_when_idle(tx.clone(), ms(20));
    let r = greenlet_hub::with_timeout(ms(20), || spawn_blocking(job));
    assert!(matches!(r, Ok(None)), "the scope expired: {r:?}");
    assert!(!util::is_set(&finished), "the scope waited for the job");
    releaser.kill(None).unwrap();
    tx.send(()).unwrap();
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
