//! Greenlet semantics through the public API: creation and the builder,
//! values crossing a switch (and type mismatches), the parent tree, panics
//! travelling to the parent, `throw`, and the state queries.
//!
//! Each test runs on its own test thread, so it has its own main greenlet and
//! its own tree; nothing here depends on another test. Exit-on-drop, tracing,
//! threads, backtraces and allocation counting have their own files.

use greenlet::{Builder, Error, Greenlet, GreenletExit, SwitchError, getcurrent, main_greenlet};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

// ---------------------------------------------------------------------------
// Helpers

/// Counts its drops in a shared cell: a value that is leaked never counts,
/// one dropped twice counts two.
struct DropCounter(Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A 64-byte value, the size the allocation test also sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block64([u64; 8]);

/// A custom panic payload.
#[derive(Debug, PartialEq, Eq)]
struct CustomPayload {
    code: u32,
    what: &'static str,
}

/// The parent of the running greenlet.
fn parent() -> Greenlet {
    getcurrent()
        .parent()
        .expect("a non-main greenlet has a parent")
}

/// The message of a panic payload that is a `&str` or a `String`.
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<not a string>".to_string()
    }
}

/// Switches to `g` expecting its panic, and returns the payload.
fn switch_expecting_panic<T: 'static, R: 'static + Debug>(
    g: &Greenlet,
    value: T,
) -> Box<dyn Any + Send> {
    match panic::catch_unwind(AssertUnwindSafe(|| g.switch::<T, R>(value))) {
        Ok(r) => panic!("expected a panic from the switch, got {r:?}"),
        Err(payload) => payload,
    }
}

// ---------------------------------------------------------------------------
// 1. Creation, the builder, values across a switch

#[test]
fn new_greenlet_is_unstarted_until_the_first_switch_which_is_its_argument() {
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let g = Greenlet::new(move |x: i32| {
        flag.set(true);
        Ok(x + 1)
    });
    assert!(!ran.get(), "the body ran before the first switch");
    assert!(!g.is_started());
    assert_eq!(g.switch::<i32, i32>(41).unwrap(), 42);
    assert!(ran.get());
    assert!(g.is_dead());
}

#[test]
fn builder_sets_stack_size_and_parent() {
    let main = getcurrent();
    let p = Greenlet::new(|()| Ok(()));
    let g = Builder::new()
        .stack_size(64 * 1024)
        .parent(&p)
        .spawn(|x: u32| Ok(x))
        .unwrap();
    assert_eq!(g.parent(), Some(p.clone()));
    let page = greenlet::stack::page_size();
    assert!(
        g.stack_size() >= 64 * 1024 && g.stack_size() < 64 * 1024 + page,
        "{}",
        g.stack_size()
    );

    // Rounded up to whole pages.
    let odd = Greenlet::builder()
        .stack_size(100_001)
        .spawn(|()| Ok(()))
        .unwrap();
    assert_eq!(odd.stack_size() % page, 0);
    assert!(odd.stack_size() >= 100_001);

    // Defaults: the current greenlet as parent, DEFAULT_STACK_SIZE.
    let d = Builder::new().spawn(|()| Ok(())).unwrap();
    assert_eq!(d.parent(), Some(main.clone()));
    assert_eq!(d.stack_size(), greenlet::stack::DEFAULT_STACK_SIZE);
    let n = Greenlet::new(|()| Ok(()));
    assert_eq!(n.stack_size(), greenlet::stack::DEFAULT_STACK_SIZE);

    // A big stack can actually be used: recurse through most of 1 MiB.
    let big = Greenlet::builder()
        .stack_size(1024 * 1024)
        .spawn(|depth: u32| Ok(recurse(depth)))
        .unwrap();
    assert_eq!(big.switch::<u32, u64>(400).unwrap(), (1..=400).sum::<u64>());
}

#[inline(never)]
fn recurse(depth: u32) -> u64 {
    // About 1 KiB of stack per level, kept alive across the call.
    let buffer = std::hint::black_box([0u8; 1024]);
    if depth == 0 {
        0
    } else {
        depth as u64 + recurse(depth - 1) + u64::from(buffer[depth as usize % 1024])
    }
}

#[test]
fn builder_rejects_an_out_of_range_stack_size() {
    for size in [
        0,
        1,
        greenlet::stack::MIN_STACK_SIZE - 1,
        greenlet::stack::MAX_STACK_SIZE + 1,
    ] {
        let ran = Rc::new(Cell::new(false));
        let flag = ran.clone();
        match Builder::new().stack_size(size).spawn(move |()| {
            flag.set(true);
            Ok(())
        }) {
            Err(Error::Stack(e)) => {
                assert_eq!(e.kind(), greenlet::stack::StackErrorKind::InvalidSize);
                let text = Error::Stack(e).to_string();
                assert!(
                    text.contains(&size.to_string()) && text.contains("out of range"),
                    "{text}"
                );
            }
            other => panic!("stack size {size}: expected Error::Stack, got {other:?}"),
        }
        assert!(!ran.get());
    }
    // The smallest allowed size works.
    let g = Builder::new()
        .stack_size(greenlet::stack::MIN_STACK_SIZE)
        .spawn(|x: u8| Ok(x))
        .unwrap();
    assert_eq!(g.switch::<u8, u8>(3).unwrap(), 3);
}

