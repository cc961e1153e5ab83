//! The parts of the safe API that never switch stacks: creation, the state
//! machine of unstarted and dead greenlets, the parent tree, type checks,
//! values delivered to the current greenlet itself, throws that land back on
//! the thrower, tracing bookkeeping and the stack pool.
//!
//! `ci/test` runs this file under Miri (`cargo +nightly miri test --test
//! no_switch`), which checks every memory access and every `unsafe` contract
//! on these paths; it also runs natively with the rest of the suite. Nothing
//! here may reach the assembly switch, which Miri cannot execute.

use greenlet::{Builder, Error, Greenlet, GreenletExit, SwitchError, getcurrent, main_greenlet};
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 16 * 1024;

/// Under Miri, turns this thread's stack pool off (each test runs on a
/// thread of its own): a pool carves its first stacks out of a 1 MiB slab,
/// which takes Miri about 9 of its seconds to make, where a stack of its own
/// is 20 KiB. For the tests that are not about the pool.
fn no_pool_under_miri() {
    if cfg!(miri) {
        greenlet::stack::set_pool_limit(0);
    }
}

fn unstarted<A: 'static>(ran: &Rc<Cell<bool>>) -> Greenlet {
    let ran = ran.clone();
    Builder::new()
        .stack_size(STACK)
        .spawn(move |_: A| {
            ran.set(true);
            Ok(())
        })
        .expect("stack")
}

#[test]
fn a_new_greenlet_is_unstarted_with_the_creator_as_parent() {
    no_pool_under_miri();
    let ran = Rc::new(Cell::new(false));
    let g = unstarted::<()>(&ran);
    assert!(!g.is_started() && !g.is_active() && !g.is_dead() && !g.is_main());
    assert_eq!(g.parent(), Some(getcurrent()));
    assert!(getcurrent().is_main() && getcurrent().parent().is_none());
    assert_eq!(main_greenlet(), getcurrent());
    assert!(format!("{g:?}").contains("unstarted"));
    assert_eq!(g.stack_size(), STACK);
    drop(g);
    assert!(!ran.get(), "dropping an unstarted greenlet never runs it");
}

