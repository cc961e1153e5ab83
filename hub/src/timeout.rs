//! `Timeout` scopes: a deadline that interrupts whatever blocking call the
//! greenlet that made it is in when it expires.
//!
//! A scope is registered on its owner's waiter (outermost first) and as one
//! timer. When the timer fires:
//!
//! - if the owner is blocked, its wait ends with [`Error::Timeout`] naming
//!   the scope (the wait's other registrations are removed by the blocking
//!   call on its way out, as for any other wake-up);
//! - otherwise (the owner was just woken by something else and has not run
//!   yet) the expiry is remembered and raised by the owner's next blocking
//!   call, outermost pending scope first.
//!
//! So nested scopes each fire as themselves, and an outer one cannot be
//! swallowed by code that handles only an inner one ([`Timeout::is`]).
//! Dropping the guard cancels the scope; its timer becomes stale.

use crate::error::{Error, TimeoutId};
use crate::hub::Hub;
use crate::timer::Action;
use crate::wait::{Entry, Waiter, Waits, Wake};
use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

pub(crate) struct ScopeState {
    id: u64,
    after: Duration,
    owner: Weak<dyn Waits>,
    expired: Cell<bool>,
    delivered: Cell<bool>,
    cancelled: Cell<bool>,
}

impl ScopeState {
    /// Its timer has nothing left to do.
    pub(crate) fn is_finished(&self) -> bool {
        self.cancelled.get() || self.expired.get()
    }

    fn error(&self) -> Error {
        Error::Timeout {
            id: TimeoutId(self.id),
            after: self.after,
        }
    }
}

/// The scope's timer fired (in the hub).
pub(crate) fn fire(hub: &Hub, scope: &Rc<ScopeState>) {
    if scope.is_finished() {
        return;
    }
    scope.expired.set(true);
    let Some(owner) = scope.owner.upgrade() else {
        return;
    };
    let generation = owner.waiter().generation();
    if hub.schedule(Entry::new(owner, generation), Wake::Timeout(scope.id)) {
        scope.delivered.set(true);
    }
}

/// At the start of a blocking call: the outermost expired scope that was not
/// delivered yet.
pub(crate) fn raise_pending(w: &Waiter) -> Result<(), Error> {
    for s in w.scopes.borrow().iter() {
        if s.expired.get() && !s.delivered.get() {
            s.delivered.set(true);
            return Err(s.error());
        }
    }
    Ok(())
}

/// The error for scope `id` of this waiter.
pub(crate) fn elapsed(w: &Waiter, id: u64) -> Error {
    let scopes = w.scopes.borrow();
    match scopes.iter().find(|s| s.id == id) {
        Some(s) => s.error(),
        None => Error::Timeout {
            id: TimeoutId(id),
            after: Duration::ZERO,
        },
    }
}

/// A deadline for everything the current greenlet blocks on until the guard
/// is dropped (gevent's `Timeout`).
///
/// When it expires, the blocking call the greenlet is in (or its next one)
/// fails with [`Error::Timeout`] naming this scope; propagate it with `?`
/// up to the code that made the scope, which recognises it with
/// [`Timeout::is`]. Code that handles only its own scope never swallows an
/// outer one. A scope fires at most once. Made in the hub greenlet (a
/// callback), a `Timeout` is inert.
///
/// Timers are never early: the scope expires at least `after` after it was
/// made.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Error, Event, Timeout};
/// use std::time::Duration;
///
/// let never = Event::new();
/// let outer = Timeout::new(Duration::from_millis(2));
/// let inner = Timeout::new(Duration::from_secs(30));
/// match never.wait(None) {
///     Err(e) if inner.is(&e) => unreachable!("the inner scope is much longer"),
///     Err(e) => assert!(outer.is(&e), "{e}"),
///     Ok(()) => unreachable!(),
/// }
/// ```
#[must_use = "a Timeout is cancelled when dropped"]
pub struct Timeout {
    scope: Option<Rc<ScopeState>>,
    id: TimeoutId,
}

