/*
 * aarch64_aapcs_elf_gas.S: the context switch for aarch64, AAPCS64, ELF.
 *
 * Three entry points:
 *   greenlet_switch            save the running context, resume another,
 *                              pass a word
 *   greenlet_trampoline        the first code a fresh stack runs; calls the
 *                              entry
 *   greenlet_probe_trampoline  the same for a probe started under a
 *                              suspended context, whose call chain it
 *                              continues (backtraces of suspended greenlets)
 *
 * Who saves what. A switch must preserve the whole callee-saved set of
 * AAPCS64: x19-x28, x29 (fp), x30 (lr), sp, the low halves of v8-v15, and
 * (kept per greenlet, like MXCSR on x86_64) FPCR. greenlet_switch is only
 * ever called from one place, the `asm!` block in src/arch/aarch64.rs behind
 * `raw::switch`, and the work is split:
 *
 *   - this file saves what the compiler cannot: x19 and x29 (LLVM reserves
 *     them, so an `asm!` block may not declare them clobbered), sp, FPCR and
 *     the resume address (x30, set by the `bl`);
 *   - the `asm!` block declares x20-x28, v8-v15 and every caller-saved
 *     register clobbered, so the compiler saves those that hold live values,
 *     once per function around all its switches rather than on every switch.
 *
 * The callee-saved canary test (tests/raw_switch.rs) checks the whole set
 * through `raw::switch` from `asm!`.
 *
 * The saved frame (see aarch64_frame.h for the table the Rust side checks):
 *
 *       +32  +-----------------------------+  <- stack pointer before the call
 *       +16  | x29 (fp)      | x30 (lr)    |
 *       +0   | FPCR          | x19         |  <- saved stack pointer
 *            +-----------------------------+
 *
 * FPCR (rounding mode, flush-to-zero) is only written when the resumed
 * context's value differs: `msr fpcr` is a synchronising write on many
 * cores, `mrs` is cheap. FPCR holds no status flags (those are in FPSR,
 * which the ABI does not preserve), so equal control means equal values.
 *
 * The switch returns with `ret` into the other context. On aarch64 a
 * mismatched `ret` costs a misprediction too, but `br` would need a `bti j`
 * landing pad at every resume point once branch protection is on, and `ret`
 * needs none; this was not measured on real hardware (CI runs under qemu).
 */
#include "common.h"
#include "aarch64_frame.h"

/*
 * greenlet_switch: a private calling convention, for the `asm!` block in
 * src/arch/aarch64.rs only.
 *
 * On entry:  x0 = arg, the word handed to the resumed context;
 *            x1 = to, a saved stack pointer (a frame laid out as above);
 *            x2 = save, where the current context's stack pointer goes;
 *            x30 = resume address (set by `bl`).
 * On exit:   (when this context is itself resumed) x0 = the word the
 *            resuming side passed as its arg.
 * Preserves: x19, x29, sp, FPCR.
 * Clobbers:  every other general-purpose and vector register, x20-x28 and
 *            v8-v15 included, and the flags; the caller declares them.
 * Alignment: `to` must be 16-byte aligned, as every saved frame is.
 */
FUNCTION_BEGIN(switch)
    /* The resumed context's FPCR, read before we store anything: both
     * frames often sit at the same offset in their pages, and a load from
     * theirs issued after our stores could be held back as if it depended
     * on them (see the x86_64 file, where this was measured). */
    /* greenlet-bench assembles this file a second time with
     * GREENLET_BENCH_WITHOUT_FP_CONTROL, leaving out the FPCR lines, to
     * measure what keeping FPCR costs; the shipped switch has them all. */
