//! Looking at a suspended greenlet without resuming it: a probe context is
//! started on the free part of its stack, right under its saved frame, whose
//! call chain continues into the suspended one (see
//! `greenlet_probe_trampoline` in the `.S` files). The probe captures a
//! backtrace and switches back for good; the greenlet is never resumed, and
//! nothing of it is read or written but the stack below its saved frame.
#![allow(unsafe_code)]

use crate::raw::{self, StackPointer};
use crate::sanitizer::Fiber;
use std::backtrace::Backtrace;
use std::panic::{self, AssertUnwindSafe};

/// Free stack the probe asks for below a suspended greenlet's saved frame:
/// capturing a backtrace walks the unwind tables on that stack (measured by
/// painting it: 5.1 KiB in release and 5.8 KiB in debug on x86_64, 7.8 KiB
/// in debug on aarch64); twice the most, rounded up, is the margin.
pub(crate) const PROBE_STACK: usize = 16 * 1024;

/// What the requester and the probe share; lives on the requester's stack.
struct Probe<'a> {
    /// The requester, suspended while the probe runs.
    back: Option<StackPointer>,
    result: Option<Backtrace>,
    /// The probe's own ASan fiber, on the suspended greenlet's stack.
    fiber: Fiber,
    /// The requester's ASan fiber.
    requester: &'a Fiber,
}

/// A backtrace of the context suspended at `saved`, walking from a probe
/// into its call chain down to its root. `None` if capturing panicked.
///
/// # Safety
///
/// `saved` is the saved stack pointer of a suspended context of this thread,
/// not resumed until this returns, with at least [`PROBE_STACK`] writable
/// bytes of free stack below it, down to `free_bottom` at least; `stack` is
/// the ASan fiber of that stack and `requester` the running greenlet's.
pub(crate) unsafe fn backtrace_of(
    saved: StackPointer,
    free_bottom: usize,
    stack: &Fiber,
    requester: &Fiber,
) -> Option<Backtrace> {
    let mut probe = Probe {
        back: None,
        result: None,
        fiber: stack.same_stack(),
        requester,
    };
    // SAFETY: the caller guarantees `saved` is suspended, stays so, and has
    // the free stack the probe needs; `probe_entry` never returns.
    let start = unsafe { raw::init_probe(saved, probe_entry, (&raw mut probe).cast()) };
    requester.start_switch(&probe.fiber, false);
    // SAFETY: `start` is a fresh probe, resumed once; our save slot lives in
    // `probe`, on this frame, until the probe resumes us through it.
    unsafe { raw::switch(0, start, &raw mut probe.back) };
    requester.finish_switch(None);
    // The probe's frames were abandoned, not returned from: clear the ASan
    // redzones they left on the free stack, where the greenlet's own frames
    // will go when it resumes. (Nothing to do without the `asan` feature.)
    let top = saved.frame_bottom();
    crate::sanitizer::unpoison_stack(free_bottom, top - free_bottom);
    probe.result.take()
}

/// The probe's body: capture, hand the backtrace over, switch back for good.
unsafe extern "C" fn probe_entry(_: usize, data: *mut u8) -> ! {
    let probe = data.cast::<Probe<'_>>();
    // SAFETY: `data` is the requester's `Probe`, alive while it is suspended
    // in `backtrace_of`, which is now.
    let probe = unsafe { &mut *probe };
    probe.fiber.finish_switch(None);
    probe.result = panic::catch_unwind(AssertUnwindSafe(Backtrace::force_capture)).ok();
    let Some(back) = probe.back.take() else {
        // Unreachable: the requester saved itself before starting us. Not
        // a panic: there is no frame above this one to unwind into.
        std::process::abort()
    };
    // The probe never runs again: ASan may free its fake stack.
    probe.fiber.start_switch(probe.requester, true);
    let mut abandoned = None;
    // SAFETY: `back` is the requester, suspended in `backtrace_of` and
    // resumed once; the probe is abandoned (it owns nothing) and its save
    // slot is never read.
    unsafe { raw::switch(0, back, &mut abandoned) };
    std::process::abort()
}
