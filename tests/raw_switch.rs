//! The raw context switch on its own, then the same workloads through the safe
//! API: every callee-saved register survives a switch in both directions
//! (canaries loaded and checked from `asm!`), `f64` values and the
//! floating-point rounding mode stay per context, a fresh stack is aligned
//! as the ABI requires (`format!` and libc `snprintf` of floats, the stack
//! pointer at a fresh `extern "C"` function), deep recursion on a large
//! stack, a million ping-pong switches with every value checked, a context
//! on caller-supplied memory of `min_stack_size` bytes, and stacks mapped
//! above and below the thread's own stack.
// House style: one unsafe operation per block, each with its SAFETY line.
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

mod util;

use greenlet::raw::{self, StackPointer};
use greenlet::stack::Stack;
use greenlet::{Greenlet, SwitchError, getcurrent};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;
use util::RawCoroutine;

// ---------------------------------------------------------------------------
// 1. Callee-saved registers

/// The switch behind a C-ABI function, which is what the canary `asm!` block
/// calls with every callee-saved register loaded (a Rust function cannot be
/// called from `asm!`). The assembly saves only the registers the compiler
/// cannot (rbx, rbp / x19, x29) and `raw::switch` declares the others
/// clobbered; this function keeps the C ABI's promise only if that split is
/// right, so every callee-saved register comes back intact, or the test
/// fails.
///
/// # Safety
///
/// As for [`raw::switch`].
unsafe extern "C" fn switch_through_raw(
    arg: usize,
    to: StackPointer,
    save: *mut Option<StackPointer>,
) -> usize {
    // SAFETY: the caller upholds `raw::switch`'s contract.
    unsafe { raw::switch(arg, to, save) }
}

/// Everything the canary `asm!` block reads and writes, addressed from one
/// register so that every callee-saved register is free to hold a canary.
#[repr(C)]
#[derive(Default)]
struct CanaryFrame {
    /// The values loaded into the callee-saved registers before the switch.
    expected: Registers,
    /// The same registers, stored right after the switch returned.
    observed: Registers,
    /// The compiler's own values of the registers it reserves (rbx, rbp on
    /// x86_64; x19, x29 on aarch64), put back before the block ends.
    reserved: [u64; 2],
    function: usize,
    arg: usize,
    to: usize,
    save: usize,
}

#[cfg(target_arch = "x86_64")]
mod callee_saved {
    /// rbx, rbp, r12, r13, r14, r15: the System V callee-saved integer
    /// registers (no vector register is callee-saved on x86_64 System V).
    pub const NAMES: [&str; 6] = ["rbx", "rbp", "r12", "r13", "r14", "r15"];

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Registers {
        pub values: [u64; 6],
    }
}

#[cfg(target_arch = "aarch64")]
mod callee_saved {
    /// x19-x28, x29 (the frame pointer), then the low halves of v8-v15: the
    /// AAPCS64 callee-saved set (x30 is the return address, checked by the
    /// switch returning to the right place at all).
    pub const NAMES: [&str; 19] = [
        "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "d8", "d9",
        "d10", "d11", "d12", "d13", "d14", "d15",
    ];

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Registers {
        pub values: [u64; 19],
    }
}

use callee_saved::{NAMES as REGISTER_NAMES, Registers};

impl Registers {
    /// Distinct, recognisable values for one side and round: `C0DE`, the
    /// side, the round and the register's index each in their own bytes.
    fn canaries(side: u64, round: u64) -> Registers {
        let mut registers = Registers::default();
        for (i, value) in registers.values.iter_mut().enumerate() {
            *value =
                0xC0DE_0000_0000_0000 | (side << 40) | (round << 16) | ((i as u64 + 1) << 8) | 0x5A;
        }
        registers
    }

    /// One line per register that differs.
    fn differences(&self, observed: &Registers, context: &str) -> Vec<String> {
        REGISTER_NAMES
            .iter()
            .zip(self.values.iter().zip(observed.values.iter()))
            .filter(|(_, (expected, got))| expected != got)
            .map(|(name, (expected, got))| {
                format!("{context}: {name} expected {expected:#018x}, got {got:#018x}")
            })
            .collect()
    }
}

/// Loads `canaries` into every callee-saved register, calls
/// `switch_through_raw(arg, to, save)` with them in place, and stores the same
/// registers the instant the switch returns. Returns the switch's result and
/// the registers seen after it.
///
/// # Safety
///
/// As for [`raw::switch`].
unsafe fn switch_with_canaries(
    arg: usize,
    to: StackPointer,
    save: *mut Option<StackPointer>,
    canaries: &Registers,
) -> (usize, Registers) {
    let mut frame = CanaryFrame {
        expected: *canaries,
        function: switch_through_raw as *const () as usize,
        arg,
        to: to.as_ptr() as usize,
        save: save as usize,
        ..CanaryFrame::default()
    };
    // SAFETY: the block keeps the `asm!` rules: it restores the registers the
    // compiler reserves (saved in `frame.reserved`) and the stack pointer, and
    // it declares everything the call may clobber; the call itself meets
    // `raw::switch`'s contract as the caller promised.
    let result = unsafe { canary_asm(&mut frame) };
    (result, frame.observed)
}

