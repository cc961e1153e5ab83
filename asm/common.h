/*
 * common.h: boilerplate shared by every greenlet assembly file.
 *
 * Each entry point is written between FUNCTION_BEGIN and FUNCTION_END so the
 * symbol prefix, visibility, type, size and CFI bracketing are identical in
 * every file and cannot drift. The files are preprocessed by the C compiler
 * (they end in capital .S), which is what lets them include this header and
 * the per-architecture frame tables.
 */
#ifndef GREENLET_COMMON_H
#define GREENLET_COMMON_H

/* Every exported symbol carries the crate's prefix so it cannot collide with
 * another coroutine library linked into the same program. greenlet-bench
 * builds these files a second time under another prefix (see
 * GREENLET_BENCH_WITHOUT_FP_CONTROL in the switch files). */
#ifndef GREENLET_SYMBOL_PREFIX
#define GREENLET_SYMBOL_PREFIX greenlet_
#endif
#define GREENLET_PASTE(a, b) a##b
#define GREENLET_PASTE_EXPANDED(a, b) GREENLET_PASTE(a, b)
#define SYMBOL(name) GREENLET_PASTE_EXPANDED(GREENLET_SYMBOL_PREFIX, name)

/* Hidden: the symbols are only called from the Rust side of this crate, so
 * they never need to go through the PLT. */
#define FUNCTION_BEGIN(name)          \
    .text;                            \
    .globl SYMBOL(name);              \
    .hidden SYMBOL(name);             \
    .type SYMBOL(name), %function;    \
    .p2align 4;                       \
SYMBOL(name):                         \
    .cfi_startproc

#define FUNCTION_END(name)            \
    .cfi_endproc;                     \
    .size SYMBOL(name), . - SYMBOL(name)

/* No executable stack: without this note the linker would make the whole
 * program's stack executable. */
#define GNU_STACK_NOTE .section .note.GNU-stack, "", %progbits

#endif
