//! `GreenletExit` on the last handle: dropping the last handle to a
//! suspended greenlet makes its pending switch return `SwitchError::Exit`,
//! its destructors run before the drop returns, a greenlet that swallows the
//! request is asked again, switching away while exiting and panicking in
//! cleanup behave as `kill_suspended` documents, and unstarted greenlets
//! drop their body without running it.
//!
//! The stack pool counts used here (`pooled`) are per thread, so these tests
//! can run in parallel. Thread exit is in `threads_teardown.rs`.

use greenlet::{Builder, Greenlet, SwitchError, getcurrent, stack::pool_stats};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

#[path = "util/mod.rs"]
mod util;
use util::run_child;

// ---------------------------------------------------------------------------
// Helpers

/// Sets its flag when dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        assert!(!self.0.replace(true), "dropped twice");
    }
}

fn flag() -> (Rc<Cell<bool>>, DropFlag) {
    let f = Rc::new(Cell::new(false));
    (f.clone(), DropFlag(f))
}

/// A shared, ordered log of what happened.
type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, what: impl Into<String>) {
    log.borrow_mut().push(what.into());
}

// ---------------------------------------------------------------------------
// The basic rule

#[test]
fn dropping_the_last_handle_runs_destructors_before_the_drop_returns() {
    let main = getcurrent();
    let (dropped, guard) = flag();
    let seen = log();
    let record = seen.clone();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let _guard = guard;
        let r = main.switch::<(), ()>(());
        push(&record, format!("{r:?}"));
        r?;
        unreachable!("the switch was asked to exit")
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_active());
    let pooled = pool_stats().pooled;
    drop(g);
    assert!(
        dropped.get(),
        "the greenlet's destructors did not run before the drop returned"
    );
    assert_eq!(*seen.borrow(), ["Err(Exit)"]);
    assert_eq!(
        pool_stats().pooled,
        pooled + 1,
        "the dead greenlet's stack went back to the pool"
    );
    assert!(getcurrent().is_main());
    // The thread goes on normally.
    let h = Greenlet::new(|x: u8| Ok(x + 1));
    assert_eq!(h.switch::<u8, u8>(1).unwrap(), 2);
}

