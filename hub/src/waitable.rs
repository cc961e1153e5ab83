//! Waiting on several objects at once (gevent's `wait`).
//!
//! Every waitable object has a ready flag and a [`WaitList`] of the
//! greenlets waiting for it. A multi-object wait registers *one* wait in
//! every list; the first object to become ready wakes it, which makes its
//! entries in the other lists stale, and the waiter removes them all on its
//! way out.

use crate::error::Error;
use crate::hub::{self, Hub};
use crate::wait::Entry;
use std::time::Duration;

pub(crate) mod sealed {
    use crate::wait::WaitList;
    use std::cell::RefCell;

    /// What [`wait`](crate::wait) needs from an object. Sealed: the methods
    /// are the crate's own business.
    pub trait Sealed {
        fn ready_now(&self) -> bool;
        fn waiters(&self) -> &RefCell<WaitList>;
        /// When it became ready, on a per-thread clock (0: unknown), so that
        /// objects found ready together are reported in the order they
        /// became ready.
        fn ready_order(&self) -> u64 {
            0
        }
    }
}

/// Something [`wait`] can wait for: a [`Task`](crate::Task) (finished), an
/// [`Event`](crate::Event) (set) or an [`AsyncResult`](crate::AsyncResult)
/// (set or failed). Sealed.
pub trait Waitable: sealed::Sealed {}

/// Waits until `count` of `objects` (all of them if `None`) are ready, or
/// `timeout` elapses; returns the indices of the ready ones: those ready at
/// the call first (by index), then the others in the order they became ready
/// (tasks in the order they finished). On a timeout the list is simply
/// shorter.
///
/// # Errors
///
/// Those of any blocking call ([`Error::Exit`], [`Error::Timeout`],
/// [`Error::LoopExit`]), but not a timeout of its own.
///
/// # Examples
///
/// ```
/// use greenlet_hub::{Event, Waitable, spawn, wait};
///
/// let a = Event::new();
/// let b = Event::new();
/// let b2 = b.clone();
/// let _t = spawn(move || { b2.set(); Ok(()) });
/// let ready = wait(&[&a as &dyn Waitable, &b], None, 1)?;
/// assert_eq!(ready, [1]);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn wait(
    objects: &[&dyn Waitable],
    timeout: impl Into<Option<Duration>>,
    count: impl Into<Option<usize>>,
) -> Result<Vec<usize>, Error> {
    let want = count.into().unwrap_or(objects.len()).min(objects.len());
    let mut done: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].ready_now())
        .collect();
    if done.len() >= want {
        return Ok(done);
    }
    let Ok(deadline) = hub::deadline(timeout.into()) else {
        return Ok(done);
    };
    let hub = Hub::current()?;
    let mut pending: Vec<usize> = (0..objects.len()).filter(|i| !done.contains(i)).collect();
    loop {
        let (me, generation) = hub.prepare("wait")?;
        for &i in &pending {
            objects[i]
                .waiters()
                .borrow_mut()
                .push(Entry::new(me.clone(), generation));
        }
        let result = hub.park(&me, generation, deadline);
        for &i in &pending {
            objects[i].waiters().borrow_mut().remove(&me, generation);
        }
        hub.forget_if_idle(&me);
        let mut newly: Vec<usize> = Vec::new();
        pending.retain(|&i| {
            let ready = objects[i].ready_now();
            if ready {
                newly.push(i);
            }
            !ready
        });
        // Several may have become ready before this greenlet ran again.
        newly.sort_by_key(|&i| objects[i].ready_order());
        done.extend(newly);
        match result {
            Ok(()) if done.len() >= want => return Ok(done),
            Ok(()) => {}
            Err(i) if matches!(i.error, Error::TimedOut) => return Ok(done),
            Err(i) => return Err(i.error),
        }
    }
}
