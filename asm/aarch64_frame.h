/*
 * aarch64_frame.h: the one source of truth for the saved frame of a suspended
 * greenlet on aarch64 (AAPCS64).
 *
 * build.rs reads every `#define GREENLET_FRAME_*` line below and turns it into
 * a Rust constant; src/arch/aarch64.rs asserts at compile time that its
 * #[repr(C)] initial frame has exactly these offsets.
 *
 *   saved stack pointer -> +--------------------------+  lower addresses
 *                     +0  | d8   | d9                |
 *                     +16 | d10  | d11               |
 *                     +32 | d12  | d13               |
 *                     +48 | d14  | d15               |
 *                     +64 | x19  | x20               |
 *                     +80 | x21  | x22               |
 *                     +96 | x23  | x24               |
 *                     +112| x25  | x26               |
 *                     +128| x27  | x28               |
 *                     +144| x29 (fp) | x30 (lr)      |  lr: where `ret` resumes
 *                     +160| FPCR | zero padding      |  sp stays 16-byte aligned
 *                     +176+--------------------------+  higher addresses
 *
 * A fresh stack gets the same frame, written by Rust, whose x30 is
 * greenlet_trampoline and whose x19/x20 carry the entry function and its data.
 */
#define GREENLET_FRAME_D8 0
#define GREENLET_FRAME_X19 64
#define GREENLET_FRAME_X20 72
#define GREENLET_FRAME_X29 144
#define GREENLET_FRAME_X30 152
#define GREENLET_FRAME_FPCR 160
#define GREENLET_FRAME_SIZE 176
