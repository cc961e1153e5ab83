/*
 * aarch64_aapcs_elf_gas.S: the context switch for aarch64, AAPCS64, ELF.
 *
 * Two entry points:
 *   greenlet_switch      save the running context, resume another, pass a word
 *   greenlet_trampoline  the first code a fresh stack runs; calls the entry
 *
 * The saved frame (see aarch64_frame.h for the table the Rust side checks):
 *
 *       +176 +-----------------------------+  <- stack pointer before the call
 *       +160 | FPCR          | padding     |
 *       +144 | x29 (fp)      | x30 (lr)    |
 *       +128 | x27           | x28         |
 *       +112 | x25           | x26         |
 *       +96  | x23           | x24         |
 *       +80  | x21           | x22         |
 *       +64  | x19           | x20         |
 *       +48  | d14           | d15         |
 *       +32  | d12           | d13         |
 *       +16  | d10           | d11         |
 *       +0   | d8            | d9          |  <- saved stack pointer
 *            +-----------------------------+
 *
 * x19-x28, fp, lr and the low halves of v8-v15 are what AAPCS64 asks a callee
 * to preserve. FPCR (rounding mode, flush-to-zero) is kept per greenlet for
 * the same reason as MXCSR on x86_64, and is likewise only written when the
 * resumed context's value differs: `msr fpcr` is a synchronising write on
 * many cores, `mrs` is cheap.
 */
#include "common.h"
#include "aarch64_frame.h"

/*
 * usize greenlet_switch(usize arg, void *to, void **save)
 *
 * On entry:  x0 = arg, the word handed to the resumed context;
 *            x1 = to, a saved stack pointer (a frame laid out as above);
 *            x2 = save, where the current context's stack pointer goes;
 *            x30 = return address.
 * On exit:   (when this context is itself resumed) x0 = the word the
 *            resuming side passed as its arg.
 * Clobbers:  x9, x10, x11 and everything else the ABI lets a call clobber.
 * Alignment: `to` must be 16-byte aligned, as every saved frame is.
 */
FUNCTION_BEGIN(switch)
    /* The resumed context's FPCR, read before we store anything: both
     * frames usually sit at the same offset in their pages, and a load from
     * theirs issued after our stores could be held back as if it depended
     * on them (see the x86_64 file, where this was measured). */
    ldr x10, [x1, #GREENLET_FRAME_FPCR]
    sub sp, sp, #GREENLET_FRAME_SIZE
    .cfi_def_cfa_offset GREENLET_FRAME_SIZE
    stp d8, d9, [sp, #0]
    stp d10, d11, [sp, #16]
    stp d12, d13, [sp, #32]
    stp d14, d15, [sp, #48]
    stp x19, x20, [sp, #64]
    stp x21, x22, [sp, #80]
    stp x23, x24, [sp, #96]
    stp x25, x26, [sp, #112]
    stp x27, x28, [sp, #128]
    stp x29, x30, [sp, #144]
    /* Where each register lives relative to the CFA (sp + 176). The same
     * shape is found on the resumed stack, so these stay true after the
     * stack pointer is swapped. */
    .cfi_offset d8, -176
    .cfi_offset d9, -168
    .cfi_offset d10, -160
    .cfi_offset d11, -152
    .cfi_offset d12, -144
    .cfi_offset d13, -136
    .cfi_offset d14, -128
    .cfi_offset d15, -120
    .cfi_offset x19, -112
    .cfi_offset x20, -104
    .cfi_offset x21, -96
    .cfi_offset x22, -88
    .cfi_offset x23, -80
    .cfi_offset x24, -72
    .cfi_offset x25, -64
    .cfi_offset x26, -56
    .cfi_offset x27, -48
    .cfi_offset x28, -40
    .cfi_offset x29, -32
    .cfi_offset x30, -24
    mrs x9, fpcr
    str x9, [sp, #GREENLET_FRAME_FPCR]

    /* The switch proper: publish our frame, adopt theirs. */
    mov x11, sp
    str x11, [x2]
    mov sp, x1

    cmp x9, x10
    b.ne 2f
1:
    .cfi_remember_state
    ldp d8, d9, [sp, #0]
    ldp d10, d11, [sp, #16]
    ldp d12, d13, [sp, #32]
    ldp d14, d15, [sp, #48]
    ldp x19, x20, [sp, #64]
    ldp x21, x22, [sp, #80]
    ldp x23, x24, [sp, #96]
    ldp x25, x26, [sp, #112]
    ldp x27, x28, [sp, #128]
    ldp x29, x30, [sp, #144]
    add sp, sp, #GREENLET_FRAME_SIZE
    .cfi_def_cfa_offset 0
    .cfi_restore d8
    .cfi_restore d9
    .cfi_restore d10
    .cfi_restore d11
    .cfi_restore d12
    .cfi_restore d13
    .cfi_restore d14
    .cfi_restore d15
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    ret
2:
    /* Out of line: the resumed context runs with a different FPCR. */
    .cfi_restore_state
    msr fpcr, x10
    b 1b
FUNCTION_END(switch)

/*
 * greenlet_trampoline: never called; a fresh stack's initial frame "returns"
 * here from greenlet_switch (its x30 slot holds this address).
 *
 * On entry:  x0  = the word passed to the first switch into this stack;
 *            x19 = entry, an `extern "C" fn(usize, *mut u8) -> !`;
 *            x20 = data, the entry's second argument;
 *            x29 = 0, so frame-pointer walkers stop here too;
 *            sp  = 16-byte aligned.
 * On exit:   never returns; `entry` must switch away for good.
 *
 * The return address (x30) is marked undefined: this is the root of the
 * greenlet's call stack and unwinders stop here cleanly.
 */
FUNCTION_BEGIN(trampoline)
    .cfi_undefined x30
    mov x1, x20
    blr x19
    /* `entry` returned, which its contract forbids. */
    brk #1
FUNCTION_END(trampoline)

GNU_STACK_NOTE
