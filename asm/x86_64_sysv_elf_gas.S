/*
 * x86_64_sysv_elf_gas.S: the context switch for x86_64, System V ABI, ELF.
 *
 * Two entry points:
 *   greenlet_switch      save the running context, resume another, pass a word
 *   greenlet_trampoline  the first code a fresh stack runs; calls the entry
 *
 * The saved frame (see x86_64_frame.h for the table the Rust side checks):
 *
 *       +64  +-----------------------------+  <- stack pointer before the call
 *       +56  | return address              |     pushed by `call`
 *       +48  | rbp                         |
 *       +40  | rbx                         |
 *       +32  | r12                         |
 *       +24  | r13                         |
 *       +16  | r14                         |
 *       +8   | r15                         |
 *       +0   | MXCSR | x87 CW | unused     |  <- saved stack pointer
 *            +-----------------------------+
 *
 * Why the floating-point control state is in the frame: the ABI makes MXCSR's
 * control bits and the x87 control word callee-saved, so a greenlet that sets
 * a rounding mode must not see it leak into the greenlet it switches to. Why
 * it is compared before it is loaded: `ldmxcsr` and `fldcw` are serialising
 * on many cores and would cost more than the rest of the switch together;
 * storing is cheap, and the control state almost never differs between two
 * greenlets, so two predicted compare-and-branches keep the ABI's promise at
 * a fraction of the price.
 */
#include "common.h"
#include "x86_64_frame.h"

/* MXCSR bits 6-15: DAZ, the exception masks, rounding control, FZ. */
#define GREENLET_MXCSR_CONTROL_MASK 0xFFC0

/*
 * usize greenlet_switch(usize arg, void *to, void **save)
 *
 * On entry:  rdi = arg, the word handed to the resumed context;
 *            rsi = to, a saved stack pointer (a frame laid out as above,
 *                  produced by an earlier greenlet_switch or by the Rust
 *                  initial-frame writer for a fresh stack);
 *            rdx = save, where the current context's stack pointer goes.
 * On exit:   (when this context is itself resumed, possibly much later)
 *            rax = the word the resuming side passed as its arg.
 * Clobbers:  rcx, r9, r10, r11 and everything else the ABI lets a call clobber;
 *            the callee-saved set is preserved across the (possibly very
 *            long) call.
 * Alignment: `to` must be 16-byte aligned, as every saved frame is.
 */
FUNCTION_BEGIN(switch)
    /* Our x87 control word, stored first, into the red zone where it will
     * be the frame's +4 once the pushes below are done (entry rsp - 64 + 8
     * + 4 = rsp - 52). Reading back what `fnstcw` stored is slow (its store
     * does not forward to a load for some 30 cycles), so the store goes
     * first and the read comes last, after the pops. */
    fnstcw GREENLET_FRAME_FP_CONTROL + 4 - (GREENLET_FRAME_SIZE - 8)(%rsp)
    /* The resumed context's control state, read before we store anything
     * else. Both contexts' frames usually sit at the same offset in their
     * pages, so a load from theirs issued after our stores looks like it
     * could depend on them (the CPU compares only the low 12 address bits)
     * and waits for them: several times slower. */
    movl GREENLET_FRAME_FP_CONTROL(%rsi), %r9d
    movzwl GREENLET_FRAME_FP_CONTROL + 4(%rsi), %r11d

    /* CFA = rsp + 8 here; each push moves it and records where a register
     * lives, so an unwinder stopped anywhere below finds them. Because the
     * resumed stack holds a frame of exactly this shape, the same CFI stays
     * correct after the stack pointer is swapped. */
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    /* Not a push: the slot already holds our control word at +4. MXCSR
     * goes to +0 and is read straight back (`stmxcsr` forwards quickly). */
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr GREENLET_FRAME_FP_CONTROL(%rsp)
    movl GREENLET_FRAME_FP_CONTROL(%rsp), %ecx

    /* The switch proper: publish our frame, adopt theirs. */
    movq %rsp, (%rdx)
    movq %rsp, %r10
    movq %rsi, %rsp
    movq %rdi, %rax

    /* Only MXCSR's control bits (6-15) are callee-saved; its status flags
     * (0-5) are caller-saved and differ all the time (any inexact float
     * operation sets one), so they must not trigger a reload. */
    xorl %ecx, %r9d
    testl $GREENLET_MXCSR_CONTROL_MASK, %r9d
    jne 2f
1:
    .cfi_remember_state
    addq $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    /* Our control word, stored at the top, is old enough to read now. */
    cmpw GREENLET_FRAME_FP_CONTROL + 4(%r10), %r11w
    jne 3f
4:
    /* Not `ret`: the return-stack predictor expects a return to our own
     * caller, and a switch returns to another context's, so `ret`
     * mispredicts on every switch (measured here: 39 ns a round trip with
     * `ret`, a few with this). An indirect jump is predicted from the
     * branch history instead, which learns a switch's alternating targets.
     * The resume point is a return address, so this needs no `endbr64`
     * landing pad as long as user-space IBT is off, which Linux does not
     * offer. */
    popq %rcx
    .cfi_adjust_cfa_offset -8
    .cfi_register %rip, %rcx
    jmpq *%rcx
2:
    /* Out of line: the resumed context runs with a different rounding mode
     * or exception mask, so load its MXCSR before returning into it. */
    .cfi_restore_state
    .cfi_remember_state
    ldmxcsr GREENLET_FRAME_FP_CONTROL(%rsp)
    jmp 1b
3:
    /* Out of line: a different x87 control word. rsp already points at the
     * return address; rsi still points at the resumed frame. */
    .cfi_restore_state
    .cfi_adjust_cfa_offset -(GREENLET_FRAME_SIZE - 8)
    .cfi_restore %r15
    .cfi_restore %r14
    .cfi_restore %r13
    .cfi_restore %r12
    .cfi_restore %rbx
    .cfi_restore %rbp
    fldcw GREENLET_FRAME_FP_CONTROL + 4(%rsi)
    jmp 4b
FUNCTION_END(switch)

/*
 * greenlet_trampoline: never called; greenlet_switch jumps here through the
 * return-address slot of a fresh stack's initial frame.
 *
 * On entry:  rax = the word passed to the first switch into this stack;
 *            r12 = entry, an `extern "C" fn(usize, *mut u8) -> !`;
 *            r13 = data, the entry's second argument;
 *            rbp = 0, so frame-pointer walkers stop here too;
 *            rsp = 16-byte aligned (the initial frame is placed so), which
 *                  makes rsp + 8 aligned inside `entry`, as the ABI asks.
 * On exit:   never returns; `entry` must switch away for good.
 *
 * The return address is marked undefined: this is the root of the
 * greenlet's call stack, and DWARF unwinders (panics, backtraces, gdb) stop
 * here cleanly instead of walking into the garbage above the frame.
 */
FUNCTION_BEGIN(trampoline)
    .cfi_undefined %rip
    movq %rax, %rdi
    movq %r13, %rsi
    callq *%r12
    /* `entry` returned, which its contract forbids: trap rather than run off
     * the end of the stack. */
    ud2
FUNCTION_END(trampoline)

GNU_STACK_NOTE
