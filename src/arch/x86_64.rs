//! x86_64 (System V): the initial frame of a fresh stack.
//!
//! Layout and rationale: `asm/x86_64_frame.h` and the top of
//! `asm/x86_64_sysv_elf_gas.S`. The assertions below fail the build if this
//! struct and the header disagree on any offset.

use super::{Entry, frame, greenlet_trampoline};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// The frame `greenlet_switch` pops when it first resumes a fresh stack.
#[repr(C)]
pub(crate) struct InitialFrame {
    /// MXCSR in the low 32 bits, the x87 control word in the next 16.
    fp_control: u64,
    r15: usize,
    r14: usize,
    /// The trampoline passes this as the entry's second argument.
    r13_data: usize,
    /// The trampoline calls this.
    r12_entry: usize,
    rbx: usize,
    /// Zero: frame-pointer walkers stop at a greenlet's root.
    rbp: usize,
    return_address: usize,
}

const_assert_eq!(offset_of!(InitialFrame, fp_control), frame::FP_CONTROL);
const_assert_eq!(offset_of!(InitialFrame, r15), frame::R15);
const_assert_eq!(offset_of!(InitialFrame, r14), frame::R14);
const_assert_eq!(offset_of!(InitialFrame, r13_data), frame::R13);
const_assert_eq!(offset_of!(InitialFrame, r12_entry), frame::R12);
const_assert_eq!(offset_of!(InitialFrame, rbx), frame::RBX);
const_assert_eq!(offset_of!(InitialFrame, rbp), frame::RBP);
const_assert_eq!(
    offset_of!(InitialFrame, return_address),
    frame::RETURN_ADDRESS
);
const_assert_eq!(size_of::<InitialFrame>(), frame::SIZE);
// The trampoline runs with rsp = frame + SIZE and needs it 16-byte aligned.
const_assert_eq!(frame::SIZE % 16, 0);

/// The state a new thread starts with: all exceptions masked, round to
/// nearest (MXCSR 0x1F80); x87 64-bit precision, round to nearest (0x037F).
/// A new greenlet starts with the same, as a new thread would.
const DEFAULT_FP_CONTROL: u64 = 0x1F80 | (0x037F << 32);

impl InitialFrame {
    pub(crate) fn new(entry: Entry, data: *mut u8) -> Self {
        InitialFrame {
            fp_control: DEFAULT_FP_CONTROL,
            r15: 0,
            r14: 0,
            r13_data: data as usize,
            r12_entry: entry as *const () as usize,
            rbx: 0,
            rbp: 0,
            return_address: greenlet_trampoline as *const () as usize,
        }
    }
}