#[test]
fn destructors_of_every_frame_run_in_order() {
    let main = getcurrent();
    let seen = log();
    let record = seen.clone();
    struct Named(&'static str, Log);
    impl Drop for Named {
        fn drop(&mut self) {
            push(&self.1, self.0);
        }
    }
    fn level(depth: u32, main: &Greenlet, log: &Log) -> Result<(), SwitchError> {
        let _named = Named(["zero", "one", "two", "three"][depth as usize], log.clone());
        if depth == 0 {
            main.switch::<(), ()>(())
        } else {
            level(depth - 1, main, log)
        }
    }
    let g = Greenlet::new(move |()| level(3, &main, &record));
    g.switch::<(), ()>(()).unwrap();
    assert!(seen.borrow().is_empty());
    drop(g);
    assert_eq!(*seen.borrow(), ["zero", "one", "two", "three"]);
}

#[test]
fn a_value_returned_in_answer_to_exit_is_dropped() {
    let main = getcurrent();
    let (dropped, value) = flag();
    let g = Greenlet::new(move |()| {
        let _ = main.switch::<(), ()>(());
        Ok(value) // a value to nobody: the killer discards it
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert!(dropped.get(), "the returned value was leaked");
}

#[test]
fn dropping_a_non_last_handle_does_nothing() {
    let main = getcurrent();
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        main.switch::<(), ()>(())?;
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    let clone = g.clone();
    let another = clone.clone();
    drop(g);
    assert!(!dropped.get() && clone.is_active());
    drop(another);
    assert!(!dropped.get() && clone.is_active());
    // The clone still drives it.
    clone.switch::<(), ()>(()).unwrap();
    assert!(dropped.get() && clone.is_dead());
}

#[test]
fn dropping_a_dead_greenlet_does_nothing_more() {
    let runs = Rc::new(Cell::new(0));
    let count = runs.clone();
    let g = Greenlet::new(move |()| {
        count.set(count.get() + 1);
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert_eq!(runs.get(), 1);
}

#[test]
fn dropping_an_unstarted_greenlet_drops_its_body_without_running_it() {
    let ran = Rc::new(Cell::new(false));
    let (dropped, guard) = flag();
    let r = ran.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        r.set(true);
        Ok(())
    });
    let pooled = pool_stats().pooled;
    drop(g);
    assert!(dropped.get(), "the body's captures were not dropped");
    assert!(!ran.get(), "the body ran");
    assert_eq!(pool_stats().pooled, pooled + 1);

    // The same for a body too large to live on its stack (boxed).
    let (dropped, guard) = flag();
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let big = [1u8; 8192];
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        r.set(true);
        Ok(big[0])
    });
    drop(g);
    assert!(dropped.get() && !ran.get());
}

#[test]
fn an_unstarted_greenlets_captured_handles_are_released_too() {
    // The body of an unstarted greenlet holds the last handle to a
    // suspended one: dropping the unstarted greenlet makes the other exit.
    let main = getcurrent();
    let (dropped, guard) = flag();
    let suspended = Greenlet::new(move |()| {
        let _guard = guard;
        main.switch::<(), ()>(())?;
        Ok(())
    });
    suspended.switch::<(), ()>(()).unwrap();
    let holder = Greenlet::new(move |()| {
        let _held = &suspended;
        Ok(())
    });
    assert!(!dropped.get());
    drop(holder);
    assert!(dropped.get());
}

// ---------------------------------------------------------------------------
// Swallowing, switching away, panicking

#[test]
fn a_greenlet_that_swallows_exit_is_asked_again() {
    let main = getcurrent();
    let requests = Rc::new(Cell::new(0));
    let count = requests.clone();
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        loop {
            match main.switch::<(), ()>(()) {
                Err(SwitchError::Exit) => {
                    count.set(count.get() + 1);
                    if count.get() == 3 {
                        return Ok(());
                    }
                    // Swallow it: go on as if nothing happened, which
                    // switches back to main (the killer) again.
                }
                other => panic!("expected Exit, got {other:?}"),
            }
        }
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert_eq!(requests.get(), 3);
    assert!(dropped.get());
}

#[test]
fn the_killer_becomes_the_parent_so_a_swallowing_greenlet_comes_back_to_it() {
    // g's parent is main, but a greenlet k drops its last handle: while g
    // exits, its parent is k.
    let seen = log();
    let (dropped, guard) = flag();
    let record = seen.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let mut asked = 0;
        loop {
            // The parent at the time of the switch: main the first time.
            let parent = getcurrent().parent().unwrap();
            match parent.switch::<(), ()>(()) {
                Err(SwitchError::Exit) => {
                    asked += 1;
                    let now = getcurrent().parent().unwrap();
                    push(
                        &record,
                        format!("exit {asked}, parent is main: {}", now.is_main()),
                    );
                    if asked == 2 {
                        return Err::<(), _>(SwitchError::Exit);
                    }
                }
                other => panic!("expected Exit, got {other:?}"),
            }
        }
    });
    g.switch::<(), ()>(()).unwrap();
    let killer_log = seen.clone();
    let k = Greenlet::new(move |g: Greenlet| {
        let me = getcurrent();
        drop(g);
        push(&killer_log, "drop returned");
        assert_eq!(getcurrent(), me);
        Ok(me.id())
    });
    let k_id = k.switch::<Greenlet, u64>(g).unwrap();
    assert_eq!(k_id, k.id());
    assert!(dropped.get());
    // Each request comes while g's parent is k (not main).
    assert_eq!(
        *seen.borrow(),
        [
            "exit 1, parent is main: false",
            "exit 2, parent is main: false",
            "drop returned"
        ]
    );
}