/// The body of [`switch_with_canaries`] for x86_64.
///
/// # Safety
///
/// `frame` describes a switch that meets [`raw::switch`]'s contract.
#[cfg(target_arch = "x86_64")]
unsafe fn canary_asm(frame: &mut CanaryFrame) -> usize {
    use core::mem::offset_of;
    let result: usize;
    // SAFETY: see `switch_with_canaries`. rbx and rbp cannot be named as
    // operands (LLVM reserves them), so the block saves them in the frame and
    // puts them back itself. The stack is 16-byte aligned on entry (an
    // `asm!` guarantee without `nostack`), and the two pushes keep it so at
    // the call.
    unsafe {
        core::arch::asm!(
            "mov [r11 + {reserved}], rbx",
            "mov [r11 + {reserved} + 8], rbp",
            "push r11",
            "push r11",
            "mov rdi, [r11 + {arg}]",
            "mov rsi, [r11 + {to}]",
            "mov rdx, [r11 + {save}]",
            "mov rax, [r11 + {function}]",
            "mov rbx, [r11 + {expected}]",
            "mov rbp, [r11 + {expected} + 8]",
            "mov r12, [r11 + {expected} + 16]",
            "mov r13, [r11 + {expected} + 24]",
            "mov r14, [r11 + {expected} + 32]",
            "mov r15, [r11 + {expected} + 40]",
            "call rax",
            "pop r11",
            "pop r11",
            "mov [r11 + {observed}], rbx",
            "mov [r11 + {observed} + 8], rbp",
            "mov [r11 + {observed} + 16], r12",
            "mov [r11 + {observed} + 24], r13",
            "mov [r11 + {observed} + 32], r14",
            "mov [r11 + {observed} + 40], r15",
            "mov rbx, [r11 + {reserved}]",
            "mov rbp, [r11 + {reserved} + 8]",
            reserved = const offset_of!(CanaryFrame, reserved),
            expected = const offset_of!(CanaryFrame, expected),
            observed = const offset_of!(CanaryFrame, observed),
            function = const offset_of!(CanaryFrame, function),
            arg = const offset_of!(CanaryFrame, arg),
            to = const offset_of!(CanaryFrame, to),
            save = const offset_of!(CanaryFrame, save),
            in("r11") frame as *mut CanaryFrame,
            out("rax") result,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    result
}

/// The body of [`switch_with_canaries`] for aarch64.
///
/// # Safety
///
/// `frame` describes a switch that meets [`raw::switch`]'s contract.
#[cfg(target_arch = "aarch64")]
unsafe fn canary_asm(frame: &mut CanaryFrame) -> usize {
    use core::mem::offset_of;
    let result: usize;
    // SAFETY: see `switch_with_canaries`. x19 and x29 cannot be named as
    // operands (LLVM reserves them), so the block saves them in the frame and
    // puts them back itself. The frame's address is kept in a 16-byte slot
    // pushed below sp, which keeps sp aligned.
    unsafe {
        core::arch::asm!(
            "str x8, [sp, #-16]!",
            "str x19, [x8, #{reserved}]",
            "str x29, [x8, #({reserved} + 8)]",
            "ldr x0, [x8, #{arg}]",
            "ldr x1, [x8, #{to}]",
            "ldr x2, [x8, #{save}]",
            "ldr x9, [x8, #{function}]",
            "ldr x19, [x8, #({expected} + 0)]",
            "ldr x20, [x8, #({expected} + 8)]",
            "ldr x21, [x8, #({expected} + 16)]",
            "ldr x22, [x8, #({expected} + 24)]",
            "ldr x23, [x8, #({expected} + 32)]",
            "ldr x24, [x8, #({expected} + 40)]",
            "ldr x25, [x8, #({expected} + 48)]",
            "ldr x26, [x8, #({expected} + 56)]",
            "ldr x27, [x8, #({expected} + 64)]",
            "ldr x28, [x8, #({expected} + 72)]",
            "ldr x29, [x8, #({expected} + 80)]",
            "ldr d8, [x8, #({expected} + 88)]",
            "ldr d9, [x8, #({expected} + 96)]",
            "ldr d10, [x8, #({expected} + 104)]",
            "ldr d11, [x8, #({expected} + 112)]",
            "ldr d12, [x8, #({expected} + 120)]",
            "ldr d13, [x8, #({expected} + 128)]",
            "ldr d14, [x8, #({expected} + 136)]",
            "ldr d15, [x8, #({expected} + 144)]",
            "blr x9",
            "ldr x8, [sp], #16",
            "str x19, [x8, #({observed} + 0)]",
            "str x20, [x8, #({observed} + 8)]",
            "str x21, [x8, #({observed} + 16)]",
            "str x22, [x8, #({observed} + 24)]",
            "str x23, [x8, #({observed} + 32)]",
            "str x24, [x8, #({observed} + 40)]",
            "str x25, [x8, #({observed} + 48)]",
            "str x26, [x8, #({observed} + 56)]",
            "str x27, [x8, #({observed} + 64)]",
            "str x28, [x8, #({observed} + 72)]",
            "str x29, [x8, #({observed} + 80)]",
            "str d8, [x8, #({observed} + 88)]",
            "str d9, [x8, #({observed} + 96)]",
            "str d10, [x8, #({observed} + 104)]",
            "str d11, [x8, #({observed} + 112)]",
            "str d12, [x8, #({observed} + 120)]",
            "str d13, [x8, #({observed} + 128)]",
            "str d14, [x8, #({observed} + 136)]",
            "str d15, [x8, #({observed} + 144)]",
            "ldr x19, [x8, #{reserved}]",
            "ldr x29, [x8, #({reserved} + 8)]",
            reserved = const offset_of!(CanaryFrame, reserved),
            expected = const offset_of!(CanaryFrame, expected),
            observed = const offset_of!(CanaryFrame, observed),
            function = const offset_of!(CanaryFrame, function),
            arg = const offset_of!(CanaryFrame, arg),
            to = const offset_of!(CanaryFrame, to),
            save = const offset_of!(CanaryFrame, save),
            in("x8") frame as *mut CanaryFrame,
            out("x0") result,
            out("x20") _,
            out("x21") _,
            out("x22") _,
            out("x23") _,
            out("x24") _,
            out("x25") _,
            out("x26") _,
            out("x27") _,
            out("x28") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            clobber_abi("C"),
        );
    }
    result
}

const MAIN_SIDE: u64 = 0xA;
const COROUTINE_SIDE: u64 = 0xB;
const CANARY_ROUNDS: u64 = 64;

#[test]
fn callee_saved_registers_survive_switches_in_both_directions() {
    let failures = Rc::new(RefCell::new(Vec::<String>::new()));
    let coroutine_failures = failures.clone();
    let mut coroutine = RawCoroutine::new(64 * 1024, move |yielder, first| {
        let mut received = first;
        for round in 0..CANARY_ROUNDS {
            if received != 1000 + round as usize {
                coroutine_failures.borrow_mut().push(format!(
                    "coroutine round {round}: received {received}, expected {}",
                    1000 + round
                ));
            }
            let canaries = Registers::canaries(COROUTINE_SIDE, round);
            let (next, observed) = yielder.suspend_with(|to, save| {
                // SAFETY: `to`/`save` come from `suspend_with` for one switch.
                unsafe { switch_with_canaries(2000 + round as usize, to, save, &canaries) }
            });
            coroutine_failures
                .borrow_mut()
                .extend(canaries.differences(&observed, &format!("coroutine round {round}")));
            received = next;
        }
        if received != 1000 + CANARY_ROUNDS as usize {
            coroutine_failures
                .borrow_mut()
                .push(format!("coroutine: last word {received}"));
        }
        3000
    });
    for round in 0..=CANARY_ROUNDS {
        let canaries = Registers::canaries(MAIN_SIDE, round);
        let (reply, observed) = coroutine.resume_with(|to, save| {
            // SAFETY: `to`/`save` come from `resume_with` for one switch.
            unsafe { switch_with_canaries(1000 + round as usize, to, save, &canaries) }
        });
        failures
            .borrow_mut()
            .extend(canaries.differences(&observed, &format!("main round {round}")));
        let expected = if round < CANARY_ROUNDS {
            2000 + round as usize
        } else {
            3000
        };
        assert_eq!(reply, expected, "word from the coroutine in round {round}");
    }
    assert!(coroutine.is_finished());
    let failures = failures.borrow();
    assert!(
        failures.is_empty(),
        "callee-saved registers changed across a switch:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 2. Floating point: values and the rounding mode

/// Heavy float work that uses every vector register the compiler likes.
#[inline(never)]
fn float_storm(seed: f64) -> f64 {
    let mut lanes = [0.0f64; 32];
    for (i, lane) in lanes.iter_mut().enumerate() {
        *lane = seed + i as f64 * 0.37;
    }
    for _ in 0..black_box(200) {
        for lane in lanes.iter_mut() {
            *lane = (*lane * 1.000_001 + 0.5).sqrt().mul_add(1.5, -0.25).sin() * 100.0;
        }
        black_box(&mut lanes);
    }
    lanes.iter().sum()
}

macro_rules! hold_floats {
    ($seed:expr, $switch:expr, $($name:ident = $factor:expr),+ $(,)?) => {{
        let seed: f64 = black_box($seed);
        $(let $name: f64 = black_box(seed * $factor + $factor / 7.0);)+
        let switched: f64 = $switch;
        let held = [$($name),+];
        let expected = [$(seed * $factor + $factor / 7.0),+];
        (held, expected, switched)
    }};
}

const FLOAT_ROUNDS: usize = 50;

#[test]
fn f64_values_survive_switches_while_the_other_side_computes() {
    let mut coroutine = RawCoroutine::new(256 * 1024, |yielder, first| {
        // The coroutine too holds floats across its switches.
        let mut round = first;
        let mut mismatches = 0usize;
        loop {
            let (held, expected, _) = hold_floats!(
                round as f64 * 0.125,
                f64::from_bits(
                    yielder.suspend(float_storm(round as f64).to_bits() as usize) as u64
                ),
                c0 = 1.5,
                c1 = 2.25,
                c2 = -3.75,
                c3 = 4.125,
                c4 = 5.5,
                c5 = -6.0625,
                c6 = 7.75,
                c7 = 8.875,
                c8 = 9.25,
                c9 = -10.5,
                c10 = 11.125,
                c11 = 12.0,
                c12 = 13.5,
                c13 = -14.25,
                c14 = 15.75,
                c15 = 16.5,
                c16 = 17.125,
                c17 = 18.0,
            );
            if held != expected {
                mismatches += 1;
            }
            round += 1;
            if round == FLOAT_ROUNDS - 1 {
                // The last resume gets this instead of a float.
                return mismatches;
            }
        }
    });
    for round in 0..FLOAT_ROUNDS {
        let (held, expected, from_coroutine) = hold_floats!(
            round as f64 + 0.5,
            f64::from_bits(coroutine.resume(round) as u64),
            m0 = 0.5,
            m1 = 1.25,
            m2 = -2.75,
            m3 = 3.125,
            m4 = 4.5,
            m5 = -5.0625,
            m6 = 6.75,
            m7 = 7.875,
            m8 = 8.25,
            m9 = -9.5,
            m10 = 10.125,
            m11 = 11.0,
            m12 = 12.5,
            m13 = -13.25,
            m14 = 14.75,
            m15 = 15.5,
            m16 = 16.125,
            m17 = 17.0,
            m18 = 18.5,
            m19 = -19.25,
            m20 = 20.75,
            m21 = 21.5,
            m22 = 22.125,
            m23 = 23.0,
        );
        assert_eq!(
            held, expected,
            "main's f64 locals changed across the switch in round {round}"
        );
        if round < FLOAT_ROUNDS - 1 {
            assert_eq!(
                from_coroutine.to_bits(),
                float_storm(round as f64).to_bits(),
                "the coroutine's float result crossed the switch intact"
            );
        } else {
            assert_eq!(
                from_coroutine.to_bits(),
                0,
                "the coroutine saw its f64 locals change"
            );
        }
    }
    assert!(coroutine.is_finished());
}

/// A rounding mode, as both architectures encode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rounding {
    Nearest,
    Up,
    Down,
    TowardZero,
}

/// What a context sees of its floating-point environment: the control
/// registers' rounding fields, and the rounding an actual division performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FpView {
    /// From MXCSR (x86_64) or FPCR (aarch64).
    vector_mode: Rounding,
    /// From the x87 control word (x86_64); equal to `vector_mode` on aarch64.
    x87_mode: Rounding,
    /// `1.0 / 3.0` computed by one division instruction in `asm!`.
    one_third_bits: u64,
}

#[cfg(target_arch = "x86_64")]
mod fp {
    use super::Rounding;

    fn field(mode: Rounding) -> u32 {
        match mode {
            Rounding::Nearest => 0,
            Rounding::Down => 1,
            Rounding::Up => 2,
            Rounding::TowardZero => 3,
        }
    }

    fn mode(field: u32) -> Rounding {
        match field & 3 {
            0 => Rounding::Nearest,
            1 => Rounding::Down,
            2 => Rounding::Up,
            _ => Rounding::TowardZero,
        }
    }

    /// (MXCSR, x87 control word)
    pub fn read_control() -> (u32, u16) {
        let mut mxcsr = 0u32;
        let mut cw = 0u16;
        // SAFETY: stores the control state into two locals we own.
        unsafe {
            core::arch::asm!(
                "stmxcsr [{m}]",
                "fnstcw [{c}]",
                m = in(reg) &mut mxcsr,
                c = in(reg) &mut cw,
                options(nostack, preserves_flags),
            );
        }
        (mxcsr, cw)
    }

    pub fn modes() -> (Rounding, Rounding) {
        let (mxcsr, cw) = read_control();
        (mode(mxcsr >> 13), mode(u32::from(cw) >> 10))
    }

    /// Sets the rounding mode of SSE and x87 arithmetic alike.
    pub fn set(mode: Rounding) {
        let (mut mxcsr, mut cw) = read_control();
        mxcsr = (mxcsr & !(3 << 13)) | (field(mode) << 13);
        cw = (cw & !(3 << 10)) | ((field(mode) as u16) << 10);
        // SAFETY: loads a valid control state (only the rounding field
        // changed). Rust code run under a non-default rounding mode rounds
        // differently; the tests only do integer work and `asm!` divisions
        // while a non-default mode is in effect, and restore the default.
        unsafe {
            core::arch::asm!(
                "ldmxcsr [{m}]",
                "fldcw [{c}]",
                m = in(reg) &mxcsr,
                c = in(reg) &cw,
                options(nostack, preserves_flags),
            );
        }
    }

    /// `a / b`, rounded as the current MXCSR says. Not `pure`: the result
    /// depends on the rounding mode, which the compiler cannot see, so two
    /// calls with the same inputs must not be merged.
    pub fn divide(a: f64, b: f64) -> f64 {
        let mut quotient = a;
        // SAFETY: one SSE division between registers.
        unsafe {
            core::arch::asm!(
                "divsd {q}, {b}",
                q = inout(xmm_reg) quotient,
                b = in(xmm_reg) b,
                options(nomem, nostack),
            );
        }
        quotient
    }
}

#[cfg(target_arch = "aarch64")]
mod fp {
    use super::Rounding;

    fn field(mode: Rounding) -> u64 {
        match mode {
            Rounding::Nearest => 0,
            Rounding::Up => 1,
            Rounding::Down => 2,
            Rounding::TowardZero => 3,
        }
    }

    fn read_fpcr() -> u64 {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        fpcr
    }

    pub fn modes() -> (Rounding, Rounding) {
        let mode = match (read_fpcr() >> 22) & 3 {
            0 => Rounding::Nearest,
            1 => Rounding::Up,
            2 => Rounding::Down,
            _ => Rounding::TowardZero,
        };
        (mode, mode)
    }

    /// Sets FPCR.RMode.
    pub fn set(mode: Rounding) {
        let fpcr = (read_fpcr() & !(3 << 22)) | (field(mode) << 22);
        // SAFETY: writes a valid FPCR (only RMode changed). Rust code run under
        // a non-default rounding mode rounds differently; the tests only do
        // integer work and `asm!` divisions while one is in effect.
        unsafe { core::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack)) };
    }

    /// `a / b`, rounded as the current FPCR says. Not `pure`: see x86_64.
    pub fn divide(a: f64, b: f64) -> f64 {
        let quotient: f64;
        // SAFETY: one floating-point division between registers.
        unsafe {
            core::arch::asm!(
                "fdiv {q:d}, {a:d}, {b:d}",
                q = out(vreg) quotient,
                a = in(vreg) a,
                b = in(vreg) b,
                options(nomem, nostack),
            );
        }
        quotient
    }
}

