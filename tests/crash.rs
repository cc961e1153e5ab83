//! Crash and resource-exhaustion cases, each run in a child process that
//! re-executes this test binary (see `util::run_child`; under qemu-user the
//! child goes through the same emulator). The parent asserts on the child's
//! fate and messages:
//!
//! - a greenlet that overflows its stack dies by SIGABRT after a report that
//!   names the greenlet overflow, the stack size and `stack_size`;
//! - a thread (not greenlet) stack overflow still gets Rust's own report, so
//!   our SIGSEGV handler chains to the one installed before it;
//! - a null-pointer write, and a touch of a stack's guard page, from the main
//!   greenlet still die by SIGSEGV, unreported as a greenlet overflow;
//! - running out of address space (RLIMIT_AS; the overcommit check under
//!   qemu-user, which ignores RLIMIT_AS) or of mappings
//!   (`vm.max_map_count`, with `mprotect` guards) is an `Err` naming the
//!   cause, never a crash.
// House style: one unsafe operation per block, each with its SAFETY line.
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

mod util;

use greenlet::stack::{MAX_STACK_SIZE, MIN_STACK_SIZE, Stack, guard_kind};
use greenlet::{Error, Greenlet, getcurrent};
use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

/// Recurses until the stack runs out; each frame keeps a small array live so
/// the recursion cannot be turned into a loop.
#[inline(never)]
fn recurse_forever(depth: u64) -> u64 {
    let mut frame = [depth; 32];
    black_box(&mut frame);
    if black_box(true) {
        recurse_forever(depth + 1).wrapping_add(frame[7])
    } else {
        frame[0]
    }
}

/// Makes sure this thread has a main greenlet and has run a greenlet, so the
/// crate's fault handler is installed and this thread's state is set up.
fn use_greenlets() {
    let g = Greenlet::new(|x: u32| Ok(x + 1));
    assert_eq!(g.switch::<u32, u32>(1).unwrap(), 2);
    assert!(getcurrent().is_main());
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line the child printed starting with `prefix` (libtest may have put
/// `test <name> ... ` before the first one).
fn child_line(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.find(prefix).map(|at| l[at..].to_string()))
        .unwrap_or_else(|| panic!("the child printed a {prefix} line"))
}

/// The child really ran the one test it was asked to (a misspelt name would
/// run nothing and exit successfully).
fn assert_ran_one_test(output: &Output) {
    assert!(
        stdout(output).contains("running 1 test"),
        "the child ran its test"
    );
}

const OVERFLOW_STACK: usize = 64 * 1024;

#[test]
fn greenlet_stack_overflow_is_reported_then_aborts() {
    const NAME: &str = "greenlet_stack_overflow_is_reported_then_aborts";
    if util::is_child(NAME) {
        let g = Greenlet::builder()
            .stack_size(OVERFLOW_STACK)
            .spawn(|()| Ok(recurse_forever(0)))
            .unwrap();
        let result = g.switch::<(), u64>(());
        println!("the greenlet did not overflow: {result:?}");
        return;
    }
    let output = util::run_child(NAME, &[]);
    assert_ran_one_test(&output);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "{:?}",
        output.status
    );
    let stderr = stderr(&output);
    assert!(
        stderr.contains("stack overflow in greenlet"),
        "names the greenlet overflow"
    );
    assert!(
        stderr.contains(&format!("{OVERFLOW_STACK}-byte stack")),
        "names the stack size"
    );
    assert!(
        stderr.contains("stack_size"),
        "says how to ask for a bigger stack"
    );
    assert!(
        !stderr.contains("has overflowed its stack"),
        "not reported as a thread overflow"
    );
}

#[test]
fn thread_stack_overflow_still_gets_rusts_report() {
    const NAME: &str = "thread_stack_overflow_still_gets_rusts_report";
    if util::is_child(NAME) {
        use_greenlets();
        let thread = std::thread::Builder::new()
            .name("overflowing".into())
            .stack_size(256 * 1024)
            .spawn(|| {
                // Greenlets in use on this thread too: the main greenlet runs.
                use_greenlets();
                recurse_forever(0)
            })
            .unwrap();
        let result = thread.join();
        println!("the thread did not overflow: {result:?}");
        return;
    }
    let output = util::run_child(NAME, &[]);
    assert_ran_one_test(&output);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "{:?}",
        output.status
    );
    let stderr = stderr(&output);
    let report = stderr
        .lines()
        .find(|l| l.contains("has overflowed its stack"));
    assert!(
        report.is_some_and(|l| l.contains("'overflowing'")),
        "Rust's own handler ran after ours and named the thread"
    );
    assert!(
        !stderr.contains("stack overflow in greenlet"),
        "not reported as a greenlet overflow"
    );
}

