//! The loop itself: `sleep`, `idle`, timers, fairness, LoopExit, blocking
//! from odd places, and shutdown at thread exit.

mod util;

use greenlet::Greenlet;
use greenlet_hub::{Error, Event, Queue, Task, Timeout, idle, sleep, spawn, spawn_later, stats};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{DropFlag, Log, flag, is_set, ms, on_fresh_thread};

#[test]
fn sleep_lasts_at_least_its_duration() {
    for d in [ms(1), ms(3), Duration::from_micros(1500)] {
        let start = Instant::now();
        sleep(d).unwrap();
        assert!(
            start.elapsed() >= d,
            "slept {:?} for {d:?}",
            start.elapsed()
        );
    }
}

#[test]
fn sleep_zero_runs_the_ready_tasks_round_robin() {
    let log = Log::new();
    let tasks: Vec<Task<()>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let log = log.clone();
            spawn(move || {
                for i in 0..3 {
                    log.push(format!("{name}{i}"));
                    sleep(Duration::ZERO)?;
                }
                Ok(())
            })
        })
        .collect();
    greenlet_hub::joinall(&tasks, None, None).unwrap();
    assert_eq!(
        log.take(),
        ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
    );
}

#[test]
fn sleep_zero_does_not_starve_timers() {
    // A task yields forever; a timer must still fire.
    let spinner = spawn(|| -> Result<(), Error> {
        loop {
            sleep(Duration::ZERO)?;
        }
    });
    let start = Instant::now();
    sleep(ms(2)).unwrap();
    assert!(start.elapsed() >= ms(2));
    spinner.kill(None).unwrap();
    assert!(matches!(spinner.error(), Some(Error::Killed)));
}

// Bounds on counts of `sleep(ZERO)` calls, not on time: each event below
// has already happened (the thread slept past the deadline, the other
// thread was joined) before the counting starts.

/// A due timer makes the next `sleep(ZERO)` switch to the hub, which fires
/// it; the task it starts runs at the call after that.
const TIMER_SPINS: u32 = 4;

/// The hub looks at other threads on every 32nd busy turn: twice that is
/// ample.
const REMOTE_SPINS: u32 = 64;

#[test]
fn sleep_zero_alone_still_fires_timers_and_hears_other_threads() {
    // With nothing else ready, `sleep(ZERO)` need not switch to the hub
    // (it would come straight back); a due timer and a value sent from
    // another thread must still get through to a greenlet that spins on it.
    let later = spawn_later(ms(1), || Ok(()));
    // Block the thread past the deadline: from now on the timer is due.
    std::thread::sleep(ms(2));
    let mut spins = 0u32;
    while !later.ready() {
        sleep(Duration::ZERO).unwrap();
        spins += 1;
        assert!(spins <= TIMER_SPINS, "the due timer did not fire");
    }
    assert!(spins > 0);
    let result = greenlet_hub::AsyncResult::new();
    let sender = result.sender();
    // Joined: the value is sent (and the hub woken) before the spinning.
    std::thread::spawn(move || sender.set(7u8)).join().unwrap();
    let mut spins = 0u32;
    while !result.ready() {
        sleep(Duration::ZERO).unwrap();
        spins += 1;
        assert!(
            spins <= REMOTE_SPINS,
            "the other thread's value never arrived"
        );
    }
    assert_eq!(result.get(None).unwrap(), 7);
}

#[test]
fn a_timeout_interrupts_a_lone_sleep_zero_loop() {
    // The shortcut of a lone `sleep(ZERO)` must not skip a `Timeout` scope:
    // the loop ends with the scope's error, not never.
    sleep(Duration::ZERO).unwrap(); // the hub runs: the shortcut may apply
    let outcome = greenlet_hub::with_timeout(ms(2), || -> Result<(), Error> {
        // Block the thread past the scope's deadline: it is due from now on.
        std::thread::sleep(ms(3));
        for _ in 0..TIMER_SPINS {
            sleep(Duration::ZERO)?;
        }
        panic!("the due timeout did not fire within {TIMER_SPINS} sleep(ZERO) calls");
    });
    assert!(matches!(outcome, Ok(None)), "{outcome:?}");
}

#[test]
fn timers_fire_in_deadline_order_and_ties_in_creation_order() {
    // Made out of deadline order; "a" and "a2" have the same delay but "a"
    // is made first. A deadline is the time of making plus the delay, so
    // the expected order is certain only if the four were made within the
    // smallest gap between delays (59 ms). A run where making them took
    // longer (a stalled thread) proves nothing and is done again: a slow
    // machine retries, it never fails.
    loop {
        let log = Log::new();
        let start = Instant::now();
        let tasks: Vec<Task<()>> = [("c", 120), ("a", 1), ("b", 60), ("a2", 1)]
            .into_iter()
            .map(|(name, delay)| {
                let log = log.clone();
                spawn_later(ms(delay), move || {
                    log.push(name);
                    Ok(())
                })
            })
            .collect();
        let making = start.elapsed();
        greenlet_hub::joinall(&tasks, None, None).unwrap();
        if making < ms(59) {
            assert_eq!(log.take(), ["a", "a2", "b", "c"]);
            return;
        }
    }
}

