/*
 * x86_64_sysv_elf_gas.S: the context switch for x86_64, System V ABI, ELF.
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
 * Who saves what. A switch must preserve the whole callee-saved set of the
 * System V ABI: rbx, rbp, r12-r15, rsp, MXCSR's control bits and the x87
 * control word. greenlet_switch is only ever called from one place, the
 * `asm!` block in src/raw.rs (`raw::switch`), and the work is split:
 *
 *   - this file saves what the compiler cannot: rbx and rbp (LLVM reserves
 *     them, so an `asm!` block may not declare them clobbered), the stack
 *     pointer, the floating-point control state and the resume address;
 *   - the `asm!` block declares r12-r15 (and every caller-saved register)
 *     clobbered, so the compiler saves those of them that hold live values,
 *     once per function around all its switches rather than on every switch,
 *     and keeps what it can in the caller-saved registers it has anyway.
 *
 * The callee-saved canary test (tests/raw_switch.rs) checks the whole set
 * through `raw::switch` from `asm!`, on both architectures.
 *
 * The saved frame (see x86_64_frame.h for the table the Rust side checks):
 *
 *       +32  +-----------------------------+  <- stack pointer before the call
 *       +24  | resume address              |  <- saved stack pointer, pushed
 *       +16  | rbp                         |     by `call`
 *       +8   | rbx                         |
 *       +0   | MXCSR | x87 CW | unused     |
 *            +-----------------------------+
 *
 * The saved stack pointer is the suspended context's own rsp: the frame
 * below it is written in its red zone, and resuming it is one move of rsp
 * and a jump through the resume address, with no stack adjustment.
 *
 * Why the floating-point control state is in the frame: the ABI makes MXCSR's
 * control bits and the x87 control word callee-saved, so a greenlet that sets
 * a rounding mode must not see it leak into the greenlet it switches to. Why
 * it is compared before it is loaded: `ldmxcsr` and `fldcw` are serialising
 * on many cores and cost more than the rest of the switch together, and the
 * control state almost never differs between two greenlets, so two predicted
 * compare-and-branches keep the ABI's promise at a fraction of the price.
 * Reading the state is not free either: the lines marked
 * GREENLET_BENCH_WITHOUT_FP_CONTROL are 18 of a round trip's 54 instructions
 * (callgrind), and on the Xeon this was tuned on `stmxcsr` alone costs about
 * 0.8 ns of a 5.4 ns round trip, `fnstcw` about 0.1 ns. greenlet-bench builds
 * this file a second time without them (`switch/greenlet-raw-nofp`, never
 * shipped) to show that price, and the MXCSR-differs case, side by side.
 */
#include "common.h"
#include "x86_64_frame.h"

/* MXCSR bits 6-15: DAZ, the exception masks, rounding control, FZ. */
#define GREENLET_MXCSR_CONTROL_MASK 0xFFC0

/*
 * greenlet_switch: a private calling convention, for the `asm!` block in
 * src/raw.rs only.
 *
 * On entry:  rax = arg, the word handed to the resumed context;
 *            rsi = to, a saved stack pointer (pointing at the resume
 *                  address of a frame laid out as above,
 *                  produced by an earlier greenlet_switch or by the Rust
 *                  initial-frame writer for a fresh stack);
 *            rdx = save, where the current context's stack pointer goes.
 * On exit:   (when this context is itself resumed, possibly much later)
 *            rax = the word the resuming side passed as its arg.
 * Preserves: rbx, rbp, rsp, MXCSR's control bits, the x87 control word.
 * Clobbers:  every other general-purpose and vector register, r12-r15
 *            included, and the flags; the caller declares them.
 * Alignment: rsp is 16-byte aligned before the `call`, as the ABI has
 *            it, so every saved stack pointer is 8 past a multiple of 16
 *            and every frame starts on one.
 */