fn fp_view() -> FpView {
    let (vector_mode, x87_mode) = fp::modes();
    FpView {
        vector_mode,
        x87_mode,
        one_third_bits: fp::divide(1.0, 3.0).to_bits(),
    }
}

/// What a context in `mode` should see, measured in one context with no
/// switch involved.
fn reference_view(mode: Rounding) -> FpView {
    fp::set(mode);
    let view = fp_view();
    fp::set(Rounding::Nearest);
    view
}

/// Words for the rounding-mode script, so the coroutine can report what it
/// saw as integers.
fn encode(view: FpView, reference: &[(Rounding, FpView)]) -> usize {
    reference
        .iter()
        .position(|(_, r)| *r == view)
        .unwrap_or(usize::MAX)
}

#[test]
fn rounding_mode_is_per_context() {
    let modes = [
        Rounding::Nearest,
        Rounding::Up,
        Rounding::Down,
        Rounding::TowardZero,
    ];
    let reference: Vec<(Rounding, FpView)> =
        modes.iter().map(|&m| (m, reference_view(m))).collect();
    // The division really observes the mode: rounding up and down differ.
    assert_ne!(reference[1].1.one_third_bits, reference[2].1.one_third_bits);
    for (mode, view) in &reference {
        assert_eq!(
            (view.vector_mode, view.x87_mode),
            (*mode, *mode),
            "reference for {mode:?}"
        );
    }
    let index = |mode: Rounding| modes.iter().position(|&m| m == mode).unwrap();

    let table = reference.clone();
    let mut coroutine = RawCoroutine::new(64 * 1024, move |yielder, _| {
        // Fresh context: the default environment, whatever main had set.
        let fresh = encode(fp_view(), &table);
        fp::set(Rounding::Down);
        // Main runs (and resets its own mode to the default) meanwhile.
        let _ = yielder.suspend(fresh);
        let kept = encode(fp_view(), &table);
        fp::set(Rounding::Nearest);
        let _ = yielder.suspend(kept);
        // Main has set `Up` again; this context stays at the default.
        encode(fp_view(), &table)
    });

    // Main in `Up` starts a fresh context: it must see the default ...
    fp::set(Rounding::Up);
    let fresh = coroutine.resume(0);
    // ... and main, resumed while the coroutine had `Down`, still has `Up`.
    let main_kept = fp_view();
    fp::set(Rounding::Nearest);
    // Main at the default resumes the coroutine: it still has `Down`.
    let coroutine_kept = coroutine.resume(0);
    let main_default = fp_view();
    // Main in `Up` again resumes the coroutine, which had reset to default.
    fp::set(Rounding::Up);
    let coroutine_default = coroutine.resume(0);
    let main_kept_again = fp_view();
    fp::set(Rounding::Nearest);

    assert_eq!(
        fresh,
        index(Rounding::Nearest),
        "a fresh context starts rounding to nearest"
    );
    assert_eq!(
        main_kept,
        reference[index(Rounding::Up)].1,
        "main's mode survived a switch away"
    );
    assert_eq!(
        coroutine_kept,
        index(Rounding::Down),
        "the coroutine's mode survived a switch away"
    );
    assert_eq!(
        main_default,
        reference[index(Rounding::Nearest)].1,
        "main's default came back"
    );
    assert_eq!(
        coroutine_default,
        index(Rounding::Nearest),
        "the coroutine's default came back"
    );
    assert_eq!(
        main_kept_again,
        reference[index(Rounding::Up)].1,
        "main's mode survived again"
    );
    assert!(coroutine.is_finished());
}

