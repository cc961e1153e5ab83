/*
 * x86_64_frame.h: the one source of truth for the saved frame of a suspended
 * greenlet on x86_64 (System V ABI).
 *
 * build.rs reads every `#define GREENLET_FRAME_*` line below and turns it into
 * a Rust constant; src/arch/x86_64.rs asserts at compile time that its
 * #[repr(C)] initial frame has exactly these offsets. Change a number here and
 * the Rust build fails until the Rust side agrees.
 *
 *   saved stack pointer -> +--------------------------+  lower addresses
 *                     +0  | MXCSR (32 bits)          |  stmxcsr
 *                     +4  | x87 control word (16)    |  fnstcw
 *                     +6  | unused (16 bits)         |  whatever was there
 *                     +8  | r15                      |
 *                     +16 | r14                      |
 *                     +24 | r13                      |
 *                     +32 | r12                      |
 *                     +40 | rbx                      |
 *                     +48 | rbp                      |
 *                     +56 | return address           |  where the switch resumes
 *                     +64 +--------------------------+  higher addresses
 *
 * A fresh stack gets the same frame, written by Rust, whose return address is
 * greenlet_trampoline and whose r12/r13 carry the entry function and its data.
 */
#define GREENLET_FRAME_FP_CONTROL 0
#define GREENLET_FRAME_R15 8
#define GREENLET_FRAME_R14 16
#define GREENLET_FRAME_R13 24
#define GREENLET_FRAME_R12 32
#define GREENLET_FRAME_RBX 40
#define GREENLET_FRAME_RBP 48
#define GREENLET_FRAME_RETURN_ADDRESS 56
#define GREENLET_FRAME_SIZE 64