#[test]
fn a_return_type_too_large_for_the_stack_is_an_error_at_creation() {
    let min = greenlet::stack::MIN_STACK_SIZE;
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let drops = Rc::new(Cell::new(0));
    let capture = DropCounter(drops.clone());
    let result = Builder::new().stack_size(min).spawn(move |()| {
        let _keep = &capture;
        flag.set(true);
        Ok([0u8; 8192])
    });
    match result {
        Err(Error::ReturnTooLarge { size, stack }) => {
            assert_eq!(size, 8192);
            assert_eq!(stack, min);
            let text = Error::ReturnTooLarge { size, stack }.to_string();
            assert!(text.contains("8192") && text.contains("Box"), "{text}");
        }
        other => panic!("expected ReturnTooLarge, got {other:?}"),
    }
    assert!(!ran.get());
    assert_eq!(drops.get(), 1, "the rejected body was leaked");
    // Greenlet::new panics with the same message.
    let payload = panic::catch_unwind(|| Greenlet::new(|()| Ok([0u8; 64 * 1024]))).unwrap_err();
    assert!(
        message(&*payload).contains("too large"),
        "{}",
        message(&*payload)
    );
    // A smaller large value is accepted and crosses intact. (A quarter of
    // the stack is accepted too, but see semantics_stack_limits.rs.)
    let g = Builder::new()
        .stack_size(min)
        .spawn(|b: u8| Ok([b; 1000]))
        .unwrap();
    let value = g.switch::<u8, [u8; 1000]>(9).unwrap();
    assert!(value.iter().all(|&b| b == 9));
}

#[test]
fn a_body_larger_than_the_inline_limit_runs_and_is_dropped() {
    let drops = Rc::new(Cell::new(0));
    let counter = DropCounter(drops.clone());
    let big = [7u8; 4096];
    let g = Greenlet::new(move |i: usize| {
        let _keep = &counter;
        Ok(big[i] as u32 + big.len() as u32)
    });
    assert_eq!(g.switch::<usize, u32>(10).unwrap(), 7 + 4096);
    assert_eq!(
        drops.get(),
        1,
        "the body's captures were dropped once, when it returned"
    );
}

/// Sends `value` to an echo greenlet and back, twice, with each type typed
/// at the call sites.
fn echo_round_trip<T: 'static + Clone + PartialEq + Debug>(value: T) {
    let main = getcurrent();
    let g = Greenlet::new(move |mut x: T| -> Result<(), SwitchError> {
        loop {
            x = main.switch::<T, T>(x)?;
        }
    });
    assert_eq!(g.switch::<T, T>(value.clone()).unwrap(), value);
    assert_eq!(g.switch::<T, T>(value.clone()).unwrap(), value);
    assert!(g.is_active());
}

#[test]
fn values_of_several_types_cross_a_switch_both_ways() {
    echo_round_trip(7u8);
    echo_round_trip(-123_456_789_i64);
    echo_round_trip(u128::MAX - 5);
    echo_round_trip(String::from("a string on the heap"));
    echo_round_trip(vec![1u32, 2, 3, 4, 5]);
    echo_round_trip(Block64([1, 2, 3, 4, 5, 6, 7, 8]));
    echo_round_trip((1i32, String::from("two"), vec![3u8], 4.5f64));
    echo_round_trip(());
    assert_eq!(std::mem::size_of::<Block64>(), 64);
}

