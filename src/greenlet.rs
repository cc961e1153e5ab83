//! The safe greenlet API: Python greenlet's semantics over the raw switch.
//!
//! # How a switch works
//!
//! Every thread has a `ThreadState` (a thread-local of plain cells, so reading
//! it costs one TLS access and registers no destructor) whose `current` field
//! points to the running greenlet's `Inner`. The running greenlet must stay
//! alive while it runs even if its last handle goes: when that handle is
//! dropped, its strong reference passes to the thread state's `held` field
//! instead (Python's greenlet keeps a reference to the running greenlet; we
//! only take one when it is the last). A switch from `A` to `B`:
//!
//! 1. checks, in generic code, that the value's type is the one `B` waits for
//!    (recorded by `B` when it suspended, or its body's argument type);
//! 2. puts the value in a [`ValueSlot`] on `A`'s stack and passes its address
//!    through the raw switch (no heap); anything else (an error, an exit, a
//!    dying greenlet's result, or a value sent while `held` holds `A`) goes
//!    as the tagged address of a [`Transfer`];
//! 3. in `B`, moves the value out of `A`'s stack, then reclaims `A`'s stack if
//!    `A` has just died, then, if `held` holds `A`, drops that reference.
//!    That last step drops `A`'s last handle and makes it exit, which is why
//!    it happens in `B`, after the switch, as in Python's greenlet. A plain
//!    value (step 2's bare address) is only sent while `held` is empty, so
//!    its receiver looks at nothing but the value.
//!
//! # Why exit is an error value and not a forced unwind
//!
//! Dropping the last handle to a suspended greenlet makes its pending
//! `switch` return `Err(SwitchError::Exit)`. Ordinary `?` carries it out of
//! the body, running every destructor on the way, and the greenlet ends.
//! A forced unwind (what corosensei does) would instead raise a panic inside
//! the greenlet: it costs a two-phase unwind with a table search per frame,
//! around 1.6 µs here, and it runs through user frames that did not expect
//! to be unwound at a `switch`. An error value costs one more switch and is
//! visible in the types: a body cannot forget that `switch` can fail.

#![allow(unsafe_code)]

use crate::raw::{self, StackPointer};
use crate::rt;
use crate::sanitizer::Fiber;
use crate::stack::{self, DEFAULT_STACK_SIZE, MIN_STACK_SIZE, Stack, StackError};
use alloc::boxed::Box;
use alloc::rc::{self, Rc};
use core::any::{Any, TypeId, type_name};
use core::cell::Cell;
use core::fmt;
use core::mem::{ManuallyDrop, align_of, size_of};
use core::ptr;

// ---------------------------------------------------------------------------
// Errors

/// The request to exit that dropping a greenlet's last handle raises in it.
///
/// Throw it explicitly with [`Greenlet::throw`] to ask a greenlet to finish.
/// Inside the greenlet it arrives as [`SwitchError::Exit`]; a body that lets
/// it escape ends normally and its parent sees [`SwitchError::Exited`], a
/// value, never a panic.
///
/// # Examples
///
/// ```
/// use greenlet::{Greenlet, GreenletExit, SwitchError};
/// let g = Greenlet::new(|()| greenlet::parent().unwrap().switch::<(), ()>(()));
/// g.switch::<(), ()>(())?;
/// // Asked to exit, the body lets the request escape: the thrower sees Exited.
/// assert!(matches!(g.throw::<_, ()>(GreenletExit), Err(SwitchError::Exited)));
/// assert!(g.is_dead());
/// # Ok::<(), SwitchError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GreenletExit;

/// What a pending switch can return instead of a value.
///
/// # Errors a body returns
///
/// A body that returns `Err(e)` dies, and `e` is raised in its parent (the
/// nearest live ancestor; an unstarted one dies without running and `e`
/// climbs on) at its pending switch, as an exception escaping a Python
/// greenlet is: [`Exit`](Self::Exit) and [`Exited`](Self::Exited)
/// arrive as [`Exited`](Self::Exited) (a value, see [`GreenletExit`]); every
/// other variant arrives as it is, [`Thrown`](Self::Thrown) with its payload,
/// [`TypeMismatch`](Self::TypeMismatch) with its type names and
/// [`Panicking`](Self::Panicking) too. None of them is a panic.
///
/// # Examples
///
/// ```
/// use greenlet::{Greenlet, SwitchError};
/// let g = Greenlet::new(|x: i32| Ok(x));
/// match g.switch::<&str, i32>("not an i32") {
///     Err(SwitchError::TypeMismatch { sent, expected }) => {
///         assert_eq!((sent, expected), ("&str", "i32"));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[non_exhaustive]
pub enum SwitchError {
    /// This greenlet is asked to exit (its last handle was dropped, or
    /// `GreenletExit` was thrown at it). Return it from the body, usually
    /// with `?`, so that cleanup runs and the greenlet ends.
    Exit,
    /// The greenlet this one was waiting on ended by letting
    /// [`GreenletExit`] escape its body. This is a value, not a request to
    /// exit: propagating it is not required.
    Exited,
    /// An error thrown into this greenlet with [`Greenlet::throw`], or
    /// returned by the body of a greenlet whose parent this one is.
    Thrown(Box<dyn Any>),
    /// The switch (or throw) was refused because this thread is unwinding a
    /// panic: it returns this at once, without switching, and the target is
    /// left as it was. Rust's panic state belongs to the thread, not to the
    /// greenlet, so any greenlet resumed now would run as if it were
    /// panicking (its own panic would abort the process, mutexes it drops
    /// would be poisoned). Finish the cleanup without switching.
    ///
    /// Also what a parent's switch returns when a child's body returns this
    /// error (one it kept from a refused switch and returned once the unwind
    /// was over, say); the parent is not panicking then.
    Panicking,
    /// The value's type is not the one the receiver waits for; or returned
    /// by the body of a greenlet whose parent this one is.
    TypeMismatch {
        /// The type that was sent.
        sent: &'static str,
        /// The type the receiver waits for.
        expected: &'static str,
    },
}

impl SwitchError {
    /// True for [`SwitchError::Exit`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet::SwitchError::Exit.is_exit());
    /// assert!(!greenlet::SwitchError::Exited.is_exit());
    /// ```
    pub fn is_exit(&self) -> bool {
        matches!(self, SwitchError::Exit)
    }

    /// The thrown error, if it is one of type `E`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// let error = g.throw::<_, ()>(404u16).unwrap_err(); // unstarted: climbs to us
    /// assert_eq!(error.thrown::<u16>(), Some(&404));
    /// ```
    pub fn thrown<E: 'static>(&self) -> Option<&E> {
        match self {
            SwitchError::Thrown(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

impl fmt::Debug for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::Exit => f.write_str("Exit"),
            SwitchError::Exited => f.write_str("Exited"),
            SwitchError::Panicking => f.write_str("Panicking"),
            SwitchError::Thrown(e) => match rt::text_of(&**e) {
                Some(s) => write!(f, "Thrown({s:?})"),
                None => f.write_str("Thrown(..)"),
            },
            SwitchError::TypeMismatch { sent, expected } => f
                .debug_struct("TypeMismatch")
                .field("sent", sent)
                .field("expected", expected)
                .finish(),
        }
    }
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::Exit => f.write_str("the greenlet is asked to exit (GreenletExit)"),
            SwitchError::Exited => f.write_str("the greenlet switched from exited (GreenletExit)"),
            SwitchError::Panicking => f.write_str(
                "cannot switch greenlets while this thread is unwinding a panic: the panic state \
                 belongs to the thread, so the resumed greenlet would run as if panicking; finish \
                 the cleanup without switching",
            ),
            SwitchError::Thrown(_) => write!(f, "an error was thrown into the greenlet: {self:?}"),
            SwitchError::TypeMismatch { sent, expected } => write!(
                f,
                "type mismatch at a greenlet switch: sent a `{sent}` to a greenlet waiting for \
                 a `{expected}`; switch with the type the receiver's pending switch (or body \
                 argument) names"
            ),
        }
    }
}

impl core::error::Error for SwitchError {}

/// A greenlet could not be created, or a parent could not be set.
///
/// # Examples
///
/// ```
/// let a = greenlet::Greenlet::new(|()| Ok(()));
/// let e = a.set_parent(&a).unwrap_err();
/// assert!(matches!(e, greenlet::Error::ParentCycle));
/// assert!(e.to_string().contains("cycle"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The stack could not be made: the message says why and what to raise.
    Stack(StackError),
    /// `set_parent` would make a greenlet its own ancestor.
    ParentCycle,
    /// A main greenlet's parent cannot be set: only main has no parent.
    MainParent,
    /// The body's return type is too large to be handed over from the top of
    /// the greenlet's stack (a sixteenth of it at most, since unoptimised
    /// builds copy the value several times on the way out): return a `Box`.
    ReturnTooLarge {
        /// Size of the return type in bytes.
        size: usize,
        /// Usable size of the stack in bytes.
        stack: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Stack(e) => e.fmt(f),
            Error::ParentCycle => f.write_str(
                "cannot set this parent: the greenlet would become its own ancestor (a cycle)",
            ),
            Error::MainParent => f.write_str(
                "cannot set the parent of a main greenlet: main is the root of its thread's tree",
            ),
            Error::ReturnTooLarge { size, stack } => write!(
                f,
                "a greenlet body's return type of {size} bytes is too large for its \
                 {stack}-byte stack (a sixteenth at most): return a Box, or raise the stack size"
            ),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Stack(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StackError> for Error {
    fn from(e: StackError) -> Self {
        Error::Stack(e)
    }
}

// ---------------------------------------------------------------------------
// Types at a switch

/// The type a suspended greenlet waits for, recorded when it suspends: a
/// pointer to the type's `TypeId` constant, and a function naming the type
/// (for error messages only).
///
/// The `TypeId` constant holds no pointer, so the compiler puts it in a
/// mergeable read-only section and the linker keeps one copy per type even
/// when several codegen units made one: comparing keys is then one pointer
/// compare, with the `TypeId`s as the fallback that keeps it exact.
#[derive(Clone, Copy)]
struct TypeKey {
    id: &'static TypeId,
    name: fn() -> &'static str,
}

impl TypeKey {
    #[inline(always)]
    fn of<T: 'static>() -> Self {
        TypeKey {
            id: const { &TypeId::of::<T>() },
            name: type_name::<T>,
        }
    }

    #[inline(always)]
    fn id(self) -> TypeId {
        *self.id
    }

    /// Whether this is the key of `T`: usually one pointer compare; when the
    /// constant was not merged, the `TypeId`s decide.
    #[inline(always)]
    fn is<T: 'static>(self) -> bool {
        ptr::eq(self.id, TypeKey::of::<T>().id) || self.id() == TypeId::of::<T>()
    }

    fn name(self) -> &'static str {
        (self.name)()
    }
}

/// Marker type: a switch that waits for this accepts and drops any value
/// (used by the exit-on-drop loop, which has no use for what it gets back).
struct Discard;

// ---------------------------------------------------------------------------
// The record of one greenlet

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unstarted,
    Running,
    Suspended,
    Dead,
}

/// `repr(C)` only to put `saved` first: its address, where the raw switch
/// saves the context of a greenlet leaving, is then the record's own, with
/// nothing to add (and `state`, the one byte, last).
#[repr(C)]
struct Inner {
    /// Where the greenlet is suspended (unstarted: its initial frame).
    saved: Cell<Option<StackPointer>>,
    /// What the pending switch (or the unstarted body) accepts.
    expects: Cell<TypeKey>,
    id: u64,
    /// Only main has none. A strong reference, as in Python: a child keeps
    /// its parent alive.
    parent: Cell<Option<Greenlet>>,
    /// None for main, and once the greenlet is dead.
    stack: Cell<Option<Stack>>,
    /// Copies of the stack geometry, readable from the signal handler.
    stack_top: usize,
    stack_len: usize,
    guard_start: usize,
    guard_end: usize,
    /// What sanitizers need to know about this stack (zero-sized unless the
    /// `asan` feature is on).
    fiber: Fiber,
    /// The lowest saved stack pointer seen at this greenlet's switches (to
    /// begin with, its initial frame's): how deep its stack went, for the
    /// pool's page release (see [`Inner::deepest`]). A saved stack pointer,
    /// not its frame's bottom, so that the switch compares what it has.
    low_water: Cell<usize>,
    /// For an unstarted greenlet: the function that drops the body stored at
    /// the top of its stack (given `stack_top`) if it never runs.
    body: Cell<Option<DropBody>>,
    /// The next record of the thread's recycled list (see `recycle`), while
    /// this one is in it.
    next_free: Cell<*const Inner>,
    state: Cell<State>,
}

/// How to drop an unstarted body in place, given the top of its stack.
type DropBody = unsafe fn(usize);

impl Inner {
    fn is_main(&self) -> bool {
        self.stack_top == 0
    }

    /// The lowest stack address this greenlet was seen using (the bottom
    /// of its deepest saved frame), or a huge number if it was never seen:
    /// what the stack pool's page release wants.
    #[inline(always)]
    fn deepest(&self) -> usize {
        self.low_water
            .get()
            .wrapping_sub(crate::arch::SAVED_POINTER)
    }

    #[inline]
    fn parent_ptr(&self) -> *const Inner {
        // SAFETY: a shared read of the cell's content that ends before this
        // returns; nothing can run in between to replace it (no callback,
        // and the record is not shared with other threads).
        let p = unsafe { &*self.parent.as_ptr() };
        p.as_ref().map_or(ptr::null(), |g| Rc::as_ptr(&g.inner))
    }

    /// The parent of a greenlet other than main, which always has one.
    #[inline(always)]
    fn child_parent_ptr(&self) -> *const Inner {
        // SAFETY: as in `parent_ptr`.
        match unsafe { &*self.parent.as_ptr() } {
            Some(g) => Rc::as_ptr(&g.inner),
            None => no_parent(),
        }
    }

    fn parent_handle(&self) -> Option<Greenlet> {
        let p = self.parent.take();
        let out = p.clone();
        self.parent.set(p);
        out
    }

    /// The nearest live greenlet at or above `this`. Main is never dead,
    /// and only main has no parent, so the walk ends. A pointer in, a
    /// pointer out: the result may become a handle (`Rc::increment_strong_count`
    /// reads the counts before the record), so it must carry the provenance
    /// of the whole `Rc` allocation, as [`Rc::as_ptr`] gives, never that of
    /// a `&Inner`.
    ///
    /// # Safety
    ///
    /// `this` is a live record, from [`Rc::as_ptr`] or a parent link.
    #[inline(always)]
    unsafe fn resolve(this: *const Inner) -> *const Inner {
        // SAFETY: `this` is live (the caller's contract).
        if unsafe { (*this).state.get() } != State::Dead {
            return this;
        }
        // SAFETY: as above.
        unsafe { Inner::resolve_dead(this) }
    }

    /// # Safety
    ///
    /// As for [`Inner::resolve`].
    #[cold]
    unsafe fn resolve_dead(this: *const Inner) -> *const Inner {
        let mut at = this;
        // SAFETY: `this` is live; every pointer walked after it is a parent
        // link, kept alive by the handle its child holds; main (never dead)
        // ends the walk.
        while unsafe { (*at).state.get() } == State::Dead {
            // SAFETY: as above.
            at = unsafe { (*at).parent_ptr() };
        }
        at
    }

    /// Marks an unstarted greenlet dead without running it: its body is
    /// dropped in place and its stack goes back to the pool. A panic in the
    /// body's destructor is raised once the stack is back.
    fn kill_unstarted(&self) {
        if let Err(payload) = self.try_kill_unstarted() {
            rt::resume_unwind(payload);
        }
    }

    /// [`kill_unstarted`](Self::kill_unstarted), returning the panic of
    /// the body's destructor instead of raising it (the greenlet is dead
    /// and its stack back either way).
    fn try_kill_unstarted(&self) -> Result<(), rt::PanicPayload> {
        debug_assert_eq!(self.state.get(), State::Unstarted);
        self.state.set(State::Dead);
        self.saved.set(None);
        let dropped = match self.body.take() {
            // SAFETY: the body was written below `stack_top` by
            // `Builder::spawn` (which stored the matching `drop_body`) and,
            // the greenlet never having started, was never read out; the
            // stack is still ours (given back below, after the drop, even
            // if it panics: the unwind drops the body's remaining fields).
            Some(drop_body) => rt::catch(|| unsafe { drop_body(self.stack_top) }),
            None => Ok(()),
        };
        if let Some(stack) = self.stack.take() {
            stack::give_back(stack, 0);
        }
        dropped
    }
}

#[cold]
#[inline(never)]
fn no_parent() -> ! {
    unreachable!("only main has no parent, and main has no body")
}

impl Drop for Inner {
    fn drop(&mut self) {
        #[cfg(not(feature = "std"))]
        if let Some(t) = try_thread_state() {
            count_record(t, -1);
        }
        // A handle's drop kills a suspended greenlet before the last reference
        // goes, so what remains here is unstarted or dead. Should a record
        // still be suspended, its stack is leaked rather than reused.
        if self.is_main() {
            // The thread state's weak pointer (for revival after teardown)
            // must not outlive main, or it would keep the allocation. This
            // runs while the `Rc` still holds its own weak count, so
            // dropping ours here never frees the memory under us.
            if let Some(t) = try_thread_state() {
                let weak = t.main.get();
                if ptr::eq(weak, self) {
                    t.main.set(ptr::null());
                    // SAFETY: `main` holds a weak count from `Weak::into_raw`.
                    drop(unsafe { rc::Weak::from_raw(weak) });
                }
            }
        }
        match self.state.get() {
            State::Unstarted => self.kill_unstarted(),
            State::Suspended if !self.is_main() => leak_suspended(self),
            // Main (suspended or running) has no stack of its own.
            State::Suspended | State::Running | State::Dead => {}
        }
        if let Some(stack) = self.stack.take() {
            stack::give_back(stack, self.deepest());
        }
    }
}

// ---------------------------------------------------------------------------
// Per-thread state

struct ThreadState {
    /// The running greenlet, kept alive by its handles or by `held`. Null
    /// until main is made, and again after the thread's teardown released it.
    current: Cell<*const Inner>,
    /// Null, or one strong reference (`Rc::into_raw`) to the running greenlet
    /// whose last handle was dropped while it ran (or to a main greenlet that
    /// was just made), kept until it switches away; the greenlet it switches
    /// to then drops it (see `receive`). Between the switch and that release
    /// it refers to the greenlet that switched, no longer `current`. A
    /// greenlet created meanwhile takes the reference over as its parent
    /// link (see `parent_link_to_current`), leaving this null.
    held: Cell<*const Inner>,
    next_id: Cell<u64>,
    /// A greenlet that has just died and switched to us for the last time,
    /// until the receiver reclaims its stack (with the `asan` feature, the
    /// greenlet that made any switch, for the sanitizers). Null otherwise,
    /// and for a delivery that did not switch.
    origin: Cell<*const Inner>,
    /// Whether a tracer is set.
    tracing: Cell<bool>,
    /// Set when `Greenlet::switch` must not take its fast path for a reason
    /// that belongs to the thread: a tracer is set, or `current` is null
    /// (main not made yet, or released at teardown). True whenever
    /// `current` is null, which the fast path relies on; `set_switch_slow`
    /// recomputes it wherever `current` becomes null or not, or `tracing`
    /// changes.
    switch_slow: Cell<bool>,
    /// Set once this thread's `Teardown` destructor has run.
    torn_down: Cell<bool>,
    /// Dead records kept for reuse, so that creating a greenlet in the
    /// steady state allocates nothing (its stack comes from the stack pool):
    /// a list linked through `Inner::next_free`, each entry an `Rc::into_raw`
    /// that is its record's only reference. `Teardown` frees it, after which
    /// nothing more is kept.
    recycled: Cell<*const Inner>,
    /// How many more records the list may keep: `RECYCLED_LIMIT` minus its
    /// length, and 0 once torn down (one test for both on the hot path).
    recycle_room: Cell<usize>,
    /// A weak reference (`Weak::into_raw`) to this thread's main greenlet,
    /// so that a main released at teardown is revived, not duplicated, when
    /// a later thread-local destructor still drops greenlets whose parent
    /// it is. Null until main is first made.
    main: Cell<*const Inner>,
    /// Records (`Inner`s) alive, main's included, so that [`Root::enter`]
    /// can tell that none outlives it.
    #[cfg(not(feature = "std"))]
    records: Cell<usize>,
}

