//! Guarded stacks carved out of slabs: large anonymous private mappings cut
//! into equal slots, each slot a guard region followed by a usable stack.
//!
//! ```text
//!   slab base                                              slab end
//!   | guard | stack 0 ....... | guard | stack 1 ....... | ... |
//!   ^ one or more pages, no access   ^ top of stack 0 = base of guard 1
//! ```
//!
//! How a guard is made (chosen once per process, see [`GuardKind`]):
//!
//! - `MADV_GUARD_INSTALL` (Linux 6.13+): a guard marker in the page tables.
//!   It does not split the mapping, so a slab of a thousand stacks is one
//!   entry of the process's `vm.max_map_count` budget, and a million live
//!   greenlets fit under the default limit.
//! - `mprotect(PROT_NONE)` (any Linux): splits the mapping at every guard,
//!   two mappings per stack, so the default `vm.max_map_count` (65530) caps
//!   live greenlets near 32,000; beyond that, making a stack is an `Err`
//!   that names the sysctl.
//!
//! Invariants: a [`Stack`] value always has its guard installed (the guard is
//! made before the value exists, and a failure leaves the slot unused); a
//! slab is unmapped when its last stack is dropped; every slot belongs to
//! exactly one `Stack` value or to no one (never handed out twice); a stack
//! dropped while its slab lives on gives its pages back (`MADV_DONTNEED`
//! over its usable range, guard untouched), so a dead slot pins no memory
//! (its address space stays reserved until the slab goes: slots are not
//! re-carved).
#![allow(unsafe_code)]

use super::{MAX_STACK_SIZE, MIN_STACK_SIZE};
use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::io;
use std::rc::Rc;
use std::string::{String, ToString};

/// `MADV_GUARD_INSTALL` from `<linux/mman.h>` (Linux 6.13), which the `libc`
/// crate does not define yet.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Slabs (mappings) currently mapped, process-wide.
static SLABS: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Stacks of this thread not yet released (in use or pooled). A stack
    /// never leaves the thread that made it, so the count is exact.
    static STACKS: Cell<usize> = const { Cell::new(0) };
}

pub(crate) fn stack_count() -> usize {
    STACKS.try_with(Cell::get).unwrap_or(0)
}

pub(crate) fn slab_count() -> usize {
    SLABS.load(Ordering::Relaxed)
}

/// The size of a virtual-memory page, queried from the OS once.
///
/// # Examples
///
/// ```
/// let page = greenlet::stack::page_size();
/// assert!(page.is_power_of_two() && page >= 4096);
/// ```
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported.
    let queried = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(queried)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096);
    PAGE.store(size, Ordering::Relaxed);
    size
}

/// How guard regions are installed in this process.
///
/// # Examples
///
/// ```
/// use greenlet::stack::{GuardKind, guard_kind};
/// match guard_kind() {
///     GuardKind::Madvise => println!("guard markers: no mapping per stack"),
///     GuardKind::Mprotect => println!("mprotect guards: two mappings per stack"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardKind {
    /// `madvise(MADV_GUARD_INSTALL)`: no extra mapping per stack.
    Madvise,
    /// `mprotect(PROT_NONE)`: two mappings per stack.
    Mprotect,
}

/// The guard mechanism in use, detected on first call: `MADV_GUARD_INSTALL`
/// when the running kernel supports it, `mprotect` otherwise. Setting the
/// environment variable `GREENLET_STACK_GUARD=mprotect` before the first
/// stack is made forces the fallback (for tests, or kernels where guard
/// markers misbehave).
///
/// # Examples
///
/// ```
/// use greenlet::stack::{GuardKind, guard_kind};
/// assert!(matches!(guard_kind(), GuardKind::Madvise | GuardKind::Mprotect));
/// ```
pub fn guard_kind() -> GuardKind {
    static KIND: AtomicU8 = AtomicU8::new(0);
    match KIND.load(Ordering::Relaxed) {
        1 => return GuardKind::Madvise,
        2 => return GuardKind::Mprotect,
        _ => {}
    }
    let forced =
        cfg!(miri) || std::env::var_os("GREENLET_STACK_GUARD").is_some_and(|v| v == "mprotect");
    let kind = if !forced && madvise_guards_work() {
        GuardKind::Madvise
    } else {
        GuardKind::Mprotect
    };
    KIND.store(
        if kind == GuardKind::Madvise { 1 } else { 2 },
        Ordering::Relaxed,
    );
    kind
}

