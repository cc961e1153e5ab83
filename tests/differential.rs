//! Differential testing against Python's greenlet: random programs over a
//! few greenlets run on both, and their traces must be equal line for line.
//!
//! The programs (see `differential/program.rs` for the language) are made
//! here from seeds, written to a file, and run by `differential/driver.py`
//! on greenlet from PyPI, all in one Python process; `differential/
//! rust_driver.rs` runs each on this crate. A mismatch is shrunk to a small
//! program and printed with its seed, how to run it again, the shrunk
//! program in the text form (for `GREENLET_DIFF_REPLAY`) and both traces
//! side by side (`failure_report`). Deliberate differences that follow
//! from Rust's design (typed values, exit as a `Result`, a drop that keeps
//! asking a greenlet to exit, unstarted greenlets that die without running)
//! are mapped in the drivers, each with a comment (`driver.py` lists them
//! as M1 to M5, and the README's semantics section says why each is
//! deliberate); one (M4) is avoided by both drivers instead, and the rare
//! program that meets one with no mapping (M5) is marked by Python as not
//! comparable, counted and skipped.
//!
//! `differential/self_test.rs` tests the tester without Python: the text
//! form round-trips, and with injected disagreements the shrinker reaches
//! a local minimum and the failure report shows the seed and the shrunk
//! program.
//!
//! The programs in `differential/regressions.txt` run first, every time.
//!
//! Running it: `cargo test --test differential` (Python 3 with `venv` and
//! `pip` on the PATH as `python3`; the virtualenv is made on first use).
//! On a target whose binaries run under an emulator (aarch64 under qemu),
//! run it on the host first with `GREENLET_DIFF_SAVE=FILE`, then on the
//! target with `GREENLET_DIFF_EXPECTED=FILE` and the same seed (and at most
//! as many programs), so that Python runs only on the host.
//!
//! Environment:
//!
//! - `GREENLET_DIFF_PROGRAMS` (default 10000): how many random programs;
//! - `GREENLET_DIFF_SEED` (default 1): the base seed; program `i`'s seed is
//!   derived from it and `i`, so a smaller count runs a prefix of a larger;
//! - `GREENLET_DIFF_PYTHON`: a Python with greenlet to use instead of the
//!   virtualenv `target/pyvenv` (made when missing);
//! - `GREENLET_DIFF_SAVE=FILE`: also write Python's traces to `FILE`;
//! - `GREENLET_DIFF_EXPECTED=FILE`: read Python's traces from `FILE` (as
//!   saved by a run with the same seed and at least as many programs)
//!   instead of running Python;
//! - `GREENLET_DIFF_REPLAY=FILE`: run the programs in `FILE` instead of the
//!   regressions and the random ones (to reproduce a printed failure).

#[path = "differential/program.rs"]
mod program;
#[path = "differential/python.rs"]
mod python;
#[path = "differential/rust_driver.rs"]
mod rust_driver;
#[path = "differential/self_test.rs"]
mod self_test;
#[path = "differential/shrink.rs"]
mod shrink;

use program::Program;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use std::{env, fs};

/// Where the program and trace files go.
fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential")
}

fn env_u64(name: &str, default: u64) -> u64 {
    match env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn read_programs(path: &Path) -> Vec<Program> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    program::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Both traces, the differing lines marked.
fn side_by_side(python: &[String], rust: &[String]) -> String {
    let mut out = String::new();
    let width = python.iter().map(String::len).max().unwrap_or(0).max(6);
    let _ = writeln!(out, "     {:width$} | rust", "python");
    for i in 0..python.len().max(rust.len()) {
        let p = python.get(i).map_or("", String::as_str);
        let r = rust.get(i).map_or("", String::as_str);
        let mark = if p == r { ' ' } else { '!' };
        let _ = writeln!(out, "{mark}{i:3} {p:width$} | {r}");
    }
    out
}

/// False for a program whose Python trace is marked `inexact:`: it met a
/// difference that follows from Rust's design and has no mapping (see
/// `driver.py`), so it is counted but not compared.
fn comparable(python_trace: &[String]) -> bool {
    !python_trace.iter().any(|line| line.starts_with("inexact:"))
}

/// Which programs of `batch` disagree with `expected`, their reference
/// traces (a program not comparable never does).
fn disagreements(batch: &[Program], expected: &[Vec<String>]) -> Vec<bool> {
    assert_eq!(
        batch.len(),
        expected.len(),
        "one reference trace per program"
    );
    batch
        .iter()
        .zip(expected)
        .map(|(p, e)| comparable(e) && rust_driver::run(p) != *e)
        .collect()
}

/// Python's traces of `batch`, in one Python process.
fn python_traces(python: &Path, batch: &[Program]) -> Vec<Vec<String>> {
    let text =
        python::traces(python, batch, &work_dir(), "shrink").unwrap_or_else(|e| panic!("{e}"));
    let traces = python::parse_traces(&text).unwrap_or_else(|e| panic!("{e}"));
    traces.into_iter().map(|t| t.lines).collect()
}

/// One failing program: where it came from (for the report), the program,
/// and the reference trace it was compared with.
pub struct Failure<'a> {
    pub origin: String,
    pub program: &'a Program,
    pub expected: &'a [String],
}

/// Gives the reference (Python) traces of a batch of programs, one each.
pub type Reference<'a> = &'a mut dyn FnMut(&[Program]) -> Vec<Vec<String>>;