#[test]
fn main_sleeping_lets_tasks_run() {
    let log = Log::new();
    let l = log.clone();
    let _t = spawn(move || {
        l.push("task");
        Ok(())
    });
    log.push("main before");
    sleep(Duration::ZERO).unwrap();
    log.push("main after");
    assert_eq!(log.take(), ["main before", "task", "main after"]);
}

#[test]
fn idle_waits_until_nothing_else_is_ready() {
    let log = Log::new();
    let l = log.clone();
    let _t = spawn(move || {
        for i in 0..3 {
            l.push(i);
            sleep(Duration::ZERO)?;
        }
        Ok(())
    });
    idle().unwrap();
    log.push("idle");
    assert_eq!(log.take(), ["0", "1", "2", "idle"]);
}

#[test]
fn timers_that_are_always_due_do_not_starve_other_threads() {
    // Two tasks that each burn 2 ms and then sleep 1 ms: whenever the hub
    // looks at its timers, one of them is due, so the ready queue is never
    // empty when the hub turns. A value set by another thread must still
    // arrive while they spin, not only after they stop.
    let rounds = Rc::new(Cell::new(0u32));
    let spinners: Vec<Task<()>> = (0..2)
        .map(|_| {
            let rounds = rounds.clone();
            spawn(move || {
                for _ in 0..300 {
                    std::thread::sleep(ms(2));
                    rounds.set(rounds.get() + 1);
                    sleep(ms(1))?;
                }
                Ok(())
            })
        })
        .collect();
    let result = greenlet_hub::AsyncResult::new();
    let sender = result.sender();
    std::thread::spawn(move || sender.set(7u8)).join().unwrap();
    assert_eq!(result.get(None).unwrap(), 7);
    let seen = rounds.get();
    greenlet_hub::killall(&spinners, None).unwrap();
    assert!(
        seen < 600,
        "the value arrived only after both spinners ended"
    );
}

#[test]
fn the_hub_does_not_busy_wait() {
    // Warm the hub up, then measure the CPU this thread uses across a
    // 100 ms sleep. A busy-waiting loop would use about all of it; a
    // blocking poll uses next to nothing. (The bound is generous on
    // purpose: CPU time cannot be inflated by a loaded machine.)
    sleep(ms(1)).unwrap();
    let before = util::thread_cpu_time();
    sleep(ms(100)).unwrap();
    let used = util::thread_cpu_time() - before;
    assert!(used <= ms(50), "used {used:?} of CPU during a 100 ms sleep");
}

#[test]
fn loop_exit_instead_of_a_hang_on_an_empty_queue() {
    let q: Queue<u32> = Queue::new();
    match q.get(None) {
        Err(Error::LoopExit(message)) => {
            assert!(message.contains("nothing left to run"), "{message}");
            assert!(message.contains("Queue::get"), "{message}");
            assert!(message.contains("block forever"), "{message}");
        }
        other => panic!("expected LoopExit, got {other:?}"),
    }
    // The queue is consistent afterwards: no waiter left behind.
    assert_eq!(q.getter_count(), 0);
    // And the hub still works.
    q.put(7, None).unwrap();
    assert_eq!(q.get(None).unwrap(), 7);
}

#[test]
fn loop_exit_when_tasks_wait_on_each_other() {
    let a_done = Event::new();
    let b_done = Event::new();
    let (a_wait, b_wait) = (b_done.clone(), a_done.clone());
    let a = spawn(move || {
        a_wait.wait(None)?;
        a_done.set();
        Ok(())
    });
    let b = spawn(move || {
        b_wait.wait(None)?;
        b_done.set();
        Ok(())
    });
    match greenlet_hub::joinall(&[a.clone(), b.clone()], None, None) {
        Err(Error::LoopExit(message)) => {
            assert!(message.contains("2 tasks are blocked"), "{message}")
        }
        other => panic!("expected LoopExit, got {other:?}"),
    }
    assert!(!a.ready() && !b.ready());
    greenlet_hub::killall(&[a, b], None).unwrap();
}

#[test]
fn a_pending_timer_is_not_a_loop_exit() {
    // Nothing else can wake main, but a spawn_later can: wait for it.
    let e = Event::new();
    let e2 = e.clone();
    let _t = spawn_later(ms(2), move || {
        e2.set();
        Ok(())
    });
    e.wait(None).unwrap();
}