impl ThreadState {
    /// Recomputes `switch_slow`, after `current` or `tracing` changed.
    fn set_switch_slow(&self) {
        self.switch_slow
            .set(self.tracing.get() || self.current.get().is_null());
    }

    const fn new() -> ThreadState {
        ThreadState {
            current: Cell::new(ptr::null()),
            held: Cell::new(ptr::null()),
            next_id: Cell::new(1),
            origin: Cell::new(ptr::null()),
            tracing: Cell::new(false),
            // `current` is null.
            switch_slow: Cell::new(true),
            torn_down: Cell::new(false),
            recycled: Cell::new(ptr::null()),
            recycle_room: Cell::new(RECYCLED_LIMIT),
            main: Cell::new(ptr::null()),
            #[cfg(not(feature = "std"))]
            records: Cell::new(0),
        }
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static THREAD: ThreadState = const { ThreadState::new() };
    static TRACER: Cell<Option<Tracer>> = const { Cell::new(None) };
    static TEARDOWN: Teardown = const { Teardown };
}

/// Releases the main greenlet and frees the recycled records when the
/// thread exits. Registered when main is first made, hence before any record
/// is recycled.
#[cfg(feature = "std")]
struct Teardown;

#[cfg(feature = "std")]
impl Drop for Teardown {
    fn drop(&mut self) {
        THREAD.with(tear_down);
    }
}

/// The end of a thread (or, without `std`, of [`Root::enter`]): main is
/// released and the recycled records are freed; nothing is kept after.
fn tear_down(t: &ThreadState) {
    t.torn_down.set(true);
    t.recycle_room.set(0);
    release_main_if_current(t);
    loop {
        let head = t.recycled.get();
        if head.is_null() {
            break;
        }
        // SAFETY: a list entry owns its record's only reference (from
        // `Rc::into_raw`); it is unlinked before it is dropped.
        let record = unsafe { Rc::from_raw(head) };
        t.recycled.set(record.next_free.get());
        drop(record);
    }
}

fn release_main_if_current(t: &ThreadState) {
    let cur = t.current.get();
    // SAFETY: the running greenlet is live (kept by a handle or `held`).
    if !cur.is_null() && unsafe { (*cur).is_main() } {
        t.current.set(ptr::null());
        t.set_switch_slow();
        let held = t.held.replace(ptr::null());
        if !held.is_null() {
            debug_assert_eq!(held, cur);
            // SAFETY: this gives back the reference `held` owned.
            drop(unsafe { Rc::from_raw(held) });
        }
    }
}

/// This thread's state. The accessor is tiny so that it always inlines into
/// a direct thread-local access (a `THREAD.with` around a large closure can
/// stay out of line and reach the thread-local through an indirect call).
#[cfg(feature = "std")]
#[inline(always)]
fn thread_state() -> &'static ThreadState {
    let state: *const ThreadState = THREAD.with(|t| t as *const ThreadState);
    // SAFETY: `THREAD` is const-initialised and has no destructor, so its
    // storage stays valid for as long as this thread runs, which outlives
    // every use: the reference never leaves the thread (`ThreadState` is not
    // `Sync`, so `&ThreadState` is not `Send`).
    unsafe { &*state }
}

/// This thread's state, unless the thread-local is already destroyed.
#[cfg(feature = "std")]
fn try_thread_state() -> Option<&'static ThreadState> {
    let state = THREAD.try_with(|t| t as *const ThreadState).ok()?;
    // SAFETY: as in `thread_state`.
    Some(unsafe { &*state })
}

/// Runs `f` on this thread's tracer slot, unless it is already destroyed.
#[cfg(feature = "std")]
fn with_tracer_slot<R>(f: impl FnOnce(&Cell<Option<Tracer>>) -> R) -> Option<R> {
    TRACER.try_with(f).ok()
}

/// The state of one thread of greenlets, for builds without `std`, where
/// there is no thread-local to keep it in: [`Root::enter`] makes the code it
/// runs the main greenlet of this root, and every greenlet created inside
/// belongs to it.
///
/// One root is entered at a time, process-wide: the root's address is kept
/// in one global slot while [`Root::enter`] runs (bare metal has no portable
/// way to tell cores or threads apart). A `Root` is neither `Send` nor
/// `Sync`.
///
/// # Examples
///
/// A bare-metal program (the crate built without its `std` feature):
///
/// ```ignore
/// use greenlet::{Builder, Root, stack::Stack};
///
/// static mut STACK: [core::mem::MaybeUninit<u8>; 64 * 1024] = [core::mem::MaybeUninit::uninit(); 64 * 1024];
///
/// let root = Root::new();
/// // SAFETY: one core, no interrupt handler uses greenlets, and every
/// // greenlet is dropped before `enter` returns.
/// let sum = unsafe {
///     root.enter(|| {
///         // SAFETY: the body's stack use is far below 64 KiB.
///         let stack = Stack::from_static(&mut *core::ptr::addr_of_mut!(STACK)).unwrap();
///         let g = Builder::new().stack(stack).spawn(|x: u32| Ok(x + 1)).unwrap();
///         g.switch::<u32, u32>(41).unwrap()
///     })
/// };
/// assert_eq!(sum, 42);
/// ```
///
/// (Not run as a doctest: doctests build with `std`. `tests/no_std_root.rs`
/// and the `nostd-root` step of `ci/test` run the same on the host.)
#[cfg(not(feature = "std"))]
pub struct Root {
    state: ThreadState,
    tracer: Cell<Option<Tracer>>,
}

/// The root [`Root::enter`] runs under, or null.
#[cfg(not(feature = "std"))]
static ROOT: core::sync::atomic::AtomicPtr<Root> =
    core::sync::atomic::AtomicPtr::new(ptr::null_mut());

#[cfg(not(feature = "std"))]
impl Root {
    /// A root with no greenlet yet.
    pub const fn new() -> Root {
        Root {
            state: ThreadState::new(),
            tracer: Cell::new(None),
        }
    }

    /// Runs `f` as the main greenlet of this root and returns what it
    /// returns. Inside `f` the whole safe API works as on a `std` thread:
    /// [`getcurrent`] is `f`'s context, new greenlets' default parent.
    /// When `f` returns, the tracer is removed, and this root's main
    /// greenlet is released and its recycled records freed, as at the end
    /// of a thread.
    ///
    /// # Safety
    ///
    /// - While `f` runs, no other thread, core or interrupt handler may call
    ///   into this crate's safe API: the root is found through one global
    ///   slot.
    /// - Every greenlet handle made inside `f` (and every [`getcurrent`]) is
    ///   dropped before `f` returns: a greenlet must not outlive its root.
    ///   `enter` counts the records still alive when `f` returns and panics
    ///   if there are any, naming how many, but cannot undo the escape.
    ///
    /// # Panics
    ///
    /// If a root is already entered (roots do not nest), or if greenlets
    /// outlive `f` (see above). Should `f` itself unwind (only possible
    /// under a panic runtime that unwinds), the root is left, without the
    /// teardown: what it held is leaked, never used again.
    pub unsafe fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        use core::sync::atomic::Ordering;
        let me = ptr::from_ref(self).cast_mut();
        if ROOT
            .compare_exchange(ptr::null_mut(), me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            panic!("greenlet: a Root is already entered; roots do not nest, one runs at a time");
        }
        /// Empties the slot when `enter` ends, also if `f` unwinds (under a
        /// panic runtime that unwinds), so that it never points to a root
        /// that is gone.
        struct Entered;
        impl Drop for Entered {
            fn drop(&mut self) {
                ROOT.store(ptr::null_mut(), Ordering::Release);
            }
        }
        let entered = Entered;
        self.state.torn_down.set(false);
        // The list is empty (a fresh root, or emptied by the last teardown).
        self.state.recycle_room.set(RECYCLED_LIMIT);
        let out = f();
        // As at the end of a thread: the tracer goes (it may hold greenlet
        // handles), then main and the recycled records.
        self.state.tracing.set(false);
        self.state.set_switch_slow();
        drop(self.tracer.take());
        tear_down(&self.state);
        let alive = self.state.records.get();
        drop(entered);
        if alive != 0 {
            panic!(
                "greenlet: {alive} greenlet record(s) outlived Root::enter; drop every greenlet \
                 handle before the closure given to enter returns"
            );
        }
        out
    }
}

#[cfg(not(feature = "std"))]
impl Default for Root {
    fn default() -> Root {
        Root::new()
    }
}

#[cfg(not(feature = "std"))]
impl Drop for Root {
    fn drop(&mut self) {
        // The tracer may hold greenlet handles; `enter` has ended, so they
        // can only be dead or unstarted ones, whose drop needs no root.
        drop(self.tracer.take());
    }
}

/// The entered root, if any.
#[cfg(not(feature = "std"))]
#[inline(always)]
fn try_root() -> Option<&'static Root> {
    let root = ROOT.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the slot holds a root only while `Root::enter` borrows it, and
    // by `enter`'s contract only the entered context (and the greenlets it
    // runs, before `enter` returns) reads it.
    (!root.is_null()).then(|| unsafe { &*root })
}

#[cfg(not(feature = "std"))]
#[cold]
fn no_root() -> ! {
    panic!(
        "greenlet: no Root is entered; without std, use greenlets inside Root::enter, which \
         stands in for the thread-local state of a std thread"
    )
}

/// The entered root's state.
#[cfg(not(feature = "std"))]
#[inline(always)]
fn thread_state() -> &'static ThreadState {
    match try_root() {
        Some(root) => &root.state,
        None => no_root(),
    }
}

/// The entered root's state, if a root is entered.
#[cfg(not(feature = "std"))]
fn try_thread_state() -> Option<&'static ThreadState> {
    try_root().map(|root| &root.state)
}

/// Runs `f` on the entered root's tracer slot.
#[cfg(not(feature = "std"))]
fn with_tracer_slot<R>(f: impl FnOnce(&Cell<Option<Tracer>>) -> R) -> Option<R> {
    try_root().map(|root| f(&root.tracer))
}

/// Counts a record made (`Root::enter` checks that none outlives it).
#[inline(always)]
fn count_record(_t: &ThreadState, _delta: isize) {
    #[cfg(not(feature = "std"))]
    _t.records.set(_t.records.get().wrapping_add_signed(_delta));
}

/// The running greenlet, creating this thread's main greenlet on first use.
#[inline]
fn current_ptr() -> *const Inner {
    current_in(thread_state())
}

#[inline(always)]
fn current_in(t: &ThreadState) -> *const Inner {
    let cur = t.current.get();
    if cur.is_null() { make_main(t) } else { cur }
}

#[cold]
fn make_main(t: &ThreadState) -> *const Inner {
    let weak = t.main.get();
    if !weak.is_null() {
        // SAFETY: `main` holds a weak count from `Weak::into_raw`, which stays
        // with the thread state (hence `ManuallyDrop`).
        let weak = ManuallyDrop::new(unsafe { rc::Weak::from_raw(weak) });
        if let Some(main) = weak.upgrade() {
            // Revive the main greenlet released at teardown: it is running
            // again, as the thread's remaining destructors run on its stack.
            main.state.set(State::Running);
            let raw = Rc::into_raw(main);
            t.current.set(raw);
            t.set_switch_slow();
            t.held.set(raw);
            return raw;
        }
        // SAFETY: the old main is gone; give back the weak count.
        drop(ManuallyDrop::into_inner(weak));
        t.main.set(ptr::null());
    }
    count_record(t, 1);
    let main = Rc::new(Inner {
        id: 0,
        state: Cell::new(State::Running),
        parent: Cell::new(None),
        saved: Cell::new(None),
        expects: Cell::new(TypeKey::of::<()>()),
        stack: Cell::new(None),
        stack_top: 0,
        stack_len: 0,
        guard_start: 0,
        guard_end: 0,
        fiber: Fiber::new(0, 0),
        low_water: Cell::new(usize::MAX),
        body: Cell::new(None),
        next_free: Cell::new(ptr::null()),
    });
    t.main.set(rc::Weak::into_raw(Rc::downgrade(&main)));
    let raw = Rc::into_raw(main);
    t.current.set(raw);
    t.set_switch_slow();
    // Nothing else holds main yet: the thread state keeps it while it runs,
    // and lets it go (making it exit if no handle appeared) when it switches
    // away, as it would any running greenlet whose last handle was dropped.
    t.held.set(raw);
    #[cfg(feature = "std")]
    {
        if !t.torn_down.get() {
            // Registers the destructor that releases main at thread exit. If
            // the thread is already tearing down, `Greenlet::drop` releases it.
            let _ = TEARDOWN.try_with(|_| ());
        }
        crate::overflow::ensure_installed();
    }
    raw
}

fn next_id(t: &ThreadState) -> u64 {
    let id = t.next_id.get();
    t.next_id.set(id + 1);
    id
}

/// Geometry of the running greenlet's guard, for the overflow handler:
/// `(guard_start, guard_end, usable_len, id)`. Async-signal-safe: one TLS
/// read and plain field reads, no allocation, no lock.
#[cfg(feature = "std")]
pub(crate) fn running_guard() -> Option<(usize, usize, usize, u64)> {
    THREAD
        .try_with(|t| {
            let cur = t.current.get();
            if cur.is_null() {
                return None;
            }
            // SAFETY: `current` owns a reference, so the record is live; the
            // fields read are immutable after creation.
            let inner = unsafe { &*cur };
            (!inner.is_main()).then_some((
                inner.guard_start,
                inner.guard_end,
                inner.stack_len,
                inner.id,
            ))
        })
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------
// What crosses a switch

/// The word a switch hands over is a pointer whose two low bits say what it
/// points to:
///
/// - `0b00`: a [`ValueSlot`] on the sender's stack holding a value of the
///   type the receiver waits for (checked by the sender), sent by a live
///   greenlet while the thread state's `held` is null, so that the receiver
///   has no reference to release. This is the only case an ordinary switch
///   takes (with `held` set, the same slot goes as a `Slot` transfer).
/// - `0b01`: a [`Transfer`] describing anything else.
/// - `0b10`: a `Box<Rare>` the receiver takes ownership of (a tracer that
///   panicked on a transfer that had no room for a payload).
/// - `0b11`: a [`ValueSlot`] as for `0b00`, but sent by a greenlet that has
///   just died, from the body slot at the top of its stack: the receiver
///   reclaims that stack once it has read the value. This is how a body's
///   return value usually reaches its parent.
const TAG_MASK: usize = 0b11;
const TAG_TRANSFER: usize = 0b01;
const TAG_BOXED: usize = 0b10;
const TAG_FINAL: usize = 0b11;

/// Where an ordinary switch's value waits for the receiver, who moves it out.
/// Aligned so that its address leaves the word's tag bits clear.
#[repr(C, align(4))]
struct ValueSlot<T>(ManuallyDrop<T>);

#[inline(always)]
fn tag(word: *mut u8) -> usize {
    word.addr() & TAG_MASK
}

#[inline(always)]
fn transfer_word(transfer: &mut Transfer) -> *mut u8 {
    (transfer as *mut Transfer)
        .cast::<u8>()
        .map_addr(|a| a | TAG_TRANSFER)
}

#[inline(always)]
fn untag(word: *mut u8) -> *mut u8 {
    word.map_addr(|a| a & !TAG_MASK)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `payload` points to an `Option<T>` of the type the receiver waits for
    /// (the final value of a dying greenlet).
    Value,
    /// The receiver waited for `Discard`; the value was dropped by the sender.
    Discarded,
    Exit,
    Exited,
    /// `payload` points to a [`Rare`] that lives as long as the sender's
    /// frame (or the final slot of a dying greenlet).
    Rare,
    /// `payload` points to a [`ValueSlot`] holding a value of the type the
    /// receiver waits for, as a tag-0 word would, but sent while the thread
    /// state's `held` holds the sender, which the receiver must release
    /// (see [`switch_wrapped`]).
    Slot,
}

/// The payloads a switch rarely carries, kept out of [`Transfer`] so that it
/// has nothing to drop.
enum Rare {
    Thrown(Box<dyn Any>),
    Panic(Box<dyn Any + Send>),
    Mismatch(&'static str, &'static str),
    /// [`SwitchError::Panicking`] returned by a body: passed on as it is.
    Panicking,
    Taken,
}

/// Lives on the sender's stack (or, for a dying greenlet, in the final slot
/// at the top of its stack) for the duration of one switch.
struct Transfer {
    kind: Kind,
    payload: *mut u8,
}

impl Transfer {
    #[inline(always)]
    fn new(kind: Kind, payload: *mut u8) -> Self {
        Transfer { kind, payload }
    }
}

/// The kind of what `word` carries (a tag-0 word is a plain value).
///
/// # Safety
///
/// `word` is a live tagged word (see [`TAG_MASK`]).
#[inline(always)]
unsafe fn word_kind(word: *mut u8) -> Kind {
    match tag(word) {
        0 | TAG_FINAL => Kind::Value,
        // SAFETY: a tag-1 word points to a live transfer.
        TAG_TRANSFER => unsafe { (*untag(word).cast::<Transfer>()).kind },
        _ => Kind::Rare,
    }
}

/// Trace events, as Python's greenlet names them.
///
/// # Examples
///
/// ```
/// use greenlet::Event;
/// assert_eq!(Event::Switch.as_str(), "switch");
/// assert_ne!(Event::Switch, Event::Throw);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A switch, or a body returning a value to its parent.
    Switch,
    /// A throw, or an error or panic leaving a body for its parent.
    Throw,
}

impl Event {
    /// `"switch"` or `"throw"`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(greenlet::Event::Throw.as_str(), "throw");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Switch => "switch",
            Event::Throw => "throw",
        }
    }
}

/// The core of every switch, not generic: trace, forward through unstarted
/// targets for non-values, hand over, and on resumption return the word that
/// resumed us. `leaving` is the state the current greenlet is left in
/// (`Suspended`, or `Dead` for a greenlet's last switch, whose caller has
/// already marked it dead).
///
/// # Safety
///
/// `current` is the running greenlet and `target` a live greenlet of this
/// thread other than it; `word` is a tagged word (see [`TAG_MASK`]) whose
/// value, if any, is of the type `target` waits for (checked by the caller);
/// a tag-0 word comes from a greenlet left `Suspended`, a tag-3 word from
/// one left `Dead`; `drop_value` drops
/// the value the word carries (the `ValueSlot`'s content for tags 0 and 3, the
/// `Option` behind a `Value` transfer's payload) if it is not delivered.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn switch_core(
    thread: &ThreadState,
    current: *const Inner,
    mut target: *const Inner,
    mut word: *mut u8,
    event: Event,
    expects: TypeKey,
    leaving: State,
    drop_value: unsafe fn(*mut u8),
) -> *mut u8 {
    // `current` and `target` are live: `current` is kept by a handle or by
    // the thread state, `target` by a handle or a parent link of a greenlet
    // held by the caller.
    if thread.tracing.get()
        || tag(word) != 0
            // SAFETY: `target` is live (see above).
            && unsafe { (*target).state.get() } == State::Unstarted
            // SAFETY: `word` is live (this function's contract).
            && unsafe { word_kind(word) } != Kind::Value
    {
        // SAFETY: this function's own contract.
        let (to, new_word) =
            unsafe { prepare_slow(thread, current, target, word, event, drop_value) };
        word = new_word;
        match to {
            Some(t) => target = t,
            None => return slow_self_delivery(thread, word),
        }
        // The tracer may have dropped the last handle of the current
        // greenlet, filling `held`.
        if tag(word) == 0 && !thread.held.get().is_null() {
            // SAFETY: this function's own contract, with a tag-0 word.
            return unsafe {
                switch_wrapped(thread, current, target, word, expects, leaving, drop_value)
            };
        }
    } else if tag(word) == 0 && !thread.held.get().is_null() {
        // A plain value goes as a tag-0 word only while `held` is empty, so
        // that its receiver need not look (see `receive`). Tested here,
        // where the word's tag is still the caller's (known when inlined).
        // SAFETY: this function's own contract, with a tag-0 word.
        return unsafe {
            switch_wrapped(thread, current, target, word, expects, leaving, drop_value)
        };
    }
    // SAFETY: `target` is live (held by the caller).
    let tgt = unsafe { &*target };
    // Taken before anything changes: a target without a saved context is
    // running or finished, and switching to it would be a bug, not UB.
    let Some(to) = tgt.saved.take() else {
        // SAFETY: the word is undelivered and `drop_value` matches it.
        unsafe { not_resumable(tgt, word, drop_value) }
    };
    // SAFETY: as this function's contract; `to` is `target`'s saved
    // context, just taken out of its slot, and a tag-0 word goes only while
    // `held` is empty (checked above).
    unsafe { resume(thread, current, target, to, word, expects, leaving) }
}

