//! One guarded stack: an anonymous private mapping, lowest page(s) `PROT_NONE`.
//!
//! Invariant: a [`Stack`] value always has its guard installed. The guard is
//! set before the value exists, and a failure to set it unmaps the region, so
//! no unguarded stack is ever handed out.
#![allow(unsafe_code)]

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;
use std::string::String;

/// The smallest usable size a greenlet stack may be given: enough for the
/// greenlet's own entry frames, a panic's unwinding, and a little user code.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest usable size a greenlet stack may be given (1 TiB of address
/// space); anything above is almost certainly a unit mistake.
pub const MAX_STACK_SIZE: usize = 1 << 40;

/// Mappings currently held by `Stack` values in this process, pooled or not.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// How many stacks are mapped in this process right now (in use or pooled).
pub(crate) fn mapped_count() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// The size of a virtual-memory page, queried from the OS once.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported.
    let queried = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(queried).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096);
    PAGE.store(size, Ordering::Relaxed);
    size
}

/// A guarded, lazily committed stack.
///
/// Layout (addresses grow upwards):
///
/// ```text
///   base                base + guard_len                  base + total
///   | guard (PROT_NONE) | usable stack (read/write) ....... | top
/// ```
pub struct Stack {
    mapping: memmap2::MmapMut,
    guard_len: usize,
}

impl Stack {
    /// Maps a new stack with at least `size` usable bytes (rounded up to whole
    /// pages) and one guard page below it.
    ///
    /// # Errors
    ///
    /// [`StackError`] when `size` is outside
    /// [`MIN_STACK_SIZE`]..=[`MAX_STACK_SIZE`], or when the kernel refuses the
    /// mapping or the guard (out of memory or address space, or the process
    /// reached `vm.max_map_count` mappings); the message names the cause and
    /// what to raise.
    ///
    /// # Examples
    ///
    /// ```
    /// let stack = greenlet::stack::Stack::new(64 * 1024)?;
    /// assert!(stack.len() >= 64 * 1024);
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    pub fn new(size: usize) -> Result<Stack, StackError> {
        if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) {
            return Err(StackError::new(StackErrorKind::InvalidSize, size, None));
        }
        let page = page_size();
        let usable = size.div_ceil(page) * page;
        let guard_len = page;
        let total = usable + guard_len;
        let mapping = memmap2::MmapOptions::new()
            .len(total)
            .stack()
            .map_anon()
            .map_err(|e| StackError::new(StackErrorKind::Map, size, Some(e)))?;
        // SAFETY: the first `guard_len` bytes lie inside the mapping we own,
        // and nothing has a reference into it yet.
        let rc = unsafe { libc::mprotect(mapping.as_ptr() as *mut _, guard_len, libc::PROT_NONE) };
        if rc != 0 {
            // `mapping` is dropped (unmapped) here: no unguarded stack escapes.
            let error = io::Error::last_os_error();
            return Err(StackError::new(StackErrorKind::Guard, size, Some(error)));
        }
        MAPPED.fetch_add(1, Ordering::Relaxed);
        Ok(Stack { mapping, guard_len })
    }

    /// One past the highest usable byte: where a fresh context's frame goes.
    pub fn top(&self) -> NonNull<u8> {
        let base = self.mapping.as_ptr() as *mut u8;
        // SAFETY: base + len is one past the end of the mapping, which is in
        // bounds for pointer arithmetic.
        let top = unsafe { base.add(self.mapping.len()) };
        NonNull::new(top).expect("a mapping does not end at address zero")
    }

    /// The lowest usable byte, just above the guard.
    pub fn bottom(&self) -> usize {
        self.mapping.as_ptr() as usize + self.guard_len
    }

    /// The usable size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.mapping.len() - self.guard_len
    }

    /// Always false: a stack has at least [`MIN_STACK_SIZE`] usable bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The guard region's address range, `start..end`.
    pub fn guard(&self) -> core::ops::Range<usize> {
        let base = self.mapping.as_ptr() as usize;
        base..base + self.guard_len
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        MAPPED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &format_args!("{:#x}", self.bottom()))
            .field("top", &self.top())
            .field("len", &self.len())
            .field("guard_len", &self.guard_len)
            .finish()
    }
}

/// What went wrong when making a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackErrorKind {
    /// The requested size is below [`MIN_STACK_SIZE`] or above
    /// [`MAX_STACK_SIZE`].
    InvalidSize,
    /// `mmap` refused the region.
    Map,
    /// `mprotect` refused the guard (typically `vm.max_map_count`).
    Guard,
}

/// A stack could not be made. The message says why and what to change.
#[derive(Debug)]
pub struct StackError {
    kind: StackErrorKind,
    size: usize,
    source: Option<io::Error>,
}

impl StackError {
    fn new(kind: StackErrorKind, size: usize, source: Option<io::Error>) -> Self {
        StackError { kind, size, source }
    }

    /// What went wrong.
    pub fn kind(&self) -> StackErrorKind {
        self.kind
    }

    /// The OS error, when the kernel refused.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

fn max_map_count() -> String {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().into())
        .unwrap_or_else(|_| "unknown".into())
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = self.size;
        let errno = self.source.as_ref().and_then(io::Error::raw_os_error);
        match self.kind {
            StackErrorKind::InvalidSize => write!(
                f,
                "greenlet stack size {size} bytes is out of range: it must be between \
                 {MIN_STACK_SIZE} and {MAX_STACK_SIZE} bytes"
            ),
            _ if errno == Some(libc::ENOMEM) => write!(
                f,
                "cannot map a {size}-byte greenlet stack: the kernel is out of memory, of \
                 address space, or of memory mappings (ENOMEM). Each stack takes two of the \
                 process's vm.max_map_count mappings (now {}); raise it with \
                 `sysctl -w vm.max_map_count=<more>`, or raise the address-space limit \
                 (`ulimit -v`), or use fewer or smaller greenlet stacks",
                max_map_count()
            ),
            StackErrorKind::Map => write!(
                f,
                "cannot map a {size}-byte greenlet stack: mmap failed: {}",
                self.source.as_ref().map(|e| e as &dyn fmt::Display).unwrap_or(&"unknown")
            ),
            StackErrorKind::Guard => write!(
                f,
                "cannot install the guard page of a {size}-byte greenlet stack: mprotect failed: {}",
                self.source.as_ref().map(|e| e as &dyn fmt::Display).unwrap_or(&"unknown")
            ),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
