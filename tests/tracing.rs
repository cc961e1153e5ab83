//! `settrace` / `gettrace`: the tracer sees every switch and throw as
//! `(event, origin, target)`, in order, before the target resumes; a tracer
//! that panics is removed and its panic is raised in the target.
//!
//! Tracers are per thread and each test runs on its own thread, so tests do
//! not see each other's switches.

use greenlet::{
    Event, Greenlet, GreenletExit, SwitchError, Tracer, getcurrent, gettrace, settrace,
};
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

/// One recorded event: the event's name, origin id, target id.
type Record = (&'static str, u64, u64);
type Records = Rc<RefCell<Vec<Record>>>;

/// Installs a recording tracer and returns what it records. The tracer is
/// removed when the returned guard drops.
fn record() -> (Records, TraceGuard) {
    let seen: Records = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let previous = settrace(Some(Rc::new(
        move |event: Event, origin: &Greenlet, target: &Greenlet| {
            log.borrow_mut()
                .push((event.as_str(), origin.id(), target.id()));
        },
    )));
    assert!(
        previous.is_none(),
        "a tracer was already set on this thread"
    );
    (seen, TraceGuard)
}

/// The running greenlet's parent. (Kept out of the caller's statement so
/// no handle to the running greenlet stays alive across its switch.)
fn parent() -> Greenlet {
    getcurrent().parent().expect("not main")
}

/// Removes this thread's tracer on drop, even if the test fails.
struct TraceGuard;

impl Drop for TraceGuard {
    fn drop(&mut self) {
        settrace(None);
    }
}

#[test]
fn the_seed_example_main_g1_g2_where_g2_panics() {
    let (seen, _guard) = record();
    let g2 = Greenlet::new(|()| -> Result<(), SwitchError> { panic!("g2 fails") });
    let g2_in_g1 = g2.clone();
    let g1 = Greenlet::new(move |()| g2_in_g1.switch::<(), ()>(()));
    // g2's parent is main (main created it), so its panic goes to main.
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g1.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"g2 fails"));
    assert_eq!(
        *seen.borrow(),
        [
            ("switch", 0, g1.id()),
            ("switch", g1.id(), g2.id()),
            ("throw", g2.id(), 0)
        ]
    );
    assert!(g2.is_dead() && g1.is_active());
}

#[test]
fn every_switch_in_order_including_the_implicit_one_when_a_body_returns() {
    let (seen, _guard) = record();
    let main = getcurrent();
    let g = Greenlet::new(move |x: u32| {
        let inner = Greenlet::new(|x: u32| Ok(x + 1)); // a child of g
        let y: u32 = main.switch(x * 2)?; // g -> main
        let z: u32 = inner.switch(y)?; // g -> inner; inner returns: inner -> g
        Ok((z, inner.id())) // g -> main
    });
    assert_eq!(g.switch::<u32, u32>(5).unwrap(), 10);
    let (z, inner_id) = g.switch::<u32, (u32, u64)>(7).unwrap();
    assert_eq!(z, 8);
    let g_id = g.id();
    assert_eq!(
        *seen.borrow(),
        [
            ("switch", 0, g_id),
            ("switch", g_id, 0),
            ("switch", 0, g_id),
            ("switch", g_id, inner_id),
            ("switch", inner_id, g_id),
            ("switch", g_id, 0),
        ]
    );
}

