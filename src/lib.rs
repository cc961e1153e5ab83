//! Stackful coroutines with Python greenlet's semantics, over a hand-written
//! assembly context switch.
//!
//! A [`Greenlet`] is a function running on its own stack. You switch to it
//! explicitly, handing it a value, and it runs until it switches somewhere
//! else, handing a value back. Greenlets form a tree: each has a parent that
//! receives its return value, its error, or its panic when it ends.
//!
//! ```
//! use greenlet::{Greenlet, getcurrent};
//!
//! let main = getcurrent();
//! let g = Greenlet::new(move |greeting: &str| {
//!     let name: &str = main.switch(greeting.len())?; // to main, and back
//!     Ok(format!("{greeting}, {name}"))               // to the parent: main
//! });
//! assert_eq!(g.switch::<&str, usize>("hello")?, 5);
//! assert_eq!(g.switch::<&str, String>("world")?, "hello, world");
//! assert!(g.is_dead());
//! # Ok::<(), greenlet::SwitchError>(())
//! ```
//!
//! # The model
//!
//! Everything is per thread. Each thread has an implicit main greenlet,
//! made on first use; it is the root of the tree, the only greenlet without a
//! parent, and never dead while its thread lives.
//!
//! | state     | `is_started` | `is_active` | `is_dead` | how it gets there                      |
//! |-----------|--------------|-------------|-----------|----------------------------------------|
//! | unstarted | false        | false       | false     | `Greenlet::new` / `Builder::spawn`      |
//! | running   | true         | true        | false     | someone switched to it                  |
//! | suspended | true         | true        | false     | it switched to someone else             |
//! | dead      | true         | false       | true      | its body ended, or it was killed unstarted |
//!
//! Rules:
//!
//! 1. A new greenlet's parent is the greenlet that created it (or the
//!    builder's [`parent`](Builder::parent)). The body starts at the first
//!    switch into it and receives that switch's value.
//! 2. [`Greenlet::switch`] suspends the current greenlet and resumes the
//!    target, whose pending switch returns the value. Values of any `'static`
//!    type cross, typed at the call site; a type mismatch is an
//!    [`SwitchError::TypeMismatch`], never undefined behaviour.
//! 3. When a body returns `Ok(v)`, the greenlet is dead and `v` goes to its
//!    parent's pending switch. Switching to a dead greenlet goes to its
//!    nearest live ancestor, which starts with the value if it is unstarted.
//! 4. A panic that escapes a body kills the greenlet and is raised in the
//!    parent at its pending switch with the original payload. It never
//!    unwinds through the assembly.
//! 5. [`Greenlet::throw`] raises an error in a greenlet at its suspension
//!    point; an unstarted greenlet dies without running and the error climbs
//!    to its parent.
//! 6. Dropping the last handle to a suspended greenlet raises
//!    [`GreenletExit`] in it (its switch returns [`SwitchError::Exit`]);
//!    returning that from the body with `?` runs its destructors before the
//!    drop returns. A greenlet that swallows it is asked again.
//! 7. [`Greenlet::set_parent`] rejects cycles and any change to a main
//!    greenlet; handles are neither `Send` nor `Sync`.
//! 8. [`settrace`] installs a callback that sees every switch and throw.
//! 9. A greenlet's `Debug` shows its state, parent and stack in use, and
//!    `Greenlet::backtrace` (with `std`) shows where a suspended greenlet
//!    waits, down to its root, without resuming it.
//!
//! # Layers
//!
//! - [`raw`]: the unsafe switch and stack initialisation, usable without
//!   `std` on bare metal with caller-supplied stacks;
//! - [`stack`]: guarded, lazily committed, pooled mmap stacks (`std`), or
//!   caller-supplied memory (without `std`);
//! - the safe API at the crate root.
//!
//! # Without `std`
//!
//! Built with `default-features = false` the crate is `#![no_std]` (it needs
//! `alloc`) and builds for `x86_64-unknown-none` and `aarch64-unknown-none`.
//! The safe API is the same, with three differences:
//!
//! - there is no thread-local: `Root::enter` (a type that exists only in
//!   this build) runs a closure as the main greenlet of an explicit root,
//!   and every greenlet lives and dies inside it;
//! - there is no stack pool and no guard page: each greenlet gets a stack
//!   the caller made (`Stack::alloc` from the global allocator, or
//!   `Stack::from_static`; both `unsafe`, since nothing catches an overflow)
//!   through `Builder::stack`;
//! - panics are not caught: a panic that escapes a body aborts instead of
//!   reaching the parent, and the overflow reporter and
//!   `Greenlet::backtrace` are absent.
//!
//! `tests/no_std` tests this build on the host, on both architectures.
//!
//! # Features
//!
//! - `std` (default): mmap stacks, the per-thread pool, the thread-local
//!   current greenlet, panics carried to the parent, the stack-overflow
//!   reporter, backtraces of suspended greenlets.
//! - `asan`: AddressSanitizer fiber annotations at every switch (build with
//!   `RUSTFLAGS=-Zsanitizer=address` on nightly).
//! - `valgrind`: registers greenlet stacks with valgrind so memcheck follows
//!   the switches.
#![no_std]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod arch;
pub mod raw;
pub mod stack;

mod greenlet;
#[cfg(feature = "std")]
mod overflow;
#[cfg(feature = "std")]
mod probe;
mod rt;
mod sanitizer;

#[cfg(not(feature = "std"))]
pub use greenlet::Root;
pub use greenlet::{
    Builder, Error, Event, Greenlet, GreenletExit, SwitchError, Tracer, WeakGreenlet, current_id,
    getcurrent, gettrace, main_greenlet, parent, settrace,
};
