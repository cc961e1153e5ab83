//! Waiters: how a blocked greenlet is recorded, woken and resumed.
//!
//! Every greenlet that blocks through the hub has a [`Waiter`]: a task's is
//! owned by its task record, main's and other greenlets' are kept by the hub.
//! A blocking call:
//!
//! 1. starts a *wait*: bumps the waiter's generation and marks it
//!    [`State::Blocked`];
//! 2. registers an [`Entry`] `(waiter, generation)` wherever a wake-up can
//!    come from (a primitive's [`WaitList`], the timer heap);
//! 3. switches to the hub, which resumes it with a [`Wake`] reason;
//! 4. removes its entries on every way out.
//!
//! Invariants:
//!
//! - *The first wake wins.* Waking an entry succeeds only while the waiter is
//!   `Blocked` in that same generation; it moves it to `Scheduled` with the
//!   reason and queues it. Any later wake of the same wait (a timer firing
//!   after an event was set, say) finds it stale and does nothing. So a
//!   primitive that handed something over (a permit, an item) knows that the
//!   waiter will see `Notify` and take it.
//! - An entry whose wait is over is *stale*; whoever meets one (a waker
//!   popping a list, the hub popping its ready queue or timer heap) drops it.
//! - A kill or a scope timeout that cannot be delivered because the waiter
//!   is not blocked is remembered and raised at its next blocking call.
//! - Generations only grow, also across the reuse of a task's waiter for
//!   the next task (which happens only once nothing refers to it), so an
//!   entry can never become live again.

use crate::timeout::ScopeState;
use greenlet::Greenlet;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// Why the hub resumed a blocked greenlet: the value of every switch from
/// the hub to a waiter (the hub's one wake-up type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A task's first run.
    Start,
    /// What it waited for happened (or its sleep ended).
    Notify,
    /// Its own `timeout` argument elapsed.
    TimedOut,
    /// A `Timeout` scope (by id) expired.
    Timeout(u64),
    /// Its task is killed.
    Kill,
    /// Nothing can ever wake it (main only).
    LoopExit,
}

/// Where a waiter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Running, or suspended somewhere other than a hub wait.
    Active,
    /// In a hub wait, registered and not yet woken.
    Blocked,
    /// Woken: in the hub's ready queue with its reason.
    Scheduled,
    /// A finished (or killed unstarted) task.
    Dead,
}

/// [`Waiter`]'s pending bit for a kill that arrived while it was not blocked.
const KILL_PENDING: u8 = 1;
/// [`Waiter`]'s pending bit for active `Timeout` scopes.
const HAS_SCOPES: u8 = 2;

/// The wait record of one greenlet.
pub(crate) struct Waiter {
    /// The greenlet to resume. For a task, dropped only if it is killed
    /// before it starts.
    greenlet: RefCell<Option<Greenlet>>,
    greenlet_id: Cell<u64>,
    generation: Cell<u64>,
    state: Cell<State>,
    wake: Cell<Wake>,
    /// The blocking call, for LoopExit's message.
    what: Cell<&'static str>,
    /// What a blocking call must look at before it waits, as bits: a kill
    /// that arrived while the waiter was not blocked ([`KILL_PENDING`]),
    /// active `Timeout` scopes ([`HAS_SCOPES`]). One test on the hot path.
    pending: Cell<u8>,
    /// Active `Timeout` scopes of this greenlet, outermost first (changed
    /// through [`Waiter::add_scope`] and [`Waiter::remove_scope`], which
    /// keep [`HAS_SCOPES`] in step).
    pub(crate) scopes: RefCell<Vec<Rc<ScopeState>>>,
    /// Kept by the hub only while it waits or has a scope (a greenlet that
    /// is neither main nor a task).
    transient: Cell<bool>,
    /// What the hub knows of a task (unused for main and other greenlets).
    pub(crate) task: TaskPart,
}

/// The untyped part of a task's record, kept in its waiter so that the hub
/// reuses it from one task to the next.
#[derive(Default)]
pub(crate) struct TaskPart {
    /// Its slot in the hub's registry.
    pub(crate) slot: Cell<usize>,
    /// Set once its outcome is final.
    pub(crate) done: Cell<bool>,
    /// When it finished, on the hub's id clock (for `wait`'s order).
    pub(crate) finished_at: Cell<u64>,
    /// The greenlets joining it.
    pub(crate) joiners: RefCell<WaitList>,
}

