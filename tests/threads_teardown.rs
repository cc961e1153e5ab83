//! Thread exit with suspended greenlets held in thread-locals: each gets
//! `GreenletExit` and its cleanup runs, with no crash and nothing left
//! undone, whether the thread-local holding it is destroyed before the
//! crate's own thread-local teardown (`LATE`: initialised after the thread's
//! first greenlet) or after it (`EARLY`: initialised before any greenlet, so
//! its destructor runs last).
//!
//! Each scenario runs in a child process that re-runs this test binary (as
//! the crash tests of Python's greenlet do): a mistake here aborts the
//! process, and the parent reports the child's status and output instead of
//! losing the whole test binary.

use greenlet::{Event, Greenlet, SwitchError, getcurrent, settrace};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

#[path = "util/mod.rs"]
mod util;
use util::run_child;

// ---------------------------------------------------------------------------
// Child processes

const CHILD: &str = "GREENLET_TEST_TEARDOWN_CHILD";

/// In the child: runs `scenario`. In the parent: runs the child and checks
/// it passed.
fn in_child(test: &str, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        println!("CHILD: done");
        return;
    }
    let out = run_child(test, &[(CHILD, "1")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD: done"),
        "child {test} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

// ---------------------------------------------------------------------------
// Scenarios

// Lazily initialised on purpose (not `const`): these tests are about the
// order in which thread-locals are initialised and so destroyed.
std::thread_local! {
    /// Initialised before the thread's first greenlet: its destructor runs
    /// after the crate's thread-local teardown.
    #[allow(clippy::missing_const_for_thread_local)]
    static EARLY: RefCell<Vec<Greenlet>> = RefCell::new(Vec::new());
    /// Initialised after the thread's first greenlet: its destructor runs
    /// before the crate's teardown.
    #[allow(clippy::missing_const_for_thread_local)]
    static LATE: RefCell<Vec<Greenlet>> = RefCell::new(Vec::new());
}

/// Counts its drops.
struct Count(Arc<AtomicUsize>);

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `body` on a new thread whose greenlets go to `EARLY` (initialised
/// first) or `LATE` (initialised after a first greenlet), and joins it.
fn on_thread(early: bool, body: impl FnOnce(&dyn Fn(Greenlet)) + Send + 'static) {
    thread::spawn(move || {
        if early {
            EARLY.with(|_| ());
        } else {
            let first = Greenlet::new(|()| Ok(()));
            first.switch::<(), ()>(()).unwrap();
            LATE.with(|_| ());
        }
        let keep = move |g: Greenlet| {
            if early {
                EARLY.with(|slot| slot.borrow_mut().push(g));
            } else {
                LATE.with(|slot| slot.borrow_mut().push(g));
            }
        };
        body(&keep);
    })
    .join()
    .expect("the thread (or its thread-local destructors) failed");
}

/// A greenlet suspended in a switch to main that, asked to exit, checks it
/// runs as a greenlet, runs another greenlet from its cleanup, counts in
/// `cleaned` (through its guard) and ends.
fn suspended_greenlet(cleaned: Arc<AtomicUsize>) -> Greenlet {
    let g = Greenlet::new(move |()| {
        let _count = Count(cleaned);
        // Not `getcurrent().parent().unwrap().switch(..)` in one statement:
        // its temporary handle to this greenlet would live across the
        // switch and keep the greenlet from ever being asked to exit.
        let parent = getcurrent().parent().unwrap();
        let r = parent.switch::<(), ()>(());
        assert!(matches!(r, Err(SwitchError::Exit)), "{r:?}");
        assert!(!getcurrent().is_main());
        // Cleanup may use greenlets too.
        let helper = Greenlet::new(|x: u32| Ok(x + 1));
        assert_eq!(helper.switch::<u32, u32>(41)?, 42);
        r
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_active());
    g
}

fn three_suspended_greenlets(early: bool) {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let c = cleaned.clone();
    on_thread(early, move |keep| {
        for _ in 0..3 {
            keep(suspended_greenlet(c.clone()));
        }
    });
    assert_eq!(
        cleaned.load(Ordering::SeqCst),
        3,
        "a greenlet's cleanup did not run"
    );
}

fn eight_threads(early: bool) {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = cleaned.clone();
            thread::spawn(move || {
                on_thread(early, move |keep| {
                    keep(suspended_greenlet(c.clone()));
                    keep(suspended_greenlet(c));
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(cleaned.load(Ordering::SeqCst), 16);
}

/// While exiting, the greenlet swallows the first request by switching back
/// to the main greenlet it captured, then ends on the second.
fn cleanup_switches_to_the_main_it_captured(early: bool) {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (cleaned.clone(), requests.clone());
    on_thread(early, move |keep| {
        let main = getcurrent();
        let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
            let _count = Count(c);
            loop {
                let got = main.switch::<(), ()>(());
                if got.is_err() && r.fetch_add(1, Ordering::SeqCst) == 1 {
                    return got;
                }
            }
        });
        g.switch::<(), ()>(()).unwrap();
        keep(g);
    });
    assert_eq!(cleaned.load(Ordering::SeqCst), 1, "the cleanup did not run");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

/// While exiting, the greenlet switches to a sibling (a child of main) that
/// then returns, and its return value goes to main.
fn cleanup_runs_a_sibling_to_completion(early: bool) {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let sibling_done = Arc::new(AtomicUsize::new(0));
    let (c, s) = (cleaned.clone(), sibling_done.clone());
    on_thread(early, move |keep| {
        let main = getcurrent();
        let m = main.clone();
        let sibling = Greenlet::new(move |()| {
            let _count = Count(s);
            m.switch::<(), ()>(())?;
            Ok(())
        });
        sibling.switch::<(), ()>(()).unwrap();
        let g = Greenlet::new(move |()| {
            let _count = Count(c);
            let r = main.switch::<(), ()>(());
            let _ = sibling.switch::<(), ()>(());
            r
        });
        g.switch::<(), ()>(()).unwrap();
        keep(g);
    });
    assert_eq!(cleaned.load(Ordering::SeqCst), 1, "the cleanup did not run");
    assert_eq!(
        sibling_done.load(Ordering::SeqCst),
        1,
        "the sibling did not end"
    );
}

/// Greenlets in both thread-locals, with a tracer left installed.
fn both_thread_locals_and_a_tracer() {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let traced = Arc::new(AtomicUsize::new(0));
    let (c, t) = (cleaned.clone(), traced.clone());
    thread::spawn(move || {
        EARLY.with(|_| ());
        let g = suspended_greenlet(c.clone());
        EARLY.with(|slot| slot.borrow_mut().push(g));
        settrace(Some(Rc::new(
            move |_: Event, _: &Greenlet, _: &Greenlet| {
                t.fetch_add(1, Ordering::SeqCst);
            },
        )));
        let g = suspended_greenlet(c);
        LATE.with(|slot| slot.borrow_mut().push(g));
    })
    .join()
    .expect("the thread (or its thread-local destructors) failed");
    assert_eq!(cleaned.load(Ordering::SeqCst), 2);
    assert!(traced.load(Ordering::SeqCst) >= 2);
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn late_thread_local_greenlets_exit_at_thread_exit() {
    in_child("late_thread_local_greenlets_exit_at_thread_exit", || {
        three_suspended_greenlets(false)
    });
}

#[test]
fn early_thread_local_greenlets_exit_at_thread_exit() {
    in_child("early_thread_local_greenlets_exit_at_thread_exit", || {
        three_suspended_greenlets(true)
    });
}

#[test]
fn late_thread_local_greenlets_of_eight_threads_exit() {
    in_child("late_thread_local_greenlets_of_eight_threads_exit", || {
        eight_threads(false)
    });
}

#[test]
fn early_thread_local_greenlets_of_eight_threads_exit() {
    in_child("early_thread_local_greenlets_of_eight_threads_exit", || {
        eight_threads(true)
    });
}

#[test]
fn greenlets_in_both_thread_locals_with_a_tracer_exit() {
    in_child(
        "greenlets_in_both_thread_locals_with_a_tracer_exit",
        both_thread_locals_and_a_tracer,
    );
}

#[test]
fn late_cleanup_that_switches_to_the_main_it_captured() {
    in_child("late_cleanup_that_switches_to_the_main_it_captured", || {
        cleanup_switches_to_the_main_it_captured(false)
    });
}

#[test]
fn early_cleanup_that_switches_to_the_main_it_captured() {
    in_child(
        "early_cleanup_that_switches_to_the_main_it_captured",
        || cleanup_switches_to_the_main_it_captured(true),
    );
}

#[test]
fn late_cleanup_that_runs_a_sibling_to_completion() {
    in_child("late_cleanup_that_runs_a_sibling_to_completion", || {
        cleanup_runs_a_sibling_to_completion(false)
    });
}

#[test]
fn early_cleanup_that_runs_a_sibling_to_completion() {
    in_child("early_cleanup_that_runs_a_sibling_to_completion", || {
        cleanup_runs_a_sibling_to_completion(true)
    });
}
