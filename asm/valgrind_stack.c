/*
 * valgrind_stack.c: valgrind's stack-registration client requests, built
 * only with the `valgrind` feature. The requests are magic instruction
 * sequences that do nothing outside valgrind; valgrind.h is the one
 * authoritative way to emit them, hence this file instead of Rust asm.
 */
#include <valgrind/valgrind.h>

unsigned greenlet_valgrind_stack_register(unsigned long start, unsigned long end) {
    return VALGRIND_STACK_REGISTER(start, end);
}

void greenlet_valgrind_stack_deregister(unsigned id) {
    VALGRIND_STACK_DEREGISTER(id);
}