#[test]
fn dropping_an_unstarted_greenlet_drops_its_captures_and_returns_its_stack() {
    struct Flag(Rc<Cell<u32>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Rc::new(Cell::new(0));
    let before = greenlet::stack::pool_stats();
    let flag = Flag(drops.clone());
    let g = Builder::new().stack_size(STACK).spawn(move |()| {
        let _keep = &flag;
        Ok(())
    });
    drop(g);
    assert_eq!(drops.get(), 1);
    let after = greenlet::stack::pool_stats();
    assert_eq!(
        after.mapped,
        before.mapped.max(1),
        "the stack went back to the pool, not leaked"
    );
}

#[test]
fn a_type_mismatch_is_an_error_before_any_switch() {
    no_pool_under_miri();
    let ran = Rc::new(Cell::new(false));
    let g = unstarted::<i32>(&ran);
    let value = Rc::new(5u8);
    match g.switch::<Rc<u8>, ()>(value.clone()) {
        Err(SwitchError::TypeMismatch { sent, expected }) => {
            assert!(sent.contains("Rc<u8>"), "{sent}");
            assert_eq!(expected, "i32");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_eq!(
        Rc::strong_count(&value),
        1,
        "the rejected value was dropped, not leaked"
    );
    assert!(!g.is_started() && !ran.get());
}

#[test]
fn switching_to_yourself_returns_the_value() {
    let me = getcurrent();
    assert_eq!(
        me.switch::<String, String>("same".into()).ok().as_deref(),
        Some("same")
    );
    assert!(matches!(
        me.switch::<u8, u16>(1),
        Err(SwitchError::TypeMismatch { .. })
    ));
}

#[test]
fn a_throw_at_an_unstarted_child_kills_it_and_lands_on_the_thrower() {
    no_pool_under_miri();
    let ran = Rc::new(Cell::new(false));
    let g = unstarted::<()>(&ran);
    match g.throw::<_, ()>("no") {
        Err(SwitchError::Thrown(e)) => assert_eq!(*e.downcast::<&str>().unwrap(), "no"),
        other => panic!("{other:?}"),
    }
    assert!(g.is_dead() && !ran.get());
    let h = unstarted::<()>(&ran);
    assert!(matches!(
        h.throw::<_, ()>(GreenletExit),
        Err(SwitchError::Exited)
    ));
    assert!(h.is_dead() && !ran.get());
    // A dead greenlet passes what is thrown at it to its parent: us.
    assert!(matches!(g.throw::<_, ()>(7u8), Err(SwitchError::Thrown(_))));
    assert!(matches!(g.switch::<u8, u8>(9), Ok(9)));
}

#[test]
fn set_parent_rejects_cycles_and_main() {
    no_pool_under_miri();
    let ran = Rc::new(Cell::new(false));
    let a = unstarted::<()>(&ran);
    let b = unstarted::<()>(&ran);
    let c = unstarted::<()>(&ran);
    b.set_parent(&a).unwrap();
    c.set_parent(&b).unwrap();
    assert!(matches!(a.set_parent(&c), Err(Error::ParentCycle)));
    assert!(matches!(a.set_parent(&a), Err(Error::ParentCycle)));
    assert!(matches!(
        getcurrent().set_parent(&a),
        Err(Error::MainParent)
    ));
    assert_eq!(c.parent(), Some(b.clone()));
    assert!(Error::ParentCycle.to_string().contains("cycle"));
}

#[test]
fn an_unstarted_ancestor_starts_only_by_switch_and_errors_climb_past_it() {
    no_pool_under_miri();
    // A throw at an unstarted child whose parent is also unstarted kills both
    // and lands on us.
    let ran = Rc::new(Cell::new(false));
    let parent = unstarted::<()>(&ran);
    let child = Builder::new()
        .stack_size(STACK)
        .parent(&parent)
        .spawn(|()| Ok(()))
        .unwrap();
    assert!(matches!(
        child.throw::<_, ()>(1u32),
        Err(SwitchError::Thrown(_))
    ));
    assert!(child.is_dead() && parent.is_dead() && !ran.get());
}

#[test]
fn stack_sizes_out_of_range_are_errors_that_name_the_bounds() {
    for size in [0, 1024, greenlet::stack::MAX_STACK_SIZE + 1] {
        let e = Builder::new()
            .stack_size(size)
            .spawn(|()| Ok(()))
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("out of range")
                && text.contains(&greenlet::stack::MIN_STACK_SIZE.to_string()),
            "{text}"
        );
    }
}

#[test]
fn a_return_type_too_large_for_the_stack_is_an_error() {
    no_pool_under_miri();
    let e = Builder::new()
        .stack_size(STACK)
        .spawn(|()| Ok([0u8; 8192]))
        .unwrap_err();
    assert!(matches!(e, Error::ReturnTooLarge { size: 8192, .. }), "{e}");
}

#[test]
fn the_tracer_can_be_set_read_and_cleared() {
    assert!(greenlet::gettrace().is_none());
    let tracer: greenlet::Tracer = Rc::new(|_, _, _| {});
    assert!(greenlet::settrace(Some(tracer.clone())).is_none());
    assert!(Rc::ptr_eq(&greenlet::gettrace().unwrap(), &tracer));
    assert!(greenlet::settrace(None).is_some());
    assert!(greenlet::gettrace().is_none());
}

#[test]
fn the_pool_reuses_stacks_and_honours_its_limit() {
    let ran = Rc::new(Cell::new(false));
    drop(unstarted::<()>(&ran));
    let warm = greenlet::stack::pool_stats();
    for _ in 0..50 {
        drop(unstarted::<()>(&ran));
    }
    assert_eq!(
        greenlet::stack::pool_stats().mapped,
        warm.mapped,
        "steady state reuses pooled stacks"
    );
    let held: Vec<_> = (0..8).map(|_| unstarted::<()>(&ran)).collect();
    greenlet::stack::set_pool_limit(2);
    drop(held);
    assert!(greenlet::stack::pool_stats().pooled <= 2);
    greenlet::stack::set_pool_limit(1024);
}
