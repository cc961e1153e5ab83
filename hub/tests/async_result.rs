//! `AsyncResult` and its cross-thread `AsyncResultSender`.

mod util;

use greenlet_hub::{AsyncResult, Error, Task, joinall, sleep, spawn, stats};
use std::time::Duration;
use util::ms;

#[test]
fn set_locally_wakes_every_waiter_with_a_copy() {
    let result: AsyncResult<String> = AsyncResult::new();
    let waiters: Vec<Task<String>> = (0..3)
        .map(|_| {
            let r = result.clone();
            spawn(move || r.get(None))
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    assert!(!result.ready());
    result.set("hello".into());
    joinall(&waiters, None, None).unwrap();
    for w in &waiters {
        assert_eq!(w.get(None).unwrap(), "hello");
    }
    assert!(result.ready() && result.successful());
}

#[test]
fn an_error_reaches_every_waiter() {
    let result: AsyncResult<u8> = AsyncResult::new();
    let r = result.clone();
    let waiter = spawn(move || r.get(None));
    sleep(Duration::ZERO).unwrap();
    result.set_error(Error::failed(std::fmt::Error));
    assert!(matches!(waiter.get(None), Err(Error::Failed(_))));
    assert!(result.ready() && !result.successful());
}

#[test]
fn set_from_another_thread_wakes_a_waiter_on_this_hub() {
    let result: AsyncResult<u64> = AsyncResult::new();
    let sender = result.sender();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(ms(5)); // the hub is asleep in epoll by then
        sender.set(42);
    });
    assert_eq!(result.get(None).unwrap(), 42);
    worker.join().unwrap();
    // Once the sender is gone, the hub no longer counts it. Its `Closed`
    // message may arrive after the value did: sleep until the hub has
    // polled it (one `sleep(1 ms)` is not enough where a timer can be due
    // before the hub next blocks, as under qemu). The message was sent
    // before the loop (the worker is joined) and the hub looks at other
    // threads at least every 32nd busy turn: a bound on turns, not time.
    let mut turns = 0u32;
    while stats().remote_targets != 0 {
        turns += 1;
        assert!(turns <= 64, "the hub never forgot the dropped sender");
        sleep(ms(1)).unwrap();
    }
}

#[test]
fn a_task_waiting_for_another_thread() {
    let result: AsyncResult<&'static str> = AsyncResult::new();
    let r = result.clone();
    let waiter = spawn(move || r.get(None));
    let sender = result.sender();
    let worker = std::thread::spawn(move || sender.set("across threads"));
    assert_eq!(waiter.get(None).unwrap(), "across threads");
    worker.join().unwrap();
}

#[test]
fn an_error_from_another_thread() {
    let result: AsyncResult<u8> = AsyncResult::new();
    let sender = result.sender();
    std::thread::spawn(move || sender.set_error(Error::failed(std::io::Error::other("far away"))))
        .join()
        .unwrap();
    match result.get(None) {
        Err(Error::Failed(e)) => assert_eq!(e.to_string(), "far away"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn senders_dropped_without_setting_make_waiting_a_loop_exit() {
    let result: AsyncResult<u8> = AsyncResult::new();
    let sender = result.sender();
    let clone = sender.clone();
    std::thread::spawn(move || {
        drop(clone);
        std::thread::sleep(ms(2));
        drop(sender);
    })
    .join()
    .unwrap();
    assert!(matches!(result.get(None), Err(Error::LoopExit(_))));
    // A new sender can still deliver.
    let sender = result.sender();
    std::thread::spawn(move || sender.set(9)).join().unwrap();
    assert_eq!(result.get(None).unwrap(), 9);
}

#[test]
fn many_threads_deliver_to_many_results() {
    let results: Vec<AsyncResult<usize>> = (0..16).map(|_| AsyncResult::new()).collect();
    let workers: Vec<_> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let s = r.sender();
            std::thread::spawn(move || s.set(i * i))
        })
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get(None).unwrap(), i * i);
    }
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn get_with_a_timeout() {
    let result: AsyncResult<u8> = AsyncResult::new();
    assert!(matches!(result.get(ms(1)), Err(Error::TimedOut)));
    assert!(matches!(result.get(Duration::ZERO), Err(Error::TimedOut)));
    assert_eq!(result.waiter_count(), 0);
    result.set(1);
    assert_eq!(result.get(Duration::ZERO).unwrap(), 1);
}