/// The rest of [`switch_core`] for a plain value (a tag-0 word) sent while
/// the thread state's `held` holds a reference: the value goes as a `Slot`
/// transfer instead, whose receiver releases `held` (see [`receive`]). The
/// transfer lives in this frame, which stays put until we are resumed, by
/// when the receiver has read it.
///
/// # Safety
///
/// As for [`switch_core`], with a tag-0 word, and the tracer and the
/// forwarding already done.
#[cold]
#[inline(never)]
unsafe fn switch_wrapped(
    thread: &ThreadState,
    current: *const Inner,
    target: *const Inner,
    word: *mut u8,
    expects: TypeKey,
    leaving: State,
    drop_value: unsafe fn(*mut u8),
) -> *mut u8 {
    // SAFETY: `target` is live (held by the caller).
    let tgt = unsafe { &*target };
    // As in `switch_core`.
    let Some(to) = tgt.saved.take() else {
        // SAFETY: the word is undelivered and `drop_value` matches it.
        unsafe { not_resumable(tgt, word, drop_value) }
    };
    let mut wrapped = Transfer::new(Kind::Slot, word);
    // SAFETY: as this function's contract; `to` is `target`'s saved
    // context, just taken out of its slot; the word is now a transfer (the
    // value stays in the sender's slot, moved out by the receiver).
    unsafe {
        resume(
            thread,
            current,
            target,
            to,
            transfer_word(&mut wrapped),
            expects,
            leaving,
        )
    }
}

/// The end of every switch, once the target's saved context `to` has been
/// taken out of its slot: records how the current greenlet leaves, makes
/// the target current, hands `word` over, and on resumption returns the
/// word that resumed us.
///
/// # Safety
///
/// As for [`switch_core`], with the word final (no tracer to call, no
/// forwarding left to do), and `to` the saved context of `target`, taken
/// out of `target.saved` by the caller, so that it is resumed once. A
/// tag-0 word only while the thread state's `held` is null: its receiver
/// does not look at `held` (see [`receive`]).
#[inline(always)]
unsafe fn resume(
    thread: &ThreadState,
    current: *const Inner,
    target: *const Inner,
    to: StackPointer,
    word: *mut u8,
    expects: TypeKey,
    leaving: State,
) -> *mut u8 {
    // SAFETY: `current` is live (the running greenlet).
    let cur = unsafe { &*current };
    // SAFETY: `target` is live (held by the caller).
    let tgt = unsafe { &*target };
    if leaving == State::Dead {
        // Our callers marked us dead already (before the tracer could see
        // us); what a dead greenlet waits for is never read.
        debug_assert_eq!(cur.state.get(), State::Dead);
    } else {
        // Usually what it waited for last time (a loop that switches the
        // same types): then nothing to write. Equal `TypeId` pointers mean
        // the same type, hence the same name.
        if !ptr::eq(cur.expects.get().id, expects.id) {
            cur.expects.set(expects);
        }
        cur.state.set(leaving);
    }
    tgt.state.set(State::Running);
    // Whoever resumes next releases `held` if it holds us, once they have
    // read the word. Until then the target is kept by whoever referred to it
    // (a suspended greenlet is never kept by `held`), and after that by its
    // handles or `held`, as for any running greenlet.
    thread.current.set(target);
    if leaving == State::Dead || cfg!(feature = "asan") {
        thread.origin.set(current);
    }
    let depth = to.as_ptr() as usize;
    if depth < tgt.low_water.get() {
        tgt.low_water.set(depth);
    }
    cur.fiber.start_switch(&tgt.fiber, leaving == State::Dead);
    // SAFETY: `to` is the target's saved context, resumed once (taken out of
    // its slot); our save slot stays valid while we are suspended because our
    // record lives until we are dead: a suspended greenlet whose last
    // reference goes is resumed to exit first (`Greenlet::drop`).
    let back = unsafe { raw::switch(word.expose_provenance(), to, cur.saved.as_ptr()) };
    arrived(cur, thread);
    ptr::with_exposed_provenance_mut(back)
}

/// A switch to a greenlet that is running or finished: drop what the switch
/// carried (its sender's frame does not) and panic.
///
/// # Safety
///
/// As for [`switch_core`]: `word` is undelivered and `drop_value` matches it.
#[cold]
#[inline(never)]
unsafe fn not_resumable(target: &Inner, word: *mut u8, drop_value: unsafe fn(*mut u8)) -> ! {
    match tag(word) {
        // SAFETY: an undelivered value, dropped once.
        0 | TAG_FINAL => unsafe { drop_value(untag(word)) },
        // SAFETY: a box made by `call_tracer`, owned by whoever gets the word.
        TAG_BOXED => drop(unsafe { Box::from_raw(untag(word).cast::<Rare>()) }),
        _ => {}
    }
    panic!(
        "cannot switch to greenlet #{}: it is running or has just finished (did a tracer or a \
         callback switch away in the middle of a switch?)",
        target.id
    )
}

/// The rare steps before a switch: forwarding a non-value past unstarted
/// targets (which die without running) and calling the tracer. Returns the
/// final target, or `None` if the word lands back on `current`, and the
/// word to send (the tracer's panic if it panicked).
///
/// # Safety
///
/// As for [`switch_core`].
#[cold]
#[inline(never)]
unsafe fn prepare_slow(
    thread: &ThreadState,
    current: *const Inner,
    mut target: *const Inner,
    mut word: *mut u8,
    mut event: Event,
    drop_value: unsafe fn(*mut u8),
) -> (Option<*const Inner>, *mut u8) {
    // The tracer sees the greenlet the call aimed at, once, as Python's
    // greenlet reports it, even when the transfer then climbs past it.
    let mut traced = !thread.tracing.get();
    loop {
        // SAFETY: `target` is live (see `switch_core`).
        let t = unsafe { &*target };
        if !traced {
            traced = true;
            // SAFETY: `word` and `drop_value` per the contract.
            let ok = unsafe { call_tracer(event, current, target, &mut word, drop_value) };
            if !ok && target == current {
                // The tracer panicked: the word is now that panic.
                return (None, word);
            }
        }
        // SAFETY: `word` is live.
        let kind = unsafe { word_kind(word) };
        if t.state.get() == State::Unstarted
            && !matches!(kind, Kind::Value | Kind::Slot | Kind::Discarded)
        {
            // An error aimed at an unstarted greenlet kills it without running
            // it and climbs to its parent. A panic in its body's destructor
            // climbs instead of the error (raised here, it would escape a
            // dying greenlet's last switch, which has nowhere to unwind).
            if let Err(payload) = t.try_kill_unstarted() {
                // SAFETY: `word` and `drop_value` per the contract; the word
                // is undelivered.
                word = unsafe { carry_panic(word, payload, drop_value) };
            } else if kind == Kind::Exit {
                // SAFETY: only a transfer (tag 1) has the `Exit` kind; it is
                // the sender's, writable for the switch.
                unsafe { (*untag(word).cast::<Transfer>()).kind = Kind::Exited };
            }
            // SAFETY: `target` is live (see `switch_core`).
            target = unsafe { Inner::resolve(target) };
            event = Event::Throw;
            if target == current {
                return (None, word);
            }
            continue;
        }
        return (Some(target), word);
    }
}

/// Tells the sanitizers we arrived on `me`'s stack, resumed by the greenlet
/// in `origin` (which the `asan` feature keeps up to date at every switch;
/// without it, the sanitizer hooks are empty and ignore it).
#[inline(always)]
fn arrived(me: &Inner, thread: &ThreadState) {
    let origin = thread.origin.get();
    // SAFETY: the origin, if any, switched to us and is live until `receive`
    // releases it.
    me.fiber
        .finish_switch((!origin.is_null()).then(|| unsafe { &(*origin).fiber }));
}

/// A word that, after forwarding, lands back on the greenlet sending it
/// (for instance a throw at an unstarted child of the current greenlet):
/// there is no origin to release.
#[cold]
fn slow_self_delivery(thread: &ThreadState, word: *mut u8) -> *mut u8 {
    thread.origin.set(ptr::null());
    word
}

/// Calls the tracer with handles to both ends. Returns false if it panicked,
/// in which case the tracer is removed and `word` becomes that panic.
///
/// # Safety
///
/// As for [`switch_core`].
#[cold]
unsafe fn call_tracer(
    event: Event,
    origin: *const Inner,
    target: *const Inner,
    word: &mut *mut u8,
    drop_value: unsafe fn(*mut u8),
) -> bool {
    let Some(tracer) = gettrace() else {
        return true;
    };
    // SAFETY: both records are live (see `switch_core`); the handles made
    // here hold their own references and are dropped before returning.
    let (o, t) = unsafe {
        Rc::increment_strong_count(origin);
        Rc::increment_strong_count(target);
        (
            Greenlet::from_rc(Rc::from_raw(origin)),
            Greenlet::from_rc(Rc::from_raw(target)),
        )
    };
    let result = rt::catch(|| tracer(event, &o, &t));
    drop(tracer);
    // Neither handle is the last one: the caller holds both records.
    drop(o);
    drop(t);
    match result {
        Ok(()) => true,
        Err(payload) => {
            settrace(None);
            // SAFETY: `word` and `drop_value` per this function's contract.
            *word = unsafe { carry_panic(*word, payload, drop_value) };
            false
        }
    }
}

/// Makes an undelivered `word` carry the panic `payload` instead of what it
/// carried, which is dropped, and returns the new word. A panic raised by
/// that drop (a value or a thrown error whose destructor panics) is caught
/// and discarded: the first panic goes on. Nothing here may unwind, since a
/// dying greenlet calls it on the way to its last switch, where a panic
/// would have nowhere to go.
///
/// # Safety
///
/// As for [`switch_core`]: `word` is live and undelivered, and `drop_value`
/// drops the value it carries, if any.
#[cold]
#[inline(never)]
unsafe fn carry_panic(
    word: *mut u8,
    payload: rt::PanicPayload,
    drop_value: unsafe fn(*mut u8),
) -> *mut u8 {
    let at = untag(word);
    match tag(word) {
        0 | TAG_FINAL => {
            // SAFETY: an undelivered value, dropped once; the slot is the
            // sender's and never read again.
            discard_panic(rt::catch(|| unsafe { drop_value(at) }));
        }
        TAG_TRANSFER => {
            // SAFETY: a tag-1 word points to the sender's transfer.
            let transfer = unsafe { &mut *at.cast::<Transfer>() };
            match transfer.kind {
                Kind::Rare => {
                    // SAFETY: the payload is a `Rare` that outlives the
                    // switch; what it held is dropped below.
                    let old = unsafe {
                        core::mem::replace(
                            &mut *transfer.payload.cast::<Rare>(),
                            Rare::Panic(payload),
                        )
                    };
                    discard_panic(rt::catch(move || drop(old)));
                    return word;
                }
                Kind::Value | Kind::Slot => {
                    let value = transfer.payload;
                    // SAFETY: the value was put there by the sender and not
                    // taken; dropped once, the transfer being replaced below.
                    discard_panic(rt::catch(|| unsafe { drop_value(value) }));
                }
                Kind::Discarded | Kind::Exit | Kind::Exited => {}
            }
        }
        _ => {
            // SAFETY: a `Box<Rare>` made below by an earlier call, owned by
            // whoever gets the word; what it held is dropped below.
            let old = unsafe { core::mem::replace(&mut *at.cast::<Rare>(), Rare::Panic(payload)) };
            discard_panic(rt::catch(move || drop(old)));
            return word;
        }
    }
    let boxed = Box::into_raw(Box::new(Rare::Panic(payload))).cast::<u8>();
    boxed.map_addr(|a| a | TAG_BOXED)
}

/// Drops the payload of a panic that lost to an earlier one (see
/// [`carry_panic`]); one whose own destructor panics is leaked.
fn discard_panic(caught: Result<(), rt::PanicPayload>) {
    if let Err(payload) = caught
        && let Err(again) = rt::catch(move || drop(payload))
    {
        core::mem::forget(again);
    }
}

unsafe fn drop_slot<T>(p: *mut u8) {
    // SAFETY: `p` points to an `Option<T>` per the caller.
    unsafe { (*p.cast::<Option<T>>()) = None };
}

unsafe fn drop_in_slot<T>(p: *mut u8) {
    // SAFETY: `p` points to a `ValueSlot<T>` holding a value, per the caller.
    unsafe { ptr::drop_in_place(p.cast::<T>()) };
}

unsafe fn drop_nothing(_: *mut u8) {}

/// Reads what resumed us, reclaims a dead origin's stack, releases the
/// reference the thread state held on the origin, and raises a panic that
/// travelled here (only after the release, so nothing leaks).
///
/// # Safety
///
/// `word` is what the switch returned in this greenlet (or a self delivery),
/// a tagged word (see [`TAG_MASK`]) whose value, if any, is an `R`, and the
/// thread state's `origin` is the greenlet that sent it (null for a self
/// delivery).
#[inline(always)]
unsafe fn receive<R: 'static>(word: *mut u8) -> Result<R, SwitchError> {
    if tag(word) != 0 {
        if tag(word) == TAG_FINAL {
            // SAFETY: as above.
            return Ok(unsafe { receive_final::<R>(word) });
        }
        // SAFETY: as above.
        return unsafe { receive_other::<R>(word) };
    }
    // SAFETY: a tag-0 word is the sender's `ValueSlot<R>` (the sender
    // checked the type), whose value is moved out exactly once, here; the
    // sender's frame is not reused before we switch again.
    let value = unsafe { ptr::read(word.cast::<R>()) };
    // A tag-0 word comes from a live greenlet, so there is no stack to
    // reclaim, and is sent only while `held` is empty (see `resume`), so
    // there is no reference to release either.
    Ok(value)
}

/// The return value of a greenlet that has just died (a tag-3 word).
///
/// # Safety
///
/// As for [`receive`], with a tag-3 word.
#[inline(always)]
unsafe fn receive_final<R: 'static>(word: *mut u8) -> R {
    // SAFETY: a tag-3 word is the `ValueSlot<R>` in the body slot of the
    // greenlet that just died (it checked the type), moved out exactly once,
    // here, before its stack is reclaimed below.
    let value = unsafe { ptr::read(untag(word).cast::<R>()) };
    // SAFETY: the word came from the final switch of the greenlet in
    // `origin`, and has been read.
    unsafe { reclaim_final() };
    value
}

/// After a tag-3 word was read: gives the stack of the greenlet that sent
/// it (which has just died) back to the pool, then releases the reference
/// the thread state held on it, if any. Out of line and not generic: one
/// copy serves every return type, and the switch loops that inline
/// `receive` stay small.
///
/// # Safety
///
/// The word that resumed us was a tag-3 word, now read, and nothing has
/// changed the thread state's `origin` since: only the last switch of a
/// dying greenlet sends one, and `switch_core` sets `origin` to that
/// greenlet when it leaves it dead (a tag-3 word is a value, never
/// forwarded nor delivered to its sender).
#[inline(never)]
unsafe fn reclaim_final() {
    let thread = thread_state();
    let origin = thread.origin.replace(ptr::null());
    debug_assert!(!origin.is_null());
    // SAFETY: per this function's contract the origin is the greenlet that
    // just died and switched to us; it is live until `held` (if it holds
    // it) is released, below.
    let o = unsafe { &*origin };
    debug_assert_eq!(o.state.get(), State::Dead);
    // The final switch saved a stack pointer that must never be resumed.
    o.saved.set(None);
    let held = thread.held.get();
    // Each path ends in its one call, so the usual one saves no registers.
    match o.stack.take() {
        Some(stack) if held.is_null() => stack::give_back(stack, o.deepest()),
        Some(stack) => reclaim_final_held(thread, stack, o.deepest()),
        None if held.is_null() => {}
        None => release_held(thread),
    }
}

/// The rest of [`reclaim_final`] when `held` holds a reference: the stack
/// goes back, then the reference is released.
#[cold]
#[inline(never)]
fn reclaim_final_held(thread: &ThreadState, stack: Stack, low_water: usize) {
    stack::give_back(stack, low_water);
    release_held(thread);
}

/// Clears the thread state's `origin` and, if that greenlet has just died
/// (its last switch brought us here), gives its stack back to the pool.
/// Call once the word that came from it has been read.
#[inline]
fn reclaim_origin(thread: &ThreadState) {
    let origin = thread.origin.replace(ptr::null());
    if !origin.is_null() {
        // SAFETY: the origin switched to us: it is live until `held` (if it
        // holds it) is released, which the callers do after this.
        let o = unsafe { &*origin };
        if o.state.get() == State::Dead {
            // The final switch saved a stack pointer that must never be
            // resumed.
            o.saved.set(None);
            if let Some(stack) = o.stack.take() {
                stack::give_back(stack, o.deepest());
            }
        }
    }
}

/// Everything but a plain value from a live greenlet.
///
/// # Safety
///
/// As for [`receive`].
#[cold]
#[inline(never)]
unsafe fn receive_other<R: 'static>(word: *mut u8) -> Result<R, SwitchError> {
    let thread = thread_state();
    let at = untag(word);
    let received = if tag(word) == TAG_TRANSFER {
        // SAFETY: a tag-1 word points to a live transfer.
        let transfer = unsafe { &*at.cast::<Transfer>() };
        match transfer.kind {
            // SAFETY: the sender checked that the slot holds an `Option<R>`.
            Kind::Value => match unsafe { (*transfer.payload.cast::<Option<R>>()).take() } {
                Some(value) => Ok(value),
                None => unreachable!("a value transfer carries a value"),
            },
            // SAFETY: the sender checked that the slot holds an `R`, which
            // is moved out exactly once, here; the sender's frame is not
            // reused before we switch again.
            Kind::Slot => Ok(unsafe { ptr::read(transfer.payload.cast::<R>()) }),
            Kind::Discarded => discarded::<R>(),
            Kind::Exit => Err(Ok(SwitchError::Exit)),
            Kind::Exited => Err(Ok(SwitchError::Exited)),
            // SAFETY: the sender's `Rare` outlives the switch; taking it
            // leaves `Taken` for the sender's frame to drop.
            Kind::Rare => Err(rare_into(unsafe {
                core::mem::replace(&mut *transfer.payload.cast::<Rare>(), Rare::Taken)
            })),
        }
    } else {
        // SAFETY: made by `Box::into_raw` in `call_tracer`, received once.
        Err(rare_into(*unsafe { Box::from_raw(at.cast::<Rare>()) }))
    };
    reclaim_origin(thread);
    // After a switch, `held` holds nothing or the greenlet that switched to
    // us; after a self delivery, nothing or ourselves, kept.
    let held = thread.held.get();
    if !held.is_null() && held != thread.current.get() {
        release_held(thread);
    }
    match received {
        Ok(value) => Ok(value),
        Err(Ok(error)) => Err(error),
        Err(Err(panic)) => rt::resume_unwind(panic),
    }
}

