//! The stack-size limits the API promises, checked in child processes
//! (re-running this test binary) because breaking them overflows the stack,
//! which the crate reports and then aborts:
//!
//! - `MIN_STACK_SIZE` is "enough for the greenlet's own entry frames, a
//!   panic's unwinding, and a little user code", including with
//!   `RUST_BACKTRACE=1`, where the default panic hook prints a backtrace;
//! - a body may return a value of up to a sixteenth of its stack
//!   (`Error::ReturnTooLarge` above that).

use greenlet::{Builder, Error, SwitchError, stack::MIN_STACK_SIZE};

#[path = "util/mod.rs"]
mod util;
use util::run_child;

const CHILD: &str = "GREENLET_TEST_STACK_LIMITS_CHILD";

/// Runs `child` in a child process (with `env`) and checks it passed.
fn in_child(test: &str, env: &[(&str, &str)], child: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        child();
        println!("CHILD: done");
        return;
    }
    let mut env = env.to_vec();
    env.push((CHILD, "1"));
    let out = run_child(test, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD: done"),
        "child {test} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

#[test]
fn a_panic_in_a_minimum_size_greenlet_reaches_the_parent() {
    in_child(
        "a_panic_in_a_minimum_size_greenlet_reaches_the_parent",
        &[("RUST_BACKTRACE", "0")],
        || {
            let g = Builder::new()
                .stack_size(MIN_STACK_SIZE)
                .spawn(|()| -> Result<(), SwitchError> { panic!("small stack {}", 16) })
                .unwrap();
            let caught =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch::<(), ()>(())));
            assert!(caught.is_err() && g.is_dead());
        },
    );
}

#[test]
// The documented need of a backtrace-printing panic hook (see
// `MIN_STACK_SIZE`): 32 KiB.
fn a_panic_in_a_32_kib_greenlet_reaches_the_parent_with_rust_backtrace() {
    in_child(
        "a_panic_in_a_32_kib_greenlet_reaches_the_parent_with_rust_backtrace",
        &[("RUST_BACKTRACE", "1")],
        || {
            let g = Builder::new()
                .stack_size(32 * 1024)
                .spawn(|()| -> Result<(), SwitchError> { panic!("small stack {}", 16) })
                .unwrap();
            let caught =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch::<(), ()>(())));
            assert!(caught.is_err() && g.is_dead());
        },
    );
}

/// A sixteenth of `MIN_STACK_SIZE` (the documented limit), minus the
/// `Option` tag.
const LARGEST: usize = MIN_STACK_SIZE / 16 - 1;

#[test]
fn the_largest_accepted_return_value_is_handed_over() {
    in_child(
        "the_largest_accepted_return_value_is_handed_over",
        &[],
        || {
            let g = Builder::new()
                .stack_size(MIN_STACK_SIZE)
                .spawn(|b: u8| Ok([b; LARGEST]))
                .expect("a sixteenth of the stack is accepted");
            let value = g.switch::<u8, [u8; LARGEST]>(7).unwrap();
            assert!(value.iter().all(|&b| b == 7));
        },
    );
    // One byte more is refused at creation.
    let refused = Builder::new()
        .stack_size(MIN_STACK_SIZE)
        .spawn(|()| Ok([0u8; LARGEST + 1]));
    assert!(
        matches!(refused, Err(Error::ReturnTooLarge { .. })),
        "{refused:?}"
    );
}
