//! `Event`: set, clear, wait, and the order waiters are woken in.

mod util;

use greenlet_hub::{Error, Event, Task, joinall, sleep, spawn};
use std::time::Duration;
use util::{Log, ms};

#[test]
fn set_wakes_every_waiter_in_the_order_they_came() {
    let event = Event::new();
    let log = Log::new();
    let waiters: Vec<Task<()>> = (0..3)
        .map(|i| {
            let (e, l) = (event.clone(), log.clone());
            spawn(move || {
                e.wait(None)?;
                l.push(i);
                Ok(())
            })
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    assert_eq!(event.waiter_count(), 3);
    event.set();
    joinall(&waiters, None, None).unwrap();
    assert_eq!(log.take(), ["0", "1", "2"]);
    assert_eq!(event.waiter_count(), 0);
}

#[test]
fn a_set_event_does_not_block_and_clear_resets_it() {
    let event = Event::new();
    assert!(!event.is_set());
    event.set();
    assert!(event.is_set());
    event.wait(None).unwrap();
    event.wait(Duration::ZERO).unwrap();
    event.clear();
    assert!(!event.is_set());
    assert!(matches!(event.wait(Duration::ZERO), Err(Error::TimedOut)));
    assert!(matches!(event.wait(ms(1)), Err(Error::TimedOut)));
    assert_eq!(event.waiter_count(), 0);
}

#[test]
fn a_waiter_woken_by_set_returns_even_if_cleared_before_it_runs() {
    let event = Event::new();
    let e = event.clone();
    let t = spawn(move || e.wait(None));
    sleep(Duration::ZERO).unwrap();
    event.set();
    event.clear();
    t.get(None).unwrap();
}

#[test]
fn waiting_on_an_event_nobody_can_set_is_a_loop_exit() {
    let event = Event::new();
    assert!(matches!(event.wait(None), Err(Error::LoopExit(m)) if m.contains("Event::wait")));
}