#[test]
fn throws_are_traced_as_throw_and_errors_leaving_a_body_too() {
    let (seen, _guard) = record();
    let g = Greenlet::new(|()| {
        parent().switch::<(), ()>(())?; // re-raises the throw
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    let err = g.throw::<&str, ()>("boom").unwrap_err();
    assert_eq!(err.thrown::<&str>(), Some(&"boom"));
    let id = g.id();
    assert_eq!(
        *seen.borrow(),
        [
            ("switch", 0, id),
            ("switch", id, 0),
            ("throw", 0, id),
            ("throw", id, 0)
        ]
    );
}

#[test]
fn exit_on_drop_is_traced_as_a_throw_then_a_switch() {
    let (seen, _guard) = record();
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        main.switch::<(), ()>(())?;
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    let id = g.id();
    drop(g);
    // The kill is a throw of GreenletExit; GreenletExit leaving the body
    // reaches the parent as a value: a switch.
    assert_eq!(
        *seen.borrow(),
        [
            ("switch", 0, id),
            ("switch", id, 0),
            ("throw", 0, id),
            ("switch", id, 0)
        ]
    );
}

#[test]
fn throwing_greenlet_exit_is_traced_as_a_throw() {
    let (seen, _guard) = record();
    let g = Greenlet::new(|()| {
        parent().switch::<(), ()>(())?;
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    assert!(matches!(
        g.throw::<GreenletExit, ()>(GreenletExit),
        Err(SwitchError::Exited)
    ));
    let id = g.id();
    assert_eq!(seen.borrow()[2..], [("throw", 0, id), ("switch", id, 0)]);
}

#[test]
fn a_throw_at_an_unstarted_child_of_another_greenlet_is_traced_to_where_it_lands() {
    let (seen, _guard) = record();
    let main = getcurrent();
    let p = Greenlet::new(move |()| {
        let r = main.switch::<(), ()>(());
        Ok(r.is_err())
    });
    p.switch::<(), ()>(()).unwrap();
    let g = Greenlet::builder().parent(&p).spawn(|()| Ok(())).unwrap();
    assert!(g.throw::<&str, bool>("x").unwrap());
    let (p_id, g_id) = (p.id(), g.id());
    let seen = seen.borrow();
    // The error lands in p (g dies unstarted), then p returns to main.
    assert_eq!(seen[..2], [("switch", 0, p_id), ("switch", p_id, 0)]);
    assert_eq!(seen.last(), Some(&("switch", p_id, 0)));
    assert!(
        seen.contains(&("throw", 0, p_id)) || seen.contains(&("throw", 0, g_id)),
        "{seen:?}"
    );
}

#[test]
fn a_throw_at_an_unstarted_child_of_the_thrower_is_traced() {
    // Every throw is traced, even one that kills an unstarted greenlet and
    // lands straight back in the thrower without a machine-level switch.
    // Python's greenlet reports ("throw", main, g) here.
    let (seen, _guard) = record();
    let g = Greenlet::new(|()| Ok(()));
    let err = g.throw::<&str, ()>("x").unwrap_err();
    assert_eq!(err.thrown::<&str>(), Some(&"x"));
    let seen = seen.borrow();
    assert!(
        seen.iter()
            .any(|&(event, origin, _)| event == "throw" && origin == 0),
        "no throw traced: {seen:?}"
    );
}

#[test]
fn a_type_mismatch_switches_nowhere_and_is_not_traced() {
    let (seen, _guard) = record();
    let g = Greenlet::new(|x: i32| Ok(x));
    assert!(matches!(
        g.switch::<u8, i32>(1),
        Err(SwitchError::TypeMismatch { .. })
    ));
    assert!(seen.borrow().is_empty());
    // A switch to the current greenlet is traced as (switch, me, me), as
    // Python's greenlet does (found by the differential test).
    assert_eq!(getcurrent().switch::<u8, u8>(1).unwrap(), 1);
    assert_eq!(seen.borrow().len(), 1);
}

#[test]
fn the_tracer_runs_before_the_target_resumes() {
    let (seen, _guard) = record();
    let main = getcurrent();
    let in_g = seen.clone();
    let g = Greenlet::new(move |()| {
        let me = getcurrent().id();
        // Already recorded when the body starts.
        assert_eq!(in_g.borrow().last(), Some(&("switch", 0, me)));
        main.switch::<(), ()>(())?;
        assert_eq!(in_g.borrow().last(), Some(&("switch", 0, me)));
        getcurrent()
            .parent()
            .unwrap()
            .switch::<(), ()>(())
            .unwrap_err(); // a throw
        assert_eq!(in_g.borrow().last(), Some(&("throw", 0, me)));
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    // Main resumes after the tracer recorded g -> main.
    assert_eq!(seen.borrow().last(), Some(&("switch", g.id(), 0)));
    g.switch::<(), ()>(()).unwrap();
    g.throw::<&str, ()>("t").unwrap();
    assert_eq!(seen.borrow().last(), Some(&("switch", g.id(), 0)));
    assert!(g.is_dead());
}

#[test]
fn the_tracer_sees_handles_to_both_ends() {
    let seen: Rc<RefCell<Vec<(bool, bool, bool)>>> = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let _guard = TraceGuard;
    settrace(Some(Rc::new(
        move |_: Event, origin: &Greenlet, target: &Greenlet| {
            // During the call, the origin is still the current greenlet.
            log.borrow_mut()
                .push((origin == &getcurrent(), origin.is_main(), target.is_main()));
        },
    )));
    let g = Greenlet::new(|()| Ok(()));
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(*seen.borrow(), [(true, true, false), (true, false, true)]);
}

#[test]
fn settrace_returns_the_previous_tracer_and_gettrace_the_current_one() {
    let _guard = TraceGuard;
    assert!(gettrace().is_none());
    let a: Tracer = Rc::new(|_, _, _| {});
    let b: Tracer = Rc::new(|_, _, _| {});
    assert!(settrace(Some(a.clone())).is_none());
    assert!(Rc::ptr_eq(&gettrace().unwrap(), &a));
    let previous = settrace(Some(b.clone())).unwrap();
    assert!(Rc::ptr_eq(&previous, &a));
    assert!(Rc::ptr_eq(&gettrace().unwrap(), &b));
    assert!(Rc::ptr_eq(&settrace(None).unwrap(), &b));
    assert!(gettrace().is_none());
    // No tracer: switches still work.
    let g = Greenlet::new(|x: u8| Ok(x));
    assert_eq!(g.switch::<u8, u8>(3).unwrap(), 3);
}

#[test]
fn a_tracer_that_panics_is_removed_and_its_panic_is_raised_in_the_target() {
    let _guard = TraceGuard;
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let caught = panic::catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
        match caught {
            Err(payload) => Ok(format!(
                "g caught: {}",
                payload.downcast_ref::<&str>().unwrap_or(&"?")
            )),
            Ok(r) => Ok(format!("g was resumed normally: {r:?}")),
        }
    });
    g.switch::<(), ()>(()).unwrap();
    settrace(Some(Rc::new(
        |event: Event, _: &Greenlet, target: &Greenlet| {
            if event == Event::Switch && !target.is_main() {
                panic!("tracer boom");
            }
        },
    )));
    // The tracer panics on main -> g: g's pending switch raises it; g
    // catches it and returns, which comes back here.
    assert_eq!(g.switch::<(), String>(()).unwrap(), "g caught: tracer boom");
    assert!(gettrace().is_none(), "the panicking tracer was not removed");
    assert!(g.is_dead());
}

#[test]
fn a_tracer_panic_escaping_the_target_reaches_its_parent() {
    let _guard = TraceGuard;
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        main.switch::<(), ()>(())?;
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    settrace(Some(Rc::new(|_: Event, _: &Greenlet, _: &Greenlet| {
        panic!("{}", String::from("tracer says no"))
    })));
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), ()>(()))).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("tracer says no")
    );
    assert!(gettrace().is_none());
    assert!(g.is_dead());
}