#[test]
fn rounding_mode_is_per_greenlet() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let fresh = fp::modes();
        fp::set(Rounding::TowardZero);
        main.switch::<(Rounding, Rounding), ()>(fresh)?;
        let kept = fp::modes();
        fp::set(Rounding::Nearest);
        Ok(kept)
    });
    fp::set(Rounding::Down);
    let fresh = g.switch::<(), (Rounding, Rounding)>(());
    let main_kept = fp::modes();
    fp::set(Rounding::Nearest);
    let kept = g.switch::<(), (Rounding, Rounding)>(());
    let main_default = fp::modes();
    assert_eq!(fresh.unwrap(), (Rounding::Nearest, Rounding::Nearest));
    assert_eq!(main_kept, (Rounding::Down, Rounding::Down));
    assert_eq!(kept.unwrap(), (Rounding::TowardZero, Rounding::TowardZero));
    assert_eq!(main_default, (Rounding::Nearest, Rounding::Nearest));
}

// ---------------------------------------------------------------------------
// 3. Stack alignment on a fresh stack

/// Returns the stack pointer its caller had at the `call`: the ABI requires
/// it 16-byte aligned there, on both architectures.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
extern "C" fn stack_pointer_at_call() -> usize {
    // At entry rsp points to the return address the call pushed.
    core::arch::naked_asm!("lea rax, [rsp + 8]", "ret")
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
extern "C" fn stack_pointer_at_call() -> usize {
    core::arch::naked_asm!("mov x0, sp", "ret")
}

/// The entry of a raw stack for the alignment test: records the stack
/// pointer it was entered with in the first word of `data`, then continues in
/// `alignment_entry_body` on the same frame.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "C" fn alignment_entry(arg: usize, data: *mut u8) -> ! {
    // rsp + 8 is what the trampoline's call had.
    core::arch::naked_asm!(
        "lea rax, [rsp + 8]",
        "mov [rsi], rax",
        "jmp {body}",
        body = sym alignment_entry_body,
    )
}