FUNCTION_BEGIN(switch)
    /* The frame is built in place below the return address the `call`
     * pushed, without moving rsp (the 128-byte red zone below rsp is ours:
     * signal handlers skip it), and the saved stack pointer is rsp itself,
     * which points at that return address: a field of the frame is at
     * rsp + (its offset - GREENLET_FRAME_RETURN_ADDRESS). Resuming sets rsp
     * once, to just above the resumed frame, where its `call` left it, and
     * jumps through the return address below it: no pops, no adds.
     *
     * Our x87 control word first: reading back what `fnstcw` stored is slow
     * (the store does not forward to a load for a few dozen cycles), so the
     * store goes first and the read comes last, after the stack is
     * swapped. */
#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
    fnstcw GREENLET_FRAME_FP_CONTROL + 4 - GREENLET_FRAME_RETURN_ADDRESS(%rsp)
    /* The resumed context's control state, read before we store anything
     * else. Both contexts' frames often sit at the same offset in their
     * pages, so a load from theirs issued after our stores looks like it
     * could depend on them (the CPU compares only the low 12 address bits)
     * and waits for them. */
    movl GREENLET_FRAME_FP_CONTROL - GREENLET_FRAME_RETURN_ADDRESS(%rsi), %r9d
    movzwl GREENLET_FRAME_FP_CONTROL + 4 - GREENLET_FRAME_RETURN_ADDRESS(%rsi), %r11d
#endif

    /* CFA = rsp + 8 here, and stays so until the swap; each register's
     * slot is recorded once it is stored, so an unwinder stopped anywhere
     * below finds them. The resumed stack holds a frame of exactly this
     * shape, so the same rules hold after the swap. */
    movq %rbp, GREENLET_FRAME_RBP - GREENLET_FRAME_RETURN_ADDRESS(%rsp)
    .cfi_offset %rbp, GREENLET_FRAME_RBP - GREENLET_FRAME_SIZE
    movq %rbx, GREENLET_FRAME_RBX - GREENLET_FRAME_RETURN_ADDRESS(%rsp)
    .cfi_offset %rbx, GREENLET_FRAME_RBX - GREENLET_FRAME_SIZE
#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
    stmxcsr GREENLET_FRAME_FP_CONTROL - GREENLET_FRAME_RETURN_ADDRESS(%rsp)
    /* Our frame, to read our control state back from after the swap. */
    movq %rsp, %r10
#endif

    /* The switch proper: publish our stack pointer, adopt theirs (as it
     * was before their `call`: their CFA). */
    movq %rsp, (%rdx)
    leaq GREENLET_FRAME_SIZE - GREENLET_FRAME_RETURN_ADDRESS(%rsi), %rsp
    .cfi_def_cfa_offset 0

#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
    /* Only MXCSR's control bits (6-15) are callee-saved; its status flags
     * (0-5) are caller-saved and differ all the time (any inexact float
     * operation sets one), so they must not trigger a reload. Our MXCSR is
     * read back from the frame (`stmxcsr` forwards quickly). */
    xorl GREENLET_FRAME_FP_CONTROL - GREENLET_FRAME_RETURN_ADDRESS(%r10), %r9d
    testl $GREENLET_MXCSR_CONTROL_MASK, %r9d
    jne 2f
1:
    /* Our control word, stored at the top, is old enough to read now. */
    cmpw GREENLET_FRAME_FP_CONTROL + 4 - GREENLET_FRAME_RETURN_ADDRESS(%r10), %r11w
    jne 3f
#endif
4:
    /* The resumed frame lies just below rsp now, in the red zone, where
     * nothing can overwrite it before it is read. */
    .cfi_remember_state
    movq GREENLET_FRAME_RBX - GREENLET_FRAME_SIZE(%rsp), %rbx
    .cfi_restore %rbx
    movq GREENLET_FRAME_RBP - GREENLET_FRAME_SIZE(%rsp), %rbp
    .cfi_restore %rbp
    /* Not `ret`: the return-stack predictor expects a return to our own
     * caller, and a switch resumes another context, so `ret` mispredicts on
     * every switch (measured here, in a C ping-pong that leaves out the FP
     * state: 32 ns a round trip with `ret`, 5.4 ns with this). An indirect jump is predicted from the branch history
     * instead, which learns a switch's alternating targets. The resume
     * address is read from just below rsp, in the red zone. The resume
     * point is a return address, so this needs no `endbr64` landing pad as
     * long as user-space IBT is off, which Linux does not offer. */
    jmpq *GREENLET_FRAME_RETURN_ADDRESS - GREENLET_FRAME_SIZE(%rsp)
