//! Backtraces inside greenlets: `Backtrace::force_capture()` in a greenlet
//! resolves its frames and stops cleanly at the greenlet's root
//! (`greenlet_trampoline`), also three greenlets deep; `Greenlet::backtrace`
//! of a suspended greenlet (and of main, suspended) shows where it waits,
//! down to its root, and leaves it resumable; and a panic in a
//! greenlet with `RUST_BACKTRACE=1` prints a proper backtrace (checked in a
//! child process that re-runs this test binary, under qemu when needed).

use greenlet::{Greenlet, SwitchError, getcurrent};
use std::backtrace::Backtrace;

#[path = "util/mod.rs"]
mod util;
use util::run_child;

/// The function names in a captured backtrace, innermost first.
fn frame_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter_map(|line| {
            let (index, name) = line.split_once(": ")?;
            index.parse::<usize>().ok()?;
            Some(name.to_string())
        })
        .collect()
}

/// Captures a backtrace here. `marker` makes each caller's closure
/// distinct, so that an optimised build cannot merge identical closures of
/// different tests into one symbol.
#[inline(never)]
fn capture_here(marker: u32) -> String {
    std::hint::black_box(marker);
    Backtrace::force_capture().to_string()
}

#[test]
fn a_backtrace_inside_a_greenlet_resolves_frames_and_ends_at_its_root() {
    let g = Greenlet::new(|()| Ok(capture_here(1)));
    let text = g.switch::<(), String>(()).unwrap();
    let names = frame_names(&text);
    assert!(
        names
            .iter()
            .any(|n| n
                .contains("a_backtrace_inside_a_greenlet_resolves_frames_and_ends_at_its_root")),
        "the test function's frame is missing:\n{text}"
    );
    assert!(names.iter().any(|n| n.contains("capture_here")), "{text}");
    // The walk stops at the greenlet's root: the trampoline is the last
    // frame, and nothing of the main stack (the test harness) follows.
    assert_eq!(
        names
            .iter()
            .filter(|n| n.contains("greenlet_trampoline"))
            .count(),
        1,
        "expected one root frame:\n{text}"
    );
    assert!(
        names.last().unwrap().contains("greenlet_trampoline"),
        "frames after the root:\n{text}"
    );
    assert!(
        !text.contains("test::run_test"),
        "the walk left the greenlet's stack:\n{text}"
    );
}

#[test]
fn a_backtrace_three_greenlets_deep_resolves_and_ends_cleanly() {
    let g1 = Greenlet::new(|()| {
        let g2 = Greenlet::new(|()| {
            let g3 = Greenlet::new(|()| Ok(capture_here(3)));
            g3.switch::<(), String>(())
        });
        g2.switch::<(), String>(())
    });
    let text = g1.switch::<(), String>(()).unwrap();
    let names = frame_names(&text);
    assert!(
        names
            .iter()
            .any(|n| n.contains("a_backtrace_three_greenlets_deep_resolves_and_ends_cleanly")),
        "{text}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.contains("greenlet_trampoline"))
            .count(),
        1,
        "{text}"
    );
    assert!(
        names.last().unwrap().contains("greenlet_trampoline"),
        "{text}"
    );
    // And once more after the stacks were reused.
    for _ in 0..3 {
        let g = Greenlet::new(|()| {
            let inner = Greenlet::new(|()| Ok(capture_here(4)));
            inner.switch::<(), String>(())
        });
        let text = g.switch::<(), String>(()).unwrap();
        assert!(
            frame_names(&text)
                .last()
                .unwrap()
                .contains("greenlet_trampoline"),
            "{text}"
        );
    }
}

#[test]
fn a_backtrace_inside_a_deep_recursion_in_a_greenlet() {
    #[inline(never)]
    fn recurse(n: u32) -> String {
        if n == 0 {
            capture_here(5)
        } else {
            std::hint::black_box(recurse(n - 1))
        }
    }
    let g = Greenlet::new(|n: u32| Ok(recurse(n)));
    let text = g.switch::<u32, String>(200).unwrap();
    let names = frame_names(&text);
    assert!(
        names.iter().filter(|n| n.contains("recurse")).count() >= 200,
        "{text}"
    );
    assert!(
        names.last().unwrap().contains("greenlet_trampoline"),
        "{text}"
    );
}

/// Two named levels a greenlet is suspended in, so that its backtrace has
/// something to show.
#[inline(never)]
fn suspended_outer(parent: &Greenlet, n: u64) -> Result<u64, SwitchError> {
    let got = std::hint::black_box(suspended_inner(parent, n))?;
    Ok(got + 1)
}

#[inline(never)]
fn suspended_inner(parent: &Greenlet, n: u64) -> Result<u64, SwitchError> {
    let got: u64 = parent.switch(n)?;
    Ok(std::hint::black_box(got) * 2)
}

