//! Greenlets and threads: each thread has its own main greenlet, tree, ids
//! and tracer, so greenlets on two threads run independently; and a
//! suspended greenlet left on a thread's stack exits when the thread ends.
//! Greenlets left in thread-locals at thread exit are in
//! `threads_teardown.rs`, in child processes, since getting that wrong
//! aborts.
//!
//! (`Greenlet` being `!Send`/`!Sync` is proven by compile-fail doctests in
//! `src/greenlet.rs`.)

use greenlet::{Event, Greenlet, getcurrent, main_greenlet, settrace};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        assert!(!self.0.swap(true, Ordering::SeqCst), "dropped twice");
    }
}

#[test]
fn greenlets_on_two_threads_run_independently() {
    // Both threads are inside a greenlet at the same time (the barrier is
    // crossed from greenlet stacks), and each sees only its own tree.
    let barrier = Arc::new(Barrier::new(2));
    let run = |label: &'static str, factor: u64, barrier: Arc<Barrier>| {
        thread::spawn(move || {
            let main = getcurrent();
            assert!(main.is_main() && main.id() == 0);
            let m = main.clone();
            let g = Greenlet::new(move |start: u64| {
                let me = getcurrent();
                assert!(!me.is_main());
                assert_eq!(main_greenlet(), m);
                barrier.wait(); // both threads are now in a greenlet
                let mut total = start;
                for _ in 0..1000u64 {
                    total = m.switch::<u64, u64>(total)? * factor % 1_000_003;
                }
                barrier.wait();
                Ok(format!("{label} #{}: {total}", me.id()))
            });
            assert_eq!(g.id(), 1, "ids are per thread");
            // g sends its total; main answers with total + 1; g's next
            // total is that times its factor.
            let mut value = g.switch::<u64, u64>(1).unwrap();
            assert_eq!(value, 1);
            for _ in 0..999 {
                let next = g.switch::<u64, u64>(value + 1).unwrap();
                assert_eq!(next, (value + 1) * factor % 1_000_003);
                value = next;
            }
            let done = g.switch::<u64, String>(value + 1).unwrap();
            assert!(g.is_dead());
            assert_eq!(getcurrent(), main);
            (done, (value + 1) * factor % 1_000_003)
        })
    };
    let a = run("a", 3, barrier.clone());
    let b = run("b", 5, barrier);
    let (a_done, a_total) = a.join().unwrap();
    let (b_done, b_total) = b.join().unwrap();
    assert_eq!(a_done, format!("a #1: {a_total}"));
    assert_eq!(b_done, format!("b #1: {b_total}"));
}

#[test]
fn the_tracer_is_per_thread() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(Barrier::new(2));
    let log = seen.clone();
    let r = ready.clone();
    let traced = thread::spawn(move || {
        settrace(Some(Rc::new(
            move |e: Event, o: &Greenlet, t: &Greenlet| {
                log.lock().unwrap().push((e.as_str(), o.id(), t.id()));
            },
        )));
        r.wait();
        let g = Greenlet::new(|()| Ok(()));
        g.switch::<(), ()>(()).unwrap();
        r.wait();
        settrace(None);
    });
    let untraced = thread::spawn(move || {
        ready.wait();
        for _ in 0..10 {
            let g = Greenlet::new(|x: u8| Ok(x));
            g.switch::<u8, u8>(1).unwrap();
        }
        assert!(greenlet::gettrace().is_none());
        ready.wait();
    });
    traced.join().unwrap();
    untraced.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), [("switch", 0, 1), ("switch", 1, 0)]);
}

#[test]
fn a_suspended_greenlet_on_the_threads_main_stack_exits_when_the_thread_ends() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let flag = cleaned.clone();
    thread::spawn(move || {
        let main = getcurrent();
        let g = Greenlet::new(move |()| {
            let _guard = SetOnDrop(flag);
            main.switch::<(), ()>(())?;
            Ok(())
        });
        g.switch::<(), ()>(()).unwrap();
        // g is dropped as the closure returns.
    })
    .join()
    .unwrap();
    assert!(cleaned.load(Ordering::SeqCst));
}
