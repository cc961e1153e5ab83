//! `Semaphore` and `BoundedSemaphore`: counting, FIFO hand-off, bounds.

mod util;

use greenlet_hub::{BoundedSemaphore, Error, Semaphore, Task, joinall, sleep, spawn};
use std::time::Duration;
use util::{Log, ms};

#[test]
fn permits_are_counted() {
    let sem = Semaphore::new(2);
    assert!(sem.try_acquire());
    sem.acquire(None).unwrap();
    assert!(sem.locked());
    assert!(!sem.try_acquire());
    assert!(matches!(sem.acquire(Duration::ZERO), Err(Error::TimedOut)));
    sem.release();
    assert_eq!(sem.available(), 1);
    {
        let _g = sem.guard(None).unwrap();
        assert_eq!(sem.available(), 0);
    }
    assert_eq!(sem.available(), 1);
}

#[test]
fn waiters_are_served_in_fifo_order() {
    let sem = Semaphore::new(0);
    let log = Log::new();
    let tasks: Vec<Task<()>> = (0..4)
        .map(|i| {
            let (s, l) = (sem.clone(), log.clone());
            spawn(move || {
                s.acquire(None)?;
                l.push(i);
                Ok(())
            })
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    assert_eq!(sem.waiter_count(), 4);
    for _ in 0..4 {
        sem.release();
    }
    joinall(&tasks, None, None).unwrap();
    assert_eq!(log.take(), ["0", "1", "2", "3"]);
    assert_eq!(sem.available(), 0);
}

#[test]
fn a_released_permit_goes_to_the_waiter_not_to_a_latecomer() {
    let sem = Semaphore::new(1);
    sem.acquire(None).unwrap();
    let log = Log::new();
    let (s, l) = (sem.clone(), log.clone());
    let waiter = spawn(move || {
        s.acquire(None)?;
        l.push("waiter");
        Ok(())
    });
    sleep(Duration::ZERO).unwrap();
    sem.release();
    // Main arrives later than the waiter, which has not run yet.
    assert!(!sem.try_acquire(), "a latecomer barged past a waiter");
    waiter.join(None).unwrap();
    assert_eq!(log.take(), ["waiter"]);
}

#[test]
fn bounded_semaphore_refuses_too_many_releases() {
    let sem = BoundedSemaphore::new(1);
    assert!(matches!(
        sem.release(),
        Err(Error::ReleasedTooOften("BoundedSemaphore"))
    ));
    sem.acquire(None).unwrap();
    sem.release().unwrap();
    assert!(sem.release().is_err());
    assert_eq!(sem.available(), 1);
    let g = sem.guard(ms(1)).unwrap();
    assert!(!sem.try_acquire());
    drop(g);
    assert!(sem.try_acquire());
}

#[test]
fn bounded_semaphore_hands_off_to_waiters() {
    let sem = BoundedSemaphore::new(1);
    sem.acquire(None).unwrap();
    let s = sem.clone();
    let waiter = spawn(move || {
        s.acquire(None)?;
        s.release()
    });
    sleep(Duration::ZERO).unwrap();
    assert_eq!(sem.waiter_count(), 1);
    sem.release().unwrap();
    waiter.get(None).unwrap();
    assert_eq!(sem.available(), 1);
}

#[test]
fn acquiring_what_nobody_can_release_is_a_loop_exit() {
    let sem = Semaphore::new(0);
    assert!(
        matches!(sem.acquire(None), Err(Error::LoopExit(m)) if m.contains("Semaphore::acquire"))
    );
    assert_eq!(sem.waiter_count(), 0);
}
