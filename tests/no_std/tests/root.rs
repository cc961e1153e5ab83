//! The safe API in a build without `std` (`--no-default-features`): the
//! explicit per-thread [`Root`] instead of a thread-local, caller-supplied
//! stacks, and the clear errors of using either wrongly.
//!
//! The crate under test is `#![no_std]`; this test binary itself has `std`,
//! which only the harness and the assertions use. `ci/test` runs it on
//! x86_64 and on aarch64 under qemu (see `../Cargo.toml` for why it is a
//! crate of its own):
//!
//! ```text
//! cargo test --locked --manifest-path tests/no_std/Cargo.toml
//! ```
//!
//! A root is found through one global slot, so the tests take turns (one
//! lock) instead of running on the harness's threads at once. Not tested
//! here: a panic escaping a body, which without `std` is not caught (it
//! aborts at the greenlet's `extern "C"` entry) and would end this process.
use greenlet::stack::{MIN_STACK_SIZE, Stack, StackErrorKind};
use greenlet::{Builder, Error, Greenlet, Root, SwitchError, getcurrent};
use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Mutex;

static TURN: Mutex<()> = Mutex::new(());

/// Runs `f` inside a fresh root, one test at a time.
fn in_root<R>(f: impl FnOnce() -> R) -> R {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let root = Root::new();
    // SAFETY: the lock keeps every other test of this binary out of the
    // crate while `f` runs, and each test drops its greenlets inside `f`.
    unsafe { root.enter(f) }
}

fn heap_stack() -> Stack {
    // SAFETY: the bodies in these tests use a few KiB of stack at most.
    unsafe { Stack::alloc(64 * 1024) }.expect("64 KiB from the allocator")
}

fn spawn<A: 'static, O: 'static>(
    body: impl FnOnce(A) -> Result<O, SwitchError> + 'static,
) -> Greenlet {
    Builder::new()
        .stack(heap_stack())
        .spawn(body)
        .expect("a greenlet on a caller-supplied stack")
}

#[test]
fn values_cross_both_ways_and_the_return_value_goes_to_the_parent() {
    in_root(|| {
        let main = getcurrent();
        assert!(main.is_main());
        let g = spawn(move |a: u32| {
            let b: u32 = main.switch(a + 1)?;
            Ok(format!("{a} then {b}"))
        });
        assert_eq!(g.parent(), Some(getcurrent()));
        assert_eq!(g.switch::<u32, u32>(1).unwrap(), 2);
        assert!(g.is_active());
        assert_eq!(g.switch::<u32, String>(10).unwrap(), "1 then 10");
        assert!(g.is_dead());
        // Switching to a dead greenlet goes to its parent: us.
        assert_eq!(g.switch::<u8, u8>(7).unwrap(), 7);
    });
}

#[test]
fn a_static_buffer_is_a_stack() {
    in_root(|| {
        let memory: &'static mut [MaybeUninit<u8>] =
            Box::leak(vec![MaybeUninit::uninit(); 32 * 1024 + 15].into_boxed_slice());
        // SAFETY: the body below uses far less than 32 KiB.
        let stack = unsafe { Stack::from_static(memory) }.expect("32 KiB");
        assert!(stack.len() >= 32 * 1024 - 16 && stack.len() % 16 == 0);
        assert_eq!(stack.top().as_ptr() as usize % 16, 0);
        let g = Builder::new()
            .stack(stack)
            .spawn(|x: f64| Ok(format!("{:.3}", x.sqrt())))
            .unwrap();
        assert_eq!(g.switch::<f64, String>(2.0).unwrap(), "1.414");
    });
}

#[test]
fn without_a_stack_the_builder_says_how_to_give_one() {
    in_root(|| {
        let e = Builder::new().spawn(|()| Ok(())).unwrap_err();
        match &e {
            Error::Stack(s) => assert_eq!(s.kind(), StackErrorKind::NoStack),
            other => panic!("{other:?}"),
        }
        let message = e.to_string();
        assert!(message.contains("Builder::stack"), "{message}");
        // Greenlet::new has no stack to use either: a panic with the same text.
        let p = catch_unwind(|| Greenlet::new(|()| Ok(()))).unwrap_err();
        let text = p.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("caller-supplied stack"), "{text}");
    });
}

#[test]
fn stack_sizes_out_of_range_are_errors() {
    // SAFETY: these stacks are never run on.
    let small = unsafe { Stack::alloc(MIN_STACK_SIZE - 1) }.unwrap_err();
    assert_eq!(small.kind(), StackErrorKind::InvalidSize);
    assert!(small.to_string().contains("out of range"));
    let memory: &'static mut [MaybeUninit<u8>] =
        Box::leak(vec![MaybeUninit::uninit(); 1024].into_boxed_slice());
    // SAFETY: as above.
    let tiny = unsafe { Stack::from_static(memory) }.unwrap_err();
    assert_eq!(tiny.kind(), StackErrorKind::InvalidSize);
}

