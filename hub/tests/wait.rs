//! `wait` on a set of waitable objects of different kinds.

mod util;

use greenlet_hub::{AsyncResult, Error, Event, Timeout, Waitable, sleep, spawn, spawn_later, wait};
use std::time::Duration;
use util::ms;

#[test]
fn wait_for_any_of_mixed_objects() {
    let event = Event::new();
    let result: AsyncResult<u8> = AsyncResult::new();
    let task = spawn_later(ms(1), || Ok("task"));
    let objects: [&dyn Waitable; 3] = [&event, &result, &task];
    assert_eq!(wait(&objects, None, 1).unwrap(), [2]);
    let r = result.clone();
    let _setter = spawn(move || {
        r.set(1);
        Ok(())
    });
    let ready = wait(&objects, None, 2).unwrap();
    assert_eq!(ready, [2, 1]);
    // The event never fired: no entry of ours is left on it.
    assert_eq!(event.waiter_count(), 0);
}

#[test]
fn wait_for_all_and_with_a_timeout() {
    let a = Event::new();
    let b = Event::new();
    let objects: [&dyn Waitable; 2] = [&a, &b];
    assert_eq!(wait(&objects, ms(1), None).unwrap(), Vec::<usize>::new());
    assert_eq!(
        wait(&objects, Duration::ZERO, None).unwrap(),
        Vec::<usize>::new()
    );
    a.set();
    assert_eq!(wait(&objects, ms(1), None).unwrap(), [0]);
    let b2 = b.clone();
    let _t = spawn(move || {
        sleep(ms(1))?;
        b2.set();
        Ok(())
    });
    assert_eq!(wait(&objects, None, None).unwrap(), [0, 1]);
    assert_eq!(a.waiter_count() + b.waiter_count(), 0);
}

#[test]
fn wait_is_interrupted_by_a_scope_and_cleans_up() {
    let a = Event::new();
    let b = Event::new();
    let scope = Timeout::new(ms(1));
    let e = wait(&[&a as &dyn Waitable, &b], None, None).unwrap_err();
    assert!(scope.is(&e));
    assert_eq!(a.waiter_count() + b.waiter_count(), 0);
}

#[test]
fn waiting_on_nothing_that_can_happen_is_a_loop_exit() {
    let a = Event::new();
    assert!(matches!(
        wait(&[&a as &dyn Waitable], None, None),
        Err(Error::LoopExit(_))
    ));
    assert_eq!(wait(&[], None, None).unwrap(), Vec::<usize>::new());
}

#[test]
fn objects_that_became_ready_together_come_in_the_order_they_did() {
    let gates: Vec<Event> = (0..3).map(|_| Event::new()).collect();
    let tasks: Vec<_> = gates
        .iter()
        .map(|g| {
            let g = g.clone();
            spawn(move || g.wait(None))
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    // Open the gates in reverse: the tasks finish 2, 1, 0, all before main
    // runs again.
    for g in gates.iter().rev() {
        g.set();
    }
    let objects: Vec<&dyn Waitable> = tasks.iter().map(|t| t as &dyn Waitable).collect();
    assert_eq!(wait(&objects, None, None).unwrap(), [2, 1, 0]);
}
