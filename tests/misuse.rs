//! Misuse of the safe API that must stay defined behaviour: bodies that
//! return any `SwitchError` (including `Panicking`, which used to reach an
//! `unreachable!` in the trampoline and abort the process), switches and
//! throws while the thread unwinds a panic (refused with
//! `SwitchError::Panicking`), and the last handle of a suspended greenlet
//! dropped during an unwind (the greenlet is leaked, never resumed).
//!
//! Each test runs on its own test thread, so it has its own main greenlet.
//! A regression here that aborts takes the whole binary down, which fails
//! the run as surely as an assertion.

mod util;

use greenlet::{Builder, Greenlet, GreenletExit, SwitchError, getcurrent};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

// ---------------------------------------------------------------------------
// Helpers

/// The parent of the running greenlet.
fn parent() -> Greenlet {
    getcurrent()
        .parent()
        .expect("a non-main greenlet has a parent")
}

/// Sets its flag when dropped.
struct SetOnDrop(Rc<Cell<bool>>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Runs `during` from a destructor while a panic unwinds through it, and
/// catches that panic. Returns what `during` returned.
fn while_unwinding<T: 'static>(during: impl FnOnce() -> T + 'static) -> T {
    struct OnUnwind<T, F: FnOnce() -> T> {
        run: Option<F>,
        out: Rc<RefCell<Option<T>>>,
    }
    impl<T, F: FnOnce() -> T> Drop for OnUnwind<T, F> {
        fn drop(&mut self) {
            assert!(std::thread::panicking(), "only run during the unwind");
            let run = self.run.take().expect("dropped once");
            *self.out.borrow_mut() = Some(run());
        }
    }
    let out = Rc::new(RefCell::new(None));
    let guard = OnUnwind {
        run: Some(during),
        out: out.clone(),
    };
    let caught = panic::catch_unwind(AssertUnwindSafe(move || {
        let _guard = guard;
        panic::panic_any("unwinding on purpose");
    }));
    let payload = caught.expect_err("the closure panics");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"unwinding on purpose")
    );
    assert!(!std::thread::panicking());
    out.borrow_mut().take().expect("the guard ran")
}

/// Stacks of this thread in use (mapped and not waiting in the pool).
fn stacks_in_use() -> usize {
    let stats = greenlet::stack::pool_stats();
    stats.mapped - stats.pooled
}

/// The error `make` makes, returned by a body, checked by `check` where it
/// arrives: in main, in a greenlet parent, in the live grandparent of a body
/// whose parent has died, and past an unstarted parent.
fn returned_error_reaches_the_parent(make: fn() -> SwitchError, check: fn(&SwitchError) -> bool) {
    // Main is the parent.
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> { Err(make()) });
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(())));
    let err = outcome
        .expect("an error returned by a body is not a panic")
        .unwrap_err();
    assert!(check(&err), "main got {err:?}");
    assert!(g.is_dead());

    // A greenlet is the parent.
    let outer = Greenlet::new(move |()| {
        let inner = Greenlet::new(move |()| -> Result<u64, SwitchError> { Err(make()) });
        let err = inner.switch::<(), u64>(()).unwrap_err();
        Ok((check(&err), format!("{err:?}"), inner.is_dead()))
    });
    let (ok, text, dead) = outer.switch::<(), (bool, String, bool)>(()).unwrap();
    assert!(ok && dead, "the greenlet parent got {text}");

    // The parent is dead: the error goes to the nearest live ancestor.
    let main = getcurrent();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::default();
    let slot = child_slot.clone();
    let dying = Greenlet::new(move |()| {
        let child = Greenlet::new(move |()| -> Result<(), SwitchError> { Err(make()) });
        *slot.borrow_mut() = Some(child);
        Ok(())
    });
    dying.switch::<(), ()>(()).unwrap();
    assert!(dying.is_dead());
    let child = child_slot.borrow_mut().take().unwrap();
    assert_eq!(child.parent(), Some(dying.clone()));
    let err = child.switch::<(), ()>(()).unwrap_err();
    assert!(check(&err), "the grandparent got {err:?}");
    assert!(child.is_dead());
    assert!(getcurrent() == main);

    // The parent is unstarted: it dies without running, and the error
    // climbs on to its parent.
    let unstarted =
        Greenlet::new(|()| -> Result<(), SwitchError> { unreachable!("killed before it runs") });
    let child = Builder::new()
        .parent(&unstarted)
        .spawn(move |()| -> Result<(), SwitchError> { Err(make()) })
        .unwrap();
    let err = child.switch::<(), ()>(()).unwrap_err();
    assert!(check(&err), "past an unstarted parent, main got {err:?}");
    assert!(child.is_dead() && unstarted.is_dead());
}

