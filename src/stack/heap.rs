//! Stacks without `std`: memory the caller supplies, or memory from the
//! global allocator. There is no operating system to make a guard page, so
//! nothing catches an overflow: making a stack is `unsafe`, and its contract
//! is that the greenlet never needs more than the stack holds, or that the
//! platform faults on the memory below it (an MPU or MMU region).
#![allow(unsafe_code)]

use super::{MAX_STACK_SIZE, MIN_STACK_SIZE};
use alloc::alloc::{Layout, alloc, dealloc};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// Stack memory is aligned to this, as the ABIs ask of a stack pointer.
const ALIGN: usize = 16;

/// The memory of one greenlet stack (without `std`).
pub struct Stack {
    bottom: NonNull<u8>,
    len: usize,
    /// Whether `bottom..bottom + len` came from the global allocator (and
    /// goes back to it on drop) or from the caller (`'static`, kept).
    owned: bool,
}

impl Stack {
    /// A stack of `size` bytes (rounded up to 16) from the global allocator,
    /// freed when the greenlet that uses it is gone.
    ///
    /// # Safety
    ///
    /// No guard page protects the memory below the stack: the greenlet that
    /// runs on it must never use more than `size` bytes of stack, or the
    /// platform must fault on an access below it. An overflow would silently
    /// overwrite whatever the allocator placed there.
    ///
    /// # Errors
    ///
    /// [`StackError`] when `size` is outside
    /// [`MIN_STACK_SIZE`]..=[`MAX_STACK_SIZE`] or the allocator has no memory.
    pub unsafe fn alloc(size: usize) -> Result<Stack, StackError> {
        let len = checked_len(size)?;
        let layout = Layout::from_size_align(len, ALIGN)
            .map_err(|_| StackError::new(StackErrorKind::InvalidSize, size))?;
        // SAFETY: `layout` has a non-zero size (at least MIN_STACK_SIZE).
        let bottom = NonNull::new(unsafe { alloc(layout) })
            .ok_or(StackError::new(StackErrorKind::OutOfMemory, size))?;
        Ok(Stack {
            bottom,
            len,
            owned: true,
        })
    }

    /// A stack over memory the caller owns for the life of the program (a
    /// `static` buffer, a linker-placed region). Its start is rounded up and
    /// its length down to 16 bytes.
    ///
    /// # Safety
    ///
    /// As for [`Stack::alloc`]: nothing catches an overflow, so the greenlet
    /// must never use more than the memory holds, or the platform must fault
    /// below it.
    ///
    /// # Errors
    ///
    /// [`StackError`] when the aligned memory is smaller than
    /// [`MIN_STACK_SIZE`] or larger than [`MAX_STACK_SIZE`].
    pub unsafe fn from_static(memory: &'static mut [MaybeUninit<u8>]) -> Result<Stack, StackError> {
        let start = memory.as_mut_ptr() as usize;
        let aligned = (start + ALIGN - 1) & !(ALIGN - 1);
        let usable = memory.len().saturating_sub(aligned - start) & !(ALIGN - 1);
        if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&usable) {
            return Err(StackError::new(StackErrorKind::InvalidSize, usable));
        }
        // SAFETY: `aligned` is inside `memory` (it is at least MIN_STACK_SIZE
        // bytes long past it), so it is not null.
        let bottom = unsafe {
            NonNull::new_unchecked(memory.as_mut_ptr().cast::<u8>().add(aligned - start))
        };
        Ok(Stack {
            bottom,
            len: usable,
            owned: false,
        })
    }

    /// One past the highest usable byte: where a fresh context's frame goes.
    pub fn top(&self) -> NonNull<u8> {
        // SAFETY: one past the end of the region, in bounds for arithmetic.
        unsafe { self.bottom.add(self.len) }
    }

    /// The lowest usable byte.
    pub fn bottom(&self) -> usize {
        self.bottom.as_ptr() as usize
    }

    /// The usable size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a stack has at least [`MIN_STACK_SIZE`] usable bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The guard region: empty, at the bottom (there is none without `std`).
    pub fn guard(&self) -> core::ops::Range<usize> {
        self.bottom()..self.bottom()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: `bottom` came from `alloc` with exactly this layout
            // (checked when it was made), and is freed once, here.
            unsafe {
                dealloc(
                    self.bottom.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, ALIGN),
                )
            };
        }
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &format_args!("{:#x}", self.bottom()))
            .field("top", &self.top())
            .field("len", &self.len())
            .field("owned", &self.owned)
            .finish()
    }
}

/// `size` rounded up to 16 bytes, if it is in range.
fn checked_len(size: usize) -> Result<usize, StackError> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) {
        return Err(StackError::new(StackErrorKind::InvalidSize, size));
    }
    Ok((size + ALIGN - 1) & !(ALIGN - 1))
}

/// What went wrong when making a stack (without `std`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackErrorKind {
    /// The size is below [`MIN_STACK_SIZE`] or above [`MAX_STACK_SIZE`].
    InvalidSize,
    /// The global allocator returned no memory.
    OutOfMemory,
    /// Without `std` a greenlet needs a stack from its builder
    /// ([`Builder::stack`](crate::Builder::stack)): there is no pool to take
    /// one from.
    NoStack,
}

/// A stack could not be made or was not given. The message says what to do.
#[derive(Clone, Copy, Debug)]
pub struct StackError {
    kind: StackErrorKind,
    size: usize,
}

impl StackError {
    pub(crate) const fn new(kind: StackErrorKind, size: usize) -> Self {
        StackError { kind, size }
    }

    /// What went wrong.
    pub fn kind(&self) -> StackErrorKind {
        self.kind
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.size;
        match self.kind {
            StackErrorKind::InvalidSize => write!(
                f,
                "greenlet stack size {size} bytes is out of range: it must be between \
                 {MIN_STACK_SIZE} and {MAX_STACK_SIZE} bytes"
            ),
            StackErrorKind::OutOfMemory => write!(
                f,
                "cannot allocate a {size}-byte greenlet stack: the global allocator has no \
                 memory; lower the stack size or give the heap more"
            ),
            StackErrorKind::NoStack => f.write_str(
                "without std a greenlet needs a caller-supplied stack: make one with \
                 `Stack::alloc` or `Stack::from_static` and pass it to `Builder::stack`",
            ),
        }
    }
}

impl core::error::Error for StackError {}

/// Without `std` there is no pool: the builder's stack is all there is.
pub(crate) fn take(size: usize) -> Result<Stack, StackError> {
    Err(StackError::new(StackErrorKind::NoStack, size))
}

/// Without `std` there is no pool: the stack is freed (or, caller-supplied,
/// simply let go).
pub(crate) fn give_back(stack: Stack, _deepest: usize) {
    drop(stack);
}
