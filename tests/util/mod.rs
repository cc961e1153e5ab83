//! Helpers shared by the integration tests: a minimal coroutine over the raw
//! switch (so raw-layer tests read like ordinary code and a panic on a raw
//! stack becomes a test failure instead of an abort), a re-executing child
//! process runner for crash cases (which also works under qemu-user), a lock
//! for tests that read process-wide counters, and `/proc/self/maps` parsing.
//!
//! Each test binary uses a different subset of this module.
#![allow(dead_code)]

use greenlet::raw::{self, StackPointer};
use greenlet::stack::Stack;
use std::any::Any;
use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Output};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

// ---------------------------------------------------------------------------
// A coroutine over the raw layer

/// The body of a [`RawCoroutine`]: gets a [`Yielder`] and the word of the
/// first resume; what it returns is the word the last resume returns.
pub type RawBody = Box<dyn FnOnce(&mut Yielder, usize) -> usize>;

/// State shared between a [`RawCoroutine`] and the code on its stack. Both
/// sides hold shared references and only ever one of them runs, so plain
/// cells are enough; the save slots are handed to the switch through
/// `Cell::as_ptr`.
struct Shared {
    /// Where the resumer is saved while the coroutine runs.
    caller: Cell<Option<StackPointer>>,
    /// Where the coroutine is saved while it is suspended (or its initial
    /// frame before it starts).
    own: Cell<Option<StackPointer>>,
    body: Cell<Option<RawBody>>,
    /// A panic that escaped the body, carried back to the resumer.
    panic: Cell<Option<Box<dyn Any + Send>>>,
    finished: Cell<bool>,
}

/// Memory a [`RawCoroutine`] runs on.
enum Memory {
    /// A guarded mmap stack from the crate.
    Stack(Stack),
    /// Memory the test owns and keeps mapped for the coroutine's life.
    Borrowed,
}

/// A function running on its own stack, switched with [`raw::switch`] only:
/// no greenlet bookkeeping, no thread-local state.
///
/// Dropping it while suspended leaks whatever its frames own (they are never
/// unwound), which is fine for tests.
pub struct RawCoroutine {
    /// Leaked in `start`, freed in `drop`; the coroutine's stack holds a
    /// shared reference to it while it can run.
    shared: *const Shared,
    memory: Memory,
}

/// The coroutine side of a [`RawCoroutine`]: switches back to whoever
/// resumed it.
pub struct Yielder {
    shared: &'static Shared,
}

impl RawCoroutine {
    /// A coroutine on a fresh guarded stack of `size` usable bytes.
    pub fn new(size: usize, body: impl FnOnce(&mut Yielder, usize) -> usize + 'static) -> Self {
        let stack = Stack::new(size).expect("map a test stack");
        let top = stack.top().as_ptr();
        // SAFETY: `top` is the top of `stack`, which the returned value owns
        // and keeps mapped for as long as the coroutine can run.
        unsafe { Self::start(top, Memory::Stack(stack), Box::new(body)) }
    }

    /// A coroutine on memory the caller owns, below `top`.
    ///
    /// # Safety
    ///
    /// `top` is one past the end of a writable region of at least 64 KiB that
    /// stays mapped until the returned value is dropped.
    pub unsafe fn on_memory(
        top: *mut u8,
        body: impl FnOnce(&mut Yielder, usize) -> usize + 'static,
    ) -> Self {
        // SAFETY: forwarded from this function's contract.
        unsafe { Self::start(top, Memory::Borrowed, Box::new(body)) }
    }

    /// # Safety
    ///
    /// As for [`RawCoroutine::on_memory`], with `memory` owning the region if
    /// it is a `Stack`.
    unsafe fn start(top: *mut u8, memory: Memory, body: RawBody) -> Self {
        let shared: *const Shared = Box::into_raw(Box::new(Shared {
            caller: Cell::new(None),
            own: Cell::new(None),
            body: Cell::new(Some(body)),
            panic: Cell::new(None),
            finished: Cell::new(false),
        }));
        // SAFETY: the region below `top` is writable and outlives the
        // coroutine (caller's contract); `coroutine_entry` never returns and
        // catches every panic of the body.
        let initial = unsafe { raw::init_stack(top, coroutine_entry, shared.cast_mut().cast()) };
        let coroutine = RawCoroutine { shared, memory };
        coroutine.shared().own.set(Some(initial));
        coroutine
    }

    fn shared(&self) -> &Shared {
        // SAFETY: leaked in `start` and freed only in `drop`.
        unsafe { &*self.shared }
    }

    /// Resumes the coroutine with `arg`; returns what it suspends with (or,
    /// the last time, what its body returns). Re-raises a panic of the body.
    pub fn resume(&mut self, arg: usize) -> usize {
        // SAFETY: `to` and `save` come from `resume_with` as it promises.
        self.resume_with(|to, save| unsafe { raw::switch(arg, to, save) })
    }