#[test]
fn dropping_a_suspended_greenlet_runs_its_cleanup_before_the_drop_returns() {
    struct Guard(Rc<Cell<bool>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    in_root(|| {
        let cleaned = Rc::new(Cell::new(false));
        let flag = cleaned.clone();
        let main = getcurrent();
        let g = spawn(move |()| -> Result<(), SwitchError> {
            let _guard = Guard(flag);
            main.switch::<(), ()>(())?;
            unreachable!("resumed only to exit")
        });
        g.switch::<(), ()>(()).unwrap();
        assert!(!cleaned.get());
        drop(g);
        assert!(cleaned.get());
    });
}

#[test]
fn throw_and_tracing_work_as_with_std() {
    in_root(|| {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        greenlet::settrace(Some(Rc::new(
            move |event: greenlet::Event, _: &Greenlet, _: &Greenlet| {
                log.borrow_mut().push(event.as_str())
            },
        )));
        let main = getcurrent();
        let g = spawn(move |()| match main.switch::<(), ()>(()) {
            Err(e) => Ok(*e.thrown::<&str>().unwrap()),
            Ok(()) => Ok("not thrown"),
        });
        g.switch::<(), ()>(()).unwrap();
        assert_eq!(g.throw::<_, &str>("boom").unwrap(), "boom");
        greenlet::settrace(None);
        assert_eq!(*seen.borrow(), ["switch", "switch", "throw", "switch"]);
    });
}

#[test]
fn a_root_can_be_entered_again() {
    for round in 0..3u32 {
        let got = in_root(|| {
            let g = spawn(move |x: u32| Ok(x * 2));
            g.switch::<u32, u32>(round).unwrap()
        });
        assert_eq!(got, round * 2);
    }
}

#[test]
fn using_greenlets_outside_a_root_is_a_clear_panic() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let p = catch_unwind(getcurrent).unwrap_err();
    let text = p.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(text.contains("no Root is entered"), "{text}");
}

#[test]
fn roots_do_not_nest() {
    in_root(|| {
        let inner = Root::new();
        // SAFETY: `enter` refuses before running anything.
        let p = catch_unwind(AssertUnwindSafe(|| unsafe { inner.enter(|| ()) })).unwrap_err();
        let text = p.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(text.contains("already entered"), "{text}");
    });
}

#[test]
fn a_greenlet_that_outlives_its_root_is_reported() {
    let escaped: RefCell<Option<Greenlet>> = RefCell::new(None);
    let p = catch_unwind(AssertUnwindSafe(|| {
        in_root(|| {
            *escaped.borrow_mut() = Some(spawn(|()| Ok(())));
        })
    }))
    .unwrap_err();
    let text = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("outlived Root::enter"), "{text}");
    // Its root is gone, so it cannot be dropped the normal way.
    std::mem::forget(escaped);
}

/// The README's example of this build, as it is written there.
#[test]
fn the_readme_example() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let root = Root::new();
    // SAFETY: one core, no interrupt handler uses greenlets, and every greenlet
    // is dropped before `enter` returns.
    let answer = unsafe {
        root.enter(|| {
            // SAFETY: the body needs far less than 64 KiB of stack.
            let stack = Stack::alloc(64 * 1024).expect("heap");
            let g = Builder::new()
                .stack(stack)
                .spawn(|x: u32| Ok(x + 1))
                .expect("greenlet");
            g.switch::<u32, u32>(41).expect("switch")
        })
    };
    assert_eq!(answer, 42);
}

#[test]
fn a_panic_that_unwinds_out_of_enter_leaves_the_root() {
    let p = catch_unwind(|| {
        in_root(|| {
            let g = spawn(|x: u8| Ok(x));
            assert_eq!(g.switch::<u8, u8>(1).unwrap(), 1);
            panic!("out of enter");
        })
    })
    .unwrap_err();
    assert_eq!(p.downcast_ref::<&str>(), Some(&"out of enter"));
    // The slot was emptied on the way out: a new root works, and outside
    // any root the API says so instead of reaching a root that is gone.
    assert_eq!(
        in_root(|| spawn(|x: u8| Ok(x + 1)).switch::<u8, u8>(1).unwrap()),
        2
    );
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let p = catch_unwind(getcurrent).unwrap_err();
    assert!(
        p.downcast_ref::<&str>()
            .is_some_and(|t| t.contains("no Root is entered"))
    );
}

#[test]
fn the_tracer_ends_with_enter() {
    let seen = Rc::new(Cell::new(0));
    let count = seen.clone();
    in_root(move || {
        // A tracer that holds a greenlet handle (main's): `enter` drops it
        // before it counts what outlived it.
        let main = getcurrent();
        greenlet::settrace(Some(Rc::new(
            move |_: greenlet::Event, origin: &Greenlet, _: &Greenlet| {
                if *origin == main {
                    count.set(count.get() + 1);
                }
            },
        )));
        spawn(|()| Ok(())).switch::<(), ()>(()).unwrap();
    });
    assert_eq!(seen.get(), 1);
    // The next root starts without it.
    assert!(in_root(greenlet::gettrace).is_none());
}
