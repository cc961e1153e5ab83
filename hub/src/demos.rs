//! The two hub demos of the tour, as functions the examples (and the main
//! tour) call with a place to print to.
//!
//! Both are deterministic in their order, whatever the machine's timing:
//! `sleep(ZERO)` runs the ready tasks round-robin, and a semaphore hands
//! its permit to the first waiter.

use crate::{Error, Semaphore, Task, joinall, sleep, spawn};
use std::time::Duration;

/// Three tasks, each printing its name, its task id and a counter five
/// times, yielding to the others (`sleep(ZERO)`) after each line; joined
/// with [`joinall`]. The lines interleave round-robin: A 0, B 0, C 0, A 1, ...
///
/// # Errors
///
/// Those of the joins (none in practice).
///
/// # Examples
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
///
/// let lines = Rc::new(RefCell::new(Vec::new()));
/// let out = lines.clone();
/// greenlet_hub::demos::counters(move |line| out.borrow_mut().push(line))?;
/// assert_eq!(lines.borrow().len(), 15);
/// assert!(lines.borrow()[1].starts_with("B"));
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn counters(say: impl Fn(String) + Clone + 'static) -> Result<(), Error> {
    let tasks: Vec<Task<()>> = ["A", "B", "C"]
        .into_iter()
        .map(|name| {
            let say = say.clone();
            spawn(move || {
                let id = greenlet::current_id();
                for i in 0..5 {
                    say(format!("{name} (task #{id}) counts {i}"));
                    sleep(Duration::ZERO)?;
                }
                Ok(())
            })
        })
        .collect();
    joinall(&tasks, None, None)?;
    for t in &tasks {
        t.get(None)?;
    }
    Ok(())
}

/// Two workers share a `Semaphore(1)`; each loops five times: acquire,
/// hold it for a few milliseconds (worker 1 for 1 ms, worker 2 for 3 ms),
/// release. Since a release hands the permit to the waiting worker, they
/// alternate strictly: 1 acquired, 1 released, 2 acquired, 2 released, ...
///
/// # Errors
///
/// Those of the joins (none in practice).
///
/// # Examples
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
///
/// let lines = Rc::new(RefCell::new(Vec::new()));
/// let out = lines.clone();
/// greenlet_hub::demos::semaphore(move |line| out.borrow_mut().push(line))?;
/// assert_eq!(lines.borrow()[..3], ["worker 1 acquired", "worker 1 released", "worker 2 acquired"]);
/// # Ok::<(), greenlet_hub::Error>(())
/// ```
pub fn semaphore(say: impl Fn(String) + Clone + 'static) -> Result<(), Error> {
    let sem = Semaphore::new(1);
    let workers: Vec<Task<()>> = [(1, 1), (2, 3)]
        .into_iter()
        .map(|(n, hold_ms)| {
            let (sem, say) = (sem.clone(), say.clone());
            spawn(move || {
                for _ in 0..5 {
                    let permit = sem.guard(None)?;
                    say(format!("worker {n} acquired"));
                    sleep(Duration::from_millis(hold_ms))?;
                    drop(permit);
                    say(format!("worker {n} released"));
                }
                Ok(())
            })
        })
        .collect();
    joinall(&workers, None, None)?;
    for w in &workers {
        w.get(None)?;
    }
    Ok(())
}