/// A rare payload as an error, or as a panic to raise.
fn rare_into(rare: Rare) -> Result<SwitchError, Box<dyn Any + Send>> {
    match rare {
        Rare::Thrown(e) => Ok(SwitchError::Thrown(e)),
        Rare::Panic(p) => Err(p),
        Rare::Mismatch(sent, expected) => Ok(SwitchError::TypeMismatch { sent, expected }),
        Rare::Panicking => Ok(SwitchError::Panicking),
        Rare::Taken => unreachable!("a rare payload is received once"),
    }
}

#[cold]
fn discarded<R: 'static>() -> Result<R, Result<SwitchError, Box<dyn Any + Send>>> {
    // Only a `Discard` wait accepts a discarded value.
    let mut unit = Some(Discard);
    match (&mut unit as &mut dyn Any).downcast_mut::<Option<R>>() {
        Some(slot) => Ok(slot.take().expect("just set")),
        None => Err(Ok(SwitchError::TypeMismatch {
            sent: "<discarded>",
            expected: type_name::<R>(),
        })),
    }
}

/// Drops the reference `held` kept on the greenlet that just switched to us
/// (its last one, unless it made a handle since), which applies the
/// exit-on-last-handle rule to it.
#[cold]
#[inline(never)]
fn release_held(thread: &ThreadState) {
    let held = thread.held.replace(ptr::null());
    debug_assert!(!held.is_null() && held != thread.current.get());
    // SAFETY: `held` owned this reference (from `Rc::into_raw`), and it was
    // taken out of the cell above, so it is dropped once.
    let inner = unsafe { Rc::from_raw(held) };
    drop(Greenlet::from_rc(inner));
}

// ---------------------------------------------------------------------------
// The handle

/// A greenlet: a function running on its own stack, switched to explicitly.
///
/// A handle is a reference-counted pointer to the greenlet; clones share it.
/// Dropping the last handle to a suspended greenlet makes it exit: its
/// pending switch returns [`SwitchError::Exit`], and the drop returns once
/// the greenlet is dead, with its destructors run. Dropping the last handle
/// to an *unstarted* greenlet never runs it and never switches: its body is
/// dropped in place and its stack goes back to the pool (unlike
/// [`throw`](Self::throw), whose error climbs to the parent).
///
/// A suspended greenlet whose last handle is dropped while the thread
/// unwinds a panic cannot be switched to (see [`SwitchError::Panicking`]),
/// so it is not asked to exit: it is marked dead and never runs again, the
/// destructors of its frames never run (what they own is leaked), its
/// stack is leaked rather than pooled (it stays mapped, and counted as
/// mapped by `stack::pool_stats`, since something on it may be pinned),
/// and a line naming the greenlet's id goes to stderr. Unstarted and dead
/// greenlets need no switch to go, so a panic changes nothing for them.
///
/// Handles are neither `Send` nor `Sync`: a greenlet belongs to the thread
/// that made it, and nothing can resume it from another thread.
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>() {}
/// assert_send::<greenlet::Greenlet>();
/// ```
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<greenlet::Greenlet>();
/// ```
///
/// ```compile_fail,E0277
/// let g = greenlet::Greenlet::new(|()| Ok(()));
/// std::thread::spawn(move || { let _ = g.switch::<(), ()>(()); });
/// ```
///
/// # Examples
///
/// ```
/// use greenlet::Greenlet;
///
/// let doubler = Greenlet::new(|mut x: i32| -> Result<(), _> {
///     loop {
///         // Hand back the double; wait for the next number.
///         x = greenlet::parent().unwrap().switch(x * 2)?;
///     }
/// });
/// assert_eq!(doubler.switch::<i32, i32>(21)?, 42);
/// assert_eq!(doubler.switch::<i32, i32>(5)?, 10);
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
#[derive(Clone)]
pub struct Greenlet {
    /// The handle's reference, released by `Drop` (which may move it into
    /// the thread state's `held` or its recycled list instead), or taken
    /// out by `into_rc`: never dropped as a field.
    inner: ManuallyDrop<Rc<Inner>>,
}

impl Greenlet {
    #[inline(always)]
    fn from_rc(inner: Rc<Inner>) -> Greenlet {
        Greenlet {
            inner: ManuallyDrop::new(inner),
        }
    }

    /// The handle's reference, moved out without dropping the handle.
    #[inline(always)]
    fn into_rc(self) -> Rc<Inner> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped nor used again, so the reference
        // is moved out exactly once.
        unsafe { ManuallyDrop::take(&mut this.inner) }
    }

    /// Creates an unstarted greenlet whose parent is the current greenlet,
    /// with the default stack size. `body` starts at the first switch into
    /// it, receiving that switch's value.
    ///
    /// # Panics
    ///
    /// If the stack cannot be made (out of memory or mappings). Use
    /// [`Builder::spawn`] to get that as an `Err` instead. Without `std`
    /// there is no stack to take, so this always panics: give one with
    /// `Builder::stack`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|name: &str| Ok(format!("hello, {name}")));
    /// assert_eq!(g.switch::<&str, String>("world")?, "hello, world");
    /// assert!(g.is_dead());
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    pub fn new<A, O, F>(body: F) -> Greenlet
    where
        A: 'static,
        O: 'static,
        F: FnOnce(A) -> Result<O, SwitchError> + 'static,
    {
        match Builder::new().spawn(body) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// A builder to set the stack size or the parent.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::builder().stack_size(256 * 1024).spawn(|()| Ok(1))?;
    /// assert_eq!(g.switch::<(), i32>(())?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Suspends the current greenlet and resumes this one, handing it `value`.
    ///
    /// `value` becomes the return value of the switch at which this greenlet
    /// is suspended, or its body's argument if it has not started. The call
    /// returns when some greenlet switches back to the current one, with the
    /// value it sent, typed `R` at this call site. If this greenlet is dead,
    /// the switch goes to its nearest live ancestor (starting it if it is
    /// unstarted). Switching to the current greenlet returns `value` at once.
    /// A switch allocates nothing on the heap.
    ///
    /// # Errors
    ///
    /// - [`SwitchError::TypeMismatch`] at once, without switching, if the
    ///   target waits for a type other than `T`; or later, if the value that
    ///   comes back is not an `R` (a child's return value, say);
    /// - [`SwitchError::Exit`] if the current greenlet is asked to exit while
    ///   suspended here;
    /// - [`SwitchError::Thrown`] / [`SwitchError::Exited`] as described there;
    /// - [`SwitchError::Panicking`] at once, without switching (even to the
    ///   current greenlet), if this thread is unwinding a panic (a call from
    ///   a destructor, say); or later, if a child's body returns it.
    ///
    /// # Panics
    ///
    /// A panic that escapes a child's body is raised here, in the parent,
    /// with its original payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet::{Greenlet, getcurrent};
    ///
    /// let main = getcurrent();
    /// let g = Greenlet::new(move |a: u8| {
    ///     let b: u8 = main.switch(a + 1)?; // back to main with a + 1
    ///     Ok(b + 1)                       // the return value goes to main too
    /// });
    /// assert_eq!(g.switch::<u8, u8>(1)?, 2);
    /// assert_eq!(g.switch::<u8, u8>(10)?, 11);
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    #[inline(always)]
    pub fn switch<T: 'static, R: 'static>(&self, value: T) -> Result<R, SwitchError> {
        if rt::panicking() {
            return Err(SwitchError::Panicking);
        }
        // The common case, checked with as few tests as possible: main
        // already made, a value of the type this greenlet waits for, no
        // tracer, `held` empty, and a saved context to resume. Having one
        // rules out, without testing them, a dead greenlet (a greenlet killed
        // unstarted or leaked has its saved context cleared as it is marked
        // dead; one that finished, by the greenlet its last switch resumed,
        // as soon as that one has read the word, before any other code runs)
        // and the current one (its context was taken out of its slot by the
        // switch that resumed it). Anything else takes the general path,
        // which tests everything again: nothing has changed.
        let thread = thread_state();
        let current = thread.current.get();
        let target = Rc::as_ptr(&self.inner);
        if self.inner.expects.get().is::<T>()
            // One test for all three: no tracer and `current` not null (see
            // `switch_slow`), and `held` empty (a plain value goes as a tag-0
            // word only then, see `resume`).
            && (thread.held.get().addr() | usize::from(thread.switch_slow.get())) == 0
        {
            debug_assert!(!current.is_null());
            // A `take` that finds `None` leaves `None`: the general path
            // finds the slot as it was.
            if let Some(to) = self.inner.saved.take() {
                debug_assert!(target != current);
                debug_assert!(matches!(
                    self.inner.state.get(),
                    State::Suspended | State::Unstarted
                ));
                // Moved out by the receiver: never dropped here.
                let mut slot = ValueSlot(ManuallyDrop::new(value));
                // SAFETY: `current` is the running greenlet (not null, as
                // `switch_slow` is clear), and `target`, held by `self`, is
                // another one: it had a saved context, which only a
                // suspended or unstarted greenlet has when this runs (see
                // above), and `to` is that context, taken out of its slot.
                // It waits for a `T`, checked above, and no tracer is set.
                // The value is a tag-0 word from a greenlet left suspended,
                // sent while `held` is null (checked above).
                let word = unsafe {
                    resume(
                        thread,
                        current,
                        target,
                        to,
                        (&raw mut slot).cast(),
                        TypeKey::of::<R>(),
                        State::Suspended,
                    )
                };
                // SAFETY: `word` came back from the switch.
                return unsafe { receive::<R>(word) };
            }
        }
        self.switch_general(value)
    }

    /// Everything [`switch`](Self::switch) does that its common case does
    /// not: main to make, a dead or running target, a type mismatch or a
    /// `Discard` wait, a tracer, or `held` set (the value then goes as a
    /// `Slot` transfer, see `switch_wrapped`). Called before anything was
    /// changed.
    #[cold]
    #[inline(never)]
    fn switch_general<T: 'static, R: 'static>(&self, value: T) -> Result<R, SwitchError> {
        {
            let thread = thread_state();
            let current = current_in(thread);
            // SAFETY: `self` holds the record alive.
            let target = unsafe { Inner::resolve(Rc::as_ptr(&self.inner)) };
            if target == current {
                trace_self(Event::Switch);
                return self_switch(value);
            }
            // SAFETY: `target` is live (held by `self` or a parent link).
            let expects = unsafe { (*target).expects.get() };
            if !expects.is::<T>() {
                return switch_mismatch(thread, current, target, value, expects);
            }
            // Moved out by the receiver (or dropped by `switch_core` if it
            // is never delivered): never dropped here.
            let mut slot = ValueSlot(ManuallyDrop::new(value));
            // SAFETY: the value's type was checked against what `target`
            // waits for; `current` and `target` are distinct live greenlets,
            // and the current one is running, left suspended.
            let word = unsafe {
                switch_core(
                    thread,
                    current,
                    target,
                    (&raw mut slot).cast(),
                    Event::Switch,
                    TypeKey::of::<R>(),
                    State::Suspended,
                    drop_in_slot::<T>,
                )
            };
            // SAFETY: `word` came back from the switch.
            unsafe { receive::<R>(word) }
        }
    }

    /// Raises `error` in this greenlet at the point where it is suspended,
    /// and switches to it; returns like [`switch`](Self::switch).
    ///
    /// Throwing [`GreenletExit`] asks the greenlet to exit (it sees
    /// [`SwitchError::Exit`]); anything else arrives as
    /// [`SwitchError::Thrown`]. An unstarted greenlet dies without running
    /// and the error climbs to its parent; a dead one passes it to its
    /// nearest live ancestor.
    ///
    /// # Errors
    ///
    /// Whatever comes back, as for `switch`: if the greenlet lets the error
    /// escape, it reaches its parent (which may be the caller).
    /// [`SwitchError::Panicking`] at once, without throwing (`error` is
    /// dropped), if this thread is unwinding a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet::{Greenlet, SwitchError};
    ///
    /// let g = Greenlet::new(|()| {
    ///     let parent = greenlet::parent().unwrap();
    ///     match parent.switch::<(), ()>(()) {
    ///         Err(SwitchError::Thrown(e)) => Ok(*e.downcast::<&str>().unwrap()),
    ///         _ => Ok("not thrown"),
    ///     }
    /// });
    /// g.switch::<(), ()>(())?;
    /// assert_eq!(g.throw::<_, &str>("boom")?, "boom");
    /// # Ok::<(), SwitchError>(())
    /// ```
    pub fn throw<E: 'static, R: 'static>(&self, error: E) -> Result<R, SwitchError> {
        if rt::panicking() {
            return Err(SwitchError::Panicking);
        }
        {
            let thread = thread_state();
            let current = current_in(thread);
            let mut rare = Rare::Taken;
            let mut transfer = if TypeId::of::<E>() == TypeId::of::<GreenletExit>() {
                Transfer::new(Kind::Exit, ptr::null_mut())
            } else {
                rare = Rare::Thrown(Box::new(error));
                Transfer::new(Kind::Rare, (&raw mut rare).cast())
            };
            let mut event = Event::Throw;
            if self.inner.state.get() == State::Dead && transfer.kind == Kind::Exit {
                // As in Python: GreenletExit thrown at a dead greenlet is a
                // return value for its nearest live ancestor.
                transfer.kind = Kind::Exited;
                event = Event::Switch;
            }
            // SAFETY: `self` holds the record alive.
            let target = unsafe { Inner::resolve(Rc::as_ptr(&self.inner)) };
            let word = transfer_word(&mut transfer);
            let word = if target == current {
                trace_self(event);
                slow_self_delivery(thread, word)
            } else {
                // SAFETY: a non-value transfer whose `Rare` lives in this
                // frame until we are resumed; distinct live greenlets.
                unsafe {
                    switch_core(
                        thread,
                        current,
                        target,
                        word,
                        event,
                        TypeKey::of::<R>(),
                        State::Suspended,
                        drop_nothing,
                    )
                }
            };
            // SAFETY: `word` came back from the switch or is our own transfer.
            let result = unsafe { receive::<R>(word) };
            drop(rare);
            result
        }
    }

    /// True once the greenlet has been switched into (even if now dead).
    /// Main is always started.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// assert!(!g.is_started());
    /// g.switch::<(), ()>(())?;
    /// assert!(g.is_started() && g.is_dead());
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    pub fn is_started(&self) -> bool {
        self.inner.state.get() != State::Unstarted
    }

    /// True once the body has finished (returned, failed or panicked), or
    /// the greenlet was killed before it started. Main is never dead.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// assert!(!g.is_dead());
    /// g.switch::<(), ()>(())?;
    /// assert!(g.is_dead());
    /// assert!(!greenlet::getcurrent().is_dead()); // main never is
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    pub fn is_dead(&self) -> bool {
        self.inner.state.get() == State::Dead
    }

    /// Started and not dead: running or suspended.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| greenlet::parent().unwrap().switch::<(), ()>(()));
    /// assert!(!g.is_active());
    /// g.switch::<(), ()>(())?; // suspended in its switch to main
    /// assert!(g.is_active());
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    pub fn is_active(&self) -> bool {
        matches!(self.inner.state.get(), State::Running | State::Suspended)
    }

    /// True for a thread's main greenlet.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(greenlet::getcurrent().is_main());
    /// assert!(!greenlet::Greenlet::new(|()| Ok(())).is_main());
    /// ```
    pub fn is_main(&self) -> bool {
        self.inner.is_main()
    }

    /// The greenlet that receives this one's return value; `None` only for
    /// main.
    ///
    /// # Examples
    ///
    /// ```
    /// let main = greenlet::getcurrent();
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// assert_eq!(g.parent(), Some(main.clone()));
    /// assert_eq!(main.parent(), None);
    /// ```
    pub fn parent(&self) -> Option<Greenlet> {
        self.inner.parent_handle()
    }

    /// Makes `parent` this greenlet's parent.
    ///
    /// # Errors
    ///
    /// [`Error::MainParent`] for a main greenlet; [`Error::ParentCycle`] if
    /// this greenlet is `parent` or one of its ancestors.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = greenlet::Greenlet::new(|()| Ok(()));
    /// let b = greenlet::Greenlet::new(|()| Ok(()));
    /// b.set_parent(&a)?;
    /// assert!(a.set_parent(&b).is_err()); // a cycle
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    pub fn set_parent(&self, parent: &Greenlet) -> Result<(), Error> {
        if self.is_main() {
            return Err(Error::MainParent);
        }
        let mut at: *const Inner = Rc::as_ptr(&parent.inner);
        while !at.is_null() {
            if at == Rc::as_ptr(&self.inner) {
                return Err(Error::ParentCycle);
            }
            // SAFETY: walking parent links, each kept alive by its child.
            at = unsafe { (*at).parent_ptr() };
        }
        self.inner.parent.set(Some(parent.clone()));
        Ok(())
    }

    /// A weak handle: it does not keep the greenlet alive (so it cannot stop
    /// the exit-on-last-handle rule), and upgrades while a handle exists.
    /// Use it where greenlets refer to each other, to avoid `Rc` cycles.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// let weak = g.downgrade();
    /// assert_eq!(weak.upgrade(), Some(g.clone()));
    /// drop(g);
    /// assert_eq!(weak.upgrade(), None);
    /// ```
    pub fn downgrade(&self) -> WeakGreenlet {
        WeakGreenlet {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// True if this is the running greenlet (cheaper than comparing with
    /// [`getcurrent`]: no handle is made).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// assert!(greenlet::getcurrent().is_current());
    /// assert!(!g.is_current());
    /// ```
    #[inline]
    pub fn is_current(&self) -> bool {
        ptr::eq(Rc::as_ptr(&self.inner), current_ptr())
    }

    /// A number identifying this greenlet within its thread (main is 0).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| Ok(()));
    /// assert_eq!(greenlet::main_greenlet().id(), 0);
    /// assert_ne!(g.id(), 0);
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Bytes of stack in use while suspended (0 when running, unstarted with
    /// nothing but its body, or dead, and for main).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|()| greenlet::parent().unwrap().switch::<(), ()>(()));
    /// assert_eq!(g.stack_in_use(), 0);
    /// g.switch::<(), ()>(())?;
    /// assert!(g.stack_in_use() > 0 && g.stack_in_use() < g.stack_size());
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    pub fn stack_in_use(&self) -> usize {
        match (self.inner.saved.get(), self.inner.state.get()) {
            (Some(sp), State::Suspended) if !self.is_main() => {
                self.inner.stack_top - sp.frame_bottom()
            }
            _ => 0,
        }
    }

    /// A backtrace of this greenlet: where it is suspended, from its pending
    /// switch down to its root; or, for the current greenlet, from here.
    /// `None` for a greenlet that has not started or has finished, or whose
    /// stack has less than 16 KiB free below its suspended frames (the
    /// capture runs there, and needs 5 to 8 KiB).
    ///
    /// The greenlet is not resumed: a probe runs on the free part of its
    /// stack, under its saved frame, with a call chain that continues into
    /// the suspended one, and captures the backtrace there (symbols are
    /// resolved later, when it is printed). No tracer sees it and nothing of
    /// the greenlet changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet::{Greenlet, getcurrent};
    ///
    /// let main = getcurrent();
    /// let g = Greenlet::new(move |()| {
    ///     main.switch::<(), ()>(())?; // suspended here
    ///     Ok(())
    /// });
    /// assert!(g.backtrace().is_none()); // not started
    /// g.switch::<(), ()>(())?;
    /// let trace = g.backtrace().expect("suspended").to_string();
    /// assert!(trace.contains("greenlet_trampoline")); // down to its root
    /// g.switch::<(), ()>(())?; // still resumable
    /// assert!(g.is_dead() && g.backtrace().is_none());
    /// # Ok::<(), greenlet::SwitchError>(())
    /// ```
    #[cfg(feature = "std")]
    pub fn backtrace(&self) -> Option<std::backtrace::Backtrace> {
        if self.is_current() {
            return Some(std::backtrace::Backtrace::force_capture());
        }
        if self.inner.state.get() != State::Suspended {
            return None;
        }
        let saved = self.inner.saved.get()?;
        let top = saved.frame_bottom();
        let free_bottom = if self.is_main() {
            // A thread's stack, whose end we do not know: thread stacks are
            // far larger than the probe's needs.
            top.saturating_sub(4 * crate::probe::PROBE_STACK)
        } else {
            self.inner.guard_end
        };
        if top - free_bottom < crate::probe::PROBE_STACK {
            return None;
        }
        // SAFETY: the current greenlet's record is live (owned by the thread
        // state) while it runs, which it does until this returns.
        let requester = unsafe { &*current_ptr() };
        // SAFETY: `saved` is this suspended greenlet's frame, which nothing
        // resumes while the probe runs (the probe only captures and comes
        // back); the free stack below it, down to `free_bottom`, is unused
        // and writable (its guard is below `guard_end`).
        unsafe {
            crate::probe::backtrace_of(saved, free_bottom, &self.inner.fiber, &requester.fiber)
        }
    }

    /// Usable size of this greenlet's stack in bytes (0 for main).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Greenlet::builder().stack_size(64 * 1024).spawn(|()| Ok(()))?;
    /// assert_eq!(g.stack_size(), 64 * 1024);
    /// assert_eq!(greenlet::getcurrent().stack_size(), 0); // main
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    pub fn stack_size(&self) -> usize {
        self.inner.stack_len
    }
}

#[cold]
fn self_switch<T: 'static, R: 'static>(value: T) -> Result<R, SwitchError> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<R>>() {
        Some(v) => Ok(v.take().expect("just set")),
        None => Err(SwitchError::TypeMismatch {
            sent: type_name::<T>(),
            expected: type_name::<R>(),
        }),
    }
}

#[cold]
fn switch_mismatch<T: 'static, R: 'static>(
    thread: &ThreadState,
    current: *const Inner,
    target: *const Inner,
    value: T,
    expects: TypeKey,
) -> Result<R, SwitchError> {
    if expects.id() != TypeId::of::<Discard>() {
        return Err(SwitchError::TypeMismatch {
            sent: type_name::<T>(),
            expected: expects.name(),
        });
    }
    drop(value);
    let mut transfer = Transfer::new(Kind::Discarded, ptr::null_mut());
    // SAFETY: a discarded value carries nothing to check; distinct greenlets.
    let word = unsafe {
        switch_core(
            thread,
            current,
            target,
            transfer_word(&mut transfer),
            Event::Switch,
            TypeKey::of::<R>(),
            State::Suspended,
            drop_nothing,
        )
    };
    // SAFETY: `word` came back from the switch.
    unsafe { receive::<R>(word) }
}

/// A non-owning reference to a greenlet, made by [`Greenlet::downgrade`].
///
/// Like [`Greenlet`], neither `Send` nor `Sync`: upgraded on another thread,
/// it would be a handle there.
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>() {}
/// assert_send::<greenlet::WeakGreenlet>();
/// ```
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<greenlet::WeakGreenlet>();
/// ```
///
/// ```compile_fail,E0277
/// let weak = greenlet::getcurrent().downgrade();
/// std::thread::spawn(move || weak.upgrade().is_some());
/// ```
///
/// # Examples
///
/// ```
/// let g = greenlet::Greenlet::new(|()| Ok(()));
/// let weak: greenlet::WeakGreenlet = g.downgrade();
/// assert!(weak.upgrade().is_some());
/// ```
#[derive(Clone)]
pub struct WeakGreenlet {
    inner: rc::Weak<Inner>,
}

impl WeakGreenlet {
    /// A handle to the greenlet, if any handle to it still exists.
    ///
    /// # Examples
    ///
    /// ```
    /// let weak = greenlet::Greenlet::new(|()| Ok(())).downgrade();
    /// assert!(weak.upgrade().is_none()); // the only handle was a temporary
    /// ```
    pub fn upgrade(&self) -> Option<Greenlet> {
        self.inner.upgrade().map(Greenlet::from_rc)
    }
}

// The `compile_fail,E0277` doctests on `Greenlet` and `WeakGreenlet` say
// the same, but stable rustdoc ignores their error codes (only a nightly
// rustdoc checks them): these fail the crate's own build, on any toolchain,
// if either type ever became `Send` or `Sync`.
static_assertions::assert_not_impl_any!(Greenlet: Send, Sync);
static_assertions::assert_not_impl_any!(WeakGreenlet: Send, Sync);

impl fmt::Debug for WeakGreenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.upgrade() {
            Some(g) => write!(f, "WeakGreenlet({g:?})"),
            None => f.write_str("WeakGreenlet(<dropped>)"),
        }
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Greenlet {}

impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.state.get() {
            State::Unstarted => "unstarted",
            State::Running => "running",
            State::Suspended => "suspended",
            State::Dead => "dead",
        };
        let mut d = f.debug_struct("Greenlet");
        d.field("id", &self.inner.id);
        d.field("state", &format_args!("{state}"));
        if self.is_main() {
            d.field("main", &true);
        } else {
            d.field("parent", &self.parent().map(|p| p.id()));
            d.field("stack_in_use", &self.stack_in_use());
            d.field("stack_size", &self.inner.stack_len);
        }
        d.finish()
    }
}