#[cfg(target_arch = "aarch64")]
#[unsafe(naked)]
unsafe extern "C" fn alignment_entry(arg: usize, data: *mut u8) -> ! {
    core::arch::naked_asm!(
        "mov x9, sp",
        "str x9, [x1]",
        "b {body}",
        body = sym alignment_entry_body,
    )
}

#[repr(C)]
#[derive(Default)]
struct AlignmentProbe {
    /// Written by `alignment_entry`: must stay the first field.
    entry_stack_pointer: Cell<usize>,
    /// Where the test is saved while the probe runs.
    caller: Cell<Option<StackPointer>>,
    /// Where the probe is saved while the test runs.
    own: Cell<Option<StackPointer>>,
    observations: RefCell<Vec<AlignmentObservation>>,
}

#[derive(Debug, Clone, PartialEq)]
struct AlignmentObservation {
    stack_pointer_at_call: usize,
    local_address: usize,
    formatted: String,
    printed: String,
}

/// Everything a misaligned stack breaks: `format!` of floats, and glibc's
/// printf of doubles, which uses aligned SSE stores on the stack on x86_64.
#[inline(never)]
fn observe_alignment() -> AlignmentObservation {
    let x = black_box(2.0f64) / black_box(3.0f64);
    let y = black_box(-1_234.567_89_f64);
    let formatted = format!("{x:.3} {y:.3} {:.3}", black_box(std::f64::consts::PI));
    let mut buffer = [0u8; 128];
    // SAFETY: `buffer` is writable for its length; the format string is
    // NUL-terminated and its conversions match the three `f64` arguments.
    let n = unsafe {
        libc::snprintf(
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            c"%.3f %.3f %f %e".as_ptr(),
            x,
            y,
            std::f64::consts::PI,
            black_box(6.02214076e23f64),
        )
    };
    let printed = String::from_utf8_lossy(&buffer[..n.max(0) as usize]).into_owned();
    AlignmentObservation {
        stack_pointer_at_call: stack_pointer_at_call(),
        local_address: util::approximate_sp(),
        formatted,
        printed,
    }
}