    /// Resumes the coroutine through `switch(to, save)`, which must perform
    /// exactly one raw switch to `to` saving the current context in `save`
    /// (for instance from inside an `asm!` block); returns what it returns.
    pub fn resume_with<R>(
        &mut self,
        switch: impl FnOnce(StackPointer, *mut Option<StackPointer>) -> R,
    ) -> R {
        let shared = self.shared();
        assert!(!shared.finished.get(), "resumed a finished raw coroutine");
        let to = shared
            .own
            .take()
            .expect("a suspended raw coroutine has a saved context");
        // `caller` is the slot the coroutine reads to come back here.
        let result = switch(to, shared.caller.as_ptr());
        if let Some(payload) = shared.panic.take() {
            panic::resume_unwind(payload);
        }
        result
    }

    /// True once the body has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.shared().finished.get()
    }

    /// The stack this coroutine runs on, if it is a crate `Stack`.
    pub fn stack(&self) -> Option<&Stack> {
        match &self.memory {
            Memory::Stack(stack) => Some(stack),
            Memory::Borrowed => None,
        }
    }
}

impl Drop for RawCoroutine {
    fn drop(&mut self) {
        // SAFETY: the box was leaked in `start`; the coroutine can no longer
        // run (it is not running, and its owner is going away), so its
        // reference is never used again.
        drop(unsafe { Box::from_raw(self.shared.cast_mut()) });
    }
}

impl Yielder {
    /// Switches back to the resumer with `arg`; returns the next resume's word.
    pub fn suspend(&mut self, arg: usize) -> usize {
        // SAFETY: `to` and `save` come from `suspend_with` as it promises.
        self.suspend_with(|to, save| unsafe { raw::switch(arg, to, save) })
    }

    /// Like [`RawCoroutine::resume_with`], from the coroutine's side.
    pub fn suspend_with<R>(
        &mut self,
        switch: impl FnOnce(StackPointer, *mut Option<StackPointer>) -> R,
    ) -> R {
        let to = self
            .shared
            .caller
            .take()
            .expect("a running coroutine has a resumer");
        // `own` is the slot the resumer reads to come back here.
        switch(to, self.shared.own.as_ptr())
    }
}

/// The first Rust frame on a [`RawCoroutine`]'s stack.
unsafe extern "C" fn coroutine_entry(arg: usize, data: *mut u8) -> ! {
    // SAFETY: `data` is the `Shared` given to `init_stack`, which outlives
    // every run of this coroutine (freed only when it can no longer run).
    let shared: &'static Shared = unsafe { &*data.cast::<Shared>() };
    let body = shared.body.take();
    let mut yielder = Yielder { shared };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match body {
        Some(body) => body(&mut yielder, arg),
        None => panic!("raw coroutine started twice"),
    }));
    let word = outcome.unwrap_or_else(|payload| {
        shared.panic.set(Some(payload));
        0
    });
    shared.finished.set(true);
    let Some(to) = shared.caller.take() else {
        std::process::abort()
    };
    // SAFETY: `to` is the suspended resumer, resumed once; nobody resumes
    // this context again (it is finished), so the save slot is only written.
    unsafe { raw::switch(word, to, shared.own.as_ptr()) };
    // Unreachable by the contract above; do not unwind out of an entry.
    std::process::abort()
}

// ---------------------------------------------------------------------------
// Child processes for crash cases

/// The environment variable that tells a re-executed test binary which crash
/// case to run; its value is the name of the test that spawned it.
pub const CHILD_ENV: &str = "GREENLET_TEST_CRASH_CHILD";

/// True in the child process spawned by [`run_child`] for `test_name`.
pub fn is_child(test_name: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test_name)
}