/// Installs a guard marker on a scratch page and checks that the kernel
/// really refuses access to it: an emulator (qemu-user) may answer success
/// to advice it does not know and install nothing. The check reads one byte
/// from /dev/zero into the page, which must fail with EFAULT.
fn madvise_guards_work() -> bool {
    let page = page_size();
    let Ok(scratch) = memmap2::MmapMut::map_anon(page) else {
        return false;
    };
    let at = scratch.as_ptr() as *mut libc::c_void;
    // SAFETY: the page belongs to `scratch`, which nothing else references.
    if unsafe { libc::madvise(at, page, MADV_GUARD_INSTALL) } != 0 {
        return false;
    }
    let Ok(zero) = std::fs::File::open("/dev/zero") else {
        return false;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a read into memory we own; if the guard works the kernel
    // refuses with EFAULT and writes nothing.
    let n = unsafe { libc::read(zero.as_raw_fd(), at, 1) };
    n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// The memory behind a slab: an anonymous private mapping; under Miri, which
/// can neither map memory nor install guards, a heap allocation (Miri checks
/// every access itself, so it needs no guard page to catch an overflow).
struct Region {
    #[cfg(not(miri))]
    mapping: memmap2::MmapMut,
    /// From `Box::into_raw`, so pointers derived from it may write.
    #[cfg(miri)]
    heap: NonNull<[core::mem::MaybeUninit<u128>]>,
}

#[cfg(miri)]
impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `heap` came from `Box::into_raw` in `map` and is freed once.
        drop(unsafe { std::boxed::Box::from_raw(self.heap.as_ptr()) });
    }
}

impl Region {
    #[cfg(not(miri))]
    fn map(len: usize) -> io::Result<Region> {
        let mapping = memmap2::MmapOptions::new().len(len).stack().map_anon()?;
        Ok(Region { mapping })
    }

    #[cfg(miri)]
    fn map(len: usize) -> io::Result<Region> {
        let words = len.div_ceil(16);
        let heap: std::boxed::Box<[_]> =
            std::iter::repeat_with(core::mem::MaybeUninit::<u128>::uninit)
                .take(words)
                .collect();
        let heap = NonNull::new(std::boxed::Box::into_raw(heap)).expect("Box is never null");
        Ok(Region { heap })
    }

    #[cfg(not(miri))]
    fn as_ptr(&self) -> *const u8 {
        self.mapping.as_ptr()
    }

    #[cfg(miri)]
    fn as_ptr(&self) -> *const u8 {
        self.heap.as_ptr() as *const u8
    }

    /// Makes `start..start + len` (inside the region) a guard.
    #[cfg(not(miri))]
    fn install_guard(&self, start: usize, len: usize) -> libc::c_int {
        match guard_kind() {
            // SAFETY: the guard range lies inside our mapping, in a slot no
            // Stack value refers to yet.
            GuardKind::Madvise => unsafe {
                libc::madvise(start as *mut _, len, MADV_GUARD_INSTALL)
            },
            // SAFETY: as above.
            GuardKind::Mprotect => unsafe { libc::mprotect(start as *mut _, len, libc::PROT_NONE) },
        }
    }

    #[cfg(miri)]
    fn install_guard(&self, _start: usize, _len: usize) -> libc::c_int {
        0
    }

    /// Gives `offset..offset + len` back to the kernel.
    #[cfg(not(miri))]
    fn release(&self, offset: usize, len: usize) {
        // SAFETY: the caller passes a range no live frame uses; zero-filling
        // it on next touch is harmless. Guard markers survive MADV_DONTNEED.
        let _ = unsafe {
            self.mapping
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
    }

    #[cfg(miri)]
    fn release(&self, _offset: usize, _len: usize) {}
}

/// A mapping cut into `slots` equal slots of `stride` bytes.
pub(crate) struct Slab {
    mapping: Region,
    stride: usize,
    guard_len: usize,
    /// `stride - guard_len`: a stack's usable size, read on the hot paths.
    usable: usize,
    slots: usize,
    /// Slots below this index have their guard installed and have been
    /// handed out at least once.
    carved: Cell<usize>,
}

impl Slab {
    /// Maps a slab for `slots` stacks of `usable` bytes each (whole pages).
    pub(crate) fn new(
        usable: usize,
        slots: usize,
        requested: usize,
    ) -> Result<Rc<Slab>, StackError> {
        let guard_len = page_size();
        let stride = usable + guard_len;
        let mapping = Region::map(stride * slots)
            .map_err(|e| StackError::new(StackErrorKind::Map, requested, Some(e)))?;
        SLABS.fetch_add(1, Ordering::Relaxed);
        Ok(Rc::new(Slab {
            mapping,
            stride,
            guard_len,
            usable,
            slots,
            carved: Cell::new(0),
        }))
    }