#[test]
fn a_suspended_greenlet_backtrace_shows_where_it_waits_and_leaves_it_resumable() {
    let main = getcurrent();
    let g = Greenlet::new(move |n: u64| suspended_outer(&main, n));
    assert!(g.backtrace().is_none(), "not started: nothing to show");
    assert_eq!(g.switch::<u64, u64>(20).unwrap(), 20);
    for round in 0..3 {
        let text = g.backtrace().expect("a suspended greenlet").to_string();
        let names = frame_names(&text);
        let at = |what: &str| {
            names
                .iter()
                .position(|n| n.contains(what))
                .unwrap_or_else(|| panic!("round {round}: no {what} frame:\n{text}"))
        };
        // Innermost first: the pending switch, the two levels, the root.
        assert!(at("suspended_inner") < at("suspended_outer"), "{text}");
        assert!(at("suspended_outer") < at("greenlet_trampoline"), "{text}");
        assert!(
            names.last().unwrap().contains("greenlet_trampoline"),
            "round {round}: frames after the root:\n{text}"
        );
        // Nothing of the caller's stack: the test function itself (not the
        // greenlet's body, a closure inside it) and the harness are absent.
        assert!(
            !names.iter().any(|n| n.ends_with("leaves_it_resumable"))
                && !text.contains("test::run_test"),
            "round {round}: the requester's frames leaked in:\n{text}"
        );
    }
    assert!(g.is_active() && !g.is_current());
    // Resumed after being looked at three times, it carries on exactly.
    assert_eq!(g.switch::<u64, u64>(5).unwrap(), 11);
    assert!(g.is_dead());
    assert!(g.backtrace().is_none(), "finished: nothing to show");
}

#[test]
fn the_current_greenlet_and_a_suspended_main_have_backtraces_too() {
    let main = getcurrent();
    let text = main.backtrace().expect("current").to_string();
    assert!(
        text.contains("suspended_main_have_backtraces_too"),
        "{text}"
    );
    let g = Greenlet::new(move |()| {
        let own = getcurrent().backtrace().expect("current").to_string();
        let of_main = main.backtrace().expect("main is suspended").to_string();
        Ok((own, of_main))
    });
    let (own, of_main) = g.switch::<(), (String, String)>(()).unwrap();
    assert!(
        frame_names(&own)
            .last()
            .unwrap()
            .contains("greenlet_trampoline"),
        "{own}"
    );
    // Main waits in this test function, at its switch into `g`.
    assert!(
        of_main.contains("suspended_main_have_backtraces_too"),
        "{of_main}"
    );
    assert!(!of_main.contains("greenlet_trampoline"), "{of_main}");
}

#[test]
fn backtraces_of_many_suspended_greenlets_on_small_stacks() {
    // The probe runs on the free part of each stack: on 32 KiB stacks it
    // fits, on the smallest (16 KiB) it is refused with `None`; either way
    // the greenlets carry on undisturbed.
    let main = getcurrent();
    let greenlets: Vec<Greenlet> = (0..50u64)
        .map(|i| {
            let main = main.clone();
            let size = if i % 2 == 0 {
                32 * 1024
            } else {
                greenlet::stack::MIN_STACK_SIZE
            };
            let g = Greenlet::builder()
                .stack_size(size)
                .spawn(move |n: u64| suspended_outer(&main, n + i))
                .unwrap();
            assert_eq!(g.switch::<u64, u64>(1).unwrap(), 1 + i);
            g
        })
        .collect();
    for g in &greenlets {
        match g.backtrace() {
            Some(bt) => assert!(bt.to_string().contains("suspended_inner")),
            None => assert_eq!(g.stack_size(), greenlet::stack::MIN_STACK_SIZE),
        }
    }
    assert!(greenlets[0].backtrace().is_some());
    for (i, g) in greenlets.iter().enumerate() {
        assert_eq!(g.switch::<u64, u64>(i as u64).unwrap(), 2 * i as u64 + 1);
    }
}

/// The body whose name the panic's backtrace must show.
#[inline(never)]
fn panicking_greenlet_body((): ()) -> Result<(), SwitchError> {
    std::hint::black_box(());
    panic!("the greenlet body panics on purpose");
}

const PANIC_CHILD: &str = "GREENLET_TEST_BACKTRACE_PANIC_CHILD";

#[test]
fn a_panic_in_a_greenlet_prints_a_proper_backtrace() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        let g = Greenlet::new(panicking_greenlet_body);
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch::<(), ()>(())));
        assert!(caught.is_err());
        println!("CHILD: the panic reached main");
        return;
    }
    let out = run_child(
        "a_panic_in_a_greenlet_prints_a_proper_backtrace",
        &[(PANIC_CHILD, "1"), ("RUST_BACKTRACE", "1")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "{context}");
    assert!(
        stdout.contains("CHILD: the panic reached main"),
        "{context}"
    );
    assert!(
        stderr.contains("the greenlet body panics on purpose"),
        "{context}"
    );
    assert!(stderr.contains("stack backtrace"), "{context}");
    assert!(stderr.contains("panicking_greenlet_body"), "{context}");
    assert!(stderr.contains("greenlet_trampoline"), "{context}");
}
