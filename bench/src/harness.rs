//! The timing harness and the one line format every measurement reports in.
//!
//! A workload is a function `fn(iterations) -> Duration` that sets itself up,
//! times only its loop, and tears itself down. [`measure`] calibrates the
//! iteration count so that one run lasts about the target time, runs it once
//! to warm up, then `runs` more times, and keeps the per-iteration time of
//! each run: the figure reported is their median, with min and max.
//!
//! Results travel between processes (children of the Rust binary, the Python
//! scripts) as one line each: the word `result` and `key=value` fields, a
//! value with spaces in double quotes (which it never contains itself):
//!
//! ```text
//! result id=switch/greenlet-raw unit=ns median=3.1 min=3.0 max=3.4 runs=7 iters=50000000
//! ```
//!
//! `bench/python/bench.py` writes the same lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A workload's timed body: runs `iterations` times, returns the time taken by
/// the iterations alone.
pub type Timed = fn(u64) -> Duration;

/// Median, min and max of a set of per-iteration figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (at least one).
    pub fn of(values: &[f64]) -> Summary {
        assert!(!values.is_empty(), "nothing to summarise");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The outcome of timing one workload: nanoseconds per iteration.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub summary: Summary,
    pub runs: usize,
    pub iterations: u64,
}

/// Finds the iteration count for which one run of `timed` lasts about
/// `target`, then times `runs` runs of it (after warm-up runs).
pub fn measure(timed: Timed, target: Duration, runs: usize) -> Timing {
    // First use pays one-time costs (a runtime's threads, a pool, page
    // faults) that would fool the calibration into a tiny count.
    timed(1);
    let floor = target / 20;
    let mut iterations: u64 = 1;
    let elapsed = loop {
        let elapsed = timed(iterations);
        if elapsed >= floor || iterations >= 1 << 40 {
            break elapsed;
        }
        // Grow fast while far off, carefully when close.
        let factor = if elapsed < floor / 8 { 8 } else { 2 };
        iterations = iterations.saturating_mul(factor);
    };
    iterations = rescale(iterations, elapsed, target);
    // Warm-up at full length (caches, pools, lazily committed pages), and a
    // last correction of the count from it.
    let warm = timed(iterations);
    iterations = rescale(iterations, warm, target);
    let per_iteration: Vec<f64> = (0..runs)
        .map(|_| timed(iterations).as_nanos() as f64 / iterations as f64)
        .collect();
    Timing {
        summary: Summary::of(&per_iteration),
        runs,
        iterations,
    }
}

/// The count that would have taken `target` if `iterations` took `elapsed`.
fn rescale(iterations: u64, elapsed: Duration, target: Duration) -> u64 {
    let scale = target.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    ((iterations as f64 * scale) as u64).max(1)
}

/// One result line under construction.
pub struct Line {
    text: String,
}

impl Line {
    /// A line for the measurement named `id` (`group/implementation`).
    pub fn new(id: &str) -> Line {
        let mut line = Line {
            text: String::from("result"),
        };
        line.field("id", id);
        line
    }

    /// Adds a field; the value is quoted if it has spaces, and any double
    /// quote or newline in it becomes a single quote or a space.
    pub fn field(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Line {
        let value = value
            .to_string()
            .replace('"', "'")
            .replace(['\n', '\r'], " ");
        if value.contains(' ') || value.is_empty() {
            let _ = write!(self.text, " {key}=\"{value}\"");
        } else {
            let _ = write!(self.text, " {key}={value}");
        }
        self
    }

    /// Adds the fields of a timing in nanoseconds per iteration.
    pub fn timing(&mut self, timing: &Timing) -> &mut Line {
        self.field("unit", "ns")
            .field("median", format_args!("{:.3}", timing.summary.median))
            .field("min", format_args!("{:.3}", timing.summary.min))
            .field("max", format_args!("{:.3}", timing.summary.max))
            .field("runs", timing.runs)
            .field("iters", timing.iterations)
    }

    /// Prints the line on stdout.
    pub fn print(&self) {
        println!("{}", self.text);
    }
}

/// Parses a result line (`result key=value ...`) into its fields; `None` for
/// any other line.
pub fn parse_line(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.trim().strip_prefix("result ")?;
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|&c| c != '"').collect()
        } else {
            chars.by_ref().take_while(|&c| c != ' ').collect()
        };
        fields.insert(key, value);
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).min, 1.0);
    }

    #[test]
    fn lines_round_trip() {
        let mut line = Line::new("wall/greenlet");
        line.field("message", "cannot map \"x\": ENOMEM")
            .field("reached", 3);
        let parsed = parse_line(&line.text).unwrap();
        assert_eq!(parsed["id"], "wall/greenlet");
        assert_eq!(parsed["message"], "cannot map 'x': ENOMEM");
        assert_eq!(parsed["reached"], "3");
        assert!(parse_line("something else").is_none());
    }
}