// ---------------------------------------------------------------------------
// 1. Errors returned by a body

#[test]
fn a_body_returning_panicking_gives_the_parent_panicking_and_does_not_abort() {
    returned_error_reaches_the_parent(
        || SwitchError::Panicking,
        |e| matches!(e, SwitchError::Panicking),
    );
}

#[test]
fn a_body_returning_each_switch_error_raises_it_in_the_parent() {
    returned_error_reaches_the_parent(|| SwitchError::Exit, |e| matches!(e, SwitchError::Exited));
    returned_error_reaches_the_parent(|| SwitchError::Exited, |e| matches!(e, SwitchError::Exited));
    returned_error_reaches_the_parent(
        || SwitchError::Thrown(Box::new(7u8)),
        |e| e.thrown::<u8>() == Some(&7),
    );
    returned_error_reaches_the_parent(
        || SwitchError::TypeMismatch {
            sent: "sent",
            expected: "expected",
        },
        |e| {
            matches!(
                e,
                SwitchError::TypeMismatch {
                    sent: "sent",
                    expected: "expected"
                }
            )
        },
    );
}

#[test]
fn a_body_can_return_the_panicking_error_a_refused_switch_gave_it() {
    // The realistic way to get `Panicking` out of a body: a destructor that
    // runs during a caught unwind tries to switch, keeps the error, and the
    // body returns it once the unwind is over.
    let g = Greenlet::new(|()| -> Result<(), SwitchError> {
        let kept = while_unwinding(|| parent().switch::<(), ()>(()));
        kept?;
        unreachable!("the switch was refused");
    });
    let err = g.switch::<(), ()>(()).unwrap_err();
    assert!(matches!(err, SwitchError::Panicking), "{err:?}");
    assert!(g.is_dead());
    // The thread is fine afterwards.
    let h = Greenlet::new(|x: u32| Ok(x * 2));
    assert_eq!(h.switch::<u32, u32>(21).unwrap(), 42);
}

#[test]
fn a_body_returning_panicking_under_a_tracer_is_traced_as_a_throw() {
    let events: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    let seen = events.clone();
    greenlet::settrace(Some(Rc::new(
        move |event: greenlet::Event, _: &Greenlet, _: &Greenlet| {
            seen.borrow_mut().push(event.as_str())
        },
    )));
    let g = Greenlet::new(|()| -> Result<(), SwitchError> { Err(SwitchError::Panicking) });
    let err = g.switch::<(), ()>(()).unwrap_err();
    greenlet::settrace(None);
    assert!(matches!(err, SwitchError::Panicking), "{err:?}");
    assert_eq!(*events.borrow(), ["switch", "throw"]);
}

// ---------------------------------------------------------------------------
// 2. Values and errors whose destructor panics where no frame can unwind
//
// A dying greenlet makes its last switch from the trampoline's frame, which
// cannot unwind: a destructor that panics there (a return value the parent
// does not take, a thrown error replaced by a tracer's panic, the body of an
// unstarted ancestor killed by a climbing error) used to abort the process.
// The panic now travels to the parent like one escaping the body (or, when
// it loses to an earlier panic, is dropped).

/// Counts its drops, then panics with "bomb".
#[derive(Debug)]
struct Bomb(Rc<Cell<usize>>);

impl Drop for Bomb {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
        panic::panic_any("bomb");
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .unwrap_or("<not a &str>")
}

