//! The per-thread stack pool: stacks of finished greenlets wait here for the
//! next greenlet of the same size, so the steady state makes no system call;
//! new stacks are carved out of slabs that grow geometrically, so a million
//! live greenlets take a few hundred mappings, not a million.
//!
//! Invariants: the pool is only touched by its own thread (a thread-local);
//! it never keeps more free stacks than its limit; a stack that went deeper
//! than the release threshold gives its lower pages back to the kernel before
//! it is pooled, so the pool does not pin memory; a stack that is not pooled
//! (pool full, limit lowered, pool torn down) is dropped, and the drop gives
//! all its pages back while its slab lives on (see `Stack`'s `Drop`); after
//! the thread's pool is torn down, stacks returned late (from other
//! thread-local destructors) are released directly.
//!
//! Known limit: depth is what the greenlet's switches saw (its lowest saved
//! stack pointer), so a stack that went deep and came back up between two
//! switches is pooled with those pages still committed. Measuring it
//! otherwise costs a system call per give-back (mincore) or a probe of the
//! stack's memory; the pages are bounded by the limit times the stack size,
//! and given back when the stack is dropped.
#![allow(unsafe_code)]

use super::mmap::{Slab, Stack, StackError, checked_usable, slab_count, stack_count};
use core::cell::{Cell, RefCell};
use core::mem::MaybeUninit;
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
/// Free stacks of the hot class kept in [`Hot`]; more go to the class's
/// list.
const HOT_SLOTS: usize = 32;

/// The stacks of one usable size.
struct Class {
    usable: usize,
    free: Vec<Stack>,
    /// The slab new stacks are carved from.
    carving: Option<Rc<Slab>>,
    slabs_made: u32,
}

/// The slow half of the pool: every size class, behind a `RefCell`, in a
/// thread-local whose destructor releases them (and empties [`Hot`]).
struct Pool {
    classes: Vec<Class>,
    /// The index of the hot class (see [`Hot::usable`]), if there is one.
    last: usize,
}

/// The fast half of the pool: the counters, and a few free stacks of the
/// size class used last (the hot class: most programs use one size), in
/// plain cells of a thread-local without a destructor, so that taking and
/// giving back a stack of that size is a few loads and stores, with no
/// registration check and no `RefCell` borrow.
///
/// Invariants: `len <= HOT_SLOTS`, `slots[..len]` hold stacks (moved in,
/// each owned there), all of `usable` bytes, and `len` is 0 whenever
/// `usable` is; `usable` is only made nonzero by `Pool` (so that the
/// thread's `Pool` exists, and its destructor empties this before the
/// thread ends); `listed` counts the stacks in every class list (so the
/// pool holds `len + listed` free stacks, at most `limit`), and `cap` is
/// `min(HOT_SLOTS, limit - listed)` (0 if `listed >= limit`), kept up to
/// date by whatever changes `listed` or `limit`: a stack may go to `slots`
/// while `len < cap`, one compare for both bounds. The fast paths change
/// only `len`. After the pool's teardown, `limit`, `cap` and `usable` stay
/// 0: nothing is pooled any more.
struct Hot {
    /// The size (as requested, before rounding) that `take` last served
    /// from the hot class, 0 if none: a request of this size takes from
    /// `slots` without rounding or searching.
    size: Cell<usize>,
    /// The usable size of the hot class, 0 if none.
    usable: Cell<usize>,
    len: Cell<usize>,
    listed: Cell<usize>,
    cap: Cell<usize>,
    limit: Cell<usize>,
    release_threshold: Cell<usize>,
    slots: [Cell<MaybeUninit<Stack>>; HOT_SLOTS],
}

impl Hot {
    /// Moves the last stack out of `slots`, if any.
    #[inline(always)]
    fn pop(&self) -> Option<Stack> {
        let len = self.len.get().checked_sub(1)?;
        self.len.set(len);
        // SAFETY: `len` is below the old `len`, at most `HOT_SLOTS`, so the
        // index is in bounds; slots below the old `len` hold stacks, and
        // slot `len` is no longer counted, so its stack is moved out exactly
        // once.
        Some(unsafe {
            self.slots
                .get_unchecked(len)
                .replace(MaybeUninit::uninit())
                .assume_init()
        })
    }