#[test]
fn different_types_each_way_are_typed_at_the_call_site() {
    let main = getcurrent();
    let g = Greenlet::new(move |n: i32| {
        // i32 in, String out; Vec in, tuple out; Block64 in, Box<dyn Any> out.
        let v: Vec<u16> = main.switch::<String, Vec<u16>>(n.to_string())?;
        let b: Block64 = main.switch::<(usize, u16), Block64>((v.len(), v.iter().sum()))?;
        let boxed: Box<dyn Any> = Box::new(b.0.iter().sum::<u64>());
        let back: Box<dyn Any> = main.switch::<Box<dyn Any>, Box<dyn Any>>(boxed)?;
        Ok(*back.downcast::<&'static str>().expect("a &str in the box"))
    });
    assert_eq!(g.switch::<i32, String>(1234).unwrap(), "1234");
    assert_eq!(
        g.switch::<Vec<u16>, (usize, u16)>(vec![10, 20, 30])
            .unwrap(),
        (3, 60)
    );
    let boxed = g.switch::<Block64, Box<dyn Any>>(Block64([1; 8])).unwrap();
    assert_eq!(*boxed.downcast::<u64>().expect("a u64 in the box"), 8);
    let done: &str = g.switch::<Box<dyn Any>, &str>(Box::new("bye")).unwrap();
    assert_eq!(done, "bye");
    assert!(g.is_dead());
}

#[test]
fn switching_to_the_current_greenlet_returns_the_value_at_once() {
    assert_eq!(getcurrent().switch::<i32, i32>(5).unwrap(), 5);
    let err = getcurrent().switch::<i32, String>(5).unwrap_err();
    assert!(
        matches!(err, SwitchError::TypeMismatch { sent: "i32", .. }),
        "{err:?}"
    );
    let g = Greenlet::new(|s: String| getcurrent().switch::<String, String>(s + "!"));
    assert_eq!(g.switch::<String, String>("hi".into()).unwrap(), "hi!");
}

#[test]
fn a_type_mismatch_to_an_unstarted_greenlet_is_an_error_and_does_not_switch() {
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let g = Greenlet::new(move |x: i32| {
        flag.set(true);
        Ok(x * 2)
    });
    let sent = Rc::new(());
    let err = g.switch::<Rc<()>, i32>(sent.clone()).unwrap_err();
    match &err {
        SwitchError::TypeMismatch { sent, expected } => {
            assert!(sent.contains("Rc<()"), "{sent}");
            assert_eq!(*expected, "i32");
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("Rc<()") && text.contains("`i32`"), "{text}");
    assert_eq!(
        Rc::strong_count(&sent),
        1,
        "the mismatched value was leaked"
    );
    assert!(!ran.get() && !g.is_started() && !g.is_dead());
    assert_eq!(getcurrent(), main_greenlet());
    // The right type still works.
    assert_eq!(g.switch::<i32, i32>(21).unwrap(), 42);
}

#[test]
fn a_type_mismatch_to_a_suspended_greenlet_leaves_it_suspended_and_drops_the_value() {
    let main = getcurrent();
    let resumed = Rc::new(Cell::new(0));
    let count = resumed.clone();
    let g = Greenlet::new(move |()| {
        loop {
            let n: u64 = main.switch::<(), u64>(())?;
            count.set(count.get() + 1);
            if n == 0 {
                return Ok("done");
            }
        }
    });
    g.switch::<(), ()>(()).unwrap();
    let drops = Rc::new(Cell::new(0));
    let err = g
        .switch::<DropCounter, ()>(DropCounter(drops.clone()))
        .unwrap_err();
    assert!(
        matches!(err, SwitchError::TypeMismatch { expected: "u64", sent } if sent.ends_with("DropCounter")),
        "{err:?}"
    );
    assert!(err.to_string().contains("DropCounter") && err.to_string().contains("u64"));
    assert_eq!(drops.get(), 1, "the value was not dropped exactly once");
    assert_eq!(
        resumed.get(),
        0,
        "the target was resumed by a mismatched switch"
    );
    assert!(g.is_active() && !g.is_dead());
    assert!(format!("{g:?}").contains("suspended"), "{g:?}");
    g.switch::<u64, ()>(5).unwrap();
    assert_eq!(resumed.get(), 1);
    assert_eq!(g.switch::<u64, &str>(0).unwrap(), "done");
}

#[test]
fn a_type_mismatch_from_a_greenlet_back_to_main_returns_in_the_greenlet() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let err = main.switch::<String, ()>("wrong".into()).unwrap_err();
        let text = match err {
            SwitchError::TypeMismatch { sent, expected } => format!("{sent}->{expected}"),
            other => panic!("expected TypeMismatch, got {other:?}"),
        };
        assert_eq!(getcurrent().parent(), Some(main.clone()));
        // Still running here: now the right type.
        main.switch::<i32, ()>(text.len() as i32)?;
        Ok(0)
    });
    let n: i32 = g.switch::<(), i32>(()).unwrap();
    assert_eq!(n as usize, "alloc::string::String->i32".len());
    assert_eq!(g.switch::<(), i32>(()).unwrap(), 0);
}

#[test]
fn a_return_value_of_the_wrong_type_reaches_the_parent_as_a_mismatch_and_is_dropped() {
    let drops = Rc::new(Cell::new(0));
    let counter = drops.clone();
    let g = Greenlet::new(move |()| Ok(DropCounter(counter)));
    let err = g.switch::<(), i32>(()).unwrap_err();
    assert!(
        matches!(err, SwitchError::TypeMismatch { expected: "i32", sent } if sent.ends_with("DropCounter")),
        "{err:?}"
    );
    assert!(g.is_dead());
    assert_eq!(
        drops.get(),
        1,
        "the returned value was leaked or dropped twice"
    );
}

// ---------------------------------------------------------------------------
// 2. The parent tree

#[test]
fn the_default_parent_is_the_creator_also_inside_a_greenlet() {
    let main = getcurrent();
    let outer = Greenlet::new(move |()| {
        let me = getcurrent();
        let inner = Greenlet::new(|x: u8| Ok(x + 1));
        assert_eq!(inner.parent(), Some(me.clone()));
        assert_eq!(inner.parent().unwrap().parent(), Some(main_greenlet()));
        // Its return value comes back here, to its parent.
        let got: u8 = inner.switch(1u8)?;
        Ok((got, me.id(), inner.id()))
    });
    assert_eq!(outer.parent(), Some(main.clone()));
    let (got, outer_id, inner_id) = outer.switch::<(), (u8, u64, u64)>(()).unwrap();
    assert_eq!(got, 2);
    assert_eq!(outer_id, outer.id());
    assert_ne!(inner_id, outer_id);
}

