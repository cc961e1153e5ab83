//! `Queue` (unbounded, bounded), `JoinableQueue` and `Channel`: FIFO order,
//! fairness among getters and among putters, non-blocking variants.

mod util;

use greenlet_hub::{Channel, Error, JoinableQueue, Queue, Task, joinall, sleep, spawn};
use std::time::Duration;
use util::{Log, ms};

#[test]
fn items_come_out_in_the_order_they_went_in() {
    let q = Queue::new();
    for i in 0..5 {
        q.put(i, None).unwrap();
    }
    assert_eq!(q.len(), 5);
    let out: Vec<i32> = (0..5).map(|_| q.get(None).unwrap()).collect();
    assert_eq!(out, [0, 1, 2, 3, 4]);
    assert!(q.is_empty());
}

#[test]
fn getters_are_served_in_the_order_they_came() {
    let q = Queue::new();
    let log = Log::new();
    let getters: Vec<Task<()>> = (0..3)
        .map(|i| {
            let (q, log) = (q.clone(), log.clone());
            spawn(move || {
                let item: &str = q.get(None)?;
                log.push(format!("getter {i} got {item}"));
                Ok(())
            })
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    assert_eq!(q.getter_count(), 3);
    for item in ["a", "b", "c"] {
        q.put(item, None).unwrap();
    }
    // Main arrives after the getters: the items are theirs.
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    joinall(&getters, None, None).unwrap();
    assert_eq!(
        log.take(),
        ["getter 0 got a", "getter 1 got b", "getter 2 got c"]
    );
}

#[test]
fn a_bounded_queue_makes_putters_wait_in_order() {
    let q = Queue::bounded(2);
    let log = Log::new();
    let putters: Vec<Task<()>> = (0..4)
        .map(|i| {
            let (q, log) = (q.clone(), log.clone());
            spawn(move || {
                q.put(i, None)?;
                log.push(format!("put {i}"));
                Ok(())
            })
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    assert_eq!(log.take(), ["put 0", "put 1"]);
    assert!(q.is_full());
    assert_eq!(q.putter_count(), 2);
    assert!(matches!(q.put_nowait(9), Err(Error::Full)));
    let out: Vec<i32> = (0..4).map(|_| q.get(None).unwrap()).collect();
    assert_eq!(out, [0, 1, 2, 3]);
    joinall(&putters, None, None).unwrap();
    assert_eq!(log.take(), ["put 2", "put 3"]);
    assert!(q.is_empty());
    assert_eq!(q.maxsize(), Some(2));
}

#[test]
fn put_and_get_with_timeouts() {
    let q = Queue::bounded(1);
    assert!(matches!(q.get(ms(1)), Err(Error::TimedOut)));
    assert!(matches!(q.get(Duration::ZERO), Err(Error::TimedOut)));
    q.put("x", ms(1)).unwrap();
    assert!(matches!(q.put("y", ms(1)), Err(Error::TimedOut)));
    assert!(matches!(q.put("y", Duration::ZERO), Err(Error::TimedOut)));
    assert_eq!(q.getter_count() + q.putter_count(), 0);
    assert_eq!(q.get_nowait().unwrap(), "x");
}

#[test]
fn producer_and_consumer_through_a_small_queue() {
    let q = Queue::bounded(1);
    let q2 = q.clone();
    let producer = spawn(move || {
        for i in 0..100 {
            q2.put(i, None)?;
        }
        Ok(())
    });
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(q.get(None).unwrap());
    }
    producer.join(None).unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_killed_putter_does_not_enqueue_its_item() {
    let q = Queue::bounded(1);
    q.put(1, None).unwrap();
    let q2 = q.clone();
    let putter = spawn(move || q2.put(2, None));
    sleep(Duration::ZERO).unwrap();
    assert_eq!(q.putter_count(), 1);
    putter.kill(None).unwrap();
    assert_eq!(q.putter_count(), 0);
    assert_eq!(q.get(None).unwrap(), 1);
    assert!(q.is_empty());
}

#[test]
fn joinable_queue_join_waits_for_task_done() {
    let q = JoinableQueue::new();
    let log = Log::new();
    let (q2, l) = (q.clone(), log.clone());
    let worker = spawn(move || -> Result<(), Error> {
        loop {
            let job: u32 = q2.get(None)?;
            sleep(ms(1))?;
            l.push(format!("done {job}"));
            q2.task_done()?;
        }
    });
    for job in 0..3 {
        q.put(job, None).unwrap();
    }
    assert_eq!(q.unfinished(), 3);
    q.join(None).unwrap();
    log.push("joined");
    assert_eq!(log.take(), ["done 0", "done 1", "done 2", "joined"]);
    assert_eq!(q.unfinished(), 0);
    assert!(matches!(
        q.task_done(),
        Err(Error::ReleasedTooOften("JoinableQueue::task_done"))
    ));
    worker.kill(None).unwrap();
}

#[test]
fn channel_put_waits_for_a_getter() {
    let ch = Channel::new();
    let log = Log::new();
    let (c, l) = (ch.clone(), log.clone());
    let putter = spawn(move || {
        l.push("putting");
        c.put(1, None)?;
        l.push("taken");
        Ok(())
    });
    sleep(ms(1)).unwrap();
    assert_eq!(log.snapshot(), ["putting"]);
    assert_eq!(ch.len(), 0);
    log.push("getting");
    assert_eq!(ch.get(None).unwrap(), 1);
    putter.join(None).unwrap();
    assert_eq!(log.take(), ["putting", "getting", "taken"]);
}

#[test]
fn channel_get_waits_for_a_putter() {
    let ch = Channel::new();
    let c = ch.clone();
    let getter = spawn(move || c.get(None));
    sleep(Duration::ZERO).unwrap();
    assert!(
        matches!(ch.put_nowait(5), Ok(())),
        "a waiting getter takes it at once"
    );
    assert_eq!(getter.get(None).unwrap(), 5);
    assert!(matches!(ch.put_nowait(6), Err(Error::Full)));
    assert!(matches!(ch.get_nowait(), Err(Error::Empty)));
}

#[test]
fn channel_pairs_several_putters_and_getters_in_order() {
    let ch = Channel::new();
    let putters: Vec<Task<()>> = (0..3)
        .map(|i| {
            let c = ch.clone();
            spawn(move || c.put(i, None))
        })
        .collect();
    let getters: Vec<Task<i32>> = (0..3)
        .map(|_| {
            let c = ch.clone();
            spawn(move || c.get(None))
        })
        .collect();
    joinall(&putters, None, None).unwrap();
    let got: Vec<i32> = getters.iter().map(|g| g.get(None).unwrap()).collect();
    assert_eq!(got, [0, 1, 2]);
}