#[test]
fn a_tracer_panic_on_a_switch_to_an_unstarted_greenlet_kills_it_and_reaches_its_parent() {
    let _guard = TraceGuard;
    let ran = Rc::new(std::cell::Cell::new(false));
    let flag = ran.clone();
    let g = Greenlet::new(move |()| {
        flag.set(true);
        Ok(())
    });
    let value = Rc::new(());
    settrace(Some(Rc::new(|_: Event, _: &Greenlet, _: &Greenlet| {
        panic!("tracer at start")
    })));
    let sent = value.clone();
    let g2 = Greenlet::new(move |_: Rc<()>| Ok(()));
    let payload =
        panic::catch_unwind(AssertUnwindSafe(|| g2.switch::<Rc<()>, ()>(sent))).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"tracer at start"));
    assert!(gettrace().is_none());
    assert!(g2.is_dead() && !g2.is_active());
    assert_eq!(
        Rc::strong_count(&value),
        1,
        "the value of the failed switch was leaked"
    );
    // Untouched greenlets are fine, and switching is untraced now.
    g.switch::<(), ()>(()).unwrap();
    assert!(ran.get());
}

#[test]
fn a_panicking_tracer_during_a_greenlets_return_reaches_the_parent() {
    let _guard = TraceGuard;
    let g = Greenlet::new(|()| {
        settrace(Some(Rc::new(|_: Event, _: &Greenlet, _: &Greenlet| {
            panic!("tracer at return")
        })));
        Ok(5u8)
    });
    let payload = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), u8>(()))).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"tracer at return"));
    assert!(gettrace().is_none());
    assert!(g.is_dead());
}

