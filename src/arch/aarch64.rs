//! aarch64 (AAPCS64): the initial frame of a fresh stack.
//!
//! Layout and rationale: `asm/aarch64_frame.h` and the top of
//! `asm/aarch64_aapcs_elf_gas.S`. The assertions below fail the build if this
//! struct and the header disagree on any offset.

use super::{Entry, frame, greenlet_trampoline};
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// The frame `greenlet_switch` pops when it first resumes a fresh stack.
#[repr(C)]
pub(crate) struct InitialFrame {
    d8_d15: [u64; 8],
    /// The trampoline calls this.
    x19_entry: usize,
    /// The trampoline passes this as the entry's second argument.
    x20_data: usize,
    x21_x28: [usize; 8],
    /// Zero: frame-pointer walkers stop at a greenlet's root.
    x29: usize,
    /// `ret` in `greenlet_switch` jumps here.
    x30: usize,
    fpcr: u64,
    padding: u64,
}

const_assert_eq!(offset_of!(InitialFrame, d8_d15), frame::D8);
const_assert_eq!(offset_of!(InitialFrame, x19_entry), frame::X19);
const_assert_eq!(offset_of!(InitialFrame, x20_data), frame::X20);
const_assert_eq!(offset_of!(InitialFrame, x29), frame::X29);
const_assert_eq!(offset_of!(InitialFrame, x30), frame::X30);
const_assert_eq!(offset_of!(InitialFrame, fpcr), frame::FPCR);
const_assert_eq!(size_of::<InitialFrame>(), frame::SIZE);
const_assert_eq!(frame::SIZE % 16, 0);

impl InitialFrame {
    pub(crate) fn new(entry: Entry, data: *mut u8) -> Self {
        InitialFrame {
            d8_d15: [0; 8],
            x19_entry: entry as *const () as usize,
            x20_data: data as usize,
            x21_x28: [0; 8],
            x29: 0,
            x30: greenlet_trampoline as *const () as usize,
            // Round to nearest, no traps, no flush-to-zero: what a new thread
            // gets.
            fpcr: 0,
            padding: 0,
        }
    }
}
