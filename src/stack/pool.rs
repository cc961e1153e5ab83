//! The per-thread stack pool: stacks of a finished greenlet wait here for the
//! next greenlet of the same size, so the steady state makes no system call.
//!
//! Invariants: the pool is only touched by its own thread (it lives in a
//! thread-local); it never holds more than its limit; after the thread's
//! pool is torn down, stacks returned late (from other thread-local
//! destructors) are unmapped directly instead of pooled.

use super::mmap::{Stack, StackError, mapped_count};
use core::cell::RefCell;
use std::vec::Vec;

/// Stacks kept per thread when no limit is set.
const DEFAULT_LIMIT: usize = 1024;

struct Pool {
    /// Free stacks, each with its usable size. Most programs use one or two
    /// sizes, so a short list beats a map.
    free: Vec<Stack>,
    limit: usize,
}

std::thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { free: Vec::new(), limit: DEFAULT_LIMIT })
    };
}

/// A stack of at least `size` usable bytes: a pooled one of exactly the
/// rounded size if there is one, otherwise a new mapping.
pub(crate) fn take(size: usize) -> Result<Stack, StackError> {
    let page = super::page_size();
    let rounded = size.div_ceil(page) * page;
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let index = pool.free.iter().rposition(|s| s.len() == rounded)?;
            Some(pool.free.swap_remove(index))
        })
        .ok()
        .flatten();
    match pooled {
        Some(stack) => Ok(stack),
        None => Stack::new(size),
    }
}

/// Returns a stack to this thread's pool, or unmaps it if the pool is full or
/// already torn down.
pub(crate) fn give_back(stack: Stack) {
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.free.len() < pool.limit {
            pool.free.push(stack);
        }
        // else: `stack` drops here and is unmapped.
    });
}

/// Sets how many free stacks this thread keeps for reuse (default 1024),
/// unmapping any above the new limit.
///
/// # Examples
///
/// ```
/// greenlet::stack::set_pool_limit(16);
/// assert!(greenlet::stack::pool_stats().pooled <= 16);
/// ```
pub fn set_pool_limit(limit: usize) {
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.limit = limit;
        let keep = pool.free.len().min(limit);
        pool.free.truncate(keep);
    });
}

/// Counts of stacks, for leak checks and monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Stacks mapped in the whole process right now, in use or pooled.
    pub mapped: usize,
    /// Free stacks waiting in this thread's pool.
    pub pooled: usize,
}

/// Current stack counts.
///
/// # Examples
///
/// ```
/// let stats = greenlet::stack::pool_stats();
/// assert!(stats.mapped >= stats.pooled);
/// ```
pub fn pool_stats() -> PoolStats {
    let pooled = POOL.try_with(|p| p.borrow().free.len()).unwrap_or(0);
    PoolStats { mapped: mapped_count(), pooled }
}