#[test]
fn a_return_value_goes_to_the_parent_not_to_the_switcher() {
    let main = getcurrent();
    // p suspends waiting for an i32, then reports what it got.
    let p = Greenlet::new(move |()| {
        let got: i32 = main.switch::<(), i32>(())?;
        Ok(format!("p got {got}"))
    });
    p.switch::<(), ()>(()).unwrap();
    let g = Builder::new().parent(&p).spawn(|x: i32| Ok(x * 3)).unwrap();
    // main switches to g; g's return goes to p; p's return (main is its
    // parent) comes back at main's pending switch.
    assert_eq!(g.switch::<i32, String>(7).unwrap(), "p got 21");
    assert!(g.is_dead() && p.is_dead());
}

#[test]
fn a_body_returning_to_an_unstarted_parent_starts_it_with_the_value() {
    let p = Greenlet::new(|x: i32| Ok(format!("p started with {x}")));
    let g = Builder::new().parent(&p).spawn(|x: i32| Ok(x + 1)).unwrap();
    assert_eq!(g.switch::<i32, String>(9).unwrap(), "p started with 10");
    assert!(g.is_dead() && p.is_dead());
}

#[test]
fn switching_to_a_dead_greenlet_goes_to_its_nearest_live_ancestor() {
    let main = getcurrent();
    let p = Greenlet::new(move |()| {
        let mut log = Vec::new();
        loop {
            let got: i32 = main.switch::<Vec<i32>, i32>(log.clone())?;
            log.push(got);
            if got < 0 {
                return Ok(log);
            }
        }
    });
    assert_eq!(p.switch::<(), Vec<i32>>(()).unwrap(), Vec::<i32>::new());
    let g = Builder::new().parent(&p).spawn(|x: i32| Ok(x)).unwrap();
    // g returns 1 to p, p hands its log to main.
    assert_eq!(g.switch::<i32, Vec<i32>>(1).unwrap(), vec![1]);
    assert!(g.is_dead());
    // A switch to dead g resumes p with the value.
    assert_eq!(g.switch::<i32, Vec<i32>>(2).unwrap(), vec![1, 2]);
    // An error thrown at q (unstarted, parent g, dead) kills q and climbs
    // past dead g to p, whose `?` ends it with that error, which reaches
    // main (p's parent) at the pending throw.
    let q = Builder::new().parent(&g).spawn(|()| Ok(())).unwrap();
    let err = q.throw::<&str, ()>("kill q").unwrap_err();
    assert_eq!(err.thrown::<&str>(), Some(&"kill q"));
    assert!(q.is_dead() && p.is_dead());
}

#[test]
fn a_switch_through_two_dead_levels_reaches_the_suspended_ancestor() {
    let main = getcurrent();
    let m = main.clone();
    let p = Greenlet::new(move |()| {
        let a: i32 = m.switch::<(), i32>(())?;
        let b: i32 = m.switch::<i32, i32>(a * 10)?;
        Ok(b * 100)
    });
    p.switch::<(), ()>(()).unwrap();
    let mid = Builder::new().parent(&p).spawn(|()| Ok(())).unwrap();
    let leaf = Builder::new().parent(&mid).spawn(|()| Ok(())).unwrap();
    // Finish mid and leaf without involving p: reparent them to main first.
    mid.set_parent(&main).unwrap();
    mid.switch::<(), ()>(()).unwrap();
    leaf.set_parent(&main).unwrap();
    leaf.switch::<(), ()>(()).unwrap();
    assert!(mid.is_dead() && leaf.is_dead());
    mid.set_parent(&p).unwrap();
    leaf.set_parent(&mid).unwrap();
    assert_eq!(leaf.switch::<i32, i32>(4).unwrap(), 40);
    assert_eq!(mid.switch::<i32, i32>(5).unwrap(), 500);
    assert!(p.is_dead());
}

#[test]
fn switching_to_a_dead_greenlet_with_an_unstarted_ancestor_starts_the_ancestor() {
    let g = Greenlet::new(|()| Ok(()));
    g.switch::<(), ()>(()).unwrap();
    assert!(g.is_dead());
    let started = Rc::new(Cell::new(false));
    let flag = started.clone();
    let p = Greenlet::new(move |x: i32| {
        flag.set(true);
        Ok(x * 2)
    });
    g.set_parent(&p).unwrap();
    assert!(!started.get());
    // Python's greenlet: the value becomes the unstarted ancestor's argument.
    assert_eq!(g.switch::<i32, i32>(20).unwrap(), 40);
    assert!(started.get() && p.is_dead());
    // A mismatched value for the ancestor's argument is rejected without
    // starting it.
    let q = Greenlet::new(|s: String| Ok(s));
    g.set_parent(&q).unwrap();
    let err = g.switch::<i32, String>(1).unwrap_err();
    assert!(
        matches!(err, SwitchError::TypeMismatch { sent: "i32", expected } if expected.contains("String"))
    );
    assert!(!q.is_started());
    assert_eq!(g.switch::<String, String>("ok".into()).unwrap(), "ok");
}

