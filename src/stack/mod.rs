//! Stacks for greenlets.
//!
//! With the `std` feature, [`Stack`] is a slot of an mmap'ed slab with a guard
//! of at least one page below it (made with `MADV_GUARD_INSTALL` where the
//! kernel has it, `mprotect` otherwise: see `guard_kind`), committed lazily
//! by the kernel, and recycled through a per-thread pool so that creating a
//! greenlet in the steady state makes no system call. Without `std`, a [`Stack`] is memory the
//! caller supplies (or takes from the global allocator), with no guard: making one is `unsafe`.
//!
//! # The stack pool (with `std`)
//!
//! Each thread has its own pool; [`set_pool_limit`] and
//! [`set_release_threshold`] configure the calling thread's only, and
//! stacks never move between threads.
//!
//! - **Taking a stack** (a greenlet is made): a free stack of the same
//!   rounded size is reused if the pool has one. When the pool has none (it
//!   is empty, or was never filled), a new stack is carved from the size's
//!   current slab, and when that slab is used up a new slab is mapped (the
//!   first spans about 1 MiB, each next one twice the previous, up to
//!   64 MiB; at least one stack, at most 4096). Running out of pooled stacks is therefore never an error; only
//!   the kernel refusing a mapping or guard is (see [`StackError`]).
//! - **Giving a stack back** (a greenlet ends or is dropped): if the pool
//!   holds fewer free stacks than its limit (default 1024), the stack is
//!   kept, after giving the pages below the release threshold (default
//!   64 KiB from its top) back to the kernel if it went deeper. If the pool
//!   is full, the stack is dropped: all its pages are given back at once
//!   (`MADV_DONTNEED`; its guard stays), and its slab is unmapped when the
//!   slab's last stack is gone. Its slot is not reused, so a slab outlives
//!   its dead slots as address space, not as memory.
//! - **Known limit**: a stack's depth is measured at its greenlet's
//!   switches (the lowest saved stack pointer), not continuously. A greenlet
//!   that goes deep and comes back up between two switches looks shallow,
//!   and its stack keeps those pages while pooled (at most its usable size
//!   per pooled stack). Dropped stacks are not affected: they give back
//!   everything. Lowering [`set_pool_limit`] bounds what the pool can pin.

#[cfg(feature = "std")]
mod mmap;
#[cfg(feature = "std")]
mod pool;

#[cfg(feature = "std")]
pub use mmap::{GuardKind, Stack, StackError, StackErrorKind, guard_kind, page_size};
#[cfg(feature = "std")]
pub use pool::{PoolStats, pool_stats, set_pool_limit, set_release_threshold};
#[cfg(feature = "std")]
pub(crate) use pool::{give_back, take, take_fast};

#[cfg(not(feature = "std"))]
mod heap;
#[cfg(not(feature = "std"))]
pub use heap::{Stack, StackError, StackErrorKind};
#[cfg(not(feature = "std"))]
pub(crate) use heap::{give_back, take};

/// The smallest usable size a greenlet stack may be given: enough for the
/// greenlet's own entry frames, a panic's unwinding, and a little user code.
/// A panic hook that prints a backtrace (`RUST_BACKTRACE=1`) needs about
/// 32 KiB of stack by itself; on a smaller stack it overflows, which is
/// reported as a greenlet stack overflow.
///
/// # Examples
///
/// ```
/// use greenlet::stack::{MIN_STACK_SIZE, Stack};
/// assert!(Stack::new(MIN_STACK_SIZE).is_ok());
/// assert!(Stack::new(MIN_STACK_SIZE - 1).is_err());
/// ```
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest usable size a greenlet stack may be given (1 TiB of address
/// space); anything above is almost certainly a unit mistake.
///
/// # Examples
///
/// ```
/// use greenlet::stack::{MAX_STACK_SIZE, Stack, StackErrorKind};
/// let e = Stack::new(MAX_STACK_SIZE + 1).unwrap_err();
/// assert_eq!(e.kind(), StackErrorKind::InvalidSize);
/// ```
pub const MAX_STACK_SIZE: usize = 1 << 40;

/// The usable size of a greenlet stack when the builder does not set one:
/// 128 KiB of address space, of which only the pages actually touched are
/// ever committed.
///
/// # Examples
///
/// ```
/// let g = greenlet::Greenlet::new(|()| Ok(()));
/// assert_eq!(g.stack_size(), greenlet::stack::DEFAULT_STACK_SIZE);
/// ```
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;
