//! The raw context layer: initialise a fresh stack, switch between contexts.
//!
//! This is the unsafe foundation the safe [`Greenlet`](crate::Greenlet) API
//! is built on, exposed for runtimes that manage their own stacks (including
//! `no_std` ones). Nothing here allocates or knows about greenlets: a context
//! is just a saved stack pointer, and a switch hands one machine word across.
//!
//! Invariants the caller keeps (each function's `# Safety` says which):
//! a [`StackPointer`] is resumed at most once; the stack it points into stays
//! mapped until the context it holds has switched away for good; the entry
//! function of a fresh stack never returns.
#![allow(unsafe_code)]

use crate::arch::{self, INITIAL_FRAME_SIZE, InitialFrame, SAVED_POINTER, STACK_ALIGNMENT};
use core::ptr::NonNull;

/// The function a fresh stack starts in.
///
/// It receives the word passed to the first [`switch`] into the stack and the
/// `data` pointer given to [`init_stack`]. It must never return: when its work
/// is done it switches away for the last time. It must not unwind either:
/// there is no frame above it to unwind into (catch panics inside it).
///
/// # Examples
///
/// ```
/// use greenlet::raw::Entry;
/// unsafe extern "C" fn entry(_arg: usize, _data: *mut u8) -> ! {
///     unreachable!("never started in this example")
/// }
/// let _: Entry = entry;
/// ```
pub type Entry = unsafe extern "C" fn(arg: usize, data: *mut u8) -> !;

/// A suspended context: its stack pointer when it switched away, at which
/// (aarch64) or just below which (x86_64, in the red zone) its saved frame
/// sits.
///
/// `Option<StackPointer>` has the size and representation of a raw pointer
/// (`None` is null), which is what [`switch`] writes through its `save` slot.
///
/// # Examples
///
/// ```
/// use greenlet::raw::StackPointer;
/// // The save slot of a switch has the layout of a raw pointer.
/// assert_eq!(size_of::<Option<StackPointer>>(), size_of::<*mut u8>());
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackPointer(NonNull<u8>);

impl StackPointer {
    /// The saved stack pointer.
    ///
    /// # Examples
    ///
    /// ```
    /// unsafe extern "C" fn entry(_: usize, _: *mut u8) -> ! { unreachable!() }
    /// let stack = greenlet::stack::Stack::new(64 * 1024).unwrap();
    /// // SAFETY: a fresh stack, never switched to here.
    /// let sp = unsafe { greenlet::raw::init_stack(stack.top().as_ptr(), entry, std::ptr::null_mut()) };
    /// assert!((sp.as_ptr() as usize) < stack.top().as_ptr() as usize);
    /// ```
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }

    /// The lowest address of the saved frame: the deepest byte of its stack
    /// the suspended context uses. 16-byte aligned.
    pub(crate) fn frame_bottom(self) -> usize {
        self.0.as_ptr() as usize - SAVED_POINTER
    }
}

/// Writes the initial frame for a fresh context just below `top` and returns
/// the stack pointer that resumes it.
///
/// The first [`switch`] to the returned pointer calls `entry(arg, data)` on
/// this stack, with the stack pointer aligned as the ABI requires and with
/// the default floating-point environment of a new thread.
///
/// # Safety
///
/// - `top` is one past the highest byte of a writable stack region at least
///   [`min_stack_size`] bytes long, which stays valid until the context
///   started on it has switched away for the last time;
/// - `entry` upholds the contract of [`Entry`].
///
/// # Examples
///
/// ```
/// use greenlet::raw::{self, StackPointer};
///
/// unsafe extern "C" fn entry(arg: usize, data: *mut u8) -> ! {
///     // `data` is where the creator's context was saved.
///     let caller = data.cast::<Option<StackPointer>>();
///     let mut me = None;
///     // SAFETY: `caller` holds the suspended creator, which is resumed once.
///     unsafe { raw::switch(arg * 2, (*caller).unwrap(), &mut me) };
///     unreachable!("never resumed again");
/// }
///
/// let mut memory = vec![0u128; 4096]; // 64 KiB, 16-byte aligned
/// let mut caller: Option<StackPointer> = None;
/// // SAFETY: `memory` outlives the context; `entry` never returns.
/// let top = unsafe { memory.as_mut_ptr().add(memory.len()).cast::<u8>() };
/// let fresh = unsafe { raw::init_stack(top, entry, (&raw mut caller).cast()) };
/// // SAFETY: `fresh` was just initialised and is resumed once.
/// let answer = unsafe { raw::switch(21, fresh, &mut caller) };
/// assert_eq!(answer, 42);
/// ```
pub unsafe fn init_stack(top: *mut u8, entry: Entry, data: *mut u8) -> StackPointer {
    let aligned_top = (top as usize) & !(STACK_ALIGNMENT - 1);
    let frame = (aligned_top - INITIAL_FRAME_SIZE) as *mut InitialFrame;
    // SAFETY: the caller guarantees the region below `top` is writable and
    // large enough; `frame` is 16-byte aligned, more than the struct needs.
    unsafe { frame.write(InitialFrame::new(entry, data, arch::greenlet_trampoline)) };
    // SAFETY: `frame` is derived from a non-null stack top minus a small
    // constant, so it is not null, nor is a point inside it.
    StackPointer(unsafe { NonNull::new_unchecked(frame.cast::<u8>().add(SAVED_POINTER)) })
}