#[test]
fn set_parent_rejects_cycles() {
    let a = Greenlet::new(|()| Ok(()));
    let b = Greenlet::new(|()| Ok(()));
    let c = Greenlet::new(|()| Ok(()));
    assert!(matches!(a.set_parent(&a), Err(Error::ParentCycle)));
    b.set_parent(&a).unwrap();
    c.set_parent(&b).unwrap();
    assert!(matches!(a.set_parent(&b), Err(Error::ParentCycle)));
    let err = a.set_parent(&c).unwrap_err();
    assert!(matches!(err, Error::ParentCycle));
    assert!(err.to_string().contains("cycle"), "{err}");
    // Nothing changed.
    assert_eq!(a.parent(), Some(getcurrent()));
    assert_eq!(b.parent(), Some(a.clone()));
    assert_eq!(c.parent(), Some(b.clone()));
    // A legal change works, and main is an ancestor of everything.
    c.set_parent(&a).unwrap();
    assert_eq!(c.parent(), Some(a.clone()));
    assert!(matches!(a.set_parent(&getcurrent()), Ok(())));
}

#[test]
fn set_parent_rejects_any_change_to_main() {
    let main = getcurrent();
    let g = Greenlet::new(|()| Ok(()));
    let err = main.set_parent(&g).unwrap_err();
    assert!(matches!(err, Error::MainParent), "{err:?}");
    assert!(err.to_string().contains("main"), "{err}");
    assert!(matches!(main.set_parent(&main), Err(Error::MainParent)));
    assert_eq!(main.parent(), None);
    // Also from inside a greenlet.
    let h = Greenlet::new(move |()| Ok(main.set_parent(&getcurrent()).is_err()));
    assert!(h.switch::<(), bool>(()).unwrap());
}

#[test]
fn only_main_has_no_parent_and_main_is_never_dead() {
    let main = main_greenlet();
    assert!(main.is_main());
    assert_eq!(main.parent(), None);
    assert!(main.is_started() && main.is_active() && !main.is_dead());
    assert_eq!(main.id(), 0);
    let m = main.clone();
    let g = Greenlet::new(move |()| {
        assert!(m.is_active() && !m.is_dead(), "main while suspended");
        let nested = Greenlet::new(|()| Ok(getcurrent().parent().is_some()));
        Ok(getcurrent().parent().is_some() && nested.switch::<(), bool>(())?)
    });
    assert!(g.parent().is_some());
    assert!(g.switch::<(), bool>(()).unwrap());
    // Dead greenlets keep their parent.
    assert!(g.is_dead() && g.parent() == Some(main.clone()));
    assert!(!main.is_dead());
}

#[test]
fn main_greenlet_and_getcurrent_inside_and_outside_greenlets() {
    let main = getcurrent();
    assert!(main.is_main());
    assert_eq!(main_greenlet(), main);
    let m = main.clone();
    let g = Greenlet::new(move |()| {
        let me = getcurrent();
        assert!(!me.is_main());
        assert_eq!(main_greenlet(), m);
        let m2 = m.clone();
        let inner = Greenlet::new(move |()| {
            assert_eq!(main_greenlet(), m2);
            Ok(getcurrent().id())
        });
        let inner_id: u64 = inner.switch(())?;
        assert_eq!(inner_id, inner.id());
        assert_eq!(getcurrent(), me);
        Ok(me.id())
    });
    let id: u64 = g.switch(()).unwrap();
    assert_eq!(id, g.id());
    assert_eq!(getcurrent(), main);
    assert_eq!(main_greenlet(), main);
}

// ---------------------------------------------------------------------------
// 3. Panics

#[test]
fn a_panic_with_a_str_payload_reaches_the_parent() {
    let g = Greenlet::new(|()| -> Result<(), SwitchError> { panic!("static boom") });
    let payload = switch_expecting_panic::<(), ()>(&g, ());
    assert_eq!(
        *payload.downcast_ref::<&str>().expect("a &str payload"),
        "static boom"
    );
    assert!(g.is_dead() && !g.is_active());
    assert_eq!(getcurrent(), main_greenlet());
}

#[test]
fn a_panic_with_a_string_payload_reaches_the_parent() {
    let main = getcurrent();
    let g = Greenlet::new(move |n: i32| -> Result<(), SwitchError> {
        let m: i32 = main.switch(n)?;
        panic!("formatted boom {m}")
    });
    assert_eq!(g.switch::<i32, i32>(1).unwrap(), 1);
    // The panic surfaces at main's pending switch, the second one.
    let payload = switch_expecting_panic::<i32, ()>(&g, 2);
    assert_eq!(
        payload.downcast_ref::<String>().expect("a String payload"),
        "formatted boom 2"
    );
    assert!(g.is_dead());
}

#[test]
fn a_panic_with_a_custom_payload_reaches_the_parent() {
    let g = Greenlet::new(|()| -> Result<(), SwitchError> {
        panic::panic_any(CustomPayload {
            code: 42,
            what: "custom",
        })
    });
    let payload = switch_expecting_panic::<(), ()>(&g, ());
    assert_eq!(
        *payload
            .downcast::<CustomPayload>()
            .expect("the custom payload"),
        CustomPayload {
            code: 42,
            what: "custom"
        }
    );
    assert!(g.is_dead());
}

#[test]
fn a_panic_is_raised_at_the_parents_pending_switch_not_at_the_switcher() {
    let main = getcurrent();
    let p = Greenlet::new(move |()| {
        let caught = panic::catch_unwind(AssertUnwindSafe(|| main.switch::<(), ()>(())));
        let payload = caught.expect_err("p's pending switch should raise the child's panic");
        Ok(format!("p caught: {}", message(&*payload)))
    });
    p.switch::<(), ()>(()).unwrap();
    let g = Builder::new()
        .parent(&p)
        .spawn(|()| -> Result<(), SwitchError> { panic!("child of p") })
        .unwrap();
    // main switches to g; the panic goes to p; p's return comes to main.
    assert_eq!(g.switch::<(), String>(()).unwrap(), "p caught: child of p");
    assert!(g.is_dead() && p.is_dead());
}