    /// Whether every slot has been carved.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.carved.get() == self.slots
    }

    /// Installs the guard of the next uncarved slot and hands it out.
    pub(crate) fn carve(self: &Rc<Slab>, requested: usize) -> Result<Stack, StackError> {
        let slot = self.carved.get();
        assert!(slot < self.slots, "carve from an exhausted slab");
        let guard = self.mapping.as_ptr() as usize + slot * self.stride;
        let rc = self.mapping.install_guard(guard, self.guard_len);
        if rc != 0 {
            // The slot stays uncarved and unused: no unguarded stack escapes.
            let error = io::Error::last_os_error();
            return Err(StackError::new(
                StackErrorKind::Guard,
                requested,
                Some(error),
            ));
        }
        self.carved.set(slot + 1);
        let _ = STACKS.try_with(|n| n.set(n.get() + 1));
        let bottom = guard + self.guard_len;
        #[cfg_attr(
            not(feature = "valgrind"),
            allow(clippy::let_unit_value, unused_variables)
        )]
        let valgrind_id = crate::sanitizer::register_stack(bottom, guard + self.stride);
        // SAFETY: the end of a slot is at most one past the end of the
        // mapping, which is in bounds for pointer arithmetic.
        let top = unsafe { self.mapping.as_ptr().add((slot + 1) * self.stride) } as *mut u8;
        Ok(Stack {
            slab: self.clone(),
            top: NonNull::new(top).expect("a mapping does not end at address zero"),
            #[cfg(feature = "valgrind")]
            valgrind_id,
        })
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        SLABS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A guarded, lazily committed stack: one slot of a slab.
///
/// Layout (addresses grow upwards):
///
/// ```text
///   guard start        guard end = bottom                     top
///   | guard (no access) | usable stack (read/write) ........ |
/// ```
///
/// Only the pages a greenlet touches are ever committed. A `Stack` is tied
/// to the thread that made it (it is neither `Send` nor `Sync`).
pub struct Stack {
    slab: Rc<Slab>,
    /// One past the highest usable byte (the end of the slot), kept so that
    /// the hot paths read it without touching the slab.
    top: NonNull<u8>,
    /// Valgrind's id for this stack (only with the `valgrind` feature, so
    /// that a `Stack` is two words otherwise).
    #[cfg(feature = "valgrind")]
    valgrind_id: u32,
}

impl Stack {
    /// Maps a new stack of its own (a one-slot slab) with at least `size`
    /// usable bytes, rounded up to whole pages, and a guard page below it.
    /// Greenlets get theirs from the per-thread pool instead.
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
    /// assert_eq!(stack.guard().end, stack.bottom());
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    pub fn new(size: usize) -> Result<Stack, StackError> {
        let usable = checked_usable(size)?;
        Slab::new(usable, 1, size)?.carve(size)
    }

    /// Valgrind's id for this stack (0 without the `valgrind` feature).
    fn valgrind_id(&self) -> u32 {
        #[cfg(feature = "valgrind")]
        return self.valgrind_id;
        #[cfg(not(feature = "valgrind"))]
        0
    }

    #[inline]
    fn base(&self) -> usize {
        self.top.as_ptr() as usize - self.slab.stride
    }

    /// One past the highest usable byte: where a fresh context's frame goes.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet::stack::Stack::new(64 * 1024)?;
    /// assert_eq!(s.top().as_ptr() as usize - s.bottom(), s.len());
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    #[inline]
    pub fn top(&self) -> NonNull<u8> {
        self.top
    }

    /// The lowest usable byte, just above the guard.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet::stack::Stack::new(64 * 1024)?;
    /// assert_eq!(s.bottom(), s.guard().end);
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    #[inline]
    pub fn bottom(&self) -> usize {
        self.top.as_ptr() as usize - self.len()
    }