unsafe extern "C" fn alignment_entry_body(arg: usize, data: *mut u8) -> ! {
    // SAFETY: `data` is the test's probe, which outlives this context.
    let probe = unsafe { &*data.cast::<AlignmentProbe>() };
    let mut word = arg;
    if probe.entry_stack_pointer.get() % 16 != 0 {
        // Report at once, before code that needs the alignment crashes.
        word = 0;
    } else {
        let observation = std::panic::catch_unwind(observe_alignment);
        probe
            .observations
            .borrow_mut()
            .push(observation.unwrap_or_else(|_| panicked()));
    }
    loop {
        let Some(to) = probe.caller.take() else {
            std::process::abort()
        };
        // SAFETY: `to` is the suspended test, resumed once; `own` is where it
        // looks for us.
        word = unsafe { raw::switch(word + 1, to, probe.own.as_ptr()) };
        let observation = std::panic::catch_unwind(observe_alignment);
        probe
            .observations
            .borrow_mut()
            .push(observation.unwrap_or_else(|_| panicked()));
    }
}

/// What a probe records when observing panicked.
fn panicked() -> AlignmentObservation {
    AlignmentObservation {
        stack_pointer_at_call: 1,
        local_address: 0,
        formatted: "panicked".into(),
        printed: "panicked".into(),
    }
}

fn check_observation(observation: &AlignmentObservation, stack: (usize, usize), context: &str) {
    assert_eq!(
        observation.stack_pointer_at_call % 16,
        0,
        "{context}: stack pointer at a call is {:#x}, not 16-byte aligned",
        observation.stack_pointer_at_call
    );
    assert!(
        (stack.0..stack.1).contains(&observation.local_address),
        "{context}: ran at {:#x}, outside its stack {:#x}..{:#x}",
        observation.local_address,
        stack.0,
        stack.1
    );
    assert_eq!(
        observation.formatted, "0.667 -1234.568 3.142",
        "{context}: format!"
    );
    assert_eq!(
        observation.printed, "0.667 -1234.568 3.141593 6.022141e+23",
        "{context}: snprintf"
    );
}

#[test]
fn fresh_raw_stack_is_aligned_for_calls_and_float_formatting() {
    // Every 16-byte offset of the top below one page, so a `top` that the
    // layer has to align itself is covered too.
    for misalignment in [0usize, 8, 1, 15] {
        let stack = Stack::new(64 * 1024).unwrap();
        let top = stack.top().as_ptr().wrapping_sub(misalignment);
        let probe = AlignmentProbe::default();
        let data = (&raw const probe).cast_mut().cast::<u8>();
        // SAFETY: the region below `top` lies inside `stack`, and both it and
        // `probe` outlive the context; `alignment_entry` never returns.
        let fresh = unsafe { raw::init_stack(top, alignment_entry, data) };
        // SAFETY: `fresh` is resumed once; `caller` is where the probe looks
        // for us.
        let first = unsafe { raw::switch(10, fresh, probe.caller.as_ptr()) };
        let entry_sp = probe.entry_stack_pointer.get();
        assert_eq!(
            entry_sp % 16,
            0,
            "entry called with a misaligned stack: {entry_sp:#x}"
        );
        assert_eq!(first, 11);
        let to = probe.own.take().unwrap();
        // SAFETY: the probe saved itself in `own` when it switched back.
        let second = unsafe { raw::switch(20, to, probe.caller.as_ptr()) };
        assert_eq!(second, 21);
        assert!(entry_sp <= top as usize && entry_sp > stack.bottom());
        let range = (stack.bottom(), stack.top().as_ptr() as usize);
        let observations = probe.observations.borrow();
        assert_eq!(observations.len(), 2);
        check_observation(&observations[0], range, "fresh raw stack");
        check_observation(&observations[1], range, "resumed raw stack");
        // Keep the stack mapped until here, past the last switch.
        drop(stack);
    }
}

#[test]
fn greenlet_stack_is_aligned_for_calls_and_float_formatting() {
    let main = getcurrent();
    let g = Greenlet::new(move |()| {
        let start = util::approximate_sp();
        let first = observe_alignment();
        main.switch::<(usize, AlignmentObservation), ()>((start, first))?;
        Ok(observe_alignment())
    });
    let (start, first) = g.switch::<(), (usize, AlignmentObservation)>(()).unwrap();
    let second = g.switch::<(), AlignmentObservation>(()).unwrap();
    // The greenlet's stack ends a little above the first local of its body.
    let range = (start - g.stack_size(), start + 4096);
    check_observation(&first, range, "fresh greenlet");
    check_observation(&second, range, "resumed greenlet");
    // The thread's own stack gives the same answers.
    check_observation(&observe_alignment(), util::thread_stack(), "thread stack");
}

// ---------------------------------------------------------------------------
// 4. Deep recursion on a large stack

const RECURSION_BYTES: usize = 512 * 1024;
const FRAME_WORDS: usize = 128;

/// Recurses until it is `RECURSION_BYTES` below `start`, each frame keeping
/// a 1 KiB array live across the recursive call. Returns (depth reached, sum
/// of every array, lowest address seen).
#[inline(never)]
fn recurse(depth: usize, start: usize) -> (usize, u64, usize) {
    let mut frame = [0u64; FRAME_WORDS];
    for (i, word) in frame.iter_mut().enumerate() {
        *word = black_box((depth * 1000 + i) as u64);
    }
    black_box(&mut frame);
    let here = frame.as_ptr() as usize;
    let (deepest, below, lowest) = if start - here < RECURSION_BYTES {
        recurse(depth + 1, start)
    } else {
        (depth, 0, here)
    };
    // The array is read after the call: the compiler must keep it.
    let sum: u64 = black_box(&frame).iter().sum();
    (deepest, sum + below, lowest.min(here))
}

fn expected_recursion_sum(deepest: usize) -> u64 {
    (0..=deepest)
        .map(|depth| {
            (0..FRAME_WORDS)
                .map(|i| (depth * 1000 + i) as u64)
                .sum::<u64>()
        })
        .sum()
}

