//! x86_64 (System V): the initial frame of a fresh stack.
//!
//! Layout and rationale: `asm/x86_64_frame.h` and the top of
//! `asm/x86_64_sysv_elf_gas.S`. The assertions below fail the build if this
//! struct and the header disagree on any offset.

use super::{Entry, frame};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// The frame `greenlet_switch` pops when it first resumes a fresh stack.
#[repr(C)]
pub(crate) struct InitialFrame {
    /// MXCSR in the low 32 bits, the x87 control word in the next 16.
    fp_control: u64,
    /// The trampoline calls this.
    rbx_entry: usize,
    /// The trampoline passes this as the entry's second argument, then
    /// zeroes rbp so that frame-pointer walkers stop at a greenlet's root.
    rbp_data: usize,
    return_address: usize,
}

const_assert_eq!(offset_of!(InitialFrame, fp_control), frame::FP_CONTROL);
const_assert_eq!(offset_of!(InitialFrame, rbx_entry), frame::RBX);
const_assert_eq!(offset_of!(InitialFrame, rbp_data), frame::RBP);
const_assert_eq!(
    offset_of!(InitialFrame, return_address),
    frame::RETURN_ADDRESS
);
const_assert_eq!(size_of::<InitialFrame>(), frame::SIZE);
// The saved stack pointer is the suspended rsp, which points at the resume
// address that context's `call` pushed.
const_assert_eq!(frame::SAVED_POINTER, frame::RETURN_ADDRESS);
// The trampoline runs with rsp = frame + SIZE and needs it 16-byte aligned.
const_assert_eq!(frame::SIZE % 16, 0);

/// The state a new thread starts with: all exceptions masked, round to
/// nearest (MXCSR 0x1F80); x87 64-bit precision, round to nearest (0x037F).
/// A new greenlet starts with the same, as a new thread would.
const DEFAULT_FP_CONTROL: u64 = 0x1F80 | (0x037F << 32);

impl InitialFrame {
    /// The frame that starts `entry(arg, data)` through `trampoline`
    /// (`greenlet_trampoline`, or `greenlet_probe_trampoline` for a probe).
    pub(crate) fn new(entry: Entry, data: *mut u8, trampoline: unsafe extern "C" fn()) -> Self {
        InitialFrame {
            fp_control: DEFAULT_FP_CONTROL,
            rbx_entry: entry as *const () as usize,
            rbp_data: data as usize,
            return_address: trampoline as *const () as usize,
        }
    }
}

/// The `asm!` block that calls a switch with `greenlet_switch`'s private
/// convention (see the `.S` file): rax carries the word both ways; r12-r15
/// and every caller-saved register are declared clobbered, so the compiler
/// saves the live ones. It must be expanded inside an `unsafe` block. Public
/// only so that `greenlet-bench` can call a build of the same assembly with
/// the floating-point control lines left out, to measure what they cost; not
/// part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __switch_through {
    ($switch:path, $arg:expr, $to:expr, $save:expr) => {{
        let word: usize;
        core::arch::asm!(
            "call {switch}",
            switch = sym $switch,
            inlateout("rax") $arg => word,
            inlateout("rsi") $to => _,
            inlateout("rdx") $save => _,
            lateout("r12") _,
            lateout("r13") _,
            lateout("r14") _,
            lateout("r15") _,
            clobber_abi("sysv64"),
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
    // SAFETY: the callee keeps rbx, rbp, rsp and the FP control state, which
    // the compiler may rely on; everything else it may change is declared in
    // the block. The stack is 16-byte aligned at the `call` (an `asm!`
    // guarantee without `nostack`). The caller upholds the switch contract.
    unsafe { crate::__switch_through!(super::greenlet_switch, arg, to, save) }
}