#[test]
fn blocking_in_a_hub_callback_is_an_error() {
    let result = std::rc::Rc::new(std::cell::RefCell::new(None));
    let r = result.clone();
    let t = spawn(|| Ok(()));
    t.link(move |_| *r.borrow_mut() = Some(sleep(ms(1))));
    t.join(None).unwrap();
    sleep(Duration::ZERO).unwrap();
    assert!(matches!(*result.borrow(), Some(Err(Error::BlockingInHub))));
}

#[test]
fn a_plain_greenlet_can_block_through_the_hub() {
    // Not a task: a raw greenlet, child of main, that sleeps and then returns
    // to main through the normal greenlet rules.
    let log = Log::new();
    let l = log.clone();
    let g = Greenlet::new(move |()| {
        l.push("raw before");
        sleep(ms(1))?;
        l.push("raw after");
        Ok(())
    });
    let l = log.clone();
    let _task = spawn(move || {
        l.push("task");
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    log.push("main");
    assert_eq!(log.take(), ["raw before", "task", "raw after", "main"]);
}

#[test]
fn shutdown_at_thread_exit_kills_blocked_tasks_and_runs_their_cleanup() {
    let cleaned = flag();
    let never_started = flag();
    let (c, n) = (cleaned.clone(), never_started.clone());
    on_fresh_thread(move || {
        let never = Event::new();
        // Blocked forever on an event only it can see: nothing but the
        // hub's registry refers to it.
        let _blocked = spawn(move || {
            let _guard = DropFlag(c);
            never.wait(None)?;
            Ok(())
        });
        // Owned by the body: dropped with it, whether it runs or not.
        let guard = DropFlag(n);
        let _late = spawn_later(Duration::from_secs(3600), move || {
            drop(guard);
            Ok(())
        });
        sleep(Duration::ZERO).unwrap();
        assert_eq!(stats().tasks, 2);
    });
    assert!(is_set(&cleaned), "the blocked task's cleanup did not run");
    assert!(
        is_set(&never_started),
        "the unstarted task's body was not dropped"
    );
}

#[test]
fn cleanup_that_blocks_during_shutdown_gets_exit_at_once() {
    let finished = flag();
    let f = finished.clone();
    on_fresh_thread(move || {
        let _t = spawn(move || {
            let result = sleep(Duration::from_secs(3600));
            assert!(matches!(result, Err(Error::Exit)));
            // Cleanup tries to block again: refused at once.
            assert!(matches!(sleep(ms(1)), Err(Error::Exit)));
            f.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        });
        sleep(Duration::ZERO).unwrap();
    });
    assert!(is_set(&finished));
}

#[test]
fn many_cancelled_timeouts_do_not_pile_up() {
    for _ in 0..2_000 {
        // A scope and a call timeout, both armed for an hour, both cancelled
        // at once when a task sets the event.
        let _scope = Timeout::new(Duration::from_secs(3600));
        let e = Event::new();
        let e2 = e.clone();
        let _setter = spawn(move || {
            e2.set();
            Ok(())
        });
        e.wait(Duration::from_secs(3600)).unwrap();
    }
    // Cancelled timers are compacted away: a few hundred at most remain.
    assert!(stats().timers < 1_000, "{:?}", stats());
}

#[test]
fn stats_are_zero_before_first_use() {
    on_fresh_thread(|| assert_eq!(stats(), greenlet_hub::Stats::default()));
}

#[test]
fn stats_count_the_rest_of_the_running_batch_as_ready() {
    let seen = Rc::new(Cell::new(usize::MAX));
    let s = seen.clone();
    let _first = spawn(move || {
        s.set(stats().ready);
        Ok(())
    });
    let _second = spawn(|| Ok(()));
    let _third = spawn(|| Ok(()));
    sleep(Duration::ZERO).unwrap();
    // `first` ran with `second`, `third` and main still to run in its batch.
    assert_eq!(seen.get(), 3);
    assert_eq!(stats().ready, 0);
}

#[test]
fn shutdown_in_the_middle_of_a_batch_kills_the_rest_of_it() {
    let cleaned = flag();
    let c = cleaned.clone();
    on_fresh_thread(move || {
        let go = Event::new();
        let g = go.clone();
        let _spinner: Task<()> = spawn(move || {
            let _guard = DropFlag(c);
            // Main goes first in the next batch, then this task.
            g.set();
            loop {
                sleep(Duration::ZERO)?;
            }
        });
        go.wait(None).unwrap();
        // The thread ends here, with the spinner still to run in the batch.
    });
    assert!(is_set(&cleaned), "the spinner's cleanup did not run");
}