#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
    ldr x10, [x1, #GREENLET_FRAME_FPCR]
    mrs x9, fpcr
#endif
    /* The frame is pushed by the first pair store itself (pre-indexed):
     * one instruction that moves sp and stores, so nothing is ever stored
     * below sp (there is no red zone on aarch64). */
    stp x9, x19, [sp, #-GREENLET_FRAME_SIZE]!
    .cfi_def_cfa_offset GREENLET_FRAME_SIZE
    stp x29, x30, [sp, #GREENLET_FRAME_X29]
    /* Where each register lives relative to the CFA (sp + 32). The same
     * shape is found on the resumed stack, so these stay true after the
     * stack pointer is swapped. */
    .cfi_offset x19, GREENLET_FRAME_X19 - GREENLET_FRAME_SIZE
    .cfi_offset x29, GREENLET_FRAME_X29 - GREENLET_FRAME_SIZE
    .cfi_offset x30, GREENLET_FRAME_X30 - GREENLET_FRAME_SIZE

    /* The switch proper: publish our frame, adopt theirs. */
    mov x11, sp
    str x11, [x2]
    mov sp, x1

#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
    cmp x9, x10
    b.ne 2f
#endif
1:
    .cfi_remember_state
    ldp x29, x30, [sp, #GREENLET_FRAME_X29]
    /* The last pair load pops the frame (post-indexed). x10 gets the
     * resumed FPCR again, a value already in effect; the slot is loaded
     * only to pair the load of x19 with the pop. */
    ldp x10, x19, [sp], #GREENLET_FRAME_SIZE
    .cfi_def_cfa_offset 0
    .cfi_restore x19
    .cfi_restore x29
    .cfi_restore x30
    ret
#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
2:
    /* Out of line: the resumed context runs with a different FPCR. */
    .cfi_restore_state
    msr fpcr, x10
    b 1b
#endif
FUNCTION_END(switch)

/*
 * greenlet_trampoline: never called; a fresh stack's initial frame "returns"
 * here from greenlet_switch (its x30 slot holds this address).
 *
 * On entry:  x0  = the word passed to the first switch into this stack;
 *            x19 = entry, an `extern "C" fn(usize, *mut u8) -> !`;
 *            x29 = data, the entry's second argument;
 *            sp  = 16-byte aligned.
 * On exit:   never returns; `entry` must switch away for good.
 *
 * The return address (x30) is marked undefined: this is the root of the
 * greenlet's call stack and unwinders stop here cleanly; x29 is zeroed
 * before the call so that frame-pointer walkers stop here too.
 */
FUNCTION_BEGIN(trampoline)
    .cfi_undefined x30
    mov x1, x29
    mov x29, #0
    blr x19
    /* `entry` returned, which its contract forbids. */
    brk #1
FUNCTION_END(trampoline)

/*
 * greenlet_probe_trampoline: like greenlet_trampoline, for a probe: a
 * context started just below a suspended context's saved frame, on the same
 * stack, to look at that context without resuming it (a backtrace of a
 * suspended greenlet). Its initial frame sits right under the suspended
 * frame, so on entry sp points at that frame: the CFI below describes it as
 * greenlet_switch's own frame, and an unwinder walks from the probe into the
 * suspended context's call chain, down to its root. x29 is pointed at the
 * saved x29/x30 pair, a valid frame record, so frame-pointer walkers follow
 * the same path.
 *
 * On entry:  x0 = the word passed by the switch into the probe;
 *            x19 = entry, x29 = data (as for greenlet_trampoline);
 *            sp = the suspended context's saved stack pointer.
 * On exit:   never returns; `entry` must switch away for good.
 */
FUNCTION_BEGIN(probe_trampoline)
    .cfi_def_cfa sp, GREENLET_FRAME_SIZE
    .cfi_offset x19, GREENLET_FRAME_X19 - GREENLET_FRAME_SIZE
    .cfi_offset x29, GREENLET_FRAME_X29 - GREENLET_FRAME_SIZE
    .cfi_offset x30, GREENLET_FRAME_X30 - GREENLET_FRAME_SIZE
    mov x1, x29
    add x29, sp, #GREENLET_FRAME_X29
    blr x19
    brk #1
FUNCTION_END(probe_trampoline)

GNU_STACK_NOTE