#[test]
fn a_return_value_the_parent_rejects_whose_drop_panics_raises_that_panic_in_the_parent() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let g = Greenlet::new(move |()| -> Result<Bomb, SwitchError> { Ok(Bomb(d)) });
    // The parent waits for a `u8`, so the `Bomb` is dropped where it dies.
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), u8>(()))).unwrap_err();
    assert_eq!(panic_text(&*payload), "bomb");
    assert_eq!(drops.get(), 1);
    assert!(g.is_dead());
}

#[test]
fn a_discarded_return_value_whose_drop_panics_while_exiting_is_reported_not_raised() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let g = Greenlet::new(move |()| -> Result<Bomb, SwitchError> {
        // Asked to exit by the drop below, it returns a value instead,
        // which the exit-on-drop loop discards.
        let _ = parent().switch::<(), ()>(());
        Ok(Bomb(d))
    });
    g.switch::<(), ()>(()).unwrap();
    let weak = g.downgrade();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| drop(g)));
    assert!(outcome.is_ok(), "a drop does not panic");
    assert_eq!(drops.get(), 1);
    assert!(weak.upgrade().is_none());
}

#[test]
fn an_unstarted_parent_whose_body_drop_panics_when_an_error_kills_it_passes_the_panic_on() {
    let drops = Rc::new(Cell::new(0));
    // From a dying greenlet: its error climbs to its unstarted parent, whose
    // body (owning a `Bomb`) is dropped without running.
    let bomb = Bomb(drops.clone());
    let p = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let _bomb = &bomb;
        unreachable!("killed before it runs");
    });
    let g = Builder::new()
        .parent(&p)
        .spawn(|()| -> Result<(), SwitchError> { Err(SwitchError::Thrown(Box::new(1u8))) })
        .unwrap();
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(panic_text(&*payload), "bomb");
    assert_eq!(drops.get(), 1);
    assert!(g.is_dead() && p.is_dead());

    // From a live greenlet (main throwing at an unstarted child): the same,
    // the panic climbs to the child's parent, here the thrower.
    let bomb = Bomb(drops.clone());
    let q = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let _bomb = &bomb;
        unreachable!("killed before it runs");
    });
    let before = stacks_in_use();
    let payload = panic::catch_unwind(AssertUnwindSafe(|| q.throw::<_, ()>(5u8))).unwrap_err();
    assert_eq!(panic_text(&*payload), "bomb");
    assert_eq!(drops.get(), 2);
    assert!(q.is_dead());
    assert_eq!(
        stacks_in_use(),
        before - 1,
        "the killed greenlet's stack went back"
    );
    // The thread goes on switching.
    let h = Greenlet::new(|x: u8| Ok(x));
    assert_eq!(h.switch::<u8, u8>(3).unwrap(), 3);
}

#[test]
fn a_tracer_panic_at_a_dying_greenlets_last_switch_drops_what_it_carried_safely() {
    let drops = Rc::new(Cell::new(0));
    // The tracer panics only at switches into main: the last ones below.
    greenlet::settrace(Some(Rc::new(
        |_: greenlet::Event, _: &Greenlet, to: &Greenlet| {
            if to.is_main() {
                panic::panic_any("tracer");
            }
        },
    )));
    // A thrown error whose destructor panics, replaced by the tracer's panic.
    let d = drops.clone();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        Err(SwitchError::Thrown(Box::new(Bomb(d))))
    });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(panic_text(&*payload), "tracer");
    assert_eq!(drops.get(), 1);
    assert!(g.is_dead());

    // A return value whose destructor panics, replaced likewise.
    greenlet::settrace(Some(Rc::new(
        |_: greenlet::Event, _: &Greenlet, to: &Greenlet| {
            if to.is_main() {
                panic::panic_any("tracer");
            }
        },
    )));
    let d = drops.clone();
    let g = Greenlet::new(move |()| -> Result<Bomb, SwitchError> { Ok(Bomb(d)) });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), Bomb>(()))).unwrap_err();
    greenlet::settrace(None);
    assert_eq!(panic_text(&*payload), "tracer");
    assert_eq!(drops.get(), 2);
    assert!(g.is_dead());
}

// ---------------------------------------------------------------------------
// 3. Switching while the thread unwinds

