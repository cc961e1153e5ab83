//! The Python half's plumbing: a virtualenv with greenlet from PyPI, made
//! when missing, and one run of `driver.py` over a file of programs.
//!
//! The virtualenv lives in the repository's `target/pyvenv` (ignored by git,
//! kept between runs); `GREENLET_DIFF_PYTHON` names an interpreter to use
//! instead. greenlet is pinned, so that the reference the crate is compared
//! with only moves when someone moves it.

use crate::program::Program;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The greenlet release the traces are compared with.
pub const GREENLET_VERSION: &str = "3.5.6";

/// The driver script, next to this file.
fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/driver.py")
}

fn has_greenlet(python: &Path) -> bool {
    let check =
        format!("import greenlet, sys; sys.exit(greenlet.__version__ != '{GREENLET_VERSION}')");
    Command::new(python)
        .args(["-c", &check])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A Python interpreter with the pinned greenlet, making the virtualenv if
/// needed.
///
/// # Errors
///
/// If `python3 -m venv` or `pip install` fails (the message has their
/// output).
pub fn interpreter() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os("GREENLET_DIFF_PYTHON") {
        let python = PathBuf::from(python);
        return if has_greenlet(&python) {
            Ok(python)
        } else {
            Err(format!(
                "GREENLET_DIFF_PYTHON={} has no greenlet {GREENLET_VERSION}",
                python.display()
            ))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv");
    let python = venv.join("bin/python");
    if has_greenlet(&python) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!(
            "differential: creating {} (python3 -m venv)",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    eprintln!("differential: pip install greenlet=={GREENLET_VERSION}");
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("greenlet=={GREENLET_VERSION}")))?;
    if has_greenlet(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} still has no greenlet {GREENLET_VERSION} after pip install",
            python.display()
        ))
    }
}

/// One program's trace, keyed by the seed in its `trace` header.
pub struct Trace {
    /// The seed the driver read in the `program` header.
    pub seed: u64,
    /// The events, one per line.
    pub lines: Vec<String>,
}

/// Parses `trace SEED` / events / `end` blocks.
///
/// # Errors
///
/// On a malformed file, saying where.
pub fn parse_traces(text: &str) -> Result<Vec<Trace>, String> {
    let mut traces = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let seed = line
            .strip_prefix("trace ")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected `trace SEED`, got `{line}`"))?;
        let mut events = Vec::new();
        loop {
            match lines.next() {
                Some("end") => break,
                Some(event) => events.push(event.to_owned()),
                None => return Err(format!("the trace of program {seed} has no `end`")),
            }
        }
        traces.push(Trace {
            seed,
            lines: events,
        });
    }
    Ok(traces)
}

/// Runs `programs` through `driver.py` in one Python process, using `dir`
/// for the two files; returns the raw trace text.
///
/// # Errors
///
/// If the files cannot be written or read, or the driver fails.
pub fn traces(
    python: &Path,
    programs: &[Program],
    dir: &Path,
    name: &str,
) -> Result<String, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let input = dir.join(format!("{name}-programs.txt"));
    let output = dir.join(format!("{name}-traces.txt"));
    let text: String = programs.iter().map(|p| p.to_string()).collect();
    fs::write(&input, text).map_err(|e| format!("{}: {e}", input.display()))?;
    run(Command::new(python).arg(driver()).arg(&input).arg(&output))?;
    fs::read_to_string(&output).map_err(|e| format!("{}: {e}", output.display()))
}