/// Writes to address zero with a plain store instruction (a Rust null
/// dereference would be caught by a debug assertion before it faulted).
fn write_to_address_zero() {
    let address = black_box(0usize);
    // SAFETY: none: this store faults on purpose, in a child process.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov qword ptr [{a}], 1", a = in(reg) address, options(nostack));
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("str xzr, [{a}]", a = in(reg) address, options(nostack));
    }
}

#[test]
fn null_pointer_write_in_main_still_dies_by_sigsegv() {
    const NAME: &str = "null_pointer_write_in_main_still_dies_by_sigsegv";
    if util::is_child(NAME) {
        use_greenlets();
        write_to_address_zero();
        println!("the write to address zero did not fault");
        return;
    }
    let output = util::run_child(NAME, &[]);
    assert_ran_one_test(&output);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSEGV),
        "{:?}",
        output.status
    );
    let stderr = stderr(&output);
    assert!(
        !stderr.contains("stack overflow"),
        "a null write is not a stack overflow"
    );
}

#[test]
fn touching_a_stack_guard_from_main_dies_by_sigsegv() {
    const NAME: &str = "touching_a_stack_guard_from_main_dies_by_sigsegv";
    if util::is_child(NAME) {
        use_greenlets();
        let stack = Stack::new(MIN_STACK_SIZE).unwrap();
        let guard = stack.guard();
        let target = (guard.start + guard.end) / 2;
        // SAFETY: none: the guard page is PROT_NONE and this write faults on
        // purpose, in a child process.
        unsafe { std::ptr::write_volatile(target as *mut u8, 1) };
        println!("the guard page of {stack:?} is writable");
        return;
    }
    let output = util::run_child(NAME, &[]);
    assert_ran_one_test(&output);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSEGV),
        "{:?}",
        output.status
    );
    let stderr = stderr(&output);
    assert!(
        !stderr.contains("stack overflow in greenlet"),
        "the fault is not in the running greenlet's guard (main has none)"
    );
}

/// The address space the process uses now, from `/proc/self/status`.
fn virtual_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("VmSize in status");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A stack size the child cannot get once its address space is limited.
const HUGE: usize = 1 << 30;

/// Runs in the child once address space is short: asks for a `size`-byte
/// stack through both APIs and prints the outcomes.
fn ask_for_huge_stacks(size: usize) {
    let raw = Stack::new(size).map(|s| format!("{s:?}"));
    let spawned = Greenlet::builder().stack_size(size).spawn(|()| Ok(()));
    println!();
    println!("SIZE {size}");
    match raw {
        Ok(stack) => println!("MAPPED {stack}"),
        Err(e) => println!("STACK_ERROR kind={:?} message={e}", e.kind()),
    }
    match spawned {
        Ok(_) => println!("SPAWNED"),
        Err(Error::Stack(e)) => println!("SPAWN_ERROR kind={:?} message={e}", e.kind()),
        Err(e) => println!("SPAWN_OTHER {e}"),
    }
    // Ordinary stacks still work.
    let small = Greenlet::new(|x: u8| Ok(x * 2));
    println!("SMALL {}", small.switch::<u8, u8>(21).unwrap());
}

/// A number from a `/proc` file of `key value` lines.
fn proc_value(path: &str, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// True when the kernel's heuristic overcommit (`vm.overcommit_memory` 0)
/// refuses one private writable mapping of `bytes` outright: it does when
/// the mapping is larger than RAM and swap together.
fn overcommit_refuses(bytes: usize) -> bool {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory");
    let ram = proc_value("/proc/meminfo", "MemTotal:");
    let swap = proc_value("/proc/meminfo", "SwapTotal:");
    match (mode, ram, swap) {
        (Ok(mode), Some(ram), Some(swap)) => mode.trim() == "0" && (ram + swap) * 1024 < bytes / 2,
        _ => false,
    }
}

#[test]
fn address_space_limit_gives_an_enomem_error() {
    const NAME: &str = "address_space_limit_gives_an_enomem_error";
    if util::is_child(NAME) {
        use_greenlets();
        let limit = (virtual_size() + 64 * 1024 * 1024) as libc::rlim_t;
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: `rlimit` is a valid value; lowering the soft limit needs
        // no privilege and only affects this child.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) };
        assert_eq!(rc, 0, "setrlimit");
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `now` is writable.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut now) };
        assert_eq!(rc, 0, "getrlimit");
        if now.rlim_cur == limit {
            ask_for_huge_stacks(HUGE);
        } else if overcommit_refuses(MAX_STACK_SIZE) {
            // qemu-user accepts RLIMIT_AS and ignores it (it would limit the
            // emulator itself). The largest allowed stack, more than RAM and
            // swap together, is refused by the kernel's overcommit check
            // instead, before the emulator commits to anything. (Running
            // out of address space for real is not an option there: qemu
            // keeps per-page state for every mapping and runs out of memory.)
            ask_for_huge_stacks(MAX_STACK_SIZE);
        } else {
            println!("\nRLIMIT_AS IGNORED");
        }
        return;
    }
    let output = util::run_child(NAME, &[]);
    let stdout = stdout(&output);
    if stdout.contains("RLIMIT_AS IGNORED") {
        eprintln!("skipped: RLIMIT_AS is ignored here and overcommit would not refuse either");
        return;
    }
    assert_ran_one_test(&output);
    assert!(output.status.success(), "no crash: {:?}", output.status);
    let size = &child_line(&stdout, "SIZE ")["SIZE ".len()..];
    for prefix in ["STACK_ERROR", "SPAWN_ERROR"] {
        let line = child_line(&stdout, prefix);
        assert!(line.contains("kind=Map"), "{line}");
        assert!(line.contains("ENOMEM"), "the message names ENOMEM: {line}");
        assert!(
            line.contains(&format!("{size}-byte")),
            "the message names the size: {line}"
        );
    }
    assert_eq!(child_line(&stdout, "SMALL"), "SMALL 42");
}