/// Writes the initial frame of a *probe* just below the saved frame of the
/// suspended context `under`, on that context's stack, and returns the stack
/// pointer that starts it.
///
/// The first [`switch`] to the returned pointer calls `entry(arg, data)` on
/// the free part of `under`'s stack, below everything `under` keeps, with a
/// call chain that continues into `under`'s: an unwinder (a backtrace) taken
/// in `entry` walks through `under`'s suspended frames down to its root.
/// `under` itself is neither resumed nor modified, and stays resumable once
/// the probe has switched away for good; the probe must not be resumed after
/// `under` is.
///
/// # Safety
///
/// - `under` is a suspended context (from a `save` slot) that is not resumed
///   while the probe runs;
/// - the free part of its stack below `under` is at least as large as the
///   probe needs, and writable;
/// - `entry` upholds the contract of [`Entry`].
#[cfg(feature = "std")]
pub(crate) unsafe fn init_probe(under: StackPointer, entry: Entry, data: *mut u8) -> StackPointer {
    // Saved frames are 16-byte aligned, so the probe's frame ends exactly at
    // the bottom of `under`'s, which is what the probe trampoline's CFI
    // relies on.
    let frame = (under.frame_bottom() - INITIAL_FRAME_SIZE) as *mut InitialFrame;
    // SAFETY: the caller guarantees the free stack below `under` is writable;
    // `frame` is 16-byte aligned, more than the struct needs.
    unsafe {
        frame.write(InitialFrame::new(
            entry,
            data,
            arch::greenlet_probe_trampoline,
        ))
    };
    // SAFETY: `frame` is a stack address minus a small constant, not null,
    // nor is a point inside it.
    StackPointer(unsafe { NonNull::new_unchecked(frame.cast::<u8>().add(SAVED_POINTER)) })
}

/// Suspends the running context, saving it in `*save`, and resumes `to`,
/// which receives `arg`.
///
/// Returns when some later switch resumes the saved context, with the word
/// that switch passed.
///
/// All callee-saved registers, the stack pointer and the floating-point
/// control state (MXCSR and x87 control word on x86_64, FPCR on aarch64)
/// are preserved across the call, as the ABI requires of any function.
///
/// # Safety
///
/// - `to` came from [`init_stack`] or from a `save` slot written by an
///   earlier `switch`, and has not been resumed since;
/// - the stack `to` points into is still mapped;
/// - `save` is valid for writes until the context saved there is resumed,
///   and whoever resumes it reads it from there;
/// - no frame of the current context is unwound while it is suspended.
///
/// # Examples
///
/// ```
/// use greenlet::raw::{self, StackPointer};
///
/// unsafe extern "C" fn echo(mut arg: usize, data: *mut u8) -> ! {
///     let slots = data.cast::<[Option<StackPointer>; 2]>();
///     loop {
///         // SAFETY: slot 0 holds the suspended main context, resumed once.
///         arg = unsafe { raw::switch(arg + 1, (*slots)[0].unwrap(), &raw mut (*slots)[1]) };
///     }
/// }
///
/// let stack = greenlet::stack::Stack::new(64 * 1024).unwrap();
/// let mut slots: [Option<StackPointer>; 2] = [None, None];
/// // SAFETY: `stack` and `slots` outlive every switch below; `echo` never returns.
/// unsafe {
///     slots[1] = Some(raw::init_stack(stack.top().as_ptr(), echo, (&raw mut slots).cast()));
///     for i in 0..3 {
///         let to = slots[1].take().unwrap();
///         assert_eq!(raw::switch(i, to, &raw mut slots[0]), i + 1);
///     }
/// }
/// ```
#[inline(always)]
pub unsafe fn switch(arg: usize, to: StackPointer, save: *mut Option<StackPointer>) -> usize {
    // SAFETY: the caller upholds the asm contract stated above; the save slot
    // has the layout of a raw pointer, which is what the asm writes.
    unsafe { arch::switch(arg, to.as_ptr(), save.cast()) }
}

/// The smallest stack region [`init_stack`] accepts: the initial frame plus
/// room for the entry function's first frames.
///
/// # Examples
///
/// ```
/// assert!(greenlet::raw::min_stack_size() >= 4096);
/// ```
pub const fn min_stack_size() -> usize {
    INITIAL_FRAME_SIZE + 4096
}