#ifndef GREENLET_BENCH_WITHOUT_FP_CONTROL
2:
    /* Out of line: the resumed context runs with a different rounding mode
     * or exception mask, so load its MXCSR before resuming it. */
    .cfi_restore_state
    .cfi_remember_state
    ldmxcsr GREENLET_FRAME_FP_CONTROL - GREENLET_FRAME_SIZE(%rsp)
    /* Without this fence, what the CPU runs ahead of a changing `ldmxcsr`
     * (here, on to the other context's next `stmxcsr`) was thrown away and
     * redone on every switch: 147 ns a round trip between two greenlets
     * with different rounding modes, 23 ns with it (5 ns with equal ones). */
    lfence
    jmp 1b
3:
    /* Out of line: a different x87 control word. */
    .cfi_restore_state
    fldcw GREENLET_FRAME_FP_CONTROL + 4 - GREENLET_FRAME_SIZE(%rsp)
    jmp 4b
#endif
FUNCTION_END(switch)

/*
 * greenlet_trampoline: never called; greenlet_switch jumps here through the
 * resume-address slot of a fresh stack's initial frame.
 *
 * On entry:  rax = the word passed to the first switch into this stack;
 *            rbx = entry, an `extern "C" fn(usize, *mut u8) -> !`;
 *            rbp = data, the entry's second argument;
 *            rsp = 16-byte aligned (the initial frame is placed so), which
 *                  makes rsp + 8 aligned inside `entry`, as the ABI asks.
 * On exit:   never returns; `entry` must switch away for good.
 *
 * The return address is marked undefined: this is the root of the
 * greenlet's call stack, and DWARF unwinders (panics, backtraces, gdb) stop
 * here cleanly instead of walking into the garbage above the frame; rbp is
 * zeroed before the call so that frame-pointer walkers stop here too.
 */
FUNCTION_BEGIN(trampoline)
    .cfi_undefined %rip
    movq %rax, %rdi
    movq %rbp, %rsi
    xorl %ebp, %ebp
    callq *%rbx
    /* `entry` returned, which its contract forbids: trap rather than run off
     * the end of the stack. */
    ud2
FUNCTION_END(trampoline)

/*
 * greenlet_probe_trampoline: like greenlet_trampoline, for a probe: a
 * context started just below a suspended context's saved frame, on the same
 * stack, to look at that context without resuming it (a backtrace of a
 * suspended greenlet). Its initial frame sits right under the suspended
 * frame, so on entry rsp points at that frame: the CFI below describes it as
 * greenlet_switch's own frame, and an unwinder walks from the probe into the
 * suspended context's call chain, down to its root. rbp is pointed at the
 * saved rbp and resume address, a valid frame record, so frame-pointer
 * walkers follow the same path.
 *
 * On entry:  rax = the word passed by the switch into the probe;
 *            rbx = entry, rbp = data (as for greenlet_trampoline);
 *            rsp = the bottom of the suspended context's saved frame
 *                  (24 bytes below its saved stack pointer).
 * On exit:   never returns; `entry` must switch away for good.
 */
FUNCTION_BEGIN(probe_trampoline)
    .cfi_def_cfa %rsp, GREENLET_FRAME_SIZE
    .cfi_offset %rip, GREENLET_FRAME_RETURN_ADDRESS - GREENLET_FRAME_SIZE
    .cfi_offset %rbp, GREENLET_FRAME_RBP - GREENLET_FRAME_SIZE
    .cfi_offset %rbx, GREENLET_FRAME_RBX - GREENLET_FRAME_SIZE
    movq %rax, %rdi
    movq %rbp, %rsi
    leaq GREENLET_FRAME_RBP(%rsp), %rbp
    callq *%rbx
    ud2
FUNCTION_END(probe_trampoline)

GNU_STACK_NOTE