#[test]
fn switch_and_throw_while_unwinding_are_refused_and_leave_the_target_as_it_was() {
    // An unstarted target is not started.
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let unstarted = Greenlet::new(move |x: u8| {
        flag.set(true);
        Ok(x)
    });
    let u = unstarted.clone();
    let refused = while_unwinding(move || u.switch::<u8, u8>(1));
    assert!(
        matches!(refused, Err(SwitchError::Panicking)),
        "{refused:?}"
    );
    let u = unstarted.clone();
    let thrown = Rc::new(Cell::new(false));
    let error = SetOnDrop(thrown.clone());
    let refused = while_unwinding(move || u.throw::<_, u8>(error));
    assert!(
        matches!(refused, Err(SwitchError::Panicking)),
        "{refused:?}"
    );
    assert!(thrown.get(), "the refused error was dropped, not leaked");
    assert!(!ran.get() && !unstarted.is_started());

    // A suspended target stays suspended, at the same switch.
    let suspended = Greenlet::new(|()| {
        let got: u32 = parent().switch(())?;
        Ok(got + 1)
    });
    suspended.switch::<(), ()>(()).unwrap();
    let s = suspended.clone();
    let refused = while_unwinding(move || s.switch::<u32, u32>(5));
    assert!(
        matches!(refused, Err(SwitchError::Panicking)),
        "{refused:?}"
    );
    let s = suspended.clone();
    let refused = while_unwinding(move || s.throw::<_, u32>(GreenletExit));
    assert!(
        matches!(refused, Err(SwitchError::Panicking)),
        "{refused:?}"
    );
    assert!(suspended.is_active());

    // Even a switch to the current greenlet, which would not switch.
    let refused = while_unwinding(|| getcurrent().switch::<u8, u8>(3));
    assert!(
        matches!(refused, Err(SwitchError::Panicking)),
        "{refused:?}"
    );

    // Once the unwind is over, both work as if nothing had happened.
    assert_eq!(unstarted.switch::<u8, u8>(9).unwrap(), 9);
    assert!(ran.get());
    assert_eq!(suspended.switch::<u32, u32>(41).unwrap(), 42);
    assert!(SwitchError::Panicking.to_string().contains("unwinding"));
    assert_eq!(format!("{:?}", SwitchError::Panicking), "Panicking");
}

#[test]
fn a_greenlet_unwinding_its_own_panic_cannot_switch_and_the_panic_reaches_the_parent() {
    let refused: Rc<RefCell<Option<String>>> = Rc::default();
    let out = refused.clone();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        struct SwitchOnDrop(Rc<RefCell<Option<String>>>);
        impl Drop for SwitchOnDrop {
            fn drop(&mut self) {
                let r = parent().switch::<(), ()>(());
                *self.0.borrow_mut() = Some(format!("{r:?}"));
            }
        }
        let _guard = SwitchOnDrop(out);
        panic::panic_any(17u32);
    });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&17));
    assert_eq!(refused.borrow().as_deref(), Some("Err(Panicking)"));
    assert!(g.is_dead());
}

// ---------------------------------------------------------------------------
// 4. The last handle of a suspended greenlet dropped during an unwind

/// A suspended greenlet whose frames own `dropped`'s guard and a clone of
/// `held`; returns it with its stack counted in use.
fn suspended_with_guard(dropped: &Rc<Cell<bool>>, held: &Rc<()>) -> Greenlet {
    let guard = SetOnDrop(dropped.clone());
    let held = held.clone();
    let g = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let _guard = guard;
        let _held = held;
        parent().switch::<(), ()>(())?;
        unreachable!("a leaked greenlet never runs again");
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_active());
    g
}

