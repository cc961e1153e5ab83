//! The per-thread stack pool: stacks of finished greenlets wait here for the
//! next greenlet of the same size, so the steady state makes no system call;
//! new stacks are carved out of slabs that grow geometrically, so a million
//! live greenlets take a few hundred mappings, not a million.
//!
//! Invariants: the pool is only touched by its own thread (a thread-local);
//! it never keeps more free stacks than its limit; a stack that went deeper
//! than the release threshold gives its lower pages back to the kernel before
//! it is pooled, so the pool does not pin memory; after the thread's pool is
//! torn down, stacks returned late (from other thread-local destructors) are
//! released directly.

use super::mmap::{Slab, Stack, StackError, checked_usable, slab_count, stack_count};
use core::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

/// Free stacks kept per thread unless `set_pool_limit` says otherwise.
const DEFAULT_LIMIT: usize = 1024;
/// Depth past which a returned stack's lower pages are released (bytes).
const DEFAULT_RELEASE_THRESHOLD: usize = 64 * 1024;
/// The first slab of a size class spans about this much address space; each
/// later one doubles, up to `MAX_SLAB_BYTES`.
const FIRST_SLAB_BYTES: usize = 1 << 20;
const MAX_SLAB_BYTES: usize = 64 << 20;
const MAX_SLAB_SLOTS: usize = 4096;

/// The stacks of one usable size.
struct Class {
    usable: usize,
    free: Vec<Stack>,
    /// The slab new stacks are carved from.
    carving: Option<Rc<Slab>>,
    slabs_made: u32,
}

struct Pool {
    classes: Vec<Class>,
    /// The class used last: most programs use one size, so it is checked
    /// before the search.
    last: usize,
    /// The size (as requested, before rounding) that `take` last served
    /// from class `last`, 0 if none: a request of this size goes straight
    /// to that class, without rounding or searching.
    last_size: usize,
    free_total: usize,
    limit: usize,
    release_threshold: usize,
}

std::thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            classes: Vec::new(),
            last: 0,
            last_size: 0,
            free_total: 0,
            limit: DEFAULT_LIMIT,
            release_threshold: DEFAULT_RELEASE_THRESHOLD,
        })
    };
}

impl Pool {
    #[inline]
    fn class(&mut self, usable: usize) -> &mut Class {
        if self
            .classes
            .get(self.last)
            .is_some_and(|c| c.usable == usable)
        {
            return &mut self.classes[self.last];
        }
        self.find_class(usable)
    }

    #[cold]
    fn find_class(&mut self, usable: usize) -> &mut Class {
        let index = match self.classes.iter().position(|c| c.usable == usable) {
            Some(i) => i,
            None => {
                self.classes.push(Class {
                    usable,
                    free: Vec::new(),
                    carving: None,
                    slabs_made: 0,
                });
                self.classes.len() - 1
            }
        };
        if self.last != index {
            self.last = index;
            self.last_size = 0;
        }
        &mut self.classes[index]
    }
}

impl Class {
    fn carve(&mut self, requested: usize) -> Result<Stack, StackError> {
        if let Some(slab) = &self.carving
            && !slab.is_exhausted()
        {
            return slab.carve(requested);
        }
        let stride = self.usable + super::page_size();
        let bytes = (FIRST_SLAB_BYTES << self.slabs_made.min(6)).min(MAX_SLAB_BYTES);
        let slots = (bytes / stride).clamp(1, MAX_SLAB_SLOTS);
        let slab = Slab::new(self.usable, slots, requested)?;
        self.slabs_made += 1;
        let stack = slab.carve(requested);
        self.carving = Some(slab);
        stack
    }
}

/// A stack of at least `size` usable bytes: a pooled one of the same rounded
/// size if there is one, otherwise one carved from a slab.
#[inline]
pub(crate) fn take(size: usize) -> Result<Stack, StackError> {
    match take_fast(size) {
        Some(stack) => Ok(stack),
        None => take_slow(size),
    }
}

