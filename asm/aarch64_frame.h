/*
 * aarch64_frame.h: the one source of truth for the saved frame of a suspended
 * greenlet on aarch64 (AAPCS64).
 *
 * build.rs reads every `#define GREENLET_FRAME_*` line below and turns it into
 * a Rust constant; src/arch/aarch64.rs asserts at compile time that its
 * #[repr(C)] initial frame has exactly these offsets.
 *
 *   saved stack pointer -> +--------------------------+  lower addresses
 *                     +0  | FPCR | x19               |
 *                     +16 | x29 (fp) | x30 (lr)      |  lr: where `ret` resumes
 *                     +32 +--------------------------+  higher addresses
 *
 * x20-x28 and d8-d15 are not in the frame: the `asm!` block that calls the
 * switch declares them clobbered, and the compiler saves the live ones (see
 * the top of aarch64_aapcs_elf_gas.S). A fresh stack gets the same frame,
 * written by Rust, whose x30 is greenlet_trampoline and whose x19/x29 carry
 * the entry function and its data.
 */
#define GREENLET_FRAME_FPCR 0
#define GREENLET_FRAME_X19 8
#define GREENLET_FRAME_X29 16
#define GREENLET_FRAME_X30 24
#define GREENLET_FRAME_SIZE 32
#define GREENLET_FRAME_SAVED_POINTER 0