#[test]
fn the_last_handle_of_a_suspended_greenlet_dropped_while_unwinding_leaks_it() {
    let before = stacks_in_use();
    let dropped = Rc::new(Cell::new(false));
    let held = Rc::new(());
    let g = suspended_with_guard(&dropped, &held);
    assert_eq!(stacks_in_use(), before + 1);
    let weak = g.downgrade();

    while_unwinding(move || drop(g));

    // Not resumed: its destructors did not run, and what its frames own is
    // leaked with them.
    assert!(!dropped.get(), "a leaked greenlet's destructors ran");
    assert_eq!(
        Rc::strong_count(&held),
        2,
        "its frames' values were dropped"
    );
    assert!(weak.upgrade().is_none());
    // Its stack is leaked, not pooled: still counted in use, and new
    // greenlets take other stacks.
    assert_eq!(stacks_in_use(), before + 1);
    for x in 0..4u32 {
        let h = Greenlet::new(|x: u32| Ok(x + 1));
        assert_eq!(h.switch::<u32, u32>(x).unwrap(), x + 1);
    }
    assert_eq!(stacks_in_use(), before + 1);
    // The thread goes on switching.
    assert!(getcurrent().is_main());
    let h = Greenlet::new(|()| parent().switch::<u8, ()>(5));
    assert_eq!(h.switch::<(), u8>(()).unwrap(), 5);
    drop(h); // exits as usual, outside the unwind
}

#[test]
fn a_greenlet_dropped_while_another_greenlet_unwinds_is_leaked_too() {
    let dropped = Rc::new(Cell::new(false));
    let held = Rc::new(());
    let (d, h) = (dropped.clone(), held.clone());
    let outer = Greenlet::new(move |()| -> Result<(), SwitchError> {
        let victim = suspended_with_guard(&d, &h);
        struct DropOnUnwind(Option<Greenlet>);
        impl Drop for DropOnUnwind {
            fn drop(&mut self) {
                drop(self.0.take());
            }
        }
        let _owner = DropOnUnwind(Some(victim));
        panic::panic_any("outer dies");
    });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| outer.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"outer dies"));
    assert!(outer.is_dead());
    assert!(!dropped.get());
    assert_eq!(Rc::strong_count(&held), 2);
}

#[test]
fn unstarted_and_dead_greenlets_dropped_while_unwinding_are_released_as_usual() {
    // Neither needs a switch to go, so the unwind changes nothing.
    let before = stacks_in_use();
    let dropped = Rc::new(Cell::new(false));
    let guard = SetOnDrop(dropped.clone());
    let unstarted = Greenlet::new(move |()| {
        let _guard = guard;
        Ok(())
    });
    let dead = Greenlet::new(|()| Ok(()));
    dead.switch::<(), ()>(()).unwrap();
    while_unwinding(move || {
        drop(unstarted);
        drop(dead);
    });
    assert!(dropped.get(), "the unstarted body was not dropped");
    assert_eq!(stacks_in_use(), before);
}

#[test]
fn the_leak_is_reported_on_stderr() {
    const NAME: &str = "the_leak_is_reported_on_stderr";
    if util::is_child(NAME) {
        let dropped = Rc::new(Cell::new(false));
        let held = Rc::new(());
        let g = suspended_with_guard(&dropped, &held);
        println!("LEAKED-ID {}", g.id());
        while_unwinding(move || drop(g));
        return;
    }
    let output = util::run_child(NAME, &[]);
    assert!(output.status.success(), "{:?}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let id = stdout
        .lines()
        .find_map(|l| l.split("LEAKED-ID ").nth(1))
        .expect("the child printed the id")
        .trim();
    let expected = format!(
        "greenlet #{id}: last handle dropped while suspended during a panic; it cannot be asked \
         to exit while the thread unwinds, so its stack is leaked and its destructors will not run"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_builder_spawned_greenlet_with_a_parent_also_passes_panicking_on() {
    // The body's error goes to the parent the builder set, not the creator.
    let main = getcurrent();
    let collector = Greenlet::new(|()| {
        let r = parent().switch::<(), ()>(());
        Ok(format!("{r:?}"))
    });
    collector.switch::<(), ()>(()).unwrap();
    let g = Builder::new()
        .parent(&collector)
        .spawn(|()| -> Result<(), SwitchError> { Err(SwitchError::Panicking) })
        .unwrap();
    // g fails into the collector, which returns its text to main.
    let text = g.switch::<(), String>(()).unwrap();
    assert_eq!(text, "Err(Panicking)");
    assert!(g.is_dead() && collector.is_dead());
    assert!(getcurrent() == main);
}