/// The report of a failed run, for its panic message: for each of the
/// first few failures, its seed and origin, the program shrunk (when a
/// reference is at hand to shrink against) in the text form that
/// `GREENLET_DIFF_REPLAY` reads, and both traces side by side. Each
/// distinct shrunk program is shown once: most failures of a run are the
/// same bug.
///
/// `reference` gives the reference (Python) traces of a batch, one per
/// program; `None` when there is no Python here (`GREENLET_DIFF_EXPECTED`).
pub fn failure_report(failures: &[Failure<'_>], mut reference: Option<Reference<'_>>) -> String {
    let mut report = String::new();
    let mut shown = Vec::new();
    for failure in failures.iter().take(6) {
        let program = failure.program;
        let (small, reference_lines) = match reference.as_mut() {
            Some(reference) => {
                let small = shrink::shrink(program, |batch| {
                    let expected = reference(batch);
                    disagreements(batch, &expected)
                });
                let lines = reference(std::slice::from_ref(&small))
                    .into_iter()
                    .next()
                    .expect("one trace");
                (small, lines)
            }
            None => (program.clone(), failure.expected.to_vec()),
        };
        if shown.contains(&small.scripts) {
            continue;
        }
        shown.push(small.scripts.clone());
        let how = if reference.is_some() {
            let ops = |p: &Program| p.scripts.iter().map(Vec::len).sum::<usize>();
            format!(
                "shrunk from {} operations over {} greenlets to",
                ops(program),
                program.greenlets()
            )
        } else {
            "not shrunk (no Python here)".to_owned()
        };
        let _ = writeln!(
            report,
            "\n=== program {} disagrees ({}) ===",
            program.seed, failure.origin
        );
        let _ = writeln!(report, "{how} (put it in a file for GREENLET_DIFF_REPLAY):");
        let _ = write!(report, "{small}");
        let rust_lines = rust_driver::run(&small);
        let _ = write!(report, "{}", side_by_side(&reference_lines, &rust_lines));
    }
    report
}

#[test]
fn python_greenlet_agrees() {
    rust_driver::quiet_tag_panics();
    let count = env_u64("GREENLET_DIFF_PROGRAMS", 10_000);
    let base = env_u64("GREENLET_DIFF_SEED", 1);
    let replay = env::var_os("GREENLET_DIFF_REPLAY");
    let programs = match &replay {
        Some(path) => read_programs(Path::new(path)),
        None => {
            let regressions =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/regressions.txt");
            let mut programs = read_programs(&regressions);
            programs.extend((0..count).map(|i| program::generate(program::program_seed(base, i))));
            programs
        }
    };

    let clock = Instant::now();
    let mut python = None;
    let text = match env::var_os("GREENLET_DIFF_EXPECTED") {
        Some(path) => fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display())),
        None => {
            let interpreter = python::interpreter().unwrap_or_else(|e| panic!("{e}"));
            let text = python::traces(&interpreter, &programs, &work_dir(), "run")
                .unwrap_or_else(|e| panic!("{e}"));
            python = Some(interpreter);
            text
        }
    };
    if let Some(path) = env::var_os("GREENLET_DIFF_SAVE") {
        fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display()));
    }
    let expected = python::parse_traces(&text).unwrap_or_else(|e| panic!("{e}"));
    let python_time = clock.elapsed();
    assert!(
        expected.len() >= programs.len(),
        "{} traces for {} programs: GREENLET_DIFF_EXPECTED comes from a smaller run",
        expected.len(),
        programs.len()
    );

    let clock = Instant::now();
    let mut failures = Vec::new();
    let mut skipped = 0;
    let regressions = if replay.is_some() {
        programs.len()
    } else {
        programs.len() - count as usize
    };
    for (i, (program, expected)) in programs.iter().zip(&expected).enumerate() {
        assert_eq!(
            program.seed, expected.seed,
            "the expected traces come from another run (another GREENLET_DIFF_SEED, or other regressions)"
        );
        if !comparable(&expected.lines) {
            skipped += 1;
        } else if rust_driver::run(program) != expected.lines {
            let origin = match (&replay, i.checked_sub(regressions)) {
                (Some(path), _) => format!("number {} in {}", i + 1, Path::new(path).display()),
                (None, None) => format!("regression number {} in regressions.txt", i + 1),
                (None, Some(j)) => format!(
                    "random program {j}: GREENLET_DIFF_SEED={base} GREENLET_DIFF_PROGRAMS={} \
                     runs it again, unshrunk",
                    j + 1
                ),
            };
            failures.push(Failure {
                origin,
                program,
                expected: &expected.lines,
            });
        }
    }
    let rust_time = clock.elapsed();
    let what = match &replay {
        Some(_) => "replayed".to_owned(),
        None => format!("{regressions} regressions, then {count} from seed {base}"),
    };
    eprintln!(
        "differential: {} programs ({what}): {} agree, {} differ, {skipped} not comparable; \
         python {python_time:.2?}, rust {rust_time:.2?}",
        programs.len(),
        programs.len() - failures.len() - skipped,
        failures.len(),
    );
    if failures.is_empty() {
        return;
    }

    let python = python.or_else(|| python::interpreter().ok());
    let mut reference = python
        .as_deref()
        .map(|py| move |batch: &[Program]| python_traces(py, batch));
    let report = failure_report(
        &failures,
        reference
            .as_mut()
            .map(|r| r as &mut dyn FnMut(&[Program]) -> _),
    );
    let mut seeds: Vec<String> = failures
        .iter()
        .take(20)
        .map(|f| f.program.seed.to_string())
        .collect();
    if failures.len() > seeds.len() {
        seeds.push("...".to_owned());
    }
    panic!(
        "{} of {} programs disagree with Python's greenlet (seeds: {}){report}",
        failures.len(),
        programs.len(),
        seeds.join(" ")
    );
}