#[test]
fn exiting_through_a_third_greenlet_is_asked_again_as_documented() {
    // kill_suspended: the killer loops while the greenlet is suspended. If
    // the exiting greenlet switches to h and h switches back to the killer,
    // the greenlet is still suspended, so it is asked again, where it is
    // suspended: at its switch to h. The value h sent the killer is
    // discarded.
    let main = getcurrent();
    let seen = log();
    let (dropped, guard) = flag();
    let (h_value_dropped, h_value) = flag();

    let h_log = seen.clone();
    let m = main.clone();
    let h = Greenlet::new(move |()| {
        push(&h_log, "h runs");
        // Back to the killer (main), with a value nobody waits for.
        let r = m.switch::<DropFlag, ()>(h_value);
        push(&h_log, format!("h resumed: {r:?}"));
        r
    });
    let h_handle = h.clone();
    let g_log = seen.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let r = main.switch::<(), ()>(());
        push(&g_log, format!("g: {r:?}, to h"));
        let r = h.switch::<(), ()>(());
        push(&g_log, format!("g at its switch to h: {r:?}"));
        r
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert!(dropped.get(), "g's destructors did not run");
    assert!(
        h_value_dropped.get(),
        "the value h sent to the killer was leaked"
    );
    assert_eq!(
        *seen.borrow(),
        [
            "g: Err(Exit), to h",
            "h runs",
            "g at its switch to h: Err(Exit)"
        ]
    );
    // h is left suspended in its switch to main; it exits in turn when its
    // last handle goes.
    assert!(h_handle.is_active());
    drop(h_handle);
    assert_eq!(seen.borrow().last().unwrap(), "h resumed: Err(Exit)");
}

#[test]
fn exiting_through_a_third_greenlet_that_switches_back_to_it_completes() {
    // While exiting, g switches to h; h switches straight back to g; g ends.
    let main = getcurrent();
    let seen = log();
    let (dropped, guard) = flag();
    let h_log = seen.clone();
    let h = Greenlet::new(move |g: Greenlet| {
        push(&h_log, "h runs");
        g.switch::<&str, ()>("from h")?;
        Ok(())
    });
    let h2 = h.clone();
    let g_log = seen.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let r = main.switch::<(), ()>(());
        assert!(matches!(r, Err(SwitchError::Exit)));
        let got: &str = h.switch::<Greenlet, &str>(getcurrent())?;
        push(&g_log, format!("g got {got:?}"));
        r
    });
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert!(dropped.get());
    assert_eq!(*seen.borrow(), ["h runs", "g got \"from h\""]);
    // h is suspended in its switch to g (dead now); dropping h exits it.
    assert!(h2.is_active());
}

#[test]
fn a_panic_during_cleanup_does_not_leave_the_drop_and_the_greenlet_is_dead() {
    let main = getcurrent();
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let _guard = guard;
        let r = main.switch::<(), ()>(());
        assert!(r.is_err());
        panic!("cleanup boom");
    });
    g.switch::<(), ()>(()).unwrap();
    let pooled = pool_stats().pooled;
    let outcome = panic::catch_unwind(AssertUnwindSafe(move || drop(g)));
    assert!(
        outcome.is_ok(),
        "the cleanup panic propagated out of the drop"
    );
    assert!(dropped.get(), "the panic unwound the greenlet's frames");
    assert_eq!(
        pool_stats().pooled,
        pooled + 1,
        "the greenlet is dead and its stack pooled"
    );
    assert!(getcurrent().is_main());
}

/// The child half of the test below: drop a greenlet that panics in cleanup.
const CLEANUP_CHILD: &str = "GREENLET_TEST_CLEANUP_PANIC_CHILD";

#[test]
fn a_panic_during_cleanup_is_reported_on_stderr() {
    if std::env::var_os(CLEANUP_CHILD).is_some() {
        let main = getcurrent();
        let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
            let _ = main.switch::<(), ()>(());
            panic!("cleanup boom in the child");
        });
        g.switch::<(), ()>(()).unwrap();
        drop(g);
        println!("CHILD: the drop returned");
        return;
    }
    let out = run_child(
        "a_panic_during_cleanup_is_reported_on_stderr",
        &[(CLEANUP_CHILD, "1")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("CHILD: the drop returned"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "panicked while exiting after its last handle was dropped: cleanup boom in the child"
        ),
        "stderr:\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Other ways to lose the last reference

#[test]
fn a_running_greenlet_whose_last_handle_is_dropped_exits_when_it_switches_away() {
    // As in Python: the greenlet's last reference goes when it switches
    // away (the switch releases the running greenlet's reference in the
    // greenlet that resumes), and then it is asked to exit.
    let main = getcurrent();
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let (dropped, guard) = flag();
    let seen = log();
    let record = seen.clone();
    let s = slot.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        drop(s.borrow_mut().take()); // the only handle, dropped while running
        let r = main.switch::<u32, ()>(7);
        push(&record, format!("{r:?}"));
        r?;
        Ok(())
    });
    *slot.borrow_mut() = Some(g.clone());
    // Switch in with a temporary handle only.
    let start = g.clone();
    drop(g);
    let got = start.switch::<(), u32>(());
    // `start` is still alive here, so the greenlet is just suspended.
    assert_eq!(got.unwrap(), 7);
    assert!(slot.borrow().is_none());
    assert!(!dropped.get());
    drop(start);
    assert!(dropped.get());
    assert_eq!(*seen.borrow(), ["Err(Exit)"]);

    // Now with no reference left but the running one.
    let (got, dropped, d) = send_with_no_reference_left(9u32);
    // The value arrived, and the greenlet, whose last reference was the one
    // its switch released, has exited.
    assert_eq!(got.unwrap(), 9);
    assert!(
        dropped.get(),
        "a suspended greenlet with no reference left did not exit"
    );
    assert_eq!(d.parent(), Some(getcurrent()));
}