impl Waiter {
    #[inline]
    pub(crate) fn new(greenlet: Option<Greenlet>, state: State) -> Waiter {
        let id = greenlet.as_ref().map_or(u64::MAX, Greenlet::id);
        Waiter {
            greenlet: RefCell::new(greenlet),
            greenlet_id: Cell::new(id),
            generation: Cell::new(0),
            state: Cell::new(state),
            wake: Cell::new(Wake::Start),
            what: Cell::new(""),
            pending: Cell::new(0),
            scopes: RefCell::new(Vec::new()),
            transient: Cell::new(false),
            task: TaskPart {
                slot: Cell::new(usize::MAX),
                ..TaskPart::default()
            },
        }
    }

    #[inline]
    pub(crate) fn transient(greenlet: Greenlet) -> Waiter {
        let w = Waiter::new(Some(greenlet), State::Active);
        w.transient.set(true);
        w
    }

    #[inline]
    pub(crate) fn is_transient(&self) -> bool {
        self.transient.get()
    }

    #[inline(always)]
    pub(crate) fn set_greenlet(&self, g: Greenlet) {
        self.greenlet_id.set(g.id());
        *self.greenlet.borrow_mut() = Some(g);
    }

    /// Makes this record ready to serve another task (`Active`, not done,
    /// no kill pending; the generation keeps counting), if it can: it must
    /// hold no greenlet, no scope and no joiner, and not be transient.
    /// False (and nothing changed) if it cannot.
    #[inline(always)]
    pub(crate) fn reset_for_reuse(&self) -> bool {
        if self.greenlet.borrow().is_some()
            || !self.scopes.borrow().is_empty()
            || !self.task.joiners.borrow().is_empty()
            || self.is_transient()
        {
            return false;
        }
        self.state.set(State::Active);
        self.pending.set(0);
        self.task.done.set(false);
        self.task.finished_at.set(0);
        self.task.slot.set(usize::MAX);
        true
    }

    #[inline]
    pub(crate) fn take_greenlet(&self) -> Option<Greenlet> {
        self.greenlet.borrow_mut().take()
    }

    #[inline]
    pub(crate) fn greenlet_ref(&self) -> std::cell::Ref<'_, Option<Greenlet>> {
        self.greenlet.borrow()
    }

    #[inline]
    pub(crate) fn greenlet(&self) -> Option<Greenlet> {
        self.greenlet.borrow().clone()
    }

    #[inline]
    pub(crate) fn greenlet_id(&self) -> u64 {
        self.greenlet_id.get()
    }

    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        self.state.get()
    }

    #[inline]
    pub(crate) fn set_state(&self, s: State) {
        self.state.set(s);
    }

    #[inline]
    pub(crate) fn wake_reason(&self) -> Wake {
        self.wake.get()
    }

    #[inline]
    pub(crate) fn what(&self) -> &'static str {
        self.what.get()
    }

    #[inline]
    pub(crate) fn is_started(&self) -> bool {
        self.greenlet
            .borrow()
            .as_ref()
            .is_some_and(Greenlet::is_started)
    }

    /// Starts a wait: a new generation, `Blocked`.
    #[inline]
    pub(crate) fn begin(&self, what: &'static str) -> u64 {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        self.state.set(State::Blocked);
        self.what.set(what);
        generation
    }

    /// Starts a wait that is woken at once with `reason` (a `sleep(ZERO)`
    /// queueing itself): a new generation, `Scheduled`.
    #[inline]
    pub(crate) fn begin_scheduled(&self, what: &'static str, reason: Wake) -> u64 {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        self.state.set(State::Scheduled);
        self.wake.set(reason);
        self.what.set(what);
        generation
    }

    /// Ends whatever wait is pending without waking it: every entry of it
    /// becomes stale.
    #[inline]
    pub(crate) fn invalidate(&self, state: State) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.state.set(state);
    }

    /// Moves a live `Blocked` wait of generation `generation` to `Scheduled`.
    /// False if that wait is over (the entry is stale).
    #[inline]
    pub(crate) fn try_wake(&self, generation: u64, reason: Wake) -> bool {
        if self.generation.get() != generation || self.state.get() != State::Blocked {
            return false;
        }
        self.state.set(State::Scheduled);
        self.wake.set(reason);
        true
    }

    /// Whether a kill is pending or a `Timeout` scope is active: the rare
    /// case a blocking call must look at before it waits.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.get() != 0
    }

    #[inline]
    pub(crate) fn request_kill_later(&self) {
        self.pending.set(self.pending.get() | KILL_PENDING);
    }

    #[inline]
    pub(crate) fn take_kill_pending(&self) -> bool {
        let pending = self.pending.get();
        self.pending.set(pending & !KILL_PENDING);
        pending & KILL_PENDING != 0
    }

    /// Adds an active `Timeout` scope (the innermost).
    pub(crate) fn add_scope(&self, scope: Rc<ScopeState>) {
        self.scopes.borrow_mut().push(scope);
        self.pending.set(self.pending.get() | HAS_SCOPES);
    }

    /// Removes an active `Timeout` scope, if it is there.
    pub(crate) fn remove_scope(&self, scope: &Rc<ScopeState>) {
        let mut scopes = self.scopes.borrow_mut();
        if let Some(i) = scopes.iter().rposition(|s| Rc::ptr_eq(s, scope)) {
            scopes.remove(i);
        }
        if scopes.is_empty() {
            self.pending.set(self.pending.get() & !HAS_SCOPES);
        }
    }
}

