//! `Pool` and `Group`: size limits, join, kill, map, imap, imap_unordered.

mod util;

use greenlet_hub::{Error, Event, Group, Pool, sleep};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use util::{Log, ms};

#[test]
fn a_pool_never_runs_more_than_its_size() {
    let pool = Pool::new(2);
    let running = Rc::new(Cell::new(0));
    let peak = Rc::new(Cell::new(0));
    for _ in 0..6 {
        let (r, p) = (running.clone(), peak.clone());
        pool.spawn(move || {
            r.set(r.get() + 1);
            p.set(p.get().max(r.get()));
            sleep(ms(1))?;
            r.set(r.get() - 1);
            Ok(())
        })
        .unwrap();
        assert!(pool.len() <= 2);
    }
    pool.join(None).unwrap();
    assert_eq!(peak.get(), 2);
    assert!(pool.is_empty());
    assert_eq!(pool.free_count(), 2);
    assert_eq!(pool.size(), 2);
}

#[test]
fn pool_spawn_waits_for_a_slot() {
    let pool = Pool::new(1);
    let gate = Event::new();
    let g = gate.clone();
    let log = Log::new();
    let l = log.clone();
    pool.spawn(move || {
        g.wait(None)?;
        l.push("first done");
        Ok(())
    })
    .unwrap();
    assert!(pool.full());
    assert!(matches!(
        pool.spawn_timeout(ms(1), || Ok(())),
        Err(Error::TimedOut)
    ));
    assert!(matches!(
        pool.wait_available(Duration::ZERO),
        Err(Error::TimedOut)
    ));
    let g = gate.clone();
    let _opener = greenlet_hub::spawn(move || {
        g.set();
        Ok(())
    });
    let l = log.clone();
    pool.spawn(move || {
        l.push("second ran");
        Ok(())
    })
    .unwrap();
    pool.join(None).unwrap();
    assert_eq!(log.take(), ["first done", "second ran"]);
    pool.wait_available(None).unwrap();
}

#[test]
fn map_keeps_the_order_of_the_items() {
    let pool = Pool::new(3);
    let out = pool
        .map(
            |ms_: u64| {
                sleep(ms(ms_))?;
                Ok(ms_ * 10)
            },
            [5, 1, 3, 0, 2],
        )
        .unwrap();
    assert_eq!(out, [50, 10, 30, 0, 20]);
    assert!(pool.is_empty());
}

#[test]
fn imap_is_lazy_and_ordered_and_bounded() {
    let pool = Pool::new(2);
    let started = Rc::new(Cell::new(0));
    let s = started.clone();
    let mut results = pool.imap(
        move |x: u32| {
            s.set(s.get() + 1);
            Ok(x + 1)
        },
        0..10,
    );
    assert_eq!(started.get(), 0, "nothing starts before the first next()");
    assert_eq!(results.next().unwrap().unwrap(), 1);
    assert!(started.get() <= 3);
    let rest: Vec<u32> = results.map(Result::unwrap).collect();
    assert_eq!(rest, (2..=10).collect::<Vec<_>>());
}

#[test]
fn imap_unordered_yields_in_completion_order() {
    // Each item waits for its own event; once all wait (the hub is idle), a
    // driver sets them in the order "a", "b", "c", so the items complete in
    // that order whatever the machine's speed, and not in input order.
    let (a, b, c) = (Event::new(), Event::new(), Event::new());
    let order = [a.clone(), b.clone(), c.clone()];
    let _driver = greenlet_hub::spawn(move || {
        greenlet_hub::idle()?;
        for e in order {
            e.set();
            sleep(Duration::ZERO)?;
        }
        Ok(())
    });
    let group = Group::new();
    let order: Vec<&str> = group
        .imap_unordered(
            |(name, e): (&'static str, Event)| {
                e.wait(None)?;
                Ok(name)
            },
            [("c", c), ("a", a), ("b", b)],
        )
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(order, ["a", "b", "c"]);
}

#[test]
fn map_stops_at_the_first_error_and_kills_the_rest() {
    let pool = Pool::new(4);
    let result = pool.map(
        |x: u32| {
            if x == 0 {
                return Err(Error::failed(std::fmt::Error));
            }
            sleep(Duration::from_secs(3600))?;
            Ok(x)
        },
        0..4,
    );
    assert!(matches!(result, Err(Error::Failed(_))));
    // The three sleepers were killed when map gave up.
    pool.join(None).unwrap();
    assert!(pool.is_empty());
}

#[test]
fn dropping_an_imap_kills_its_tasks() {
    let pool = Pool::new(4);
    let mut results = pool.imap(
        |x: u32| {
            if x > 0 {
                sleep(Duration::from_secs(3600))?;
            }
            Ok(x)
        },
        0..4,
    );
    assert_eq!(results.next().unwrap().unwrap(), 0);
    assert_eq!(pool.len(), 3);
    drop(results);
    pool.join(None).unwrap();
    assert!(pool.is_empty());
}

#[test]
fn group_join_and_kill() {
    let group = Group::new();
    let never = Event::new();
    for _ in 0..3 {
        let n = never.clone();
        group.spawn(move || n.wait(None));
    }
    let quick = group.spawn(|| Ok(1));
    assert_eq!(group.len(), 4);
    assert!(matches!(group.join(ms(1)), Err(Error::TimedOut)));
    assert_eq!(quick.get(None).unwrap(), 1);
    assert_eq!(group.len(), 3);
    group.kill(None).unwrap();
    assert!(group.is_empty());
    assert_eq!(never.waiter_count(), 0);
}

#[test]
fn group_adopts_tasks_spawned_elsewhere() {
    let group = Group::new();
    let t = greenlet_hub::spawn(|| {
        sleep(ms(1))?;
        Ok(())
    });
    group.add(&t);
    assert_eq!(group.len(), 1);
    group.join(None).unwrap();
    assert!(t.ready());
    // A finished task is not added.
    group.add(&t);
    assert!(group.is_empty());
}

#[test]
fn a_task_panic_in_map_reaches_the_caller() {
    util::quiet_expected_panics();
    greenlet_hub::set_error_hook(Some(Rc::new(|_: &greenlet_hub::Failure| {})));
    let group = Group::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        group.map(
            |x: u32| {
                if x == 2 {
                    panic!("expected: item 2");
                }
                Ok(x)
            },
            0..4,
        )
    }))
    .unwrap_err();
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"expected: item 2"));
    greenlet_hub::set_error_hook(None);
}