/// Has a greenlet `g` switch `value` to main while its only reference is
/// the running one: main reaches `g` only through the parent link of a dead
/// greenlet `d`, which `g` cuts before it switches. Returns what main
/// received, the flag set when `g`'s cleanup ran, and `d`.
fn send_with_no_reference_left<T: 'static>(
    value: T,
) -> (Result<T, SwitchError>, Rc<Cell<bool>>, Greenlet) {
    let main = getcurrent();
    let d = Greenlet::new(|()| Ok(()));
    d.switch::<(), ()>(()).unwrap();
    let (dropped, guard) = flag();
    let d_in_g = d.clone();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        d_in_g.set_parent(&main).unwrap(); // g's last reference is now `current`
        main.switch::<T, ()>(value)?;
        Ok(())
    });
    d.set_parent(&g).unwrap();
    drop(g);
    assert!(!dropped.get());
    let got = d.switch::<(), T>(()); // dead d -> its live ancestor g (unstarted): starts it
    (got, dropped, d)
}

#[test]
fn a_value_sent_while_the_sender_has_no_reference_left_arrives_once() {
    // With the sender's last reference in the thread state, a value cannot
    // go the plain way (whose receiver releases nothing): it goes as a
    // transfer whose receiver moves it out, then releases that reference,
    // making the sender exit. A value with a destructor must arrive intact,
    // moved out once, and not be dropped by the sender.
    let (got, dropped, _d) = send_with_no_reference_left("sent ".repeat(3));
    assert_eq!(got.unwrap(), "sent sent sent ");
    assert!(dropped.get(), "the sender did not exit");
}

#[test]
fn nested_exits_run_inner_cleanup_first() {
    // outer holds the last handle to inner on its stack: outer's exit drops
    // it, which makes inner exit from inside outer's exit, with outer as
    // its killer and so its parent.
    let main = getcurrent();
    let seen = log();
    struct Say(&'static str, Log);
    impl Drop for Say {
        fn drop(&mut self) {
            push(&self.1, self.0);
        }
    }
    let outer_log = seen.clone();
    let outer = Greenlet::new(move |()| {
        let _say = Say("outer cleanup", outer_log.clone());
        let log = outer_log.clone();
        let m = main.clone();
        // inner's parent is main, not outer: a child's parent link is a
        // strong reference, so with outer as parent, outer's stack (holding
        // inner) and inner's parent link (holding outer) would be a cycle
        // that nothing ever asks to exit, as in Python's greenlet.
        let inner = Builder::new()
            .parent(&main)
            .spawn(move |()| {
                let _say = Say("inner cleanup", log.clone());
                let r = m.switch::<(), ()>(());
                let parent = getcurrent().parent().unwrap();
                push(
                    &log,
                    format!("inner {r:?}, parent is main: {}", parent.is_main()),
                );
                r
            })
            .unwrap();
        inner.switch::<(), ()>(())?; // inner switches to main
        main.switch::<(), ()>(())?;
        drop(inner);
        Ok(())
    });
    outer.switch::<(), ()>(()).unwrap(); // outer -> inner -> main
    outer.switch::<(), ()>(()).unwrap(); // -> outer -> main
    assert!(seen.borrow().is_empty());
    drop(outer);
    assert_eq!(
        *seen.borrow(),
        [
            "inner Err(Exit), parent is main: false",
            "inner cleanup",
            "outer cleanup"
        ]
    );
}

#[test]
fn the_original_parent_of_a_killed_greenlet_is_not_disturbed() {
    let main = getcurrent();
    let m = main.clone();
    let p = Greenlet::new(move |()| {
        let got: i32 = m.switch::<(), i32>(())?;
        Ok(got + 1)
    });
    p.switch::<(), ()>(()).unwrap();
    let (dropped, guard) = flag();
    let g = Builder::new()
        .parent(&p)
        .spawn(move |()| {
            let _guard = guard;
            main.switch::<(), ()>(())?;
            Ok(5i32)
        })
        .unwrap();
    g.switch::<(), ()>(()).unwrap();
    drop(g);
    assert!(dropped.get());
    // p never saw g's exit; its pending switch still waits for an i32.
    assert!(p.is_active());
    assert_eq!(p.switch::<i32, i32>(41).unwrap(), 42);
}

#[test]
fn a_suspended_greenlet_whose_last_reference_is_a_childs_parent_link_exits() {
    // A child's parent link is a strong reference (as in Python), so it can
    // be the last reference to a suspended greenlet. When it goes, the
    // greenlet must exit like on the last handle: its cleanup runs.
    let main = getcurrent();
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let child = Greenlet::new(|()| Ok(()));
        main.switch::<Greenlet, ()>(child)?;
        Ok(())
    });
    let child: Greenlet = g.switch::<(), Greenlet>(()).unwrap();
    assert_eq!(child.parent(), Some(g.clone()));
    drop(g); // not the last reference: child.parent still holds g
    assert!(!dropped.get());
    drop(child); // the last reference to g goes with it
    assert!(
        dropped.get(),
        "g's cleanup never ran: it was freed while suspended"
    );
}

