//! The gevent part of the tour: `cargo run -p greenlet-hub --example gevent_tour`.
//!
//! 1. Three tasks each print their identity and a counter five times,
//!    yielding to each other with `sleep(0)`, and are joined.
//! 2. Two workers share a `Semaphore(1)` and loop five times with different
//!    sleeps; the permit passes from one to the other at every release.
//!
//! Both demos live in `greenlet_hub::demos`, so the main tour can run them
//! too.

use greenlet_hub::{Error, demos};

fn main() -> Result<(), Error> {
    println!("== 1. three tasks, round-robin (expect A, B, C, A, B, C, ...)");
    demos::counters(|line| println!("{line}"))?;
    println!();
    println!("== 2. a Semaphore(1) shared by two workers (expect strict alternation)");
    demos::semaphore(|line| println!("{line}"))?;
    Ok(())
}