    /// The usable size in bytes (whole pages).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet::stack::Stack::new(20_000)?;
    /// assert_eq!(s.len() % greenlet::stack::page_size(), 0);
    /// assert!(s.len() >= 20_000);
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.slab.usable
    }

    /// Always false: a stack has at least [`MIN_STACK_SIZE`] usable bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!greenlet::stack::Stack::new(64 * 1024)?.is_empty());
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The guard region's address range, `start..end`.
    ///
    /// # Examples
    ///
    /// ```
    /// let s = greenlet::stack::Stack::new(64 * 1024)?;
    /// assert!(s.guard().len() >= greenlet::stack::page_size());
    /// # Ok::<(), greenlet::stack::StackError>(())
    /// ```
    #[inline]
    pub fn guard(&self) -> core::ops::Range<usize> {
        self.base()..self.bottom()
    }

    /// Gives the pages of `bottom..below` back to the kernel (they read as
    /// zero when touched again). Used by the pool for stacks that grew deep.
    pub(crate) fn release_below(&self, below: usize) {
        let page = page_size();
        let end = below & !(page - 1);
        if end <= self.bottom() {
            return;
        }
        let offset = self.bottom() - self.slab.mapping.as_ptr() as usize;
        self.slab.mapping.release(offset, end - self.bottom());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A slot is never carved twice, so once its stack is gone its pages
        // serve no one; if the slab outlives this stack (other stacks of it
        // are in use or pooled, or it is still being carved), give them back
        // now rather than when the whole slab is unmapped. The guard below
        // is outside the range and stays. The last stack of a slab skips
        // this: the unmapping that follows frees everything.
        if Rc::strong_count(&self.slab) > 1 {
            let offset = self.bottom() - self.slab.mapping.as_ptr() as usize;
            self.slab.mapping.release(offset, self.len());
        }
        crate::sanitizer::deregister_stack(self.valgrind_id());
        let _ = STACKS.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &format_args!("{:#x}", self.bottom()))
            .field("top", &self.top())
            .field("len", &self.len())
            .field("guard", &self.guard())
            .finish()
    }
}

/// `size` rounded up to whole pages, if it is in range.
pub(crate) fn checked_usable(size: usize) -> Result<usize, StackError> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) {
        return Err(StackError::new(StackErrorKind::InvalidSize, size, None));
    }
    // A page is a power of two (checked in `page_size`): round with a mask.
    let page_mask = page_size() - 1;
    Ok((size + page_mask) & !page_mask)
}

/// What went wrong when making a stack.
///
/// # Examples
///
/// ```
/// use greenlet::stack::{Stack, StackErrorKind};
/// assert_eq!(Stack::new(0).unwrap_err().kind(), StackErrorKind::InvalidSize);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackErrorKind {
    /// The requested size is below [`MIN_STACK_SIZE`] or above
    /// [`MAX_STACK_SIZE`].
    InvalidSize,
    /// `mmap` refused the region.
    Map,
    /// The guard could not be installed (with `mprotect`, typically because
    /// the process reached `vm.max_map_count`).
    Guard,
}

/// A stack could not be made. The message says why and what to change.
///
/// # Examples
///
/// ```
/// let e = greenlet::stack::Stack::new(0).unwrap_err();
/// assert!(e.to_string().contains("out of range"));
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// let e = greenlet::stack::Stack::new(1).unwrap_err();
    /// assert_eq!(e.kind(), greenlet::stack::StackErrorKind::InvalidSize);
    /// ```
    pub fn kind(&self) -> StackErrorKind {
        self.kind
    }

    /// The OS error, when the kernel refused.
    ///
    /// # Examples
    ///
    /// ```
    /// // A size error is ours, not the kernel's.
    /// assert!(greenlet::stack::Stack::new(1).unwrap_err().os_error().is_none());
    /// ```
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
        let os = self
            .source
            .as_ref()
            .map_or_else(|| String::from("unknown error"), |e| e.to_string());
        match (self.kind, errno) {
            (StackErrorKind::InvalidSize, _) => write!(
                f,
                "greenlet stack size {size} bytes is out of range: it must be between \
                 {MIN_STACK_SIZE} and {MAX_STACK_SIZE} bytes"
            ),
            (StackErrorKind::Guard, Some(libc::ENOMEM)) => write!(
                f,
                "cannot install the guard page of a {size}-byte greenlet stack (ENOMEM): the \
                 process reached vm.max_map_count ({}) memory mappings; guard pages made with \
                 mprotect take two mappings per stack. Raise it with \
                 `sysctl -w vm.max_map_count=<more>`, run on Linux 6.13 or later (guards made \
                 with MADV_GUARD_INSTALL take no mapping), or keep fewer greenlets alive",
                max_map_count()
            ),
            (StackErrorKind::Map, Some(libc::ENOMEM)) => write!(
                f,
                "cannot map a {size}-byte greenlet stack (ENOMEM): the process is out of memory \
                 or address space, or reached vm.max_map_count ({}) memory mappings. Lower the \
                 stack size, raise the address-space limit (`ulimit -v`), or raise the mapping \
                 limit with `sysctl -w vm.max_map_count=<more>`",
                max_map_count()
            ),
            (StackErrorKind::Map, _) => write!(
                f,
                "cannot map a {size}-byte greenlet stack: mmap failed: {os}"
            ),
            (StackErrorKind::Guard, _) => {
                write!(
                    f,
                    "cannot install the guard page of a {size}-byte greenlet stack: {os}"
                )
            }
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