#[test]
fn a_suspended_greenlet_released_by_set_parent_exits() {
    let main = getcurrent();
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |()| {
        let _guard = guard;
        let child = Greenlet::new(|()| Ok(()));
        main.switch::<Greenlet, ()>(child)?;
        Ok(())
    });
    let child: Greenlet = g.switch::<(), Greenlet>(()).unwrap();
    drop(g);
    child.set_parent(&getcurrent()).unwrap(); // drops the link to g
    assert!(
        dropped.get(),
        "g's cleanup never ran after its last reference went"
    );
}

#[test]
fn a_suspended_parent_released_when_its_child_is_killed_exits() {
    // kill_suspended makes the killer the parent of the greenlet it kills,
    // which releases the old parent link. If that was the last reference to
    // a suspended greenlet, that greenlet must exit too.
    let main = getcurrent();
    let (parent_dropped, guard) = flag();
    let m = main.clone();
    let p = Greenlet::new(move |()| {
        let _guard = guard;
        // A child of p, handed to main unstarted. It holds no handle to p:
        // only its parent link refers to p.
        let m2 = m.clone();
        let child = Greenlet::new(move |()| {
            m2.switch::<(), ()>(())?;
            Ok(())
        });
        m.switch::<Greenlet, ()>(child)?;
        Ok(())
    });
    let child: Greenlet = p.switch::<(), Greenlet>(()).unwrap();
    child.switch::<(), ()>(()).unwrap(); // child suspends in a switch to main
    assert_eq!(child.parent(), Some(p.clone()));
    drop(p); // child's parent link is now p's last reference
    assert!(!parent_dropped.get());
    drop(child); // the kill makes main child's parent, releasing p
    assert!(
        parent_dropped.get(),
        "p's cleanup never ran after its last reference went"
    );
}

#[test]
fn the_one_statement_switch_to_parent_idiom_still_exits_on_drop() {
    // `greenlet::parent().unwrap().switch(..)` makes no handle to the running
    // greenlet. (`getcurrent().parent().unwrap().switch(..)` would: that
    // temporary lives across the switch, the greenlet holds a handle to
    // itself, and dropping the last outside handle cannot make it exit; the
    // docs of `greenlet::parent` say so.)
    let (dropped, guard) = flag();
    let g = Greenlet::new(move |mut x: i32| -> Result<(), SwitchError> {
        let _guard = guard;
        loop {
            x = greenlet::parent().unwrap().switch(x * 2)?;
        }
    });
    assert_eq!(g.switch::<i32, i32>(21).unwrap(), 42);
    drop(g);
    assert!(dropped.get(), "the greenlet was not asked to exit");
}