impl Drop for Greenlet {
    #[inline]
    fn drop(&mut self) {
        // Only the last handle has anything to do, and it may hand its
        // reference over to the thread state instead of dropping it.
        if Rc::strong_count(&self.inner) == 1 && drop_last(&self.inner) {
            return;
        }
        // SAFETY: the handle is being dropped and its reference was not
        // handed over: it is dropped once, and the field not used again.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
    }
}

/// Dropping the last handle (the caller checked the count): see `Drop`.
/// Returns true if it took the handle's reference over (into `held`, or
/// into the recycled list): the caller must then forget it, not drop it.
#[inline(never)]
fn drop_last(inner: &Rc<Inner>) -> bool {
    let thread = thread_state();
    if inner.state.get() == State::Dead
        && !ptr::eq(Rc::as_ptr(inner), thread.current.get())
        && Rc::weak_count(inner) == 0
    {
        // The usual case: a finished greenlet (not one running its last
        // lines), whose record no weak handle could see reused.
        return recycle(inner, thread);
    }
    drop_last_slow(inner, thread)
}

/// Everything but the usual case of [`drop_last`], with the same contract.
#[cold]
#[inline(never)]
fn drop_last_slow(inner: &Rc<Inner>, thread: &ThreadState) -> bool {
    if ptr::eq(Rc::as_ptr(inner), thread.current.get()) {
        // The running greenlet's last reference (it may be running its
        // last lines, already marked dead): the thread state keeps it
        // until it switches away (the greenlet it switches to then drops
        // it, see `release_held`).
        debug_assert!(thread.held.get().is_null());
        // SAFETY: the caller forgets its reference when this returns true,
        // so this copy moves it into `held`, which owns it.
        thread.held.set(Rc::into_raw(unsafe { ptr::read(inner) }));
        return true;
    }
    if inner.state.get() == State::Suspended {
        if rt::panicking() {
            leak_suspended(inner);
        } else {
            kill_suspended(inner);
        }
    }
    // Still the last handle, and no weak one could observe a reuse: keep
    // the allocation for the next greenlet of this thread.
    Rc::strong_count(inner) == 1 && Rc::weak_count(inner) == 0 && recycle(inner, thread)
}

/// The last handle to a suspended greenlet went away while the thread is
/// unwinding a panic, when it cannot be switched to (see
/// [`SwitchError::Panicking`]). Its frames can never run again, and their
/// memory must never be reused under them (something on that stack may be
/// pinned), so the stack is leaked, not pooled; its destructors do not run.
/// The greenlet is marked dead, and a warning naming it goes to stderr (the
/// `Greenlet` docs say this to users; `tests/misuse.rs` checks all of it).
#[cold]
fn leak_suspended(inner: &Inner) {
    rt::warn(format_args!(
        "greenlet #{}: last handle dropped while suspended during a panic; it cannot be asked \
         to exit while the thread unwinds, so its stack is leaked and its destructors will not run",
        inner.id
    ));
    core::mem::forget(inner.stack.take());
    inner.saved.set(None);
    inner.state.set(State::Dead);
}

/// Records kept for reuse per thread (see `ThreadState::recycled`).
const RECYCLED_LIMIT: usize = 64;

/// Releases what a dead or unstarted record holds (body, stack, parent) and
/// keeps the allocation in this thread's list, if it is dead (as it always
/// is here but for a main greenlet) and the list has room. Returns true if
/// it did: the list then owns the reference, which the caller forgets.
///
/// `inner` is the record's only reference, and no weak one exists; it is
/// not the running greenlet.
#[inline(always)]
fn recycle(inner: &Rc<Inner>, t: &ThreadState) -> bool {
    if inner.state.get() == State::Unstarted {
        inner.kill_unstarted();
    }
    // Everything is taken out of the record first, so that it can go to the
    // list before the calls that release them, which may run code (a
    // parent's exit) that could even reuse it: it is empty by then.
    let stack = inner.stack.take();
    let low_water = inner.deepest();
    let parent = inner.parent.take();
    let room = t.recycle_room.get();
    // Dead, as it always is here but for a main greenlet; `room` is 0 once
    // the thread state is torn down.
    let kept = inner.state.get() == State::Dead && room != 0;
    if kept {
        inner.next_free.set(t.recycled.get());
        // SAFETY: the caller forgets its reference when this returns true,
        // so this copy moves it into the list, which owns it.
        t.recycled.set(Rc::into_raw(unsafe { ptr::read(inner) }));
        t.recycle_room.set(room - 1);
    }
    // The usual cases, settled without a call (so without saving
    // registers): the receiver of the last switch reclaimed the stack, and
    // the parent link is either not the parent's last reference (dropping
    // it only decrements the count) or the last reference to the running
    // greenlet (main, say), which moves to `held` as `release_parent` would
    // move it.
    match parent {
        Some(parent) if stack.is_none() && Rc::strong_count(&parent.inner) > 1 => {
            drop(parent);
            kept
        }
        Some(parent)
            if stack.is_none()
                && Rc::strong_count(&parent.inner) == 1
                && ptr::eq(Rc::as_ptr(&parent.inner), t.current.get())
                && t.held.get().is_null() =>
        {
            // The handle's reference moves into `held`, which owns it.
            t.held.set(Rc::into_raw(parent.into_rc()));
            kept
        }
        parent => release_rest(stack, low_water, parent, t, kept),
    }
}

/// The rest of [`recycle`]: gives a stack back and drops a parent link.
/// Returns `kept`, so that the call is the last thing `recycle` does.
#[cold]
#[inline(never)]
fn release_rest(
    stack: Option<Stack>,
    low_water: usize,
    parent: Option<Greenlet>,
    t: &ThreadState,
    kept: bool,
) -> bool {
    if let Some(stack) = stack {
        stack::give_back(stack, low_water);
    }
    if let Some(parent) = parent {
        // May drop the parent's last handle, which is fine: not ours.
        release_parent(parent, t);
    }
    kept
}

/// Drops a parent link. When it is the last reference to the running
/// greenlet (a common case: main, with no handle of its own, as the parent
/// of a greenlet that has just finished), the reference moves to the thread
/// state's `held`, exactly as `Greenlet::drop` would put it there, without
/// taking another one first.
#[inline(always)]
fn release_parent(parent: Greenlet, t: &ThreadState) {
    if Rc::strong_count(&parent.inner) == 1
        && ptr::eq(Rc::as_ptr(&parent.inner), t.current.get())
        && t.held.get().is_null()
    {
        // The handle's reference moves into `held`, which owns it.
        t.held.set(Rc::into_raw(parent.into_rc()));
    } else {
        drop(parent);
    }
}

/// A recycled record for a new greenlet, if the list has one: dead, empty,
/// and the returned reference is its only one.
#[inline]
fn take_recycled(t: &ThreadState) -> Option<Rc<Inner>> {
    let head = t.recycled.get();
    if head.is_null() {
        return None;
    }
    // SAFETY: `head` is the list's head, not null.
    Some(unsafe { unlink_recycled(t, head) })
}

/// Takes the head of the recycled list (see [`take_recycled`]).
///
/// # Safety
///
/// `head` is `t.recycled`, not null.
#[inline(always)]
unsafe fn unlink_recycled(t: &ThreadState, head: *const Inner) -> Rc<Inner> {
    // SAFETY: a list entry owns its record's only reference (from
    // `Rc::into_raw`); it is unlinked here, so it is taken once.
    let rc = unsafe { Rc::from_raw(head) };
    t.recycled.set(rc.next_free.get());
    t.recycle_room.set(t.recycle_room.get() + 1);
    rc
}

/// Dropping the last handle of a suspended greenlet: throw `GreenletExit`
/// at it until it is dead, with the dropping greenlet as its parent so that
/// control comes back here. A greenlet that swallows the request and
/// switches back is asked again. A panic during its cleanup reaches this
/// loop; it is reported on stderr (its message was already printed by the
/// panic hook) and the greenlet is dead: a drop does not panic.
#[cold]
fn kill_suspended(inner: &Rc<Inner>) {
    {
        let thread = thread_state();
        let current = current_in(thread);
        // SAFETY: `current` is live (owned by the thread state).
        let killer = unsafe {
            Rc::increment_strong_count(current);
            Rc::from_raw(current)
        };
        // The original parent is kept meanwhile and put back afterwards, as
        // Python's greenlet does: released only with the greenlet, so that a
        // parent it held last exits after it, not before.
        let original_parent = inner.parent.replace(Some(Greenlet::from_rc(killer)));
        while inner.state.get() == State::Suspended {
            let current = current_in(thread);
            let mut transfer = Transfer::new(Kind::Exit, ptr::null_mut());
            let target = Rc::as_ptr(inner);
            // SAFETY: `inner` is suspended, so not current; the transfer
            // carries no value.
            let word = unsafe {
                switch_core(
                    thread,
                    current,
                    target,
                    transfer_word(&mut transfer),
                    Event::Throw,
                    TypeKey::of::<Discard>(),
                    State::Suspended,
                    drop_nothing,
                )
            };
            // SAFETY: `word` came back from the switch. A panic in the
            // greenlet's cleanup arrives here as a panic: caught, reported.
            let received = rt::catch(|| unsafe { receive::<Discard>(word) });
            if let Err(payload) = received {
                report_cleanup_panic(inner.id, &payload);
            }
        }
        drop(inner.parent.replace(original_parent));
        if thread.torn_down.get() {
            release_main_if_current(thread);
        }
    }
}

fn report_cleanup_panic(id: u64, payload: &rt::PanicPayload) {
    rt::warn(format_args!(
        "greenlet #{id} panicked while exiting after its last handle was dropped: {}",
        rt::payload_message(&**payload)
    ));
}

/// The running greenlet.
///
/// # Examples
///
/// ```
/// let main = greenlet::getcurrent();
/// assert!(main.is_main());
/// let g = greenlet::Greenlet::new(|()| Ok(greenlet::getcurrent().is_main()));
/// assert_eq!(g.switch::<(), bool>(())?, false);
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
#[inline]
pub fn getcurrent() -> Greenlet {
    current_handle(thread_state())
}

/// A new handle to the running greenlet (see [`getcurrent`]).
#[inline(always)]
fn current_handle(t: &ThreadState) -> Greenlet {
    let cur = current_in(t);
    // SAFETY: the running greenlet is live (kept by a handle or the thread
    // state); we take another reference.
    unsafe {
        Rc::increment_strong_count(cur);
        Greenlet::from_rc(Rc::from_raw(cur))
    }
}

/// A handle to the running greenlet for a new greenlet's parent link. If
/// `held` keeps the running greenlet (its last reference, or main just
/// made), that reference moves into the link: the next switch would only
/// have released it, leaving the link to keep the greenlet alive, so the
/// outcome is the same, minus a count increment here and a release there.
#[inline(always)]
fn parent_link_to_current(t: &ThreadState) -> Greenlet {
    let cur = current_in(t);
    if t.held.get() == cur {
        t.held.set(ptr::null());
        // SAFETY: `held` owned one strong reference to `cur` (from
        // `Rc::into_raw`); it was cleared above, so the reference is moved
        // into the handle exactly once.
        let inner = unsafe { Rc::from_raw(cur) };
        return Greenlet::from_rc(inner);
    }
    current_handle(t)
}

/// The id of the running greenlet ([`Greenlet::id`]), without making a
/// handle (no reference count is touched).
///
/// # Examples
///
/// ```
/// let g = greenlet::Greenlet::new(|()| Ok(greenlet::current_id()));
/// assert_eq!(g.switch::<(), u64>(())?, g.id());
/// assert_eq!(greenlet::current_id(), 0); // main
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
#[inline]
pub fn current_id() -> u64 {
    // SAFETY: the thread state owns a reference to the current record.
    unsafe { (*current_ptr()).id }
}

/// The current greenlet's parent (`None` in main).
///
/// Prefer this to `getcurrent().parent()` in a switch expression: in
/// `getcurrent().parent().unwrap().switch(x)?` the temporary handle made by
/// `getcurrent()` lives until the end of the statement, across the switch,
/// so the suspended greenlet holds a handle to itself and dropping the last
/// outside handle can no longer make it exit.
///
/// # Examples
///
/// ```
/// let g = greenlet::Greenlet::new(|x: i32| {
///     let y: i32 = greenlet::parent().unwrap().switch(x + 1)?;
///     Ok(y * 2)
/// });
/// assert_eq!(g.switch::<i32, i32>(1)?, 2);
/// assert_eq!(g.switch::<i32, i32>(5)?, 10);
/// assert!(greenlet::parent().is_none()); // main has none
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
pub fn parent() -> Option<Greenlet> {
    // SAFETY: the thread state owns a reference to the current record.
    unsafe { (*current_ptr()).parent_handle() }
}

/// This thread's main greenlet (the root of its tree).
///
/// # Examples
///
/// ```
/// let g = greenlet::Greenlet::new(|()| Ok(greenlet::main_greenlet()));
/// assert_eq!(g.switch::<(), greenlet::Greenlet>(())?, greenlet::getcurrent());
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
pub fn main_greenlet() -> Greenlet {
    let mut g = getcurrent();
    while let Some(p) = g.parent() {
        g = p;
    }
    g
}

/// Sets this thread's tracer, returning the previous one.
///
/// The tracer sees every switch and throw as `(event, origin, target)`
/// before the target resumes. A tracer that panics is removed and its panic
/// is raised in the target. With no tracer set, a switch pays one branch.
///
/// # Examples
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let log = seen.clone();
/// greenlet::settrace(Some(Rc::new(move |e: greenlet::Event, _: &greenlet::Greenlet, _: &greenlet::Greenlet| {
///     log.borrow_mut().push(e.as_str())
/// })));
/// greenlet::Greenlet::new(|()| Ok(())).switch::<(), ()>(())?;
/// greenlet::settrace(None);
/// assert_eq!(*seen.borrow(), ["switch", "switch"]);
/// # Ok::<(), greenlet::SwitchError>(())
/// ```
pub fn settrace(tracer: Option<Tracer>) -> Option<Tracer> {
    let thread = thread_state();
    thread.tracing.set(tracer.is_some());
    thread.set_switch_slow();
    with_tracer_slot(|slot| slot.replace(tracer)).flatten()
}

/// This thread's tracer, if one is set.
///
/// # Examples
///
/// ```
/// assert!(greenlet::gettrace().is_none());
/// ```
pub fn gettrace() -> Option<Tracer> {
    with_tracer_slot(|slot| {
        let t = slot.take();
        let out = t.clone();
        slot.set(t);
        out
    })
    .flatten()
}

/// A trace callback: `(event, origin, target)`.
///
/// # Examples
///
/// ```
/// let tracer: greenlet::Tracer = std::rc::Rc::new(|event, origin, target| {
///     println!("{} from {} to {}", event.as_str(), origin.id(), target.id());
/// });
/// greenlet::settrace(Some(tracer));
/// greenlet::settrace(None);
/// ```
pub type Tracer = Rc<dyn Fn(Event, &Greenlet, &Greenlet)>;

