/*
 * x86_64_frame.h: the one source of truth for the saved frame of a suspended
 * greenlet on x86_64 (System V ABI).
 *
 * build.rs reads every `#define GREENLET_FRAME_*` line below and turns it into
 * a Rust constant; src/arch/x86_64.rs asserts at compile time that its
 * #[repr(C)] initial frame has exactly these offsets. Change a number here and
 * the Rust build fails until the Rust side agrees.
 *
 *                          +--------------------------+  lower addresses
 *                     +0   | MXCSR (32 bits)          |  stmxcsr
 *                     +4   | x87 control word (16)    |  fnstcw
 *                     +6   | unused (16 bits)         |  whatever was there
 *                     +8   | rbx                      |
 *                     +16  | rbp                      |
 * saved stack pointer +24  | resume address           |  pushed by `call`
 *                     +32  +--------------------------+  higher addresses
 *
 * The saved stack pointer is the suspended context's rsp, which points at
 * the resume address its `call` pushed (GREENLET_FRAME_SAVED_POINTER); the
 * rest of the frame lies below it, in the red zone. Offsets here are from
 * the frame's lowest byte.
 *
 * r12-r15 are not in the frame: the `asm!` block that calls the switch
 * declares them clobbered, and the compiler saves the live ones (see the top
 * of x86_64_sysv_elf_gas.S). A fresh stack gets the same frame, written by
 * Rust, whose resume address is greenlet_trampoline and whose rbx/rbp carry
 * the entry function and its data.
 */
#define GREENLET_FRAME_FP_CONTROL 0
#define GREENLET_FRAME_RBX 8
#define GREENLET_FRAME_RBP 16
#define GREENLET_FRAME_RETURN_ADDRESS 24
#define GREENLET_FRAME_SIZE 32
#define GREENLET_FRAME_SAVED_POINTER 24