/// Re-executes this test binary to run only `test_name`, with [`CHILD_ENV`]
/// set so the test does its crashing thing (and `env` added to its
/// environment), and returns its output.
///
/// Under qemu-user (an aarch64 test binary on an x86_64 host without
/// binfmt_misc) the binary cannot be executed directly, and the failure
/// does not even surface as an error: glibc's `execvp` hands the file to
/// `/bin/sh`, and qemu's emulation of `posix_spawn` turns a failed exec into
/// exit status 127. So the rule is behavioural: a child that was not killed
/// by a signal and never printed libtest's `running N test` line did not
/// run at all, and is run again through the runner cargo uses:
/// `$CARGO_TARGET_<ARCH>_UNKNOWN_LINUX_GNU_RUNNER` if set, else
/// `qemu-<arch> -L /usr/<arch>-linux-gnu`.
pub fn run_child(test_name: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let args = ["--exact", test_name, "--nocapture", "--test-threads=1"];
    let direct = Command::new(&exe)
        .args(args)
        .env(CHILD_ENV, test_name)
        .envs(env.iter().copied())
        .output();
    let ran = |output: &Output| {
        output.status.signal().is_some()
            || String::from_utf8_lossy(&output.stdout).contains("running ")
    };
    let output = match direct {
        Ok(output) if ran(&output) => output,
        _ => {
            let runner = runner_command();
            let (program, runner_args) = runner.split_first().expect("a runner has a program");
            Command::new(program)
                .args(runner_args)
                .arg(&exe)
                .args(args)
                .env(CHILD_ENV, test_name)
                .envs(env.iter().copied())
                .output()
                .unwrap_or_else(|e| panic!("cannot run the child through {runner:?}: {e}"))
        }
    };
    eprintln!(
        "--- child `{test_name}`: {:?}\n--- child stdout:\n{}--- child stderr:\n{}---",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

fn runner_command() -> Vec<String> {
    let arch = std::env::consts::ARCH;
    let triple_var = format!(
        "CARGO_TARGET_{}_UNKNOWN_LINUX_GNU_RUNNER",
        arch.to_uppercase()
    );
    match std::env::var(&triple_var) {
        Ok(runner) if !runner.trim().is_empty() => {
            runner.split_whitespace().map(String::from).collect()
        }
        _ => vec![
            format!("qemu-{arch}"),
            "-L".into(),
            format!("/usr/{arch}-linux-gnu"),
        ],
    }
}

// ---------------------------------------------------------------------------
// Process-wide state

/// Serialises the tests of one binary that read or change process-wide
/// counters (`pool_stats().slabs` counts every thread's slabs).
///
/// When the guard drops, this thread's pool is emptied (its slabs unmapped)
/// before the next test may start: otherwise the finished test's pool would
/// be torn down by its thread's exit, concurrently with the next test.
pub fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    Serial(Some(
        LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
    ))
}

/// See [`serial`].
pub struct Serial(Option<MutexGuard<'static, ()>>);

impl Drop for Serial {
    fn drop(&mut self) {
        greenlet::stack::set_pool_limit(0);
        greenlet::stack::set_pool_limit(1024);
        drop(self.0.take());
    }
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    pub line: String,
}

/// This process's mappings, in address order.
pub fn mappings() -> Vec<Mapping> {
    let text = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    text.lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            let range = words.next().expect("an address range");
            let perms = words.next().expect("permissions").to_string();
            let (start, end) = range.split_once('-').expect("start-end");
            Mapping {
                start: usize::from_str_radix(start, 16).expect("hex start"),
                end: usize::from_str_radix(end, 16).expect("hex end"),
                perms,
                line: line.to_string(),
            }
        })
        .collect()
}

/// The current thread's stack as `(lowest, one past highest)` address.
pub fn thread_stack() -> (usize, usize) {
    // SAFETY: an all-zero pthread_attr_t is a valid buffer for
    // pthread_getattr_np to initialise.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `attr` is writable; `me` is this thread.
    let rc = unsafe { libc::pthread_getattr_np(me, &mut attr) };
    assert_eq!(rc, 0, "pthread_getattr_np");
    let mut base: *mut libc::c_void = ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; both outputs are writable.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut base, &mut size) };
    assert_eq!(rc, 0, "pthread_attr_getstack");
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    (base as usize, base as usize + size)
}

/// The address of a local of the caller's frame, approximately its stack
/// pointer.
#[inline(always)]
pub fn approximate_sp() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Whether the byte at `address` can be read, asked of the kernel instead of
/// touched (a fault would kill the test): `write(2)` of that byte into a
/// pipe fails with EFAULT if the page is inaccessible, including guard
/// pages made with `MADV_GUARD_INSTALL`, which `/proc/self/maps` does not
/// show. Nothing at `address` is modified.
pub fn is_readable(address: usize) -> bool {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the kernel validates `address` itself and reports EFAULT
    // instead of faulting; `fds[1]` is the pipe's write end.
    let written = unsafe { libc::write(fds[1], address as *const libc::c_void, 1) };
    let error = std::io::Error::last_os_error();
    for fd in fds {
        // SAFETY: opened above and closed once.
        unsafe { libc::close(fd) };
    }
    match written {
        1 => true,
        _ if error.raw_os_error() == Some(libc::EFAULT) => false,
        _ => panic!("probing {address:#x}: {error}"),
    }
}

// ---------------------------------------------------------------------------
// Emulation

/// How this process is emulated, if it is. qemu-user (run by cargo's
/// runner, or by binfmt_misc) answers `MADV_GUARD_INSTALL` with success and
/// installs nothing, and writes its own `/proc/self/maps`, so some kernel
/// facts cannot be expected under it. Two signs, either enough: qemu
/// rewrites `/proc/self/exe` to the guest program but passes
/// `/proc/thread-self/exe` through to the kernel, which names qemu itself
/// (natively both name this program); and the kernel's own architecture (`/proc/sys/kernel/arch`, also passed through) is not
/// the one this program was built for.
pub fn emulated() -> Option<String> {
    let program = std::fs::read_link("/proc/self/exe");
    let thread = std::fs::read_link("/proc/thread-self/exe");
    if let (Ok(program), Ok(thread)) = (&program, &thread)
        && program != thread
    {
        return Some(format!(
            "{} runs under {} (an emulator)",
            program.display(),
            thread.display()
        ));
    }
    let arch = std::env::consts::ARCH;
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/arch")
        && kernel.trim() != arch
    {
        return Some(format!(
            "this {arch} program runs on a {} kernel (emulated)",
            kernel.trim()
        ));
    }
    None
}