#[test]
fn a_tracer_may_remove_or_replace_itself() {
    let _guard = TraceGuard;
    let seen: Records = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let second: Tracer = Rc::new(move |e: Event, o: &Greenlet, t: &Greenlet| {
        log.borrow_mut().push((e.as_str(), o.id(), t.id()));
    });
    // The first tracer replaces itself with the second on its first call.
    settrace(Some(Rc::new(
        move |_: Event, _: &Greenlet, _: &Greenlet| {
            settrace(Some(second.clone()));
        },
    )));
    let g = Greenlet::new(|()| Ok(()));
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(*seen.borrow(), [("switch", g.id(), 0)]);
    // A tracer that removes itself.
    let calls = Rc::new(std::cell::Cell::new(0));
    let count = calls.clone();
    settrace(Some(Rc::new(
        move |_: Event, _: &Greenlet, _: &Greenlet| {
            count.set(count.get() + 1);
            settrace(None);
        },
    )));
    let g = Greenlet::new(|()| Ok(()));
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(calls.get(), 1);
    assert!(gettrace().is_none());
}

#[test]
fn a_tracer_that_drops_the_senders_last_handle_lets_its_value_arrive_once() {
    // The tracer drops the last handle of the greenlet that is switching
    // away with a value: the thread state then holds its last reference, so
    // the value goes by the route whose receiver releases it (and makes the
    // sender exit), and must arrive intact, moved out once.
    let _guard = TraceGuard;
    let main = getcurrent();
    let d = Greenlet::new(|()| Ok(()));
    d.switch::<(), ()>(()).unwrap();
    let slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let exited = Rc::new(std::cell::Cell::new(false));
    let seen = exited.clone();
    let d_in_g = d.clone();
    let g = Greenlet::new(move |()| {
        d_in_g.set_parent(&main).unwrap(); // only the slot holds g now
        let r = main.switch::<String, ()>("value ".repeat(2));
        seen.set(r.as_ref().is_err_and(SwitchError::is_exit));
        r
    });
    let g_id = g.id();
    d.set_parent(&g).unwrap();
    *slot.borrow_mut() = Some(g);
    let in_tracer = slot.clone();
    settrace(Some(Rc::new(
        move |_: Event, origin: &Greenlet, target: &Greenlet| {
            if origin.id() == g_id && target.is_main() {
                drop(in_tracer.borrow_mut().take());
            }
        },
    )));
    let got = d.switch::<(), String>(()); // dead d -> g (unstarted): starts it
    assert_eq!(got.unwrap(), "value value ");
    assert!(slot.borrow().is_none());
    assert!(exited.get(), "the sender did not exit");
}
