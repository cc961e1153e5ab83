//! `Timeout` scopes and `with_timeout`: interruption of any blocking call,
//! nesting, and consistency of every primitive after a timeout fires.

mod util;

use greenlet_hub::{
    AsyncResult, Channel, Error, Event, JoinableQueue, Lock, Queue, RLock, Semaphore, Task,
    Timeout, sleep, spawn, stats, with_timeout,
};
use std::time::{Duration, Instant};
use util::{Log, ms};

const LONG: Duration = Duration::from_secs(3600);

#[test]
fn a_timeout_interrupts_a_sleep_after_at_least_its_duration() {
    let start = Instant::now();
    let t = Timeout::new(ms(3));
    let e = sleep(LONG).unwrap_err();
    assert!(t.is(&e), "{e}");
    assert!(t.expired());
    assert!(start.elapsed() >= ms(3));
    match e {
        Error::Timeout { id, after } => {
            assert_eq!(id, t.id());
            assert_eq!(after, ms(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_timeout_that_does_not_expire_changes_nothing() {
    let t = Timeout::new(LONG);
    sleep(ms(1)).unwrap();
    assert!(!t.expired());
    t.cancel();
    let cancelled = Timeout::new(ms(1));
    drop(cancelled);
    sleep(ms(3)).unwrap(); // a dropped scope never fires
}

#[test]
fn a_timeout_fires_once() {
    let t = Timeout::new(ms(1));
    assert!(t.is(&sleep(LONG).unwrap_err()));
    // Handled: further blocking in the same scope is not interrupted again.
    sleep(ms(2)).unwrap();
}

#[test]
fn the_inner_of_nested_timeouts_fires_as_itself() {
    let outer = Timeout::new(LONG);
    let inner = Timeout::new(ms(1));
    let e = Event::new().wait(None).unwrap_err();
    assert!(inner.is(&e) && !outer.is(&e), "{e}");
}

#[test]
fn the_outer_of_nested_timeouts_fires_as_itself_and_is_not_swallowed() {
    let outer = Timeout::new(ms(1));
    // Code that handles only its own (inner) timeout.
    let inner_scope = || -> Result<&str, Error> {
        let inner = Timeout::new(LONG);
        match sleep(LONG) {
            Err(e) if inner.is(&e) => Ok("inner handled"),
            Err(e) => Err(e),
            Ok(()) => Ok("slept"),
        }
    };
    let e = inner_scope().unwrap_err();
    assert!(outer.is(&e), "{e}");
}

#[test]
fn with_timeout_distinguishes_its_own_expiry_from_an_outer_one() {
    assert_eq!(with_timeout(LONG, || Ok(1)).unwrap(), Some(1));
    assert_eq!(with_timeout(ms(1), || sleep(LONG)).unwrap(), None);
    let outer = Timeout::new(ms(1));
    let e = with_timeout(LONG, || sleep(LONG)).unwrap_err();
    assert!(outer.is(&e));
    // An inner with_timeout that expires first is handled inside.
    let outer = Timeout::new(LONG);
    let r = with_timeout(ms(1), || sleep(LONG)).unwrap();
    assert_eq!(r, None);
    assert!(!outer.expired());
}

#[test]
fn both_expired_the_outer_is_raised_first() {
    // Both scopes expire while the greenlet is busy (not blocked); its
    // next blocking call raises the outer one.
    let outer = Timeout::new(ms(1));
    let inner = Timeout::new(ms(1));
    let e = Event::new();
    let e2 = e.clone();
    // A task sets the event after both deadlines: main is woken by the
    // event, and the scopes find it already woken.
    let _t = spawn(move || {
        std::thread::sleep(ms(3)); // block the whole thread past both deadlines
        e2.set();
        Ok(())
    });
    e.wait(None).unwrap();
    let err = sleep(LONG).unwrap_err();
    assert!(outer.is(&err), "{err}");
    drop(inner);
}

#[test]
fn an_expiry_while_woken_by_something_else_is_raised_at_the_next_block() {
    let q = Queue::new();
    let q2 = q.clone();
    let t = Timeout::new(ms(1));
    let _producer = spawn(move || {
        std::thread::sleep(ms(3));
        q2.put("item", None)?;
        Ok(())
    });
    // The item was handed over before the timer was looked at: not lost.
    assert_eq!(q.get(None).unwrap(), "item");
    assert!(t.is(&sleep(LONG).unwrap_err()));
}

#[test]
fn a_timeout_inside_a_task() {
    let t: Task<&str> = spawn(|| {
        let scope = Timeout::new(ms(1));
        match Event::new().wait(None) {
            Err(e) if scope.is(&e) => Ok("timed out"),
            other => other.map(|()| "set"),
        }
    });
    assert_eq!(t.get(None).unwrap(), "timed out");
}

#[test]
fn a_timeout_leaves_every_primitive_consistent() {
    // Event
    let event = Event::new();
    assert!(with_timeout(ms(1), || event.wait(None)).unwrap().is_none());
    assert_eq!(event.waiter_count(), 0);

    // AsyncResult
    let result: AsyncResult<u8> = AsyncResult::new();
    assert!(with_timeout(ms(1), || result.get(None)).unwrap().is_none());
    assert_eq!(result.waiter_count(), 0);

    // Semaphore: the permit count is unchanged and the next waiter is served.
    let sem = Semaphore::new(1);
    sem.acquire(None).unwrap();
    assert!(with_timeout(ms(1), || sem.acquire(None)).unwrap().is_none());
    assert_eq!(sem.waiter_count(), 0);
    assert_eq!(sem.available(), 0);
    sem.release();
    assert_eq!(sem.available(), 1);

    // Lock and RLock
    let lock = Lock::new();
    let _held = lock.lock(None).unwrap();
    assert!(
        with_timeout(ms(1), || lock.acquire(None))
            .unwrap()
            .is_none()
    );
    assert_eq!(lock.waiter_count(), 0);
    let rlock = RLock::new();
    let r2 = rlock.clone();
    let holder = spawn(move || {
        r2.acquire(None)?;
        sleep(LONG)
    });
    sleep(Duration::ZERO).unwrap();
    assert!(
        with_timeout(ms(1), || rlock.acquire(None))
            .unwrap()
            .is_none()
    );
    assert_eq!(rlock.waiter_count(), 0);
    holder.kill(None).unwrap();

    // Queue: get on an empty queue, put on a full one; nothing taken, nothing
    // left behind, the item of the failed put not enqueued.
    let q = Queue::bounded(1);
    assert!(with_timeout(ms(1), || q.get(None)).unwrap().is_none());
    assert_eq!(q.getter_count(), 0);
    q.put(1, None).unwrap();
    assert!(with_timeout(ms(1), || q.put(2, None)).unwrap().is_none());
    assert_eq!(q.putter_count(), 0);
    assert_eq!(q.len(), 1);
    assert_eq!(q.get(None).unwrap(), 1);
    assert!(q.is_empty());

    // Channel
    let ch: Channel<u8> = Channel::new();
    assert!(with_timeout(ms(1), || ch.put(1, None)).unwrap().is_none());
    assert_eq!(ch.putter_count(), 0);

    // JoinableQueue
    let jq: JoinableQueue<u8> = JoinableQueue::new();
    jq.put(1, None).unwrap();
    assert!(with_timeout(ms(1), || jq.join(None)).unwrap().is_none());
    jq.get(None).unwrap();
    jq.task_done().unwrap();
    jq.join(None).unwrap();

    // Task join
    let never = Event::new();
    let n = never.clone();
    let task = spawn(move || n.wait(None));
    assert!(with_timeout(ms(1), || task.join(None)).unwrap().is_none());
    task.kill(None).unwrap();

    // And the hub holds nothing for any of it.
    let s = stats();
    assert_eq!(s.tasks, 0);
}

#[test]
fn a_semaphore_waiter_that_times_out_does_not_lose_the_next_permit() {
    let sem = Semaphore::new(0);
    let log = Log::new();
    let (s1, l1) = (sem.clone(), log.clone());
    let quitter = spawn(move || {
        let r = s1.acquire(ms(1));
        l1.push(format!("quitter {}", r.is_ok()));
        Ok(())
    });
    let (s2, l2) = (sem.clone(), log.clone());
    let patient = spawn(move || {
        s2.acquire(None)?;
        l2.push("patient acquired");
        Ok(())
    });
    quitter.join(None).unwrap();
    sem.release();
    patient.join(None).unwrap();
    assert_eq!(log.take(), ["quitter false", "patient acquired"]);
    assert_eq!(sem.available(), 0);
}

#[test]
fn a_timeout_made_in_the_hub_is_inert() {
    let t = spawn(|| Ok(()));
    let made = std::rc::Rc::new(std::cell::Cell::new(false));
    let m = made.clone();
    t.link(move |_| {
        let scope = Timeout::new(ms(1));
        m.set(!scope.expired());
    });
    t.join(None).unwrap();
    sleep(ms(3)).unwrap();
    assert!(made.get());
}