    /// Free stacks in the pool, here and in the class lists.
    fn free_total(&self) -> usize {
        self.len.get() + self.listed.get()
    }

    /// Sets the count of listed stacks, and `cap` to match.
    fn set_listed(&self, listed: usize) {
        self.listed.set(listed);
        self.cap
            .set(HOT_SLOTS.min(self.limit.get().saturating_sub(listed)));
    }
}

std::thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            classes: Vec::new(),
            last: 0,
        })
    };
    static HOT: Hot = const {
        Hot {
            size: Cell::new(0),
            usable: Cell::new(0),
            len: Cell::new(0),
            listed: Cell::new(0),
            cap: Cell::new(if DEFAULT_LIMIT < HOT_SLOTS { DEFAULT_LIMIT } else { HOT_SLOTS }),
            limit: Cell::new(DEFAULT_LIMIT),
            release_threshold: Cell::new(DEFAULT_RELEASE_THRESHOLD),
            slots: [const { Cell::new(MaybeUninit::uninit()) }; HOT_SLOTS],
        }
    };
}

impl Pool {
    /// The index of the class of `usable` bytes, made if needed.
    fn find_class(&mut self, usable: usize) -> usize {
        match self.classes.iter().position(|c| c.usable == usable) {
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
        }
    }

    /// Makes the class of `usable` bytes the hot one, moving the stacks of
    /// the previous hot class from `hot` to that class's list.
    fn make_hot(&mut self, hot: &Hot, usable: usize) -> usize {
        if hot.usable.get() == usable {
            return self.last;
        }
        let index = self.find_class(usable);
        let old = self.last;
        // Uncounted before they move: should a push fail, they leak.
        let len = hot.len.replace(0);
        for slot in &hot.slots[..len] {
            // SAFETY: slots below `len` held stacks, no longer counted
            // (`len` is 0), so each is moved out exactly once.
            let stack = unsafe { slot.replace(MaybeUninit::uninit()).assume_init() };
            self.classes[old].free.push(stack);
            hot.set_listed(hot.listed.get() + 1);
        }
        self.last = index;
        hot.usable.set(usable);
        hot.size.set(0);
        index
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The thread ends: the stacks in `HOT` go (the class lists drop with
        // `self`), and nothing is pooled any more.
        let _ = HOT.try_with(|hot| {
            hot.limit.set(0);
            hot.usable.set(0);
            hot.size.set(0);
            hot.set_listed(0);
            while hot.pop().is_some() {}
        });
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

/// A free stack for a request of the size served last, if `HOT` has one.
#[inline(always)]
pub(crate) fn take_fast(size: usize) -> Option<Stack> {
    HOT.try_with(|hot| {
        // `size` is 0 only while `usable` is, when `slots` is empty.
        if hot.size.get() != size {
            return None;
        }
        hot.pop()
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
        HOT.with(|hot| {
            if hot.limit.get() == 0 {
                // No pooling at all: every stack is a mapping of its own.
                return Stack::new(size);
            }
            let index = pool.make_hot(hot, usable);
            hot.size.set(size);
            let class = &mut pool.classes[index];
            if let Some(stack) = hot.pop() {
                return Ok(stack);
            }
            match class.free.pop() {
                Some(stack) => {
                    hot.set_listed(hot.listed.get() - 1);
                    Ok(stack)
                }
                None => class.carve(size),
            }
        })
    })
    .unwrap_or_else(|_| Stack::new(size))
}

/// Returns a stack to this thread's pool. `deepest` is the lowest stack
/// address the greenlet was seen using (0 if unknown); pages below the
/// release threshold are given back first. If the pool is full or torn
/// down, the stack is dropped (its slab unmapped once all its stacks are).
#[inline]
pub(crate) fn give_back(stack: Stack, deepest: usize) {
    // Fast path: a shallow stack of the hot class, room in the pool and in
    // `HOT`.
    let rest = HOT.try_with(|hot| {
        let len = hot.len.get();
        let top = stack.top().as_ptr() as usize;
        // Shallow: `top - deepest <= threshold`. A `deepest` of 0 (unknown)
        // or above `top` (never: a stack is used below its top) wraps or
        // leaves a large difference, and goes the slow way, which checks.
        let shallow = top.wrapping_sub(deepest) <= hot.release_threshold.get();
        // `len < cap` is `len < HOT_SLOTS` and room under the limit.
        if len < hot.cap.get() && shallow && stack.len() == hot.usable.get() {
            // SAFETY: `len < cap <= HOT_SLOTS`, so the index is in bounds;
            // the slot is past `len`, so it holds no stack to overwrite.
            unsafe { hot.slots.get_unchecked(len) }.set(MaybeUninit::new(stack));
            hot.len.set(len + 1);
            return None;
        }
        Some(stack)
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
        HOT.with(|hot| {
            if hot.free_total() >= hot.limit.get() {
                // Full: `stack` drops here, which gives all its pages back
                // (or unmaps its slab, if it was the slab's last stack).
                return;
            }
            let top = stack.top().as_ptr() as usize;
            let threshold = hot.release_threshold.get();
            if deepest != 0 && deepest < top && top - deepest > threshold {
                stack.release_below(top - threshold);
            }
            let usable = stack.len();
            let len = hot.len.get();
            if usable == hot.usable.get() {
                if len < HOT_SLOTS {
                    hot.slots[len].set(MaybeUninit::new(stack));
                    hot.len.set(len + 1);
                } else {
                    let last = pool.last;
                    pool.classes[last].free.push(stack);
                    hot.set_listed(hot.listed.get() + 1);
                }
            } else {
                let index = pool.find_class(usable);
                pool.classes[index].free.push(stack);
                hot.set_listed(hot.listed.get() + 1);
            }
        });
    });
}

/// Sets how many free stacks the calling thread keeps for reuse (a count of
/// stacks, all sizes together; default 1024), dropping any above the new
/// limit. The setting is per thread: other threads' pools keep theirs.
///
/// When the pool is empty, a greenlet's stack is carved from a slab (a new
/// slab is mapped when the current one is used up); when it is full, a
/// stack given back is dropped, and its pages are given back to the kernel
/// at once. With a limit of 0 every greenlet gets a mapping of its own and
/// unmaps it when it ends (and the slabs being carved are let go).
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
        HOT.with(|hot| {
            hot.limit.set(limit);
            let mut excess = hot.free_total().saturating_sub(limit);
            while excess > 0 && hot.pop().is_some() {
                excess -= 1;
            }
            let mut listed = hot.listed.get();
            for class in &mut pool.classes {
                while excess > 0 && class.free.pop().is_some() {
                    excess -= 1;
                    listed -= 1;
                }
                if limit == 0 {
                    class.carving = None;
                }
            }
            hot.set_listed(listed);
        });
    });
}

/// Sets how deep a stack may have been used, in bytes from its top, before
/// the calling thread's pool gives the pages below that depth back to the
/// kernel as the stack is pooled (default 64 KiB, i.e. `64 * 1024`). The
/// top `bytes` (rounded up to whole pages) stay committed for the next
/// greenlet. The setting is per thread and applies to stacks given back
/// after the call.
///
/// Depth is measured at the greenlet's switches: a greenlet that went
/// deeper and came back up between two switches is not seen. A stack that
/// is dropped instead of pooled gives back all its pages whatever this says.
///
/// # Examples
///
/// ```
/// greenlet::stack::set_release_threshold(32 * 1024);
/// ```
pub fn set_release_threshold(bytes: usize) {
    let _ = HOT.try_with(|hot| hot.release_threshold.set(bytes));
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
    let pooled = HOT.try_with(Hot::free_total).unwrap_or(0);
    PoolStats {
        mapped: stack_count(),
        pooled,
        slabs: slab_count(),
    }
}