// ---------------------------------------------------------------------------
// Creation

/// Sets a new greenlet's stack size and parent.
///
/// # Examples
///
/// ```
/// let parent = greenlet::Greenlet::new(|()| Ok(()));
/// let g = greenlet::Builder::new()
///     .stack_size(64 * 1024)
///     .parent(&parent)
///     .spawn(|x: i32| Ok(x))?;
/// assert_eq!(g.parent(), Some(parent));
/// # Ok::<(), greenlet::Error>(())
/// ```
#[derive(Default)]
#[must_use]
pub struct Builder {
    stack_size: Option<usize>,
    parent: Option<Greenlet>,
    /// The caller's stack (without `std`, the only source of one).
    #[cfg(not(feature = "std"))]
    stack: Option<Stack>,
}

impl Builder {
    /// Default stack size ([`DEFAULT_STACK_SIZE`]), the current greenlet as
    /// parent.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Builder::new().spawn(|x: u8| Ok(x + 1))?;
    /// assert_eq!(g.switch::<u8, u8>(1)?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Usable stack bytes, rounded up to whole pages; between
    /// [`MIN_STACK_SIZE`](crate::stack::MIN_STACK_SIZE) and
    /// [`MAX_STACK_SIZE`](crate::stack::MAX_STACK_SIZE).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Builder::new().stack_size(20_000).spawn(|()| Ok(()))?;
    /// assert!(g.stack_size() >= 20_000); // whole pages
    /// assert!(greenlet::Builder::new().stack_size(1024).spawn(|()| Ok(())).is_err());
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// The greenlet that receives the new one's return value.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = greenlet::Greenlet::new(|()| Ok(()));
    /// let g = greenlet::Builder::new().parent(&p).spawn(|()| Ok(()))?;
    /// assert_eq!(g.parent(), Some(p));
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    #[inline]
    pub fn parent(mut self, parent: &Greenlet) -> Builder {
        self.parent = Some(parent.clone());
        self
    }

    /// The stack the greenlet runs on, made by the caller: without `std`
    /// there is no pool, so every greenlet needs one (see
    /// [`Stack::alloc`](crate::stack::Stack::alloc) and
    /// [`Stack::from_static`](crate::stack::Stack::from_static)). The stack
    /// size setting does not apply to it.
    ///
    /// # Examples
    ///
    /// See [`Root`].
    #[cfg(not(feature = "std"))]
    pub fn stack(mut self, stack: Stack) -> Builder {
        self.stack = Some(stack);
        self
    }

    /// The builder's stack if one was given, else one from the pool.
    /// Always inlined: on the create path it is only a pool take.
    #[inline(always)]
    fn take_stack(&mut self) -> Result<Stack, StackError> {
        #[cfg(not(feature = "std"))]
        if let Some(stack) = self.stack.take() {
            return Ok(stack);
        }
        stack::take(self.stack_size.unwrap_or(DEFAULT_STACK_SIZE))
    }

    /// Creates the greenlet (unstarted).
    ///
    /// # Errors
    ///
    /// [`Error::Stack`] if the stack size is out of range or the stack
    /// cannot be mapped; the message names the cause and what to raise.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = greenlet::Builder::new().spawn(|s: String| Ok(s.len()))?;
    /// assert_eq!(g.switch::<String, usize>("four".into())?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<A, O, F>(self, body: F) -> Result<Greenlet, Error>
    where
        A: 'static,
        O: 'static,
        F: FnOnce(A) -> Result<O, SwitchError> + 'static,
    {
        // Bodies larger than this live in a box; the rest live at the top of
        // their own stack, which saves an allocation per greenlet.
        const INLINE_LIMIT: usize = 1024;
        if size_of::<F>() > INLINE_LIMIT || align_of::<F>() > 64 {
            let boxed = Box::new(body);
            return self.spawn_inline(move |a: A| boxed(a));
        }
        self.spawn_inline(body)
    }

    /// Creates the greenlet. The usual case (a stack in the pool's hot
    /// class, a recycled record, a running greenlet as the parent) is
    /// settled here without a call; anything else goes to `spawn_slow`.
    #[inline(always)]
    fn spawn_inline<A, O, F>(self, body: F) -> Result<Greenlet, Error>
    where
        A: 'static,
        O: 'static,
        F: FnOnce(A) -> Result<O, SwitchError> + 'static,
    {
        // Taken apart, so that the fields stay in registers on the fast
        // path (a builder passed to `spawn_slow` would live in memory).
        #[cfg(feature = "std")]
        let Builder { stack_size, parent } = self;
        #[cfg(not(feature = "std"))]
        let Builder {
            stack_size,
            parent,
            mut stack,
        } = self;
        let t = thread_state();
        let head = t.recycled.get();
        // The tests come before the stack is taken, the only step that
        // takes something.
        if size_of::<Option<O>>() <= MIN_STACK_SIZE / 16
            && !head.is_null()
            && (parent.is_some() || !t.current.get().is_null())
        {
            // The builder's stack if one was given, else a free one from
            // the pool's hot class, if it has one: no call either way.
            #[cfg(not(feature = "std"))]
            let taken = stack.take();
            #[cfg(feature = "std")]
            let taken = stack::take_fast(stack_size.unwrap_or(DEFAULT_STACK_SIZE));
            if let Some(taken) = taken {
                let parent = match parent {
                    Some(p) => p,
                    None => parent_link_to_current(t),
                };
                // SAFETY: `head` is the list's head, not null (tested
                // above), and nothing since has touched the list.
                let record = unsafe { unlink_recycled(t, head) };
                return Ok(build::<A, O, F>(t, taken, parent, body, Some(record)));
            }
        }
        Builder {
            stack_size,
            parent,
            #[cfg(not(feature = "std"))]
            stack,
        }
        .spawn_slow(body)
    }

    /// `spawn_inline` when something is missing: a stack to take from the
    /// pool's other classes or to map, a record to allocate, main to make,
    /// or a return type to check against the stack's size.
    #[cold]
    #[inline(never)]
    fn spawn_slow<A, O, F>(mut self, body: F) -> Result<Greenlet, Error>
    where
        A: 'static,
        O: 'static,
        F: FnOnce(A) -> Result<O, SwitchError> + 'static,
    {
        let stack = self.take_stack()?;
        // Every stack has at least `MIN_STACK_SIZE` bytes, so the test of
        // the actual size only remains for large return types.
        if size_of::<Option<O>>() > MIN_STACK_SIZE / 16 && size_of::<Option<O>>() > stack.len() / 16
        {
            return Err(return_too_large(stack, size_of::<O>()));
        }
        let t = thread_state();
        let parent = match self.parent.take() {
            Some(p) => p,
            None => parent_link_to_current(t),
        };
        let record = take_recycled(t);
        Ok(build::<A, O, F>(t, stack, parent, body, record))
    }
}

/// Makes a new greenlet of `body` on `stack` (large enough for an `O`),
/// with `parent`, in `record` (a recycled one) or a new one.
#[inline(always)]
fn build<A, O, F>(
    t: &ThreadState,
    stack: Stack,
    parent: Greenlet,
    body: F,
    record: Option<Rc<Inner>>,
) -> Greenlet
where
    A: 'static,
    O: 'static,
    F: FnOnce(A) -> Result<O, SwitchError> + 'static,
{
    crate::sanitizer::unpoison_stack(stack.bottom(), stack.len());
    // The geometry, read before anything is written to the stack (the
    // compiler cannot tell that those writes leave the slab alone).
    let top = stack.top().as_ptr() as usize;
    let stack_len = stack.len();
    let guard = stack.guard();
    let body_at = body_slot::<F, O>(top);
    // SAFETY: `body_at` is inside the stack (`spawn` boxes bodies over
    // 1 KiB and the return value takes at most a sixteenth of the stack,
    // which the callers checked), aligned for F, and nothing else uses that
    // memory before the greenlet starts.
    unsafe { ptr::write(body_at as *mut F, body) };
    // SAFETY: the region below the final transfer's slot is the rest of
    // our stack, which the record keeps until the greenlet is dead;
    // `entry::<A, O, F>` never returns and catches panics.
    let sp = unsafe {
        raw::init_stack(
            final_transfer_slot(body_at).cast(),
            entry::<A, O, F>,
            body_at as *mut u8,
        )
    };
    // The first switch resumes this frame: as deep as the stack is so far,
    // recorded now so that the first switch finds nothing to update.
    let depth = sp.as_ptr() as usize;
    let id = next_id(t);
    let drop_body: DropBody = drop_body::<F, O>;
    let inner = match record {
        Some(rc) => {
            // SAFETY: a recycled record's reference is its only one, and
            // no weak one exists (`recycle` checked both), so nothing
            // else can see the record while it is written through this
            // exclusive borrow, which ends before `rc` is used again. The
            // pointer comes from the `Rc`'s own allocation pointer, with
            // write access.
            let r = unsafe { &mut *Rc::as_ptr(&rc).cast_mut() };
            // Field by field, cheaper than moving a whole record in. The
            // old values are empty (`recycle` released them): forgetting
            // them skips a drop that would do nothing.
            r.id = id;
            r.state.set(State::Unstarted);
            core::mem::forget(r.parent.replace(Some(parent)));
            r.saved.set(Some(sp));
            // Often already there: the record's last greenlet took the
            // same body type (a dying greenlet leaves it as it was).
            if !ptr::eq(r.expects.get().id, TypeKey::of::<A>().id) {
                r.expects.set(TypeKey::of::<A>());
            }
            r.stack_top = top;
            r.stack_len = stack_len;
            r.guard_start = guard.start;
            r.guard_end = guard.end;
            r.fiber = Fiber::new(guard.end, top - guard.end);
            r.low_water.set(depth);
            core::mem::forget(r.stack.replace(Some(stack)));
            r.body.set(Some(drop_body));
            rc
        }
        None => {
            count_record(t, 1);
            Rc::new(Inner {
                id,
                state: Cell::new(State::Unstarted),
                parent: Cell::new(Some(parent)),
                saved: Cell::new(Some(sp)),
                expects: Cell::new(TypeKey::of::<A>()),
                stack_top: top,
                stack_len,
                guard_start: guard.start,
                guard_end: guard.end,
                fiber: Fiber::new(guard.end, top - guard.end),
                low_water: Cell::new(depth),
                stack: Cell::new(Some(stack)),
                body: Cell::new(Some(drop_body)),
                next_free: Cell::new(ptr::null()),
            })
        }
    };
    Greenlet::from_rc(inner)
}

/// The error for a return type too large for the stack; gives the stack back.
#[cold]
#[inline(never)]
fn return_too_large(stack: Stack, size: usize) -> Error {
    let error = Error::ReturnTooLarge {
        size,
        stack: stack.len(),
    };
    stack::give_back(stack, 0);
    error
}

/// Where the body waits at the top of a new greenlet's stack; once the body
/// has returned, the same bytes hold its final value (a `ValueSlot<O>` when
/// it goes straight to the parent, an `Option<O>` otherwise). Both live
/// outside any stack frame, so they stay valid after the greenlet's last
/// switch even when a sanitizer keeps frames elsewhere (ASan's fake stacks
/// are freed when a fiber leaves for good).
#[inline(always)]
fn body_slot<F, O>(top: usize) -> usize {
    let size = size_of::<F>()
        .max(size_of::<Option<O>>())
        .max(size_of::<ValueSlot<O>>());
    let align = align_of::<F>()
        .max(align_of::<Option<O>>())
        .max(align_of::<ValueSlot<O>>())
        .max(16);
    (top - size) & !(align - 1)
}

/// What a dying greenlet hands to its parent, built outside any frame.
struct Final {
    transfer: Transfer,
    rare: Rare,
}

/// Just below the body slot: where the greenlet's final transfer is built.
#[inline(always)]
fn final_transfer_slot(body_at: usize) -> *mut Final {
    let align = align_of::<Final>().max(16);
    ((body_at - size_of::<Final>()) & !(align - 1)) as *mut Final
}

/// Drops the unstarted body of a greenlet whose stack ends at `top`.
///
/// # Safety
///
/// The body slot below `top` (see [`body_slot`]) holds an `F` written by
/// `spawn` for a body returning an `O`, never read out.
unsafe fn drop_body<F, O>(top: usize) {
    let at: *mut F = ptr::with_exposed_provenance_mut(body_slot::<F, O>(top));
    // SAFETY: per this function's contract; the stack's address was exposed
    // by `spawn`, which computed the slot from it.
    unsafe { ptr::drop_in_place(at) }
}

/// The first Rust frame on every greenlet stack.
unsafe extern "C" fn entry<A, O, F>(word: usize, body_at: *mut u8) -> !
where
    A: 'static,
    O: 'static,
    F: FnOnce(A) -> Result<O, SwitchError> + 'static,
{
    let thread = thread_state();
    // Not null: the switch that started us made us current.
    let current = thread.current.get();
    debug_assert!(!current.is_null());
    // SAFETY: `current` is this greenlet (the switch made it current), kept
    // alive by its handles or `held` while it runs.
    let me = unsafe { &*current };
    arrived(me, thread);
    let word: *mut u8 = ptr::with_exposed_provenance_mut(word);
    me.body.set(None);
    // SAFETY: the body was written by `spawn` and is read exactly once, here
    // (`body` was cleared above, so nobody drops it in place).
    let body = unsafe { ptr::read(body_at.cast::<F>()) };
    let outcome = rt::catch(move || {
        // SAFETY: `word` is what started us; an unstarted greenlet only ever
        // receives a value of its argument type.
        match unsafe { receive::<A>(word) } {
            Ok(a) => body(a),
            Err(e) => Err(e),
        }
    });
    if let Ok(Ok(value)) = &outcome
        && let Some(target) = final_target::<O>(me)
    {
        // The usual end: a value for a parent that waits for one. It is
        // copied straight into the body slot, where the receiver reads it
        // (no temporary: unoptimised builds keep every one in this frame,
        // which is live while the body runs, and values may be large), and
        // the original is forgotten.
        // SAFETY: `spawn` reserved the body slot at the top of our stack,
        // aligned and large enough for a `ValueSlot<O>` (a `repr(C)`
        // wrapper with the value at offset 0); the body that was there was
        // moved out above, and the value is not read again from `outcome`.
        unsafe { ptr::copy_nonoverlapping(value, body_at.cast::<O>(), 1) };
        core::mem::forget(outcome);
        finish_value::<O>(thread, me, target, body_at as usize)
    }
    finish::<O>(outcome, body_at as usize)
}

/// The nearest live ancestor of `me`, the running greenlet, if it waits for
/// an `O`: where a body's return value goes on the fast path.
#[inline(always)]
fn final_target<O: 'static>(me: &Inner) -> Option<*const Inner> {
    let parent = me.child_parent_ptr();
    // SAFETY: our parent link keeps the parent alive (only main has no
    // parent, and main never runs `entry`).
    let target = unsafe { Inner::resolve(parent) };
    // SAFETY: `target` is live.
    unsafe { (*target).expects.get() }
        .is::<O>()
        .then_some(target)
}

/// Ends `me`, the running greenlet, whose body returned a value, already
/// moved to the body slot at the top of our stack: the common case of
/// [`finish`], when the nearest live ancestor, `target`, waits for an `O`
/// (checked by the caller with [`final_target`]). The value goes as a tag-3
/// word pointing to that slot, which the receiver reads before it reclaims
/// the stack.
#[inline(always)]
fn finish_value<O: 'static>(
    thread: &ThreadState,
    me: &Inner,
    target: *const Inner,
    body_at: usize,
) -> ! {
    me.state.set(State::Dead);
    // Built from the address (exposed by the `as usize` that made
    // `body_at`) rather than with `map_addr`, so that the compiler sees the
    // tag and drops the checks `switch_core` makes for other tags.
    let word: *mut u8 = ptr::with_exposed_provenance_mut(body_at | TAG_FINAL);
    // SAFETY: a dead greenlet is never the target of a switch, so `target`
    // (a live ancestor) differs from us; it waits for an `O` (checked
    // above), the word is a tag-3 value (a `ValueSlot<O>` at `body_at`)
    // from a greenlet left dead, and `drop_in_slot::<O>` drops the value if
    // it is not delivered. Nothing in this frame needs dropping: it is
    // never resumed.
    unsafe {
        switch_core(
            thread,
            me,
            target,
            word,
            Event::Switch,
            TypeKey::of::<()>(),
            State::Dead,
            drop_in_slot::<O>,
        );
    }
    unreachable!("a dead greenlet was resumed");
}

/// Ends the running greenlet: marks it dead and hands its outcome to its
/// nearest live ancestor, for good. Holds nothing that needs dropping when
/// the last switch is made, since this frame is never resumed.
fn finish<O: 'static>(
    outcome: Result<Result<O, SwitchError>, rt::PanicPayload>,
    body_at: usize,
) -> ! {
    let thread = thread_state();
    {
        let current = current_in(thread);
        // SAFETY: the running greenlet's record is live.
        let me = unsafe { &*current };
        me.state.set(State::Dead);
        let slot_at = body_at as *mut Option<O>;
        let final_at = final_transfer_slot(body_at);
        // SAFETY: both slots are reserved at the top of our stack by `spawn`,
        // aligned and large enough; the body that was there was moved out.
        let (slot, last) = unsafe {
            slot_at.write(None);
            final_at.write(Final {
                transfer: Transfer::new(Kind::Value, slot_at.cast()),
                rare: Rare::Taken,
            });
            (&mut *slot_at, &mut *final_at)
        };
        let mut event = Event::Throw;
        // The payload of a `Rare` transfer, a pointer to `last.rare`, is made
        // only below, after the last write through `last`: one made earlier
        // would be invalidated by those writes (Stacked Borrows).
        let mut set_rare = |rare: Rare| {
            last.rare = rare;
            last.transfer.kind = Kind::Rare;
        };
        match outcome {
            Ok(Ok(value)) => {
                *slot = Some(value);
                event = Event::Switch;
            }
            Ok(Err(SwitchError::Exit)) => {
                last.transfer.kind = Kind::Exited;
                event = Event::Switch;
            }
            Ok(Err(SwitchError::Exited)) => {
                last.transfer.kind = Kind::Exited;
                event = Event::Switch;
            }
            // A body can hold on to the `Panicking` a switch refused while
            // it unwound (in a destructor under `catch_unwind`) and return
            // it later, when the thread is no longer panicking. Like every
            // error a body returns, it goes to the parent as it is.
            Ok(Err(SwitchError::Panicking)) => set_rare(Rare::Panicking),
            Ok(Err(SwitchError::Thrown(e))) => set_rare(Rare::Thrown(e)),
            Ok(Err(SwitchError::TypeMismatch { sent, expected })) => {
                set_rare(Rare::Mismatch(sent, expected))
            }
            Err(payload) => set_rare(Rare::Panic(payload)),
        }
        let parent = me.child_parent_ptr();
        // SAFETY: our parent link keeps the parent alive.
        let target = unsafe { Inner::resolve(parent) };
        if last.transfer.kind == Kind::Value {
            // SAFETY: `target` is live.
            let expects = unsafe { (*target).expects.get() };
            if expects.is::<Discard>() || !expects.is::<O>() {
                // The value is not delivered. Its destructor runs here, and
                // may panic: that panic goes to the parent instead, as one
                // escaping the body would (unwinding out of this frame would
                // abort the process: `entry` cannot unwind).
                let value = slot.take();
                let dropped = rt::catch(move || drop(value));
                if let Err(payload) = dropped {
                    last.rare = Rare::Panic(payload);
                    event = Event::Throw;
                } else if expects.is::<Discard>() {
                    last.transfer.kind = Kind::Discarded;
                } else {
                    last.rare = Rare::Mismatch(type_name::<O>(), expects.name());
                }
                if !matches!(last.rare, Rare::Taken) {
                    last.transfer.kind = Kind::Rare;
                }
            }
        }
        if last.transfer.kind == Kind::Rare {
            last.transfer.payload = (&raw mut last.rare).cast();
        }
        let word = transfer_word(&mut last.transfer);
        // SAFETY: a dead greenlet is never the target of a switch, so
        // `target` (a live ancestor) differs from us; the value type was
        // checked above, and the word is a transfer (tag 1), as a dead
        // sender's must be. Nothing in this frame needs dropping: it is
        // never resumed.
        unsafe {
            switch_core(
                thread,
                current,
                target,
                word,
                event,
                TypeKey::of::<()>(),
                State::Dead,
                drop_slot::<O>,
            );
        }
        unreachable!("a dead greenlet was resumed");
    }
}