#[test]
fn a_grandchild_panic_reaches_its_greenlet_parent_which_can_catch_it() {
    let g1 = Greenlet::new(|()| {
        let g2 = Greenlet::new(|()| -> Result<(), SwitchError> {
            panic::panic_any(CustomPayload {
                code: 7,
                what: "grandchild",
            })
        });
        let caught = panic::catch_unwind(AssertUnwindSafe(|| g2.switch::<(), ()>(())));
        let payload = caught.expect_err("g1 should see g2's panic");
        let custom = payload
            .downcast::<CustomPayload>()
            .expect("original payload");
        assert!(g2.is_dead());
        assert!(!getcurrent().is_main());
        Ok(custom.code)
    });
    assert_eq!(g1.switch::<(), u32>(()).unwrap(), 7);
    assert!(g1.is_dead());
}

#[test]
fn an_uncaught_grandchild_panic_climbs_to_main_with_its_payload() {
    let g1 = Greenlet::new(|()| {
        let g2 = Greenlet::new(|()| -> Result<(), SwitchError> {
            panic!("{}", String::from("two hops"))
        });
        g2.switch::<(), ()>(())
    });
    let payload = switch_expecting_panic::<(), ()>(&g1, ());
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("two hops")
    );
    assert!(g1.is_dead());
}

#[test]
fn a_panic_caught_inside_the_body_does_not_kill_the_greenlet() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let r = panic::catch_unwind(|| -> u8 { panic!("inner") });
        assert!(r.is_err());
        main.switch::<u8, ()>(1)?;
        Ok(2u8)
    });
    assert_eq!(g.switch::<(), u8>(()).unwrap(), 1);
    assert!(g.is_active());
    assert_eq!(g.switch::<(), u8>(()).unwrap(), 2);
}

// ---------------------------------------------------------------------------
// 4. throw

#[test]
fn throw_into_a_suspended_greenlet_that_returns_a_value() {
    let g = Greenlet::new(|()| match parent().switch::<(), ()>(()) {
        Err(SwitchError::Thrown(e)) => {
            let text = e.downcast::<String>().expect("a String was thrown");
            Ok(text.len())
        }
        other => panic!("expected Thrown, got {other:?}"),
    });
    g.switch::<(), ()>(()).unwrap();
    assert_eq!(g.throw::<String, usize>("twelve chars".into()).unwrap(), 12);
    assert!(g.is_dead());
}