const LARGE_STACK: usize = 4 * 1024 * 1024;

#[test]
fn half_a_mebibyte_of_recursion_on_a_large_raw_stack() {
    let result = Rc::new(RefCell::new(None));
    let out = result.clone();
    let mut coroutine = RawCoroutine::new(LARGE_STACK, move |_, _| {
        *out.borrow_mut() = Some(recurse(0, util::approximate_sp()));
        0
    });
    let range = {
        let stack = coroutine.stack().unwrap();
        (stack.bottom(), stack.top().as_ptr() as usize)
    };
    coroutine.resume(0);
    let (deepest, sum, lowest) = result.borrow_mut().take().unwrap();
    assert!(
        range.1 - lowest >= RECURSION_BYTES,
        "only {} bytes deep",
        range.1 - lowest
    );
    assert!(lowest >= range.0, "recursed outside the stack");
    assert_eq!(
        sum,
        expected_recursion_sum(deepest),
        "a frame's array changed"
    );
}

#[test]
fn half_a_mebibyte_of_recursion_on_a_large_greenlet_stack() {
    let g = Greenlet::builder()
        .stack_size(LARGE_STACK)
        .spawn(|()| {
            let start = util::approximate_sp();
            Ok((start, recurse(0, start)))
        })
        .unwrap();
    assert_eq!(g.stack_size(), LARGE_STACK);
    let (start, (deepest, sum, lowest)) = g.switch::<(), (usize, (usize, u64, usize))>(()).unwrap();
    assert!(start - lowest >= RECURSION_BYTES);
    assert!(start - lowest < LARGE_STACK);
    assert_eq!(
        sum,
        expected_recursion_sum(deepest),
        "a frame's array changed"
    );
}

// ---------------------------------------------------------------------------
// 5. A million ping-pong switches

const PING_PONGS: usize = 1_000_000;
const STOP: usize = usize::MAX;

fn reply_to(value: usize) -> usize {
    value.wrapping_mul(0x9E37_79B9).rotate_left(7) ^ 0x5A5A
}

#[test]
fn a_million_raw_switches_carry_every_value_both_ways() {
    let mut coroutine = RawCoroutine::new(64 * 1024, |yielder, first| {
        let mut expected = 0usize;
        let mut value = first;
        while value != STOP {
            if value != expected {
                return usize::MAX - 1; // reported below as a wrong count
            }
            expected += 1;
            value = yielder.suspend(reply_to(value));
        }
        expected
    });
    for i in 0..PING_PONGS {
        let reply = coroutine.resume(i);
        if reply != reply_to(i) {
            panic!("switch {i}: got {reply:#x}, expected {:#x}", reply_to(i));
        }
    }
    assert_eq!(
        coroutine.resume(STOP),
        PING_PONGS,
        "values the coroutine received in order"
    );
    assert!(coroutine.is_finished());
}

#[test]
fn a_million_greenlet_switches_carry_every_value_both_ways() {
    let main = getcurrent();
    let g = Greenlet::new(move |first: usize| {
        let mut expected = 0usize;
        let mut value = first;
        while value != STOP {
            assert_eq!(value, expected, "value received in order");
            expected += 1;
            value = main.switch::<usize, usize>(reply_to(value))?;
        }
        Ok::<usize, SwitchError>(expected)
    });
    for i in 0..PING_PONGS {
        let reply = g.switch::<usize, usize>(i).unwrap();
        if reply != reply_to(i) {
            panic!("switch {i}: got {reply:#x}, expected {:#x}", reply_to(i));
        }
    }
    assert_eq!(g.switch::<usize, usize>(STOP).unwrap(), PING_PONGS);
    assert!(g.is_dead());
}

// ---------------------------------------------------------------------------
// 5b. Caller-supplied memory, as a `no_std` user would give it

/// Doubles every word it gets; `data` points to two save slots: the
/// resumer's, then its own.
unsafe extern "C" fn doubling_entry(arg: usize, data: *mut u8) -> ! {
    // SAFETY: `data` is the test's pair of slots, which outlives this context.
    let slots = unsafe { &*data.cast::<[Cell<Option<StackPointer>>; 2]>() };
    let mut word = arg;
    loop {
        let Some(to) = slots[0].take() else {
            std::process::abort()
        };
        // SAFETY: `to` is the suspended test, resumed once; it finds us in
        // the second slot.
        word = unsafe { raw::switch(word * 2, to, slots[1].as_ptr()) };
    }
}

/// Caller-supplied memory registered with valgrind as a stack while it
/// lives, when the `valgrind` feature is on (a no-op otherwise).
///
/// The raw layer leaves registration to whoever supplies the memory: it
/// never allocates, and `init_stack` has no matching call to deregister
/// from. The crate's own `Stack`s register themselves with the feature;
/// memory of the caller's is the caller's to register, or valgrind sees
/// every switch onto it as the client switching stacks (memcheck then
/// misreads the frames there). This issues the same client request the
/// crate does, through the C shim the feature links in
/// (`asm/valgrind_stack.c`, built from valgrind's own `valgrind.h`); outside
/// valgrind the request does nothing.
struct ValgrindRegistration {
    #[cfg(feature = "valgrind")]
    id: u32,
}

#[cfg(feature = "valgrind")]
unsafe extern "C" {
    fn greenlet_valgrind_stack_register(start: usize, end: usize) -> u32;
    fn greenlet_valgrind_stack_deregister(id: u32);
}

impl ValgrindRegistration {
    #[cfg_attr(not(feature = "valgrind"), allow(unused_variables))]
    fn new(memory: std::ops::Range<*mut u8>) -> Self {
        #[cfg(feature = "valgrind")]
        {
            // SAFETY: a client request: valgrind records the range, and the
            // program's memory is not touched.
            let id =
                unsafe { greenlet_valgrind_stack_register(memory.start.addr(), memory.end.addr()) };
            ValgrindRegistration { id }
        }
        #[cfg(not(feature = "valgrind"))]
        ValgrindRegistration {}
    }
}