/// Traces a switch or throw that lands on the current greenlet, as Python's
/// greenlet does. A tracer that panics is removed and its panic raised here,
/// in the target.
#[cold]
fn trace_self(event: Event) {
    if thread_state().tracing.get()
        && let Some(tracer) = gettrace()
    {
        let me = getcurrent();
        if let Err(payload) = rt::catch(|| tracer(event, &me, &me)) {
            settrace(None);
            rt::resume_unwind(payload);
        }
    }
}

// ---------------------------------------------------------------------------
// Value transfer under Miri

/// The value-transfer machinery, run under Miri (`ci/test`'s `miri` step runs
/// `cargo +nightly miri test --lib miri_`), which cannot execute the assembly
/// switch: each test plays both ends of a switch on one stack, calling the
/// real sender's half, then doing by hand only what [`resume`] does around
/// the raw switch (`hand_over`), then calling the real receiver's half. It
/// also runs natively with the rest of the suite.
///
/// Two seams make this possible without a switch:
///
/// - the receiver's half is [`receive`] (and what it calls), a function of
///   the word alone, so a test builds the word as the sender does (a
///   `ValueSlot`, a `Transfer`, a tag-3 body slot) and receives it;
/// - the test thread's main greenlet has no saved context while it runs, so
///   a real send to it (or to a greenlet whose context the test took out)
///   stops at `not_resumable`, which drops the undelivered value and panics
///   before the raw switch. That runs the real senders (`Greenlet::switch`,
///   `switch_wrapped`, `finish`, `finish_value`, `call_tracer`) up to the
///   switch; the test catches the panic and, for `finish`, receives what it
///   built at the top of the stack.
///
/// Not reachable here: the exit of a suspended greenlet whose last handle is
/// dropped (`kill_suspended` switches into it), and `leak_suspended`, which
/// leaks a stack on purpose (Miri's leak check would fail the run).
#[cfg(all(test, feature = "std"))]
mod miri_value_transfer {
    use super::*;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::marker::PhantomData;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    const STACK: usize = 16 * 1024;

    /// Counts its drops, so that a test sees a value dropped exactly once.
    struct Counted(Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn counter() -> Rc<Cell<u32>> {
        Rc::new(Cell::new(0))
    }

    /// No stack pool on this thread while it lives: a stack given back is
    /// freed at once, so that reading a value from a stack after it was
    /// reclaimed is a use-after-free, which Miri reports. (Each stack is
    /// then an allocation of its own, where a pool carves its first stacks
    /// out of a 1 MiB slab, which takes Miri seconds to make.)
    struct Unpooled;

    impl Unpooled {
        fn new() -> Unpooled {
            stack::set_pool_limit(0);
            Unpooled
        }
    }

    impl Drop for Unpooled {
        fn drop(&mut self) {
            stack::set_pool_limit(1024);
        }
    }

    /// A handle to main that owns the reference `held` keeps on a main just
    /// made, so that `held` is empty, as it is between switches once main
    /// has a handle.
    fn main_handle() -> Greenlet {
        parent_link_to_current(thread_state())
    }

    /// What [`resume`] does to the records and the thread state around the
    /// raw switch, without the switch: `from` is left `leaving` (waiting for
    /// `expects` unless dead), `to` runs and is current, `origin` is set as
    /// `resume` sets it. `to`'s saved context is taken out, as every caller
    /// of `resume` does, and returned; `save` stands in for the context the
    /// raw switch would save for `from` (`None` for main: the test's own
    /// stack has no context to resume, which is what makes a real send to
    /// main stop at `not_resumable`).
    ///
    /// # Safety
    ///
    /// `from` and `to` are live records of this thread, from `Rc::as_ptr`
    /// (the thread state keeps such pointers and makes handles from them).
    unsafe fn hand_over(
        thread: &ThreadState,
        from: *const Inner,
        to: *const Inner,
        expects: TypeKey,
        leaving: State,
        save: Option<StackPointer>,
    ) -> Option<StackPointer> {
        // SAFETY: both are live (this function's contract).
        let (f, t) = unsafe { (&*from, &*to) };
        let taken = t.saved.take();
        if leaving == State::Dead {
            assert_eq!(f.state.get(), State::Dead);
        } else {
            f.expects.set(expects);
            f.state.set(leaving);
        }
        t.state.set(State::Running);
        thread.current.set(to);
        if leaving == State::Dead || cfg!(feature = "asan") {
            thread.origin.set(from);
        }
        if let Some(sp) = taken {
            let depth = sp.as_ptr() as usize;
            if depth < t.low_water.get() {
                t.low_water.set(depth);
            }
        }
        f.saved.set(save);
        taken
    }

    fn ptr_of(g: &Greenlet) -> *const Inner {
        Rc::as_ptr(&g.inner)
    }

    /// `Greenlet::new` with a small stack, all of one size: under Miri, each
    /// test thread's pool makes one slab per size, which takes seconds.
    fn small<F>(body: F) -> Greenlet
    where
        F: FnOnce(()) -> Result<(), SwitchError> + 'static,
    {
        Builder::new().stack_size(STACK).spawn(body).expect("stack")
    }

    // Scenarios are grouped into few tests. Each test runs on a thread of
    // its own, whose stack pool carves its first stacks of each size out of
    // a 1 MiB slab, which takes Miri seconds to make; most scenarios turn
    // the pool off (see `Unpooled`).

    #[test]
    fn a_greenlet_life_played_by_hand() {
        a_life_by_hand_a_value_in_a_value_out_through_the_body_slot();
        a_life_by_hand_suspended_then_a_slot_transfer_while_held();
    }

    #[test]
    fn undelivered_values_are_dropped_once_by_the_sender() {
        a_value_refused_at_the_switch_is_dropped_by_the_sender();
        a_final_value_refused_is_dropped_from_the_body_slot();
        a_panicking_tracer_drops_the_value_and_lands_on_the_sender();
    }

    #[test]
    fn records_and_stacks_are_recycled() {
        dropping_the_last_handle_in_each_state();
        the_pool_takes_gives_back_and_keeps_its_limit();
    }

    /// A greenlet made by `Builder::spawn` whose own side the test plays:
    /// argument `A`, return type `O`, body `F` (kept at the top of its stack).
    struct Child<A, O, F> {
        handle: Option<Greenlet>,
        inner: *const Inner,
        /// The context its first switch resumes (taken by `start`).
        sp: Cell<Option<StackPointer>>,
        types: PhantomData<fn(A, F) -> O>,
    }

    impl<A, O, F> Child<A, O, F>
    where
        A: 'static,
        O: 'static,
        F: FnOnce(A) -> Result<O, SwitchError> + 'static,
    {
        fn spawn(body: F) -> Self {
            assert!(size_of::<F>() <= 1024, "small bodies live on the stack");
            let g = Builder::new().stack_size(STACK).spawn(body).expect("stack");
            let inner = Rc::as_ptr(&g.inner);
            Child {
                handle: Some(g),
                inner,
                sp: Cell::new(None),
                types: PhantomData,
            }
        }

        fn me(&self) -> &Inner {
            // SAFETY: the record is kept alive by the handle, or by `held`
            // or a parent link once the handle is dropped; tests stop using
            // it before its last reference goes.
            unsafe { &*self.inner }
        }

        fn g(&self) -> &Greenlet {
            self.handle.as_ref().expect("the test kept its handle")
        }

        fn body_at(&self) -> usize {
            body_slot::<F, O>(self.me().stack_top)
        }

        /// `from` (the running greenlet) sends `value` to this unstarted
        /// greenlet as `Greenlet::switch`'s common case does: checks, a
        /// `ValueSlot` on the sender's stack, a tag-0 word; then the hand
        /// over and the first lines of `entry`, up to the body's argument.
        /// Returns the body, moved out of the top of the stack.
        fn start(&self, from: &Greenlet, value: A, from_waits: TypeKey) -> (F, A) {
            let thread = thread_state();
            let me = self.me();
            assert!(me.expects.get().is::<A>() && thread.held.get().is_null());
            assert!(from.is_current() && me.state.get() == State::Unstarted);
            let mut slot = ValueSlot(ManuallyDrop::new(value));
            let word: *mut u8 = (&raw mut slot).cast();
            assert_eq!(tag(word), 0);
            // SAFETY: both records are live, kept by handles.
            let sp = unsafe {
                hand_over(
                    thread,
                    Rc::as_ptr(&from.inner),
                    self.inner,
                    from_waits,
                    State::Suspended,
                    None,
                )
            };
            assert!(sp.is_some(), "an unstarted greenlet has its first frame");
            self.sp.set(sp);
            // The first lines of `entry`.
            me.body.set(None);
            let at: *mut F = ptr::with_exposed_provenance_mut(self.body_at());
            // SAFETY: `spawn` wrote the body there and exposed the stack's
            // address; `body` was cleared above, so it is read out once.
            let body = unsafe { ptr::read(at) };
            // SAFETY: the word is the tag-0 `ValueSlot<A>` built above, sent
            // with `held` empty; it is read once, before `slot` goes.
            let arg = unsafe { receive::<A>(word) }.expect("a value");
            (body, arg)
        }

        /// The usual end of `entry`: `value` goes to the body slot, the
        /// greenlet is dead, and its final switch hands a tag-3 word to its
        /// parent (which must wait for an `O`). Returns that word.
        ///
        /// The switch goes to `final_target`'s record, which must be the
        /// parent's (checked).
        fn return_value(&self, value: O) -> *mut u8 {
            let target = final_target::<O>(self.me()).expect("the parent waits for an O");
            let parent = self.me().child_parent_ptr();
            assert!(ptr::eq(parent, target), "the parent is live");
            self.return_value_to(value, parent)
        }

        /// [`Child::return_value`], handing over to `target` as given.
        fn return_value_to(&self, value: O, target: *const Inner) -> *mut u8 {
            let thread = thread_state();
            let me = self.me();
            let at = self.body_at();
            // SAFETY: as in `entry`: the body slot is reserved, aligned and
            // large enough for a `ValueSlot<O>`, and the body was moved out.
            unsafe { ptr::write(ptr::with_exposed_provenance_mut::<O>(at), value) };
            // `finish_value`, up to its switch.
            me.state.set(State::Dead);
            // SAFETY: we are live (see `me`) and so is our parent, kept by
            // our parent link.
            unsafe {
                hand_over(
                    thread,
                    self.inner,
                    target,
                    TypeKey::of::<()>(),
                    State::Dead,
                    self.sp.get(),
                )
            };
            ptr::with_exposed_provenance_mut(at | TAG_FINAL)
        }
    }

    /// A value sent as a tag-0 word and received, as the fast path does.
    fn tag0<T: 'static>(value: T) -> T {
        let mut slot = ValueSlot(ManuallyDrop::new(value));
        let word: *mut u8 = (&raw mut slot).cast();
        assert_eq!(tag(word), 0, "a ValueSlot leaves the tag bits clear");
        // SAFETY: a tag-0 word pointing to a `ValueSlot<T>` that holds a
        // value, read once; `slot` never drops it (`ManuallyDrop`).
        unsafe { receive::<T>(word) }.expect("a value")
    }

    #[test]
    fn tag0_values_with_destructors_move_once() {
        assert_eq!(tag0(String::from("text")), "text");
        assert_eq!(*tag0(Box::new(7u64)), 7);
        assert_eq!(tag0(vec![String::from("a"), String::from("b")]).len(), 2);
        tag0(());
        assert_eq!(tag0([3u64; 40])[39], 3);
        let drops = counter();
        let rc = Rc::new(Counted(drops.clone()));
        let back = tag0(rc.clone());
        assert_eq!(Rc::strong_count(&rc), 2, "moved, not cloned or dropped");
        drop((back, rc));
        assert_eq!(drops.get(), 1);
        let boxed: Box<dyn Any> = Box::new(Counted(drops.clone()));
        drop(tag0(boxed));
        assert_eq!(drops.get(), 2);
        // Results and errors are values like any other.
        let ok: Result<String, Box<dyn core::error::Error>> = Ok("fine".to_string());
        assert_eq!(tag0(ok).unwrap(), "fine");
        let err: Result<String, Box<dyn core::error::Error>> = Err(Box::new(Error::ParentCycle));
        assert!(tag0(err).unwrap_err().to_string().contains("cycle"));
        let thrown: Result<(), SwitchError> =
            Err(SwitchError::Thrown(Box::new(Counted(drops.clone()))));
        assert!(matches!(tag0(thrown), Err(SwitchError::Thrown(_))));
        assert_eq!(drops.get(), 3);
    }

    fn a_life_by_hand_a_value_in_a_value_out_through_the_body_slot() {
        let _unpooled = Unpooled::new();
        let main = main_handle();
        let t = thread_state();
        let drops = counter();
        let child = Child::spawn(|s: String| Ok(Box::new(s.len())));
        let (body, arg) = child.start(&main, "four".to_string(), TypeKey::of::<Box<usize>>());
        // Running: current, active, main suspended waiting for a Box<usize>.
        let g = child.g();
        assert!(g.is_current() && g.is_active() && g.is_started() && !g.is_dead());
        assert_eq!(getcurrent(), *g);
        assert_eq!(current_id(), g.id());
        assert_eq!(parent(), Some(main.clone()));
        assert!(format!("{g:?}").contains("running"));
        assert!(format!("{main:?}").contains("suspended") && main.is_active());
        assert_eq!(g.stack_in_use(), 0, "running: nothing saved");
        // A greenlet made now has the running one as its parent.
        let grandchild = small(move |()| {
            let _keep = Counted(drops.clone());
            Ok(())
        });
        assert_eq!(grandchild.parent(), Some(g.clone()));
        drop(grandchild);
        let value = body(arg).expect("the body returns");
        let stats = stack::pool_stats();
        let word = child.return_value(value);
        assert_eq!(tag(word), TAG_FINAL);
        assert!(
            child.me().stack_top > word.addr(),
            "the word is the body slot"
        );
        // Main receives: the value is read from the dead child's stack, then
        // the stack goes back (freed here, with no pool).
        // SAFETY: the tag-3 word from the child's last switch, with `origin`
        // the child, as `resume` leaves them.
        let got = unsafe { receive::<Box<usize>>(word) }.expect("a value");
        assert_eq!(*got, 4);
        assert!(main.is_current() && child.g().is_dead() && !child.g().is_active());
        assert!(t.origin.get().is_null() && t.held.get().is_null());
        assert!(
            child.me().saved.get().is_none(),
            "the final context is never resumed"
        );
        assert_eq!(stack::pool_stats().mapped, stats.mapped - 1, "freed");
        let room = t.recycle_room.get();
        drop(child);
        assert_eq!(
            t.recycle_room.get(),
            room - 1,
            "the dead record is kept for reuse"
        );
    }

    fn a_life_by_hand_suspended_then_a_slot_transfer_while_held() {
        let _unpooled = Unpooled::new();
        let main = main_handle();
        let t = thread_state();
        let drops = counter();
        let mut child = Child::spawn(|c: Counted| Ok(c.0.get()));
        let (body, first) = child.start(&main, Counted(drops.clone()), TypeKey::of::<String>());
        let _ = body;
        assert_eq!(drops.get(), 0, "the argument arrived, not dropped");
        // The child suspends, sending a String to main as a tag-0 word.
        let mut slot = ValueSlot(ManuallyDrop::new(String::from("ping")));
        let word: *mut u8 = (&raw mut slot).cast();
        let sp = child.sp.get();
        // SAFETY: the child (kept by its handle, `held` or the stash) and main are live.
        unsafe {
            hand_over(
                t,
                child.inner,
                ptr_of(&main),
                TypeKey::of::<Counted>(),
                State::Suspended,
                sp,
            )
        };
        // SAFETY: a tag-0 word from a live greenlet, sent with `held` empty.
        assert_eq!(unsafe { receive::<String>(word) }.unwrap(), "ping");
        let g = child.g();
        assert!(g.is_active() && !g.is_current() && format!("{g:?}").contains("suspended"));
        let in_use = g.stack_in_use();
        assert!(in_use > 0 && in_use < g.stack_size(), "{in_use}");
        // Main resumes it with another Counted (tag 0 again).
        let mut slot = ValueSlot(ManuallyDrop::new(Counted(drops.clone())));
        let word: *mut u8 = (&raw mut slot).cast();
        // SAFETY: the child (kept by its handle, `held` or the stash) and main are live.
        let taken = unsafe {
            hand_over(
                t,
                ptr_of(&main),
                child.inner,
                TypeKey::of::<String>(),
                State::Suspended,
                None,
            )
        };
        assert!(taken.is_some());
        // SAFETY: as above.
        let second = unsafe { receive::<Counted>(word) }.unwrap();
        // Running, the child loses its last handle: `held` keeps it.
        drop(child.handle.take());
        assert_eq!(t.held.get(), child.inner);
        // A greenlet created now takes that reference over as its parent
        // link, and gives it back when it is dropped unstarted.
        let grandchild = small(|()| Ok(()));
        assert!(t.held.get().is_null());
        drop(grandchild);
        assert_eq!(t.held.get(), child.inner);
        // The child stashes a handle to itself (so main's release of `held`
        // is not its last reference) and sends a String while `held` is
        // set: it goes as a `Slot` transfer, as `switch_wrapped` sends it.
        let stash = getcurrent();
        let mut slot = ValueSlot(ManuallyDrop::new(String::from("pong")));
        let mut wrapped = Transfer::new(Kind::Slot, (&raw mut slot).cast());
        let word = transfer_word(&mut wrapped);
        // SAFETY: the child (kept by its handle, `held` or the stash) and main are live.
        unsafe {
            hand_over(
                t,
                child.inner,
                ptr_of(&main),
                TypeKey::of::<Counted>(),
                State::Suspended,
                taken,
            )
        };
        // SAFETY: a `Slot` transfer whose value is a String, from the
        // greenlet `held` holds.
        assert_eq!(unsafe { receive::<String>(word) }.unwrap(), "pong");
        assert!(t.held.get().is_null(), "the receiver released held");
        assert_eq!(Rc::strong_count(&stash.inner), 1);
        // Main resumes it once more; it drops the stash (its last handle,
        // while running: `held` again) and returns the count of drops so
        // far, which reaches main as a tag-3 word, and main's receive both
        // reclaims the stack and releases `held`: the record is recycled.
        let mut slot = ValueSlot(ManuallyDrop::new(Counted(drops.clone())));
        let word: *mut u8 = (&raw mut slot).cast();
        // SAFETY: the child (kept by its handle, `held` or the stash) and main are live.
        unsafe {
            hand_over(
                t,
                ptr_of(&main),
                child.inner,
                TypeKey::of::<u32>(),
                State::Suspended,
                None,
            )
        };
        // SAFETY: as above.
        let third = unsafe { receive::<Counted>(word) }.unwrap();
        drop((first, second, third));
        assert_eq!(drops.get(), 3);
        drop(stash);
        assert_eq!(t.held.get(), child.inner);
        let word = child.return_value(drops.get());
        let room = t.recycle_room.get();
        let mapped = stack::pool_stats().mapped;
        // SAFETY: the tag-3 word of the child's last switch.
        assert_eq!(unsafe { receive::<u32>(word) }.unwrap(), 3);
        assert!(t.held.get().is_null() && t.origin.get().is_null());
        assert_eq!(stack::pool_stats().mapped, mapped - 1, "freed");
        assert_eq!(t.recycle_room.get(), room - 1, "released and recycled");
        assert!(main.is_current());
    }