#[test]
fn throw_into_a_greenlet_that_reraises_gives_the_parent_thrown() {
    let g = Greenlet::new(|()| {
        parent().switch::<(), ()>(())?; // the thrown error leaves through `?`
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    let err = g
        .throw::<CustomPayload, ()>(CustomPayload {
            code: 3,
            what: "thrown",
        })
        .unwrap_err();
    assert_eq!(
        err.thrown::<CustomPayload>(),
        Some(&CustomPayload {
            code: 3,
            what: "thrown"
        })
    );
    assert!(matches!(err, SwitchError::Thrown(_)));
    assert!(err.to_string().contains("thrown"), "{err}");
    assert!(g.is_dead());
}

#[test]
fn throw_into_a_greenlet_that_switches_elsewhere() {
    let main = getcurrent();
    let m = main.clone();
    let h = Greenlet::new(move |what: String| -> Result<(), SwitchError> {
        m.switch::<String, ()>(format!("h relays: {what}"))?;
        Ok(())
    });
    let g = Greenlet::new(move |()| match main.switch::<(), ()>(()) {
        Err(e @ SwitchError::Thrown(_)) => {
            let what = e.thrown::<&str>().copied().unwrap_or("?");
            h.switch::<String, ()>(what.to_string())?;
            Ok(())
        }
        other => panic!("expected Thrown, got {other:?}"),
    });
    g.switch::<(), ()>(()).unwrap();
    // What g does decides: it switched to h, which switched to main.
    assert_eq!(g.throw::<&str, String>("ping").unwrap(), "h relays: ping");
    assert!(g.is_active());
}

#[test]
fn throw_into_an_unstarted_greenlet_by_its_parent_kills_it_without_running() {
    let ran = Rc::new(Cell::new(false));
    let drops = Rc::new(Cell::new(0));
    let flag = ran.clone();
    let capture = DropCounter(drops.clone());
    let g = Greenlet::new(move |()| {
        let _keep = &capture;
        flag.set(true);
        Ok(())
    });
    let err = g.throw::<&str, ()>("never run").unwrap_err();
    assert_eq!(err.thrown::<&str>(), Some(&"never run"));
    assert!(!ran.get(), "the body ran");
    assert_eq!(drops.get(), 1, "the body's captures were not dropped");
    assert!(g.is_dead() && !g.is_active());
    assert_eq!(getcurrent(), main_greenlet());
    // A switch to it now goes to main, i.e. returns at once.
    assert_eq!(g.switch::<u8, u8>(5).unwrap(), 5);
}

#[test]
fn throw_into_an_unstarted_greenlet_climbs_to_its_parent() {
    let main = getcurrent();
    let p = Greenlet::new(move |()| match main.switch::<(), ()>(()) {
        Err(e) => Ok(format!(
            "p got {}",
            e.thrown::<&str>().copied().unwrap_or("?")
        )),
        Ok(()) => Ok("p got a value".to_string()),
    });
    p.switch::<(), ()>(()).unwrap();
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let g = Builder::new()
        .parent(&p)
        .spawn(move |()| {
            flag.set(true);
            Ok(())
        })
        .unwrap();
    // g dies unstarted; the error climbs to p; p returns to main, at the throw.
    assert_eq!(g.throw::<&str, String>("climb").unwrap(), "p got climb");
    assert!(!ran.get() && g.is_dead() && p.is_dead());
}

#[test]
fn throwing_greenlet_exit_arrives_as_exit_and_comes_back_as_exited() {
    let saw = Rc::new(Cell::new(false));
    let flag = saw.clone();
    let g = Greenlet::new(move |()| {
        let r = parent().switch::<(), ()>(());
        flag.set(matches!(r, Err(SwitchError::Exit)) && r.as_ref().unwrap_err().is_exit());
        r?;
        Ok(())
    });
    g.switch::<(), ()>(()).unwrap();
    let err = g.throw::<GreenletExit, ()>(GreenletExit).unwrap_err();
    assert!(saw.get(), "the greenlet did not see SwitchError::Exit");
    assert!(matches!(err, SwitchError::Exited), "{err:?}");
    assert!(!err.is_exit());
    assert!(g.is_dead());
}

#[test]
fn throwing_greenlet_exit_into_an_unstarted_greenlet_gives_exited() {
    let g = Greenlet::new(|()| -> Result<(), SwitchError> { unreachable!("never runs") });
    let err = g.throw::<GreenletExit, ()>(GreenletExit).unwrap_err();
    assert!(matches!(err, SwitchError::Exited), "{err:?}");
    assert!(g.is_dead());
}

#[test]
fn a_body_returning_exit_makes_the_parent_see_exited_as_a_value() {
    let g = Greenlet::new(|()| -> Result<u8, SwitchError> { Err(SwitchError::Exit) });
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| g.switch::<(), u8>(())));
    let err = outcome
        .expect("Exit escaping a body must not be a panic")
        .unwrap_err();
    assert!(matches!(err, SwitchError::Exited), "{err:?}");
    assert!(g.is_dead());
    // Also when the parent is a greenlet.
    let outer = Greenlet::new(|()| {
        let inner = Greenlet::new(|()| -> Result<(), SwitchError> { Err(SwitchError::Exit) });
        Ok(matches!(
            inner.switch::<(), ()>(()),
            Err(SwitchError::Exited)
        ))
    });
    assert!(outer.switch::<(), bool>(()).unwrap());
}

#[test]
fn a_body_returning_a_thrown_error_gives_the_parent_that_error() {
    let g = Greenlet::new(|()| -> Result<(), SwitchError> {
        Err(SwitchError::Thrown(Box::new(99u16)))
    });
    let err = g.switch::<(), ()>(()).unwrap_err();
    assert_eq!(err.thrown::<u16>(), Some(&99));
    assert_eq!(err.thrown::<u32>(), None);
}

#[test]
fn throw_into_a_dead_greenlet_goes_to_its_live_ancestor() {
    let main = getcurrent();
    let p = Greenlet::new(move |()| {
        main.switch::<(), ()>(())?; // g's return value (a ()) lands here
        match main.switch::<(), ()>(()) {
            Err(e) => Ok(e.thrown::<&str>().map(|s| s.to_string())),
            Ok(()) => Ok(None),
        }
    });
    p.switch::<(), ()>(()).unwrap();
    let g = Builder::new().parent(&p).spawn(|()| Ok(())).unwrap();
    g.switch::<(), ()>(()).unwrap(); // g -> p -> main
    assert!(g.is_dead() && p.is_active());
    assert_eq!(
        g.throw::<&str, Option<String>>("to p").unwrap(),
        Some("to p".to_string())
    );
    assert!(p.is_dead());
}

#[test]
fn throw_at_the_current_greenlet_returns_the_error_at_once() {
    let err = getcurrent().throw::<&str, ()>("self").unwrap_err();
    assert_eq!(err.thrown::<&str>(), Some(&"self"));
    let g = Greenlet::new(|()| {
        Ok(getcurrent()
            .throw::<i32, ()>(5)
            .unwrap_err()
            .thrown::<i32>()
            .copied())
    });
    assert_eq!(g.switch::<(), Option<i32>>(()).unwrap(), Some(5));
}

// ---------------------------------------------------------------------------
// 6. State queries and Debug

