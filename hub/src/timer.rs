//! The hub's timers: a binary min-heap keyed by `(deadline, sequence)`.
//!
//! Cancellation is lazy: an entry knows when it is stale (the wait it would
//! wake is over, the `Timeout` scope it would fire was dropped), and stale
//! entries are dropped when they reach the top. So that cancelled long
//! timers cannot pile up (a loop of `get(timeout = 1 min)` calls that all
//! succeed at once, say), the heap is rebuilt without them once they are
//! the majority.
//!
//! Invariants:
//!
//! - entries with equal deadlines fire in the order they were added (the
//!   sequence number breaks ties), so an outer `Timeout` made before an
//!   inner one with the same deadline fires first;
//! - after [`Timers::next_deadline`], the top entry (if any) is live: a
//!   non-empty heap means a timer *will* wake someone, which is what the
//!   loop-exit check relies on.

use crate::timeout::ScopeState;
use crate::wait::{Entry, Wake};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a timer does when it fires.
pub(crate) enum Action {
    /// Wakes a wait with a reason: `Notify` ends a sleep, `TimedOut` a
    /// call's own timeout, `Start` a `spawn_later` task.
    Wake(Entry, Wake),
    /// Expires a `Timeout` scope.
    Scope(Rc<ScopeState>),
}

impl Action {
    fn is_stale(&self) -> bool {
        match self {
            Action::Wake(e, _) => !e.is_live(),
            Action::Scope(s) => s.is_finished(),
        }
    }
}

struct Timer {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// Rebuild the heap once this many entries were cancelled and they are at
/// least half of it.
const COMPACT_MIN: usize = 64;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Timer>,
    seq: u64,
    /// Entries known to have become stale since the last rebuild (an upper
    /// bound: some were already popped).
    cancelled: usize,
}

impl Timers {
    pub(crate) fn push(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.heap.push(Timer {
            at,
            seq: self.seq,
            action,
        });
    }

    /// Records that one entry became stale; rebuilds when they dominate.
    pub(crate) fn note_cancelled(&mut self) {
        self.cancelled += 1;
        if self.cancelled >= COMPACT_MIN && self.cancelled * 2 >= self.heap.len() {
            self.heap.retain(|t| !t.action.is_stale());
            self.cancelled = 0;
        }
    }

    fn prune_top(&mut self) {
        while self.heap.peek().is_some_and(|t| t.action.is_stale()) {
            self.heap.pop();
            self.cancelled = self.cancelled.saturating_sub(1);
        }
    }

    /// The earliest live deadline; drops the stale entries above it.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.prune_top();
        self.heap.peek().map(|t| t.at)
    }

    /// Pops the earliest live entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Action> {
        self.prune_top();
        if self.heap.peek().is_some_and(|t| t.at <= now) {
            return self.heap.pop().map(|t| t.action);
        }
        None
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Entries in the heap, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Empties the heap, handing the entries to the caller to drop outside
    /// any borrow (dropping a waiter can run a greenlet's cleanup).
    pub(crate) fn take_all(&mut self) -> Vec<Action> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|t| t.action)
            .collect()
    }
}

/// The poll timeout until `deadline`, rounded *up* to whole milliseconds
/// (epoll's granularity): waking early would only cost another poll, but
/// rounding down to zero would spin.
pub(crate) fn poll_timeout(deadline: Instant, now: Instant) -> Duration {
    let left = deadline.saturating_duration_since(now);
    let millis = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::poll_timeout;
    use std::time::{Duration, Instant};

    #[test]
    fn poll_timeouts_round_up_to_whole_milliseconds() {
        let now = Instant::now();
        assert_eq!(poll_timeout(now, now), Duration::ZERO);
        assert_eq!(
            poll_timeout(now + Duration::from_nanos(1), now),
            Duration::from_millis(1)
        );
        assert_eq!(
            poll_timeout(now + Duration::from_micros(1500), now),
            Duration::from_millis(2)
        );
        assert_eq!(
            poll_timeout(now + Duration::from_millis(3), now),
            Duration::from_millis(3)
        );
        // A deadline in the past is due now.
        assert_eq!(
            poll_timeout(now, now + Duration::from_millis(5)),
            Duration::ZERO
        );
    }
}