    fn a_value_refused_at_the_switch_is_dropped_by_the_sender() {
        let _unpooled = Unpooled::new();
        let main = main_handle();
        let drops = counter();
        let body_drops = counter();
        let keep = Counted(body_drops.clone());
        let g = Builder::new()
            .stack_size(STACK)
            .spawn(move |c: Counted| {
                let _keep = &keep;
                drop(c);
                Ok(())
            })
            .unwrap();
        // Its context taken out (as if it ran elsewhere), the switch finds
        // nothing to resume: `not_resumable` drops the value and panics.
        let sp = g.inner.saved.take();
        let refused = catch_unwind(AssertUnwindSafe(|| {
            g.switch::<Counted, ()>(Counted(drops.clone()))
        }));
        assert!(refused.is_err());
        assert_eq!(drops.get(), 1, "dropped once, by drop_in_slot");
        // With `held` set, the value would go as a `Slot` transfer:
        // `switch_wrapped` refuses it the same way. (`held` keeps a reference
        // to the running greenlet; here main's handle moves into it, as a
        // main just made is kept.)
        let t = thread_state();
        t.held.set(Rc::into_raw(main.into_rc()));
        let refused = catch_unwind(AssertUnwindSafe(|| {
            g.switch::<Counted, ()>(Counted(drops.clone()))
        }));
        assert!(refused.is_err());
        assert_eq!(drops.get(), 2);
        let main = main_handle();
        assert!(t.held.get().is_null() && main.is_current());
        g.inner.saved.set(sp);
        assert!(!g.is_started());
        drop(g);
        assert_eq!(
            body_drops.get(),
            1,
            "the unstarted body was dropped in place"
        );
    }

    fn a_final_value_refused_is_dropped_from_the_body_slot() {
        let _unpooled = Unpooled::new();
        let main = main_handle();
        let t = thread_state();
        let drops = counter();
        let child = Child::spawn(|()| Ok(Vec::<Counted>::new()));
        let (body, arg) = child.start(&main, (), TypeKey::of::<Vec<Counted>>());
        let mut value = body(arg).unwrap();
        value.push(Counted(drops.clone()));
        value.push(Counted(drops.clone()));
        let me = child.me();
        let target = final_target::<Vec<Counted>>(me).expect("main waits for it");
        let at = child.body_at();
        // SAFETY: as in `entry`, the value is moved into the body slot.
        unsafe { ptr::write(ptr::with_exposed_provenance_mut(at), value) };
        // Main has no context to resume: the final switch stops at
        // `not_resumable`, which drops the value in the body slot.
        let refused = catch_unwind(AssertUnwindSafe(|| -> () {
            finish_value::<Vec<Counted>>(t, me, target, at)
        }));
        assert!(refused.is_err());
        assert_eq!(drops.get(), 2);
        assert!(child.g().is_dead());
        // Nothing was delivered: back to main, nothing to reclaim; the
        // handle's drop gives the stack back.
        // SAFETY: the child (kept by its handle) and main are live.
        unsafe {
            hand_over(
                t,
                child.inner,
                ptr_of(&main),
                TypeKey::of::<()>(),
                State::Dead,
                None,
            )
        };
        t.origin.set(ptr::null());
        let mapped = stack::pool_stats().mapped;
        drop(child);
        assert_eq!(stack::pool_stats().mapped, mapped - 1, "freed");
    }

    /// An unstarted greenlet waiting for a `Counted`, whose body keeps a
    /// `Counted` on `body_drops`, and a child of it killed unstarted: a send
    /// to the dead child goes to its nearest live ancestor, the parent.
    /// (Switching at the parent itself would meet the issue that
    /// `a_traced_switch_makes_handles_from_the_resolved_target` shows.)
    fn dead_child_of_unstarted(body_drops: &Rc<Cell<u32>>) -> (Greenlet, Greenlet) {
        let keep = Counted(body_drops.clone());
        let parent = Builder::new()
            .stack_size(STACK)
            .spawn(move |c: Counted| {
                let _keep = &keep;
                drop(c);
                Ok(())
            })
            .unwrap();
        let child = Builder::new()
            .stack_size(STACK)
            .parent(&parent)
            .spawn(|()| Ok(()))
            .unwrap();
        child.inner.kill_unstarted();
        (parent, child)
    }

    fn a_panicking_tracer_drops_the_value_and_lands_on_the_sender() {
        let _unpooled = Unpooled::new();
        let _main = main_handle();
        let drops = counter();
        let body_drops = counter();
        let (parent, dead) = dead_child_of_unstarted(&body_drops);
        settrace(Some(Rc::new(|_, _, _| panic!("tracer"))));
        let raised = catch_unwind(AssertUnwindSafe(|| {
            dead.switch::<Counted, ()>(Counted(drops.clone()))
        }))
        .unwrap_err();
        assert_eq!(rt::text_of(&*raised), Some("tracer"));
        assert!(gettrace().is_none(), "the tracer is removed");
        assert_eq!(drops.get(), 1, "the value was dropped once");
        // The tracer's panic is not a value: it killed the unstarted parent
        // and climbed to us.
        assert!(parent.is_dead() && body_drops.get() == 1);
        // A throw: the tracer's panic replaces the thrown error (dropped).
        let (parent, dead) = dead_child_of_unstarted(&body_drops);
        settrace(Some(Rc::new(|_, _, _| panic!("again"))));
        let raised = catch_unwind(AssertUnwindSafe(|| {
            dead.throw::<_, ()>(Counted(drops.clone()))
        }))
        .unwrap_err();
        assert_eq!(rt::text_of(&*raised), Some("again"));
        assert_eq!(drops.get(), 2);
        assert!(parent.is_dead() && body_drops.get() == 2 && gettrace().is_none());
    }

    /// `switch_general` and `throw` take their target from
    /// `Inner::resolve`, and `call_tracer` and `getcurrent` make handles
    /// from it (`Rc::increment_strong_count` reads the counts before the
    /// record): the pointer must carry the provenance of the whole `Rc`
    /// allocation. It once came from a `&Inner` and covered the record
    /// only, which Miri's Stacked Borrows reported here.
    #[test]
    fn a_traced_switch_makes_handles_from_the_resolved_target() {
        let _unpooled = Unpooled::new();
        let _main = main_handle();
        let drops = counter();
        let g = Builder::new()
            .stack_size(STACK)
            .spawn(|c: Counted| {
                drop(c);
                Ok(())
            })
            .unwrap();
        let seen = Rc::new(Cell::new(0));
        let log = seen.clone();
        settrace(Some(Rc::new(move |_, _, target| {
            assert!(!target.is_started());
            log.set(log.get() + 1);
        })));
        // Its context taken out, the traced switch stops at `not_resumable`.
        let sp = g.inner.saved.take();
        let refused = catch_unwind(AssertUnwindSafe(|| {
            g.switch::<Counted, ()>(Counted(drops.clone()))
        }));
        settrace(None);
        g.inner.saved.set(sp);
        assert!(refused.is_err());
        assert_eq!((seen.get(), drops.get()), (1, 1));
        // The return path: the final switch makes `final_target`'s pointer
        // current, and the parent then makes a handle to itself.
        let main = main_handle();
        let child = Child::spawn(|()| Ok(5u8));
        let (body, ()) = child.start(&main, (), TypeKey::of::<u8>());
        let value = body(()).unwrap();
        let target = final_target::<u8>(child.me()).unwrap();
        let word = child.return_value_to(value, target);
        // SAFETY: the tag-3 word of the child's last switch.
        assert_eq!(unsafe { receive::<u8>(word) }.unwrap(), 5);
        assert_eq!(getcurrent(), main);
    }

    /// Runs the real `finish` of a child started by hand, whose parent
    /// (main) waits for `waits`: its switch stops at `not_resumable`, then
    /// main receives, as an `R`, the transfer `finish` built at the top of
    /// the child's stack. Drops the child's handle before the receive if
    /// `drop_handle` (its last, while it runs: `held` keeps it).
    fn finish_by_hand<O: 'static, R: 'static>(
        outcome: Result<Result<O, SwitchError>, rt::PanicPayload>,
        waits: TypeKey,
        drop_handle: bool,
    ) -> Result<Result<R, SwitchError>, rt::PanicPayload> {
        let _unpooled = Unpooled::new();
        let main = main_handle();
        let t = thread_state();
        let mut child = Child::spawn(|()| -> Result<O, SwitchError> { unreachable!() });
        let (body, ()) = child.start(&main, (), waits);
        let _ = body;
        if drop_handle {
            drop(child.handle.take());
            assert_eq!(t.held.get(), child.inner);
        }
        let at = child.body_at();
        let refused = catch_unwind(AssertUnwindSafe(|| -> () { finish::<O>(outcome, at) }))
            .expect_err("main has no context to resume");
        assert!(rt::text_of(&*refused).unwrap().contains("greenlet #0"));
        let me = child.me();
        assert_eq!(me.state.get(), State::Dead);
        let sp = child.sp.get();
        // SAFETY: the child (kept by its handle or `held`) and main are live.
        unsafe {
            hand_over(
                t,
                child.inner,
                ptr_of(&main),
                TypeKey::of::<()>(),
                State::Dead,
                sp,
            )
        };
        // SAFETY: `finish` built its transfer in the final slot below the
        // body slot, which stays valid until the stack is reclaimed by the
        // receive below.
        let word = transfer_word(unsafe { &mut (*final_transfer_slot(at)).transfer });
        let mapped = stack::pool_stats().mapped;
        // SAFETY: the tag-1 word of the child's last switch, with `origin`
        // the child and `held` as it left it.
        let got = catch_unwind(AssertUnwindSafe(|| unsafe { receive::<R>(word) }));
        assert_eq!(
            stack::pool_stats().mapped,
            mapped - 1,
            "reclaimed (freed), even before a panic"
        );
        assert!(t.origin.get().is_null() && t.held.get().is_null() && main.is_current());
        got
    }

    #[test]
    fn finish_hands_values_and_exits_to_the_parent() {
        let drops = counter();
        // A value the parent waits for.
        let got = finish_by_hand::<Counted, Counted>(
            Ok(Ok(Counted(drops.clone()))),
            TypeKey::of::<Counted>(),
            false,
        );
        drop(got.unwrap().unwrap());
        assert_eq!(drops.get(), 1);
        // The same, the child's last handle dropped while it ran.
        let got = finish_by_hand::<String, String>(
            Ok(Ok("last".to_string())),
            TypeKey::of::<String>(),
            true,
        );
        assert_eq!(got.unwrap().unwrap(), "last");
        // A parent that discards what it gets (a drop's exit loop).
        let got = finish_by_hand::<Counted, Discard>(
            Ok(Ok(Counted(drops.clone()))),
            TypeKey::of::<Discard>(),
            false,
        );
        assert!(matches!(got, Ok(Ok(Discard))));
        assert_eq!(drops.get(), 2);
        // Exits.
        let got = finish_by_hand::<u8, u8>(Ok(Err(SwitchError::Exit)), TypeKey::of::<u8>(), true);
        assert!(matches!(got, Ok(Err(SwitchError::Exited))));
        let got =
            finish_by_hand::<u8, u8>(Ok(Err(SwitchError::Exited)), TypeKey::of::<u8>(), false);
        assert!(matches!(got, Ok(Err(SwitchError::Exited))));
    }

    /// Every body that ends with an error or a panic, or returns a value
    /// its parent does not wait for, hands a `Rare` to the parent through a
    /// pointer to its final record's `rare`. That pointer once was made
    /// before later writes through the record's `&mut` (in the closure
    /// `set_rare`), which invalidated it; Miri's Stacked Borrows reported
    /// it here. It is now made after the last such write.
    #[test]
    fn finish_hands_errors_and_panics_to_the_parent() {
        let drops = counter();
        // A value of another type than the parent waits for: dropped by the
        // sender, a mismatch for the receiver.
        let got = finish_by_hand::<Counted, u16>(
            Ok(Ok(Counted(drops.clone()))),
            TypeKey::of::<u16>(),
            false,
        );
        match got.unwrap() {
            Err(SwitchError::TypeMismatch { sent, expected }) => {
                assert!(
                    sent.ends_with("Counted") && expected == "u16",
                    "{sent} {expected}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(drops.get(), 1);
        let thrown = SwitchError::Thrown(Box::new(Counted(drops.clone())));
        let got = finish_by_hand::<u8, u8>(Ok(Err(thrown)), TypeKey::of::<u8>(), false);
        match got.unwrap() {
            Err(e @ SwitchError::Thrown(_)) => assert!(e.thrown::<Counted>().is_some()),
            other => panic!("{other:?}"),
        }
        assert_eq!(drops.get(), 2);
        let mismatch = SwitchError::TypeMismatch {
            sent: "a",
            expected: "b",
        };
        let got = finish_by_hand::<u8, u8>(Ok(Err(mismatch)), TypeKey::of::<u8>(), false);
        assert!(matches!(
            got,
            Ok(Err(SwitchError::TypeMismatch {
                sent: "a",
                expected: "b"
            }))
        ));
        // A panic: raised in the receiver, after the stack was reclaimed.
        let payload: rt::PanicPayload = Box::new(String::from("boom"));
        let got = finish_by_hand::<u8, u8>(Err(payload), TypeKey::of::<u8>(), true);
        assert_eq!(rt::text_of(&*got.unwrap_err()), Some("boom"));
    }

    /// Receives `transfer` as a self delivery (no origin, `held` empty).
    fn receive_transfer<R: 'static>(mut transfer: Transfer) -> Result<R, SwitchError> {
        let word = transfer_word(&mut transfer);
        // SAFETY: a tag-1 word to a live transfer; no origin to release.
        unsafe { receive::<R>(word) }
    }

    #[test]
    fn every_transfer_kind_is_received_once() {
        let _main = main_handle();
        let drops = counter();
        // A `Value` transfer: an `Option` emptied by the receiver.
        let mut option = Some(Counted(drops.clone()));
        let got = receive_transfer::<Counted>(Transfer::new(Kind::Value, (&raw mut option).cast()));
        assert!(got.is_ok() && option.is_none());
        drop(got);
        assert_eq!(drops.get(), 1);
        // A `Slot` transfer with `held` empty.
        let mut slot = ValueSlot(ManuallyDrop::new(Counted(drops.clone())));
        let got = receive_transfer::<Counted>(Transfer::new(Kind::Slot, (&raw mut slot).cast()));
        drop(got);
        assert_eq!(drops.get(), 2);
        let null = ptr::null_mut();
        assert!(matches!(
            receive_transfer::<u8>(Transfer::new(Kind::Exit, null)),
            Err(SwitchError::Exit)
        ));
        assert!(matches!(
            receive_transfer::<u8>(Transfer::new(Kind::Exited, null)),
            Err(SwitchError::Exited)
        ));
        assert!(matches!(
            receive_transfer::<Discard>(Transfer::new(Kind::Discarded, null)),
            Ok(Discard)
        ));
        assert!(matches!(
            receive_transfer::<u8>(Transfer::new(Kind::Discarded, null)),
            Err(SwitchError::TypeMismatch {
                sent: "<discarded>",
                expected: "u8"
            })
        ));
        // A `Rare` payload is taken, leaving `Taken` for the sender to drop.
        let mut rare = Rare::Thrown(Box::new(Counted(drops.clone())));
        let got = receive_transfer::<u8>(Transfer::new(Kind::Rare, (&raw mut rare).cast()));
        assert!(matches!(rare, Rare::Taken));
        drop((got, rare));
        assert_eq!(drops.get(), 3);
        let mut rare = Rare::Mismatch("x", "y");
        assert!(matches!(
            receive_transfer::<u8>(Transfer::new(Kind::Rare, (&raw mut rare).cast())),
            Err(SwitchError::TypeMismatch {
                sent: "x",
                expected: "y"
            })
        ));
        // A boxed `Rare` (tag 2) is owned by the receiver.
        let boxed = Box::into_raw(Box::new(Rare::Thrown(Box::new(Counted(drops.clone())))));
        let word = boxed.cast::<u8>().map_addr(|a| a | TAG_BOXED);
        // SAFETY: a tag-2 word from `Box::into_raw`, received once.
        let got = unsafe { receive::<u8>(word) };
        assert!(matches!(got, Err(SwitchError::Thrown(_))));
        drop(got);
        assert_eq!(drops.get(), 4);
        let boxed = Box::into_raw(Box::new(Rare::Panic(Box::new("boxed"))));
        let word = boxed.cast::<u8>().map_addr(|a| a | TAG_BOXED);
        // SAFETY: as above.
        let raised = catch_unwind(|| unsafe { receive::<u8>(word) }).unwrap_err();
        assert_eq!(rt::text_of(&*raised), Some("boxed"));
    }

    fn dropping_the_last_handle_in_each_state() {
        let main = main_handle();
        let t = thread_state();
        // Unstarted: killed in place, the record recycled, then reused.
        let room = t.recycle_room.get();
        let g = small(|()| Ok(()));
        let reused = t.recycle_room.get();
        drop(g);
        assert_eq!(t.recycle_room.get(), reused - 1);
        let g = small(|()| Ok(()));
        assert_eq!(t.recycle_room.get(), reused, "the record was reused");
        // Dead with a weak handle: freed, not recycled.
        g.inner.kill_unstarted();
        assert!(g.is_dead() && !g.is_active());
        let weak = g.downgrade();
        let before = t.recycle_room.get();
        drop(g);
        assert!(weak.upgrade().is_none());
        assert_eq!(t.recycle_room.get(), before);
        assert!(format!("{weak:?}").contains("dropped"));
        // Main, running, loses its last handle: `held` keeps it.
        assert!(t.held.get().is_null());
        drop(main);
        assert_eq!(t.held.get(), current_ptr());
        let again = main_handle();
        assert!(t.held.get().is_null() && again.is_current());
        assert!(t.recycle_room.get() <= room);
    }

    fn the_pool_takes_gives_back_and_keeps_its_limit() {
        let size = STACK;
        let first = stack::take(size).unwrap();
        let top = first.top();
        stack::give_back(first, 0);
        let stats = stack::pool_stats();
        assert_eq!(stats.pooled, 1);
        // The same size is served from the hot slots, last in, first out.
        let again = stack::take_fast(size).expect("hot");
        assert_eq!(again.top(), top);
        assert!(stack::take_fast(size).is_none());
        // More than the hot slots hold: the rest go to the class's list.
        let mut many: Vec<_> = (0..40).map(|_| stack::take(size).unwrap()).collect();
        many.push(again);
        let mapped = stack::pool_stats().mapped;
        for s in many.drain(..) {
            let top = s.top().as_ptr() as usize;
            stack::give_back(s, top - 64);
        }
        assert_eq!(stack::pool_stats().pooled, 41);
        // Another size makes its own class the hot one; the old hot stacks
        // move to their list, and both sizes come back.
        let other = stack::take(2 * size).unwrap();
        assert_eq!(other.len(), 2 * size);
        assert_eq!(stack::take(size).unwrap().len(), size);
        stack::give_back(other, 0);
        // A stack used deeper than the release threshold gives pages back.
        stack::set_release_threshold(4096);
        let deep = stack::take(size).unwrap();
        let bottom = deep.bottom();
        stack::give_back(deep, bottom + 64);
        stack::set_release_threshold(64 * 1024);
        // The limit drops what is above it; at 0 nothing is pooled.
        stack::set_pool_limit(4);
        assert!(stack::pool_stats().pooled <= 4);
        stack::set_pool_limit(0);
        assert_eq!(stack::pool_stats().pooled, 0);
        let unpooled = stack::take(size).unwrap();
        stack::give_back(unpooled, 0);
        assert_eq!(stack::pool_stats().pooled, 0);
        assert!(stack::pool_stats().mapped < mapped);
        stack::set_pool_limit(1024);
    }
}