/// `vm.max_map_count`, the kernel's limit on mappings per process.
fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Above this many mappings the test would take too long (or never end, on
/// machines that set the limit to i32::MAX) and is skipped with a message.
const MAX_MAP_COUNT_TESTED: usize = 1 << 20;

/// Runs in the child: makes 16 KiB stacks with `Stack::new` until one fails,
/// and prints what happened for the parent to check.
fn exhaust_mappings(limit: usize) {
    println!();
    println!("GUARD {:?}", guard_kind());
    let mut stacks = Vec::with_capacity(limit + 1024);
    let error = loop {
        match Stack::new(MIN_STACK_SIZE) {
            Ok(stack) => stacks.push(stack),
            Err(e) => break e,
        }
        assert!(stacks.len() <= limit, "more stacks than mappings allowed");
    };
    println!("COUNT {}", stacks.len());
    println!("KIND {:?}", error.kind());
    println!("ERROR {error}");
    // At the limit, the safe API gives an error too, and does not crash.
    match Greenlet::builder()
        .stack_size(MIN_STACK_SIZE)
        .spawn(|()| Ok(()))
    {
        Ok(_) => println!("SPAWN ok"),
        Err(e) => println!("SPAWN {e}"),
    }
    // Everything comes back once the stacks are gone.
    drop(stacks);
    let after = Stack::new(MIN_STACK_SIZE).map(|s| s.len());
    println!("AFTER {after:?}");
}

// The wall only exists with guards made by `mprotect` (two mappings per
// stack): guards made with `MADV_GUARD_INSTALL` do not split a mapping, and
// the kernel merges adjacent one-stack mappings, so there the process runs
// out of memory long before it runs out of mappings. The child therefore
// forces the `mprotect` fallback, as `guard_kind` documents.
//
// Under qemu-user the emulator's own bookkeeping makes this slow; it still
// finishes in well under a minute on a 2-core machine.
#[test]
fn running_out_of_mappings_gives_an_error_naming_max_map_count() {
    const NAME: &str = "running_out_of_mappings_gives_an_error_naming_max_map_count";
    let limit = max_map_count();
    if util::is_child(NAME) {
        exhaust_mappings(limit);
        return;
    }
    if limit > MAX_MAP_COUNT_TESTED {
        eprintln!("skipped: vm.max_map_count is {limit}, too many stacks to exhaust in a test");
        return;
    }
    let output = util::run_child(NAME, &[("GREENLET_STACK_GUARD", "mprotect")]);
    assert_ran_one_test(&output);
    assert!(output.status.success(), "no crash: {:?}", output.status);
    let stdout = stdout(&output);
    let value = |prefix: &str| {
        child_line(&stdout, prefix)[prefix.len()..]
            .trim()
            .to_string()
    };
    assert_eq!(
        value("GUARD "),
        "Mprotect",
        "the child uses the mprotect fallback"
    );
    let count: usize = value("COUNT ").parse().unwrap();
    // Two mappings per stack (guard and usable part); the rest of the
    // process uses a few hundred.
    assert!(
        count <= limit / 2,
        "{count} stacks cannot fit in {limit} mappings"
    );
    assert!(
        count >= limit / 2 - 2000,
        "only {count} stacks before running out of {limit} mappings"
    );
    let kind = value("KIND ");
    assert!(kind == "Map" || kind == "Guard", "kind {kind}");
    let error = value("ERROR ");
    assert!(
        error.contains("vm.max_map_count"),
        "the message names the sysctl: {error}"
    );
    assert!(error.contains("ENOMEM"), "{error}");
    let spawn = value("SPAWN ");
    assert!(
        spawn.contains("vm.max_map_count"),
        "the safe API reports it too: {spawn}"
    );
    assert_eq!(
        value("AFTER "),
        format!("Ok({MIN_STACK_SIZE})"),
        "stacks can be made again"
    );
}