/// Anything that leads to a waiter record. Records are shared as
/// [`WaiterRef`] (a thin `Rc<Waiter>`: no virtual call to reach the fields
/// on the hot paths); the trait lets code that keeps a `Weak<dyn Waits>`
/// (a `Timeout` scope's owner) turn it back into one.
pub(crate) trait Waits: 'static {
    fn waiter(&self) -> &Waiter;
    fn into_waiter(self: Rc<Self>) -> WaiterRef;
}

impl Waits for Waiter {
    #[inline(always)]
    fn waiter(&self) -> &Waiter {
        self
    }

    #[inline(always)]
    fn into_waiter(self: Rc<Self>) -> WaiterRef {
        self
    }
}

/// A shared waiter record: a task's (owned by its task record), main's or
/// another greenlet's (kept by the hub).
pub(crate) type WaiterRef = Rc<Waiter>;

/// One registration of one wait.
pub(crate) struct Entry {
    pub(crate) who: WaiterRef,
    pub(crate) generation: u64,
}

impl Entry {
    #[inline(always)]
    pub(crate) fn new<W: Waits + ?Sized>(who: Rc<W>, generation: u64) -> Entry {
        Entry {
            who: who.into_waiter(),
            generation,
        }
    }

    /// Whether this entry's wait is still blocked (wakeable).
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.who.generation() == self.generation && self.who.state() == State::Blocked
    }

    #[inline]
    pub(crate) fn is(&self, who: &WaiterRef, generation: u64) -> bool {
        self.generation == generation && same_waiter(&self.who, who)
    }
}

#[inline]
pub(crate) fn same_waiter(a: &WaiterRef, b: &WaiterRef) -> bool {
    Rc::ptr_eq(a, b)
}

/// A FIFO of entries. The first entry lives inline and the others in a
/// queue made on the first overflow, so a primitive with one waiter at a
/// time (the common join) neither allocates nor pays for an empty queue's
/// drop.
///
/// `pub` only so that the sealed [`Waitable`](crate::Waitable) trait can
/// name it; the module is private.
#[derive(Default)]
pub struct WaitList {
    /// The oldest entry, unless `rest` holds older ones (`first` is only
    /// refilled when `rest` is empty, so order is kept).
    first: Option<Entry>,
    rest: Option<VecDeque<Entry>>,
}

impl WaitList {
    #[inline]
    pub(crate) fn push(&mut self, e: Entry) {
        if self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.is_empty()) {
            self.first = Some(e);
        } else {
            self.push_rest(e);
        }
    }

    #[cold]
    #[inline(never)]
    fn push_rest(&mut self, e: Entry) {
        self.rest.get_or_insert_with(Default::default).push_back(e);
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        match self.first.take() {
            Some(e) => Some(e),
            None => self.rest.as_mut()?.pop_front(),
        }
    }

    /// Removes the entry of this wait; false if it is not there (a waker
    /// took it).
    #[inline]
    pub(crate) fn remove(&mut self, who: &WaiterRef, generation: u64) -> bool {
        if self.first.as_ref().is_some_and(|e| e.is(who, generation)) {
            self.first = None;
            return true;
        }
        // Usually the most recent entry: search from the back.
        if let Some(rest) = &mut self.rest
            && let Some(i) = rest.iter().rposition(|e| e.is(who, generation))
        {
            rest.remove(i);
            return true;
        }
        false
    }

    /// Number of entries, stale ones included (they are removed by their
    /// owners as they resume).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|r| r.is_empty())
    }

    #[inline]
    pub(crate) fn take_all(&mut self) -> WaitList {
        std::mem::take(self)
    }
}