#[test]
fn state_queries_through_the_lifecycle() {
    let main = getcurrent();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let g = Greenlet::new(move |()| {
        let me = getcurrent();
        log.borrow_mut()
            .push((me.is_started(), me.is_active(), me.is_dead(), me.is_main()));
        main.switch::<(), ()>(())?;
        Ok(())
    });
    // unstarted
    assert!(!g.is_started() && !g.is_active() && !g.is_dead() && !g.is_main());
    g.switch::<(), ()>(()).unwrap();
    // running (seen from inside)
    assert_eq!(*seen.borrow(), [(true, true, false, false)]);
    // suspended
    assert!(g.is_started() && g.is_active() && !g.is_dead());
    g.switch::<(), ()>(()).unwrap();
    // dead
    assert!(g.is_started() && !g.is_active() && g.is_dead());
    // killed unstarted: dead too
    let k = Greenlet::new(|()| Ok(()));
    let _ = k.throw::<&str, ()>("x");
    assert!(k.is_dead() && !k.is_active());
}

#[test]
fn ids_are_distinct_and_main_is_zero() {
    assert_eq!(getcurrent().id(), 0);
    let gs: Vec<Greenlet> = (0..10).map(|_| Greenlet::new(|()| Ok(()))).collect();
    let mut ids: Vec<u64> = gs.iter().map(Greenlet::id).collect();
    assert!(ids.iter().all(|&id| id != 0));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    // Clones share identity.
    let c = gs[3].clone();
    assert_eq!(c, gs[3]);
    assert_eq!(c.id(), gs[3].id());
    assert_ne!(gs[3], gs[4]);
}

/// Reads `field: <number>` out of a Debug string.
fn debug_number(text: &str, field: &str) -> usize {
    let at = text
        .find(&format!("{field}: "))
        .unwrap_or_else(|| panic!("no {field} in {text}"));
    text[at + field.len() + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn debug_shows_state_parent_and_stack_in_use() {
    let main = getcurrent();
    let main_text = format!("{main:?}");
    assert!(
        main_text.contains("running") && main_text.contains("main"),
        "{main_text}"
    );

    let g = Greenlet::new(move |depth: u32| {
        // Use some stack, and suspend at the bottom of the recursion.
        fn down(depth: u32, main: &Greenlet) -> Result<u64, SwitchError> {
            let buffer = std::hint::black_box([depth as u8; 512]);
            if depth == 0 {
                main.switch::<(), ()>(())?;
                Ok(0)
            } else {
                Ok(down(depth - 1, main)? + u64::from(buffer[1]))
            }
        }
        down(depth, &main)
    });
    let text = format!("{g:?}");
    assert!(text.contains("unstarted"), "{text}");
    assert!(
        text.contains(&format!("parent: Some({})", getcurrent().id())),
        "{text}"
    );

    g.switch::<u32, ()>(16).unwrap();
    let text = format!("{g:?}");
    assert!(text.contains("suspended"), "{text}");
    assert!(text.contains(&format!("id: {}", g.id())), "{text}");
    assert!(text.contains("parent: Some(0)"), "{text}");
    let in_use = debug_number(&text, "stack_in_use");
    assert!(
        in_use >= 16 * 512,
        "stack in use {in_use} after 16 frames of 512 bytes: {text}"
    );
    assert_eq!(in_use, g.stack_in_use());
    assert!(in_use < g.stack_size());

    // A greenlet created inside g shows g as its parent.
    let nested = Greenlet::new(|()| {
        let child = Greenlet::new(|()| Ok(()));
        Ok(format!("{child:?}"))
    });
    let nested_text = nested.switch::<(), String>(()).unwrap();
    assert!(
        nested_text.contains(&format!("parent: Some({})", nested.id())),
        "{nested_text}"
    );

    g.switch::<(), u64>(()).unwrap();
    let text = format!("{g:?}");
    assert!(text.contains("dead"), "{text}");
    assert_eq!(g.stack_in_use(), 0);
}

#[test]
fn switch_errors_describe_themselves() {
    assert!(SwitchError::Exit.is_exit());
    assert!(!SwitchError::Exited.is_exit());
    assert!(SwitchError::Exit.to_string().contains("GreenletExit"));
    assert!(SwitchError::Exited.to_string().contains("exited"));
    assert_eq!(format!("{:?}", SwitchError::Exit), "Exit");
    assert_eq!(format!("{:?}", SwitchError::Exited), "Exited");
    let thrown = SwitchError::Thrown(Box::new("why"));
    assert_eq!(format!("{thrown:?}"), "Thrown(\"why\")");
    assert!(thrown.to_string().contains("why"), "{thrown}");
    assert_eq!(thrown.thrown::<&str>(), Some(&"why"));
    assert_eq!(SwitchError::Exit.thrown::<&str>(), None);
    let opaque = SwitchError::Thrown(Box::new(CustomPayload { code: 1, what: "x" }));
    assert_eq!(format!("{opaque:?}"), "Thrown(..)");
    let mismatch = SwitchError::TypeMismatch {
        sent: "u8",
        expected: "i64",
    };
    assert!(format!("{mismatch:?}").contains("u8") && format!("{mismatch:?}").contains("i64"));
    let boxed: Box<dyn std::error::Error> = Box::new(mismatch);
    assert!(boxed.to_string().contains("`u8`") && boxed.to_string().contains("`i64`"));
    // Error::Stack carries its source.
    let err = Builder::new().stack_size(1).spawn(|()| Ok(())).unwrap_err();
    assert!(std::error::Error::source(&err).is_some());
    assert!(std::error::Error::source(&Error::ParentCycle).is_none());
}
