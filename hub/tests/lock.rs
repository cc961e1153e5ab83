//! `Lock` and `RLock`.

mod util;

use greenlet_hub::{Error, Lock, RLock, Task, joinall, sleep, spawn};
use std::time::Duration;
use util::{Log, ms};

#[test]
fn lock_excludes_and_serves_waiters_in_order() {
    let lock = Lock::new();
    let log = Log::new();
    let tasks: Vec<Task<()>> = (0..3)
        .map(|i| {
            let (lock, log) = (lock.clone(), log.clone());
            spawn(move || {
                let _held = lock.lock(None)?;
                log.push(format!("{i} in"));
                sleep(ms(1))?;
                log.push(format!("{i} out"));
                Ok(())
            })
        })
        .collect();
    joinall(&tasks, None, None).unwrap();
    assert_eq!(
        log.take(),
        ["0 in", "0 out", "1 in", "1 out", "2 in", "2 out"]
    );
    assert!(!lock.locked());
}

#[test]
fn lock_release_while_unlocked_is_an_error() {
    let lock = Lock::new();
    assert!(matches!(
        lock.release(),
        Err(Error::ReleasedTooOften("Lock"))
    ));
    lock.acquire(None).unwrap();
    assert!(lock.locked());
    assert!(!lock.try_acquire());
    assert!(matches!(lock.acquire(Duration::ZERO), Err(Error::TimedOut)));
    // Any greenlet may release a Lock.
    let l = lock.clone();
    spawn(move || l.release()).get(None).unwrap();
    assert!(!lock.locked());
}

#[test]
fn rlock_is_reentrant_for_its_owner_only() {
    let lock = RLock::new();
    lock.acquire(None).unwrap();
    {
        let _again = lock.lock(None).unwrap();
        assert!(lock.locked());
    }
    assert!(lock.locked(), "one level is still held");
    let l = lock.clone();
    let other = spawn(move || {
        // Another greenlet cannot release it, and waits to acquire it.
        assert!(matches!(l.release(), Err(Error::NotOwner)));
        l.acquire(None)?;
        l.release()
    });
    sleep(Duration::ZERO).unwrap();
    assert_eq!(lock.waiter_count(), 1);
    lock.release().unwrap();
    other.get(None).unwrap();
    assert!(!lock.locked());
    assert!(matches!(lock.release(), Err(Error::NotOwner)));
}