impl Drop for ValgrindRegistration {
    fn drop(&mut self) {
        // SAFETY: as in `new`, for the id it returned, deregistered once.
        #[cfg(feature = "valgrind")]
        unsafe {
            greenlet_valgrind_stack_deregister(self.id)
        };
    }
}

#[test]
fn caller_supplied_memory_of_min_stack_size_runs_a_context() {
    const FILL: u128 = 0xA5A5_A5A5_A5A5_A5A5_A5A5_A5A5_A5A5_A5A5;
    // Twice the minimum; the context gets the upper half, and the lower half
    // shows whether it stayed inside what it was given.
    let words = raw::min_stack_size().div_ceil(16);
    let mut memory = vec![FILL; 2 * words];
    let range = memory.as_mut_ptr_range();
    let top = range.end.cast::<u8>();
    // Deregistered when dropped, before `memory` (declared first) is freed.
    let _registration = ValgrindRegistration::new(range.start.cast()..top);
    let slots: [Cell<Option<StackPointer>>; 2] = [Cell::new(None), Cell::new(None)];
    let data = (&raw const slots).cast_mut().cast::<u8>();
    // SAFETY: the upper `min_stack_size` bytes of `memory` are writable and
    // outlive the context; `doubling_entry` never returns.
    let mut context = unsafe { raw::init_stack(top, doubling_entry, data) };
    for i in 1..1000 {
        // SAFETY: `context` is the suspended (or fresh) context, resumed once.
        let reply = unsafe { raw::switch(i, context, slots[0].as_ptr()) };
        assert_eq!(reply, i * 2);
        context = slots[1].take().expect("the context saved itself");
    }
    assert!(
        memory[..words].iter().all(|&w| w == FILL),
        "the context stayed within its {} bytes",
        raw::min_stack_size()
    );
}

// ---------------------------------------------------------------------------
// 6. Stacks above and below the thread's own stack

/// An anonymous read-write region placed at a chosen address, with its
/// lowest page made a guard.
struct PlacedRegion {
    start: usize,
    len: usize,
}

impl PlacedRegion {
    const LEN: usize = 256 * 1024;

    /// Maps at `hint` if the kernel puts it exactly there, else `None`.
    fn at(hint: usize) -> Option<PlacedRegion> {
        // SAFETY: a fresh anonymous mapping with a hint (no MAP_FIXED), so no
        // existing mapping is replaced.
        let address = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return None;
        }
        let region = PlacedRegion {
            start: address as usize,
            len: Self::LEN,
        };
        if region.start != hint {
            return None; // dropped: unmapped
        }
        let page = greenlet::stack::page_size();
        // SAFETY: the lowest page lies inside the mapping we own.
        let rc = unsafe { libc::mprotect(address, page, libc::PROT_NONE) };
        assert_eq!(rc, 0, "guard page of a placed region");
        Some(region)
    }

    /// Tries `first`, `first ± step`, ... towards `direction` until a region
    /// maps exactly where asked.
    fn near(first: usize, step: usize, upwards: bool) -> PlacedRegion {
        let mut hint = first;
        for _ in 0..256 {
            if let Some(region) = PlacedRegion::at(hint) {
                return region;
            }
            hint = if upwards { hint + step } else { hint - step };
        }
        panic!("no free address range near {first:#x}");
    }

    fn top(&self) -> *mut u8 {
        (self.start + self.len) as *mut u8
    }
}

impl Drop for PlacedRegion {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no context runs
        // on it any more (the coroutines on it were dropped first).
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}

#[test]
fn stacks_above_and_below_the_thread_stack() {
    let (thread_low, thread_high) = util::thread_stack();
    let here = util::approximate_sp();
    assert!(
        (thread_low..thread_high).contains(&here),
        "thread stack bounds are right"
    );
    const GAP: usize = 64 * 1024 * 1024;
    let above = PlacedRegion::near((thread_high + GAP) & !(GAP - 1), GAP, true);
    let below = PlacedRegion::near(
        ((thread_low - GAP) & !(GAP - 1)) - PlacedRegion::LEN,
        GAP,
        false,
    );
    assert!(
        above.start >= thread_high,
        "region {:#x} is above the thread stack",
        above.start
    );
    assert!(
        below.start + below.len <= thread_low,
        "region {:#x} is below",
        below.start
    );

    // `below` doubles its input; `above` asks `below`, then answers main.
    // Each checks that it runs on its own region.
    let below_range = (below.start, below.start + below.len);
    let above_range = (above.start, above.start + above.len);
    // SAFETY: `below` is a 256 KiB region kept mapped until after the
    // coroutine is dropped (end of this function, declared later).
    let below_coroutine = Rc::new(RefCell::new(unsafe {
        RawCoroutine::on_memory(below.top(), move |yielder, first| {
            let mut value = first;
            loop {
                let where_we_run = util::approximate_sp();
                if !(below_range.0..below_range.1).contains(&where_we_run) {
                    return usize::MAX;
                }
                value = yielder.suspend(value * 2);
            }
        })
    }));
    let inner = below_coroutine.clone();
    // SAFETY: as for `below`.
    let mut above_coroutine = unsafe {
        RawCoroutine::on_memory(above.top(), move |yielder, first| {
            let mut value = first;
            loop {
                let where_we_run = util::approximate_sp();
                if !(above_range.0..above_range.1).contains(&where_we_run) {
                    return usize::MAX;
                }
                let doubled = inner.borrow_mut().resume(value);
                value = yielder.suspend(doubled + 1);
            }
        })
    };
    for round in 0..1000usize {
        assert_eq!(
            above_coroutine.resume(round),
            round * 2 + 1,
            "thread -> above -> below"
        );
        assert_eq!(
            below_coroutine.borrow_mut().resume(round + 7),
            (round + 7) * 2,
            "thread -> below"
        );
    }
    drop(above_coroutine);
    drop(below_coroutine);
}