/// A free stack for a request of the size served last, if the pool has one.
#[inline(always)]
fn take_fast(size: usize) -> Option<Stack> {
    POOL.try_with(|pool| {
        let mut pool = pool.try_borrow_mut().ok()?;
        // `last_size` is never 0 once set, and 0 is not a valid request.
        if pool.last_size != size {
            return None;
        }
        let last = pool.last;
        let stack = pool.classes.get_mut(last)?.free.pop()?;
        pool.free_total -= 1;
        Some(stack)
    })
    .ok()
    .flatten()
}

#[cold]
#[inline(never)]
fn take_slow(size: usize) -> Result<Stack, StackError> {
    let usable = checked_usable(size)?;
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.limit == 0 {
            // No pooling at all: every stack is a mapping of its own.
            return Stack::new(size);
        }
        let class = pool.class(usable);
        let stack = match class.free.pop() {
            Some(stack) => {
                pool.free_total -= 1;
                Ok(stack)
            }
            None => class.carve(size),
        };
        // `class` made this size's class the last one used.
        pool.last_size = size;
        stack
    })
    .unwrap_or_else(|_| Stack::new(size))
}

/// Returns a stack to this thread's pool. `deepest` is the lowest stack
/// address the greenlet was seen using (0 if unknown); pages below the
/// release threshold are given back first. If the pool is full or torn
/// down, the stack is dropped (its slab unmapped once all its stacks are).
#[inline]
pub(crate) fn give_back(stack: Stack, deepest: usize) {
    // Fast path: a shallow stack of the size used last, room in the pool.
    let rest = POOL.try_with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            return Some(stack);
        };
        let top = stack.top().as_ptr() as usize;
        if pool.free_total >= pool.limit || top - deepest.min(top) > pool.release_threshold {
            return Some(stack);
        }
        let last = pool.last;
        match pool.classes.get_mut(last) {
            Some(class) if class.usable == stack.len() => {
                class.free.push(stack);
                pool.free_total += 1;
                None
            }
            _ => Some(stack),
        }
    });
    if let Ok(Some(stack)) = rest {
        give_back_slow(stack, deepest);
    }
}

#[cold]
#[inline(never)]
fn give_back_slow(stack: Stack, deepest: usize) {
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.free_total >= pool.limit {
            return; // `stack` drops here.
        }
        let top = stack.top().as_ptr() as usize;
        let threshold = pool.release_threshold;
        if deepest != 0 && top - deepest > threshold {
            stack.release_below(top - threshold);
        }
        pool.free_total += 1;
        let usable = stack.len();
        pool.class(usable).free.push(stack);
    });
}

/// Sets how many free stacks this thread keeps for reuse (default 1024),
/// dropping any above the new limit. With a limit of 0 every greenlet gets
/// a fresh mapping and releases it when it ends.
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
        let mut excess = pool.free_total.saturating_sub(limit);
        pool.free_total -= excess;
        for class in &mut pool.classes {
            while excess > 0 && class.free.pop().is_some() {
                excess -= 1;
            }
            if limit == 0 {
                class.carving = None;
            }
        }
    });
}

/// Sets how deep (in bytes from its top) a stack may have been used before
/// the pool gives its lower pages back to the kernel on return (default
/// 64 KiB). Depth is measured at the greenlet's switches.
///
/// # Examples
///
/// ```
/// greenlet::stack::set_release_threshold(32 * 1024);
/// ```
pub fn set_release_threshold(bytes: usize) {
    let _ = POOL.try_with(|pool| pool.borrow_mut().release_threshold = bytes);
}

/// Counts of stacks, for leak checks and monitoring.
///
/// # Examples
///
/// ```
/// let before = greenlet::stack::pool_stats();
/// greenlet::Greenlet::new(|()| Ok(())).switch::<(), ()>(())?;
/// let after = greenlet::stack::pool_stats();
/// assert!(after.mapped >= before.mapped && after.pooled >= 1);
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Stacks of this thread right now, in use or pooled.
    pub mapped: usize,
    /// Free stacks waiting in this thread's pool.
    pub pooled: usize,
    /// Slabs (memory mappings holding stacks) in the whole process.
    pub slabs: usize,
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
    let pooled = POOL.try_with(|p| p.borrow().free_total).unwrap_or(0);
    PoolStats {
        mapped: stack_count(),
        pooled,
        slabs: slab_count(),
    }
}