impl Timeout {
    /// Starts a scope that expires `after` from now (never, for a duration
    /// too large to represent).
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Timeout, sleep};
    /// use std::time::Duration;
    ///
    /// let t = Timeout::new(Duration::from_millis(1));
    /// let e = sleep(Duration::from_secs(60)).unwrap_err();
    /// assert!(t.is(&e));
    /// ```
    pub fn new(after: Duration) -> Timeout {
        let Ok(hub) = Hub::current() else {
            return Timeout {
                scope: None,
                id: TimeoutId(0),
            };
        };
        let id = hub.next_id();
        let Ok(me) = hub.current_waiter() else {
            return Timeout {
                scope: None,
                id: TimeoutId(id),
            };
        };
        let scope = Rc::new(ScopeState {
            id,
            after,
            owner: Rc::downgrade(&me),
            expired: Cell::new(false),
            delivered: Cell::new(false),
            cancelled: Cell::new(false),
        });
        me.waiter().add_scope(scope.clone());
        if let Some(at) = Instant::now().checked_add(after) {
            hub.timers
                .borrow_mut()
                .push(at, Action::Scope(scope.clone()));
        }
        Timeout {
            scope: Some(scope),
            id: TimeoutId(id),
        }
    }

    /// This scope's identity, as carried by its [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::Timeout::new(std::time::Duration::from_millis(1));
    /// let e = greenlet_hub::sleep(std::time::Duration::from_secs(60)).unwrap_err();
    /// assert!(matches!(e, greenlet_hub::Error::Timeout { id, .. } if id == t.id()));
    /// ```
    pub fn id(&self) -> TimeoutId {
        self.id
    }

    /// True if `error` is this scope expiring.
    ///
    /// # Examples
    ///
    /// ```
    /// use greenlet_hub::{Error, Timeout};
    /// use std::time::Duration;
    ///
    /// let t = Timeout::new(Duration::from_secs(1));
    /// assert!(!t.is(&Error::TimedOut));
    /// ```
    pub fn is(&self, error: &Error) -> bool {
        matches!(error, Error::Timeout { id, .. } if *id == self.id && self.scope.is_some())
    }

    /// True once the deadline has passed and the hub has noticed.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::Timeout::new(std::time::Duration::from_millis(1));
    /// assert!(!t.expired());
    /// let _ = greenlet_hub::sleep(std::time::Duration::from_secs(60));
    /// assert!(t.expired());
    /// ```
    pub fn expired(&self) -> bool {
        self.scope.as_ref().is_some_and(|s| s.expired.get())
    }

    /// Cancels the scope (the same as dropping it).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = greenlet_hub::Timeout::new(std::time::Duration::from_millis(1));
    /// t.cancel();
    /// greenlet_hub::sleep(std::time::Duration::from_millis(2))?; // not interrupted
    /// # Ok::<(), greenlet_hub::Error>(())
    /// ```
    pub fn cancel(self) {}
}

impl Drop for Timeout {
    fn drop(&mut self) {
        let Some(scope) = self.scope.take() else {
            return;
        };
        let was_pending = !scope.is_finished();
        scope.cancelled.set(true);
        let owner = scope.owner.upgrade();
        if let Some(owner) = &owner {
            owner.waiter().remove_scope(&scope);
        }
        let _ = Hub::with_existing(|hub| {
            if was_pending {
                hub.timers.borrow_mut().note_cancelled();
            }
            if let Some(owner) = &owner {
                hub.forget_if_idle(owner);
            }
        });
    }
}

/// Runs `f` inside a [`Timeout`] scope of `after`: `Ok(Some(value))` if it
/// finished in time, `Ok(None)` if *this* scope expired, and any other error
/// (an outer scope's expiry included) as it is (gevent's `with_timeout`).
///
/// # Errors
///
/// Whatever `f` returns, except this scope's own [`Error::Timeout`].
///
/// # Examples
///
/// ```
/// use greenlet_hub::{sleep, with_timeout};
/// use std::time::Duration;
///
/// let slow = with_timeout(Duration::from_millis(1), || sleep(Duration::from_secs(60)))?;
/// assert_eq!(slow, None);
/// let quick = with_timeout(Duration::from_secs(60), || Ok(7))?;
/// assert_eq!(quick, Some(7));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn with_timeout<T>(
    after: Duration,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let scope = Timeout::new(after);
    match f() {
        Ok(v) => Ok(Some(v)),
        Err(e) if scope.is(&e) => Ok(None),
        Err(e) => Err(e),
    }
}
