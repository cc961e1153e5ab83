//! Runs one hub hot path a given number of times, for instruction counts
//! under callgrind (wall-clock figures on a shared machine are noise; the
//! ones printed here are only a sanity check).
//!
//! ```text
//! cargo run --release -p greenlet-hub --example perf_probe              # every probe, 1000 each
//! cargo run --release -p greenlet-hub --example perf_probe -- sleep0 50000
//! ```
//!
//! Instructions per operation: run the same probe under callgrind with two
//! counts and divide the difference of the totals by the difference of the
//! counts, which cancels the set-up (the hub, the poller, the first stacks):
//!
//! ```text
//! for n in 2000 12000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/perf_probe sleep0 $n 2>&1 | grep refs
//! done
//! # (refs at 12000 - refs at 2000) / 10000 = instructions per round trip
//! ```
//!
//! `callgrind_annotate --inclusive=yes /tmp/cg.12000` then shows where they
//! go (the hub loop runs inside the switch, so callgrind charges it there).
//!
//! Each probe warms up (the stack pool, the queues' buffers) before the
//! counted loop, so the figures are the steady state.

use greenlet_hub::{Error, Event, Pool, Queue, Semaphore, sleep, spawn};
use std::time::{Duration, Instant};

/// A probe: runs its operation `n` times.
type Probe = fn(u64) -> Result<(), Error>;

const PROBES: &[(&str, &str, Probe)] = &[
    (
        "sleep0",
        "sleep(ZERO) round trip from main (main -> hub -> main)",
        sleep0,
    ),
    (
        "sleep0_task",
        "sleep(ZERO) round trip from a task (task -> hub -> task)",
        sleep0_task,
    ),
    (
        "spawn_join",
        "spawn + join of a trivial task, from main",
        spawn_join,
    ),
    (
        "event",
        "Event ping-pong between main and a task: set + wait + clear, each way",
        event,
    ),
    (
        "event_timeout",
        "as `event`, each wait with a 60 s timeout (a timer pushed and cancelled)",
        event_timeout,
    ),
    (
        "queue",
        "Queue ping-pong between two tasks: put + get, each way",
        queue,
    ),
    (
        "queue_stream",
        "Queue::bounded(1) producer task -> consumer task, per item",
        queue_stream,
    ),
    (
        "semaphore",
        "Semaphore acquire + release, uncontended",
        semaphore,
    ),
    (
        "pool",
        "Pool::new(8).spawn of a trivial task, joined in batches of 8, per task",
        pool,
    ),
];

const WARM_UP: u64 = 64;

#[inline(never)]
fn sleep0(n: u64) -> Result<(), Error> {
    for _ in 0..n {
        sleep(Duration::ZERO)?;
    }
    Ok(())
}

#[inline(never)]
fn sleep0_task(n: u64) -> Result<(), Error> {
    spawn(move || {
        for _ in 0..n {
            sleep(Duration::ZERO)?;
        }
        Ok(())
    })
    .join(None)
}

#[inline(never)]
fn spawn_join(n: u64) -> Result<(), Error> {
    for _ in 0..n {
        spawn(|| Ok(())).join(None)?;
    }
    Ok(())
}

#[inline(never)]
fn event(n: u64) -> Result<(), Error> {
    let (ping, pong) = (Event::new(), Event::new());
    let task = {
        let (ping, pong) = (ping.clone(), pong.clone());
        spawn(move || {
            for _ in 0..n {
                ping.wait(None)?;
                ping.clear();
                pong.set();
            }
            Ok(())
        })
    };
    for _ in 0..n {
        ping.set();
        pong.wait(None)?;
        pong.clear();
    }
    task.join(None)
}

#[inline(never)]
fn event_timeout(n: u64) -> Result<(), Error> {
    let long = Duration::from_secs(60);
    let (ping, pong) = (Event::new(), Event::new());
    let task = {
        let (ping, pong) = (ping.clone(), pong.clone());
        spawn(move || {
            for _ in 0..n {
                ping.wait(long)?;
                ping.clear();
                pong.set();
            }
            Ok(())
        })
    };
    for _ in 0..n {
        ping.set();
        pong.wait(long)?;
        pong.clear();
    }
    task.join(None)
}

#[inline(never)]
fn queue(n: u64) -> Result<(), Error> {
    let (there, back) = (Queue::new(), Queue::new());
    let echo = {
        let (there, back) = (there.clone(), back.clone());
        spawn(move || {
            for _ in 0..n {
                back.put(there.get(None)?, None)?;
            }
            Ok(())
        })
    };
    let driver = spawn(move || {
        for i in 0..n {
            there.put(i, None)?;
            back.get(None)?;
        }
        Ok(())
    });
    driver.join(None)?;
    echo.join(None)
}

#[inline(never)]
fn queue_stream(n: u64) -> Result<(), Error> {
    let q = Queue::bounded(1);
    let producer = {
        let q = q.clone();
        spawn(move || {
            for i in 0..n {
                q.put(i, None)?;
            }
            Ok(())
        })
    };
    let consumer = spawn(move || {
        for _ in 0..n {
            q.get(None)?;
        }
        Ok(())
    });
    producer.join(None)?;
    consumer.join(None)
}

#[inline(never)]
fn semaphore(n: u64) -> Result<(), Error> {
    let sem = Semaphore::new(1);
    for _ in 0..n {
        sem.acquire(None)?;
        sem.release();
    }
    Ok(())
}

#[inline(never)]
fn pool(n: u64) -> Result<(), Error> {
    let pool = Pool::new(8);
    for i in 0..n {
        pool.spawn(|| Ok(()))?;
        if i % 8 == 7 {
            pool.join(None)?;
        }
    }
    pool.join(None)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let which = args.next();
    let count: u64 = match args.next() {
        Some(s) => s.parse().expect("the count is a whole number"),
        None => 1000,
    };
    let selected: Vec<_> = PROBES
        .iter()
        .filter(|(name, _, _)| which.as_deref().is_none_or(|w| w == "all" || w == *name))
        .collect();
    if selected.is_empty() {
        eprintln!("unknown probe; one of:");
        for (name, what, _) in PROBES {
            eprintln!("  {name:14} {what}");
        }
        std::process::exit(2);
    }
    for (name, what, probe) in selected {
        probe(WARM_UP)?;
        let start = Instant::now();
        probe(count)?;
        let per = start.elapsed().as_nanos() as f64 / count.max(1) as f64;
        println!("{name:14} {per:9.1} ns/op  ({count} x {what})");
    }
    Ok(())
}
