//! What the safe API takes from `std`, and what stands in for it without.
//!
//! With `std`, a panic that escapes a greenlet's body is caught and raised in
//! its parent, a greenlet dropped during a panic is reported on stderr, and
//! switches refuse to run while the thread unwinds. Without `std` there is no
//! unwinding to catch (bare-metal targets abort on panic, and a panic that
//! could unwind stops at the `extern "C"` entry of every greenlet stack,
//! which aborts), no stderr, and no thread panic state: the stand-ins below
//! say so in code.

use alloc::boxed::Box;
use core::any::Any;
use core::fmt;

/// What a caught panic carries.
pub(crate) type PanicPayload = Box<dyn Any + Send>;

/// Whether this thread is unwinding a panic.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn panicking() -> bool {
    std::thread::panicking()
}

/// Never: without `std` a panic does not unwind into code that switches.
#[cfg(not(feature = "std"))]
#[inline(always)]
pub(crate) fn panicking() -> bool {
    false
}

/// Runs `f`, catching a panic that escapes it.
#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, PanicPayload> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// Runs `f`. Without `std` nothing can be caught: a panic aborts (or, under
/// a panic runtime that unwinds, stops at the greenlet's `extern "C"` entry,
/// which aborts), so this always returns `Ok`.
#[cfg(not(feature = "std"))]
#[inline(always)]
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, PanicPayload> {
    Ok(f())
}

/// Raises a caught panic again.
#[cfg(feature = "std")]
pub(crate) fn resume_unwind(payload: PanicPayload) -> ! {
    std::panic::resume_unwind(payload)
}

/// Unreachable without `std`: [`catch`] never returns a payload.
#[cfg(not(feature = "std"))]
pub(crate) fn resume_unwind(_payload: PanicPayload) -> ! {
    unreachable!("nothing is caught without std, so nothing is raised again")
}

/// A diagnostic line on stderr; without `std` there is nowhere to print it.
pub(crate) fn warn(message: fmt::Arguments<'_>) {
    #[cfg(feature = "std")]
    std::eprintln!("{message}");
    #[cfg(not(feature = "std"))]
    let _ = message;
}

/// The text a panic payload or a thrown error carries, when it is a string
/// (`&str` or `String`, what `panic!` makes).
pub(crate) fn text_of(value: &dyn Any) -> Option<&str> {
    value.downcast_ref::<&str>().copied().or_else(|| {
        value
            .downcast_ref::<alloc::string::String>()
            .map(|s| s.as_str())
    })
}

/// A panic payload's message, when it is a string.
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> &str {
    text_of(payload).unwrap_or("<non-string payload>")
}
