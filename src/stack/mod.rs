//! Stacks for greenlets.
//!
//! With the `std` feature, [`Stack`] is a slot of an mmap'ed slab with a guard
//! of at least one page below it (made with `MADV_GUARD_INSTALL` where the
//! kernel has it, `mprotect` otherwise: see [`guard_kind`]), committed lazily
//! by the kernel, and recycled through a per-thread pool so that creating a
//! greenlet in the steady state makes no system call. Without `std`, a [`Stack`] is memory the
//! caller supplies (or takes from the global allocator), with no guard: making one is `unsafe`.

#[cfg(feature = "std")]
mod mmap;
#[cfg(feature = "std")]
mod pool;

#[cfg(feature = "std")]
pub use mmap::{
    GuardKind, MAX_STACK_SIZE, MIN_STACK_SIZE, Stack, StackError, StackErrorKind, guard_kind,
    page_size,
};
#[cfg(feature = "std")]
pub use pool::{PoolStats, pool_stats, set_pool_limit, set_release_threshold};
#[cfg(feature = "std")]
pub(crate) use pool::{give_back, take};

#[cfg(not(feature = "std"))]
mod heap;
#[cfg(not(feature = "std"))]
pub use heap::{MAX_STACK_SIZE, MIN_STACK_SIZE, Stack, StackError, StackErrorKind};
#[cfg(not(feature = "std"))]
pub(crate) use heap::{give_back, take};

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
