//! Helpers shared by the hub's integration tests.
//!
//! Every test runs on its own thread (libtest's default), so each gets a
//! fresh hub, and the hub's shutdown at thread exit runs after every test.
#![allow(dead_code)]

use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A shared, ordered record of events, to assert interleavings.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn new() -> Log {
        Log::default()
    }

    pub fn push(&self, entry: impl Display) {
        self.0.borrow_mut().push(entry.to_string());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Sets its flag when dropped: proves that cleanup ran (from any thread).
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

pub fn is_set(flag: &Arc<AtomicBool>) -> bool {
    flag.load(Ordering::SeqCst)
}

/// Counts its drops.
pub struct DropCount(pub Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` on a fresh thread (with its own hub) and returns its result
/// once the thread, and so its hub's shutdown, has finished.
pub fn on_fresh_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f)
        .join()
        .expect("the test thread panicked")
}

/// Silences the default panic message for panics that tests provoke on
/// purpose, keeping it for everything else.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.starts_with("expected:") {
                default(info);
            }
        }));
    });
}

/// Milliseconds, for brevity.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// CPU time (user + system) this thread has used, from the kernel.
pub fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name (which is in parentheses and may hold
    // spaces): utime and stime are fields 14 and 15, in clock ticks.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux target we run on.
    Duration::from_millis(ticks * 10)
}

/// A task that counts 5 ms ticks until killed: a count above zero proves
/// that other tasks ran meanwhile.
pub fn ticker() -> (Rc<std::cell::Cell<u32>>, greenlet_hub::Task<()>) {
    let ticks = Rc::new(std::cell::Cell::new(0));
    let t = ticks.clone();
    let task = greenlet_hub::spawn(move || -> Result<(), greenlet_hub::Error> {
        loop {
            greenlet_hub::sleep(Duration::from_millis(5))?;
            t.set(t.get() + 1);
        }
    });
    (ticks, task)
}
