//! aarch64 (AAPCS64): the initial frame of a fresh stack.
//!
//! Layout and rationale: `asm/aarch64_frame.h` and the top of
//! `asm/aarch64_aapcs_elf_gas.S`. The assertions below fail the build if this
//! struct and the header disagree on any offset.

use super::{Entry, frame};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// The frame `greenlet_switch` pops when it first resumes a fresh stack.
#[repr(C)]
pub(crate) struct InitialFrame {
    fpcr: u64,
    /// The trampoline calls this.
    x19_entry: usize,
    /// The trampoline passes this as the entry's second argument, then
    /// zeroes x29 so that frame-pointer walkers stop at a greenlet's root.
    x29_data: usize,
    /// `ret` in `greenlet_switch` jumps here.
    x30: usize,
}

const_assert_eq!(offset_of!(InitialFrame, fpcr), frame::FPCR);
const_assert_eq!(offset_of!(InitialFrame, x19_entry), frame::X19);
const_assert_eq!(offset_of!(InitialFrame, x29_data), frame::X29);
const_assert_eq!(offset_of!(InitialFrame, x30), frame::X30);
const_assert_eq!(size_of::<InitialFrame>(), frame::SIZE);
// The saved stack pointer is the suspended sp, the frame's bottom.
const_assert_eq!(frame::SAVED_POINTER, 0);
const_assert_eq!(frame::SIZE % 16, 0);

impl InitialFrame {
    /// The frame that starts `entry(arg, data)` through `trampoline`
    /// (`greenlet_trampoline`, or `greenlet_probe_trampoline` for a probe).
    pub(crate) fn new(entry: Entry, data: *mut u8, trampoline: unsafe extern "C" fn()) -> Self {
        InitialFrame {
            // Round to nearest, no traps, no flush-to-zero: what a new thread
            // gets.
            fpcr: 0,
            x19_entry: entry as *const () as usize,
            x29_data: data as usize,
            x30: trampoline as *const () as usize,
        }
    }
}

/// The `asm!` block that calls a switch with `greenlet_switch`'s private
/// convention (see the `.S` file): x0 carries the word both ways; x20-x28,
/// v8-v15 and every caller-saved register are declared clobbered, so the
/// compiler saves the live ones. It must be expanded inside an `unsafe`
/// block. Public only so that `greenlet-bench` can call a build of the same
/// assembly with the floating-point control lines left out, to measure what
/// they cost; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __switch_through {
    ($switch:path, $arg:expr, $to:expr, $save:expr) => {{
        let word: usize;
        core::arch::asm!(
            "bl {switch}",
            switch = sym $switch,
            inlateout("x0") $arg => word,
            inlateout("x1") $to => _,
            inlateout("x2") $save => _,
            lateout("x20") _,
            lateout("x21") _,
            lateout("x22") _,
            lateout("x23") _,
            lateout("x24") _,
            lateout("x25") _,
            lateout("x26") _,
            lateout("x27") _,
            lateout("x28") _,
            clobber_abi("C"),
        );
        word
    }};
}

/// Calls `greenlet_switch` through [`__switch_through`](crate::__switch_through).
///
/// # Safety
///
/// As for [`crate::raw::switch`].
#[inline(always)]
pub(crate) unsafe fn switch(arg: usize, to: *mut u8, save: *mut *mut u8) -> usize {
    // SAFETY: the callee keeps x19, x29, sp and FPCR, which the compiler may
    // rely on; everything else it may change is declared in the block
    // (`clobber_abi` covers x0-x18, x30 and all of v0-v31, so v8-v15 too).
    // The caller upholds the switch contract.
    unsafe { crate::__switch_through!(super::greenlet_switch, arg, to, save) }
}
