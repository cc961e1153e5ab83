//! `report`: runs every measurement, each in a child process, and writes
//! `RESULTS.md` and `results.svg`.
//!
//! Children: this binary (`time`, `mem`, `wall`, and `once` under callgrind)
//! and the Python script (`time`, `mem`, `versions`). Each prints result
//! lines (see [`crate::harness`]); this module only collects, compares and
//! formats them. A child that fails is reported in the output, not hidden:
//! the run goes on and the report lists what is missing and why.

use crate::harness::{Summary, parse_line};
use crate::memory::{MEM_IMPLS, WALL_IMPLS, wall_cap};
use crate::system;
use crate::workloads::ALL;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::Instant;

/// What `report` was asked to do.
pub struct Options {
    pub markdown: PathBuf,
    pub svg: PathBuf,
    /// The interpreter with greenlet and gevent installed; `None` skips
    /// the Python workloads.
    pub python: Option<PathBuf>,
    pub python_script: PathBuf,
    pub callgrind: bool,
    /// greenlet-bench built for aarch64, whose instructions are counted
    /// under qemu-user; `None` skips those counts.
    pub aarch64: Option<PathBuf>,
    pub target_ms: u64,
    pub runs: usize,
    /// Runs for memory and callgrind figures (each a child process).
    pub process_runs: usize,
    pub lock_file: PathBuf,
    /// A quick pass through the pipeline: the memory measurement stops at
    /// 100,000 live greenlets (a million need about 4 GiB).
    pub quick: bool,
}

/// The Python workloads, as `bench.py time ID` knows them.
const PYTHON_WORKLOADS: &[&str] = &[
    "switch/python-greenlet",
    "create/python-greenlet",
    "create/gevent",
    "drop-suspended/python-greenlet",
    "hub-sleep0/gevent",
    "hub-sleep0-pair/gevent",
    "hub-spawn-join/gevent",
];

/// Live greenlet counts of the memory measurement.
const MEM_COUNTS: &[usize] = &[10_000, 100_000, 1_000_000];

/// One measured figure.
#[derive(Clone, Debug)]
struct Row {
    unit: String,
    summary: Summary,
    runs: usize,
    fields: BTreeMap<String, String>,
}

/// Everything collected so far.
#[derive(Default)]
struct Results {
    rows: BTreeMap<String, Row>,
    /// Problems and skipped parts, in the order they happened.
    notes: Vec<String>,
    /// How many of the notes say a figure is missing because something
    /// failed (rather than because it was skipped on purpose).
    failures: usize,
    versions: BTreeMap<String, String>,
}

impl Results {
    fn median(&self, id: &str) -> Option<f64> {
        self.rows.get(id).map(|r| r.summary.median)
    }

    /// A figure that should be there is missing: noted, and the report
    /// exits non-zero (after writing what it has).
    fn fail(&mut self, note: impl Into<String>) {
        self.failures += 1;
        self.note(note);
    }

    fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("note: {note}");
        self.notes.push(note);
    }
}

fn row_from_fields(fields: BTreeMap<String, String>) -> Option<(String, Row)> {
    let id = fields.get("id")?.clone();
    let number = |k: &str| fields.get(k).and_then(|v| v.parse::<f64>().ok());
    let summary = Summary {
        median: number("median")?,
        min: number("min")?,
        max: number("max")?,
    };
    let runs = fields.get("runs").and_then(|v| v.parse().ok()).unwrap_or(1);
    let unit = fields.get("unit").cloned().unwrap_or_default();
    Some((
        id,
        Row {
            unit,
            summary,
            runs,
            fields,
        },
    ))
}

/// Runs a child, returns its output; `Err` with a readable reason if it
/// could not start.
fn run_child(command: &mut Command) -> Result<Output, String> {
    command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))
}

fn result_lines(output: &Output) -> Vec<BTreeMap<String, String>> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(parse_line)
        .collect()
}

fn describe_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{} ({})", output.status, tail.join(" / "))
}

/// Runs the `time`-style children of `jobs` (each measures one run) in
/// `rounds` rounds, each round running every job once, the order rotated
/// from one round to the next, and records for each the median, min and max
/// of its rounds. A burst of load on this shared machine then hits every
/// implementation alike instead of all the runs of one of them; the ratios
/// of the report come out of the same stretches of time.
fn collect_timings(results: &mut Results, jobs: &mut [(String, Command)], rounds: usize) {
    let mut values: BTreeMap<String, (Vec<f64>, Row)> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..rounds {
        let started = Instant::now();
        let n = jobs.len();
        for k in 0..n {
            let (id, command) = &mut jobs[(round + k) % n];
            if failed.contains_key(id.as_str()) {
                continue;
            }
            let output = match run_child(command) {
                Ok(o) => o,
                Err(e) => {
                    failed.insert(id.clone(), e);
                    continue;
                }
            };
            let row = result_lines(&output).into_iter().find_map(row_from_fields);
            match row {
                Some((row_id, row)) if output.status.success() => {
                    let entry = values
                        .entry(row_id)
                        .or_insert_with(|| (Vec::new(), row.clone()));
                    entry.0.push(row.summary.median);
                    entry.1 = row;
                }
                _ => {
                    failed.insert(
                        id.clone(),
                        format!("the measurement failed: {}", describe_failure(&output)),
                    );
                }
            }
        }
        eprintln!(
            "round {}/{rounds}: {n} workloads in {:.1} s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    for (id, reason) in failed {
        results.fail(format!("{id}: {reason}"));
    }
    for (id, (runs, mut row)) in values {
        row.summary = Summary::of(&runs);
        row.runs = runs.len();
        eprintln!(
            "{id:<34} {:>12} {}  [{} .. {}]",
            format_value(row.summary.median, &row.unit),
            row.unit,
            format_value(row.summary.min, &row.unit),
            format_value(row.summary.max, &row.unit),
        );
        results.rows.insert(id, row);
    }
}

/// Runs `runs` memory children and records the median per-greenlet figure.
fn collect_memory(
    results: &mut Results,
    id: &str,
    runs: usize,
    mut command: impl FnMut() -> Command,
) {
    let mut values = Vec::new();
    let mut create_start = Vec::new();
    let mut last_fields = None;
    for _ in 0..runs {
        let output = match run_child(&mut command()) {
            Ok(o) => o,
            Err(e) => return results.fail(format!("{id}: {e}")),
        };
        match result_lines(&output).into_iter().find_map(row_from_fields) {
            Some((_, row)) if output.status.success() => {
                values.push(row.summary.median);
                if let Some(ns) = row
                    .fields
                    .get("create_start_ns")
                    .and_then(|v| v.parse().ok())
                {
                    create_start.push(ns);
                }
                last_fields = Some(row.fields);
            }
            _ => {
                return results.fail(format!(
                    "{id}: the measurement failed: {}",
                    describe_failure(&output)
                ));
            }
        }
    }
    let Some(fields) = last_fields else { return };
    let summary = Summary::of(&values);
    eprintln!(
        "{id:<34} {:>12} bytes per coroutine  [{} .. {}]  reached {} of {}",
        format_value(summary.median, "bytes"),
        format_value(summary.min, "bytes"),
        format_value(summary.max, "bytes"),
        fields.get("reached").map_or("?", String::as_str),
        fields.get("requested").map_or("?", String::as_str),
    );
    if create_start.len() == values.len() {
        // The time to create and start each while making them, as a figure
        // of its own: `start-COUNT/IMP` beside `mem-COUNT/IMP`.
        results.rows.insert(
            id.replacen("mem-", "start-", 1),
            Row {
                unit: "ns".into(),
                summary: Summary::of(&create_start),
                runs: create_start.len(),
                fields: fields.clone(),
            },
        );
    }
    results.rows.insert(
        id.to_string(),
        Row {
            unit: "bytes".into(),
            summary,
            runs: values.len(),
            fields,
        },
    );
}

/// Total instructions of `exe once ID N` under callgrind.
fn callgrind_instructions(
    exe: &Path,
    id: &str,
    iterations: u64,
    scratch: &Path,
) -> Result<u64, String> {
    let out_file = scratch.join(format!(
        "callgrind.{}.{iterations}.out",
        id.replace('/', "_")
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(["once", id, &iterations.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let _ = std::fs::remove_file(&out_file);
    if !output.status.success() {
        return Err(format!("valgrind failed: {}", describe_failure(&output)));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no 'Collected' line in callgrind's output".to_string())
}

fn collect_callgrind(results: &mut Results, exe: &Path, runs: usize) {
    let scratch =
        std::env::temp_dir().join(format!("greenlet-bench-callgrind-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return results.fail(format!(
            "callgrind: cannot create {}: {e}",
            scratch.display()
        ));
    }
    for workload in ALL {
        let Some(iterations) = workload.callgrind else {
            continue;
        };
        let started = Instant::now();
        let mut per_iteration = Vec::new();
        let mut failure = None;
        for _ in 0..runs {
            let pair =
                callgrind_instructions(exe, workload.id, iterations, &scratch).and_then(|with| {
                    Ok((with, callgrind_instructions(exe, workload.id, 0, &scratch)?))
                });
            match pair {
                Ok((with, without)) => {
                    per_iteration.push(with.saturating_sub(without) as f64 / iterations as f64)
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let id = format!("instructions/{}", workload.id);
        if let Some(e) = failure {
            results.fail(format!("{id}: {e}"));
            continue;
        }
        let summary = Summary::of(&per_iteration);
        eprintln!(
            "{id:<46} {:>10} instructions  [{:.1} .. {:.1}]  ({:.1} s)",
            format!("{:.1}", summary.median),
            summary.min,
            summary.max,
            started.elapsed().as_secs_f64()
        );
        insert_count(results, id, summary, runs, iterations);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Records an instruction count per iteration, from `runs` child processes
/// of `iterations` iterations each.
fn insert_count(results: &mut Results, id: String, summary: Summary, runs: usize, iterations: u64) {
    let mut fields = BTreeMap::new();
    fields.insert("iters".to_string(), iterations.to_string());
    results.rows.insert(
        id,
        Row {
            unit: "instructions".into(),
            summary,
            runs,
            fields,
        },
    );
}

/// The prefixes of instruction-count rows: callgrind on this machine, and
/// qemu-user running the aarch64 build.
const COUNTED: &[&str] = &["instructions/", "aarch64-instructions/"];

/// An id without its counting prefix: `switch/greenlet`.
fn bare(id: &str) -> &str {
    COUNTED
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id)
}

/// How to run a binary of another architecture under qemu-user and count
/// the instructions it runs.
struct Qemu {
    /// `qemu-aarch64`, `qemu-x86_64`.
    program: String,
    /// The target's libraries (`-L`), if it needs some.
    sysroot: Option<PathBuf>,
    /// The option that makes each translation block one instruction:
    /// `-one-insn-per-tb` (QEMU 8.1 and later) or `-singlestep`.
    one_per_block: &'static str,
}

impl Qemu {
    fn find(program: &str, sysroot: Option<PathBuf>) -> Result<Qemu, String> {
        let output = Command::new(program)
            .arg("-h")
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let help = String::from_utf8_lossy(&output.stdout);
        let one_per_block = if help.contains("-one-insn-per-tb") {
            "-one-insn-per-tb"
        } else if help.contains("-singlestep") {
            "-singlestep"
        } else {
            return Err(format!(
                "{program} has neither -one-insn-per-tb nor -singlestep"
            ));
        };
        Ok(Qemu {
            program: program.to_string(),
            sysroot,
            one_per_block,
        })
    }

    /// qemu-aarch64, with the cross toolchain's libraries
    /// (`$QEMU_LD_PREFIX`, else `/usr/aarch64-linux-gnu`, where Debian's
    /// cross libc lives and `.cargo/config.toml`'s runner looks).
    fn aarch64() -> Result<Qemu, String> {
        let sysroot = std::env::var_os("QEMU_LD_PREFIX")
            .map_or_else(|| PathBuf::from("/usr/aarch64-linux-gnu"), PathBuf::from);
        Qemu::find("qemu-aarch64", Some(sysroot))
    }

    /// The user-space instructions that `exe once ID N` runs. With one
    /// instruction per translation block, no chaining between blocks and
    /// the `exec` log on, qemu writes one `Trace` line for every instruction
    /// it runs (all threads); they are counted as they stream through a
    /// pipe. Exact, and the same from run to run but for the process's
    /// start-up, which the N-minus-0 difference removes.
    fn instructions(&self, exe: &Path, id: &str, iterations: u64) -> Result<u64, String> {
        // qemu says nothing when it cannot open the program.
        if !exe.is_file() {
            return Err(format!("{} is not a file", exe.display()));
        }
        let mut command = Command::new(&self.program);
        if let Some(sysroot) = &self.sysroot {
            command.arg("-L").arg(sysroot);
        }
        command
            .args([
                self.one_per_block,
                "-d",
                "exec,nochain",
                "-D",
                "/dev/stderr",
            ])
            .arg(exe)
            .args(["once", id, &iterations.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut count = 0u64;
        // The program's own words, if it says any (a panic).
        let mut said = Vec::new();
        for line in BufReader::new(stderr).split(b'\n') {
            let line = line.map_err(|e| format!("reading {}'s log: {e}", self.program))?;
            if line.starts_with(b"Trace ") {
                count += 1;
            } else if !line.is_empty() && said.len() < 3 {
                said.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("waiting for {}: {e}", self.program))?;
        if !status.success() {
            return Err(format!(
                "{} failed: {status} ({})",
                self.program,
                said.join(" / ")
            ));
        }
        if count == 0 {
            return Err(format!("{} logged no instructions", self.program));
        }
        Ok(count)
    }
}

/// Iterations under qemu: every instruction is logged, about a million a
/// second, so a fortieth of callgrind's count, and at least 100.
fn qemu_iterations(callgrind: u64) -> u64 {
    (callgrind / 40).max(100)
}

/// Instructions per iteration of one workload of `exe` (a build of this
/// binary for qemu's architecture), and the iterations it was counted over.
fn qemu_per_iteration(qemu: &Qemu, exe: &Path, id: &str) -> Result<(f64, u64), String> {
    let workload = crate::workloads::find(id).ok_or_else(|| format!("no workload {id}"))?;
    let iterations = workload
        .callgrind
        .map(qemu_iterations)
        .ok_or_else(|| format!("{id} is not counted"))?;
    let with = qemu.instructions(exe, id, iterations)?;
    let without = qemu.instructions(exe, id, 0)?;
    Ok((
        with.saturating_sub(without) as f64 / iterations as f64,
        iterations,
    ))
}

/// `greenlet-bench count-aarch64 EXE ID...`: the aarch64 counts of a few
/// workloads, printed, without the rest of the report; fails on the first
/// that cannot be counted.
pub fn count_aarch64(aarch64_exe: &Path, ids: &[&str]) -> Result<ExitCode, String> {
    let qemu = Qemu::aarch64()?;
    for id in ids {
        let (per_iteration, iterations) = qemu_per_iteration(&qemu, aarch64_exe, id)?;
        println!(
            "aarch64 {id:<32} {per_iteration:>10.1} instructions per iteration ({iterations} iterations, {} {})",
            qemu.program, qemu.one_per_block
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs` counts of each workload: those of a single thread come out the
/// same every time; may's and tokio's, whose worker threads qemu runs truly
/// in parallel, can vary.
fn collect_aarch64(results: &mut Results, qemu: &Qemu, aarch64_exe: &Path, runs: usize) {
    'workloads: for workload in ALL {
        if workload.callgrind.is_none() {
            continue;
        }
        let started = Instant::now();
        let id = format!("aarch64-instructions/{}", workload.id);
        let mut counts = Vec::with_capacity(runs);
        let mut iterations = 0;
        for _ in 0..runs {
            match qemu_per_iteration(qemu, aarch64_exe, workload.id) {
                Ok((per_iteration, n)) => {
                    counts.push(per_iteration);
                    iterations = n;
                }
                Err(e) => {
                    results.fail(format!("{id}: {e}"));
                    continue 'workloads;
                }
            }
        }
        let summary = Summary::of(&counts);
        eprintln!(
            "{id:<54} {:>10.1} instructions [{:.1} .. {:.1}]  ({:.1} s)",
            summary.median,
            summary.min,
            summary.max,
            started.elapsed().as_secs_f64()
        );
        insert_count(results, id, summary, counts.len(), iterations);
    }
}

/// The same counting on this machine's own build, for one workload, beside
/// callgrind's count: the check that qemu's count means what callgrind's
/// does. `None` if either is missing.
fn qemu_check(results: &mut Results, exe: &Path) -> Option<(f64, f64)> {
    const ID: &str = "switch/greenlet-raw";
    let callgrind = results.median(&format!("instructions/{ID}"))?;
    let qemu = match Qemu::find(&format!("qemu-{}", std::env::consts::ARCH), None) {
        Ok(qemu) => qemu,
        Err(e) => {
            results.note(format!("qemu's count not checked against callgrind's: {e}"));
            return None;
        }
    };
    match qemu_per_iteration(&qemu, exe, ID) {
        Ok((counted, _)) => Some((counted, callgrind)),
        Err(e) => {
            results.fail(format!("qemu's count not checked against callgrind's: {e}"));
            None
        }
    }
}

fn collect_walls(results: &mut Results, exe: &Path, runs: usize) {
    let cap = wall_cap();
    'implementations: for (imp, _) in WALL_IMPLS {
        let id = format!("wall/{imp}");
        let mut counts = Vec::new();
        let mut last = None;
        for _ in 0..runs {
            let started = Instant::now();
            let mut command = Command::new(exe);
            command.args(["wall", imp, "--cap", &cap.to_string()]);
            if let Some((name, value)) = crate::memory::child_environment(imp) {
                command.env(name, value);
            }
            let output = match run_child(&mut command) {
                Ok(o) => o,
                Err(e) => {
                    results.fail(format!("{id}: {e}"));
                    continue 'implementations;
                }
            };
            let Some(mut fields) = result_lines(&output).into_iter().next() else {
                results.fail(format!("{id}: no result: {}", describe_failure(&output)));
                continue 'implementations;
            };
            fields.insert("exit".into(), output.status.to_string());
            let reached: f64 = fields
                .get("reached")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
            eprintln!(
                "{id:<34} {reached:>12} live, then {} ({}): {}  ({:.1} s)",
                fields.get("outcome").map_or("?", String::as_str),
                output.status,
                fields.get("message").map_or("", String::as_str),
                started.elapsed().as_secs_f64()
            );
            counts.push(reached);
            last = Some(fields);
        }
        let Some(fields) = last else { continue };
        results.rows.insert(
            id,
            Row {
                unit: "count".into(),
                summary: Summary::of(&counts),
                runs: counts.len(),
                fields,
            },
        );
    }
}

fn lock_versions(lock: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut versions = BTreeMap::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take()) {
            versions.insert(n, v.trim_matches('"').to_string());
        }
    }
    versions
}

/// The workspace's commit, with "+ uncommitted changes" when the tree is
/// dirty: the figures belong to the code as it was built.
fn source_state(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} + uncommitted changes")
            } else {
                commit
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

fn tool_version(program: &str, arg: &str) -> Option<String> {
    let output = Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next()?.trim().to_string())
}

/// Runs everything and writes the report.
pub fn run(options: &Options) -> ExitCode {
    let started = Instant::now();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this executable to re-run it: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut results = Results::default();
    if cfg!(debug_assertions) {
        results.note(
            "this binary was built without optimisations: the figures mean nothing (use bench/run)",
        );
    }
    let target = options.target_ms.to_string();

    let python = options.python.as_ref().filter(|p| {
        let usable = p.exists() && options.python_script.exists();
        if !usable {
            eprintln!(
                "note: {} or {} is missing",
                p.display(),
                options.python_script.display()
            );
        }
        usable
    });
    // Every timed workload, ours and the Python ones, as a child command
    // that measures one run.
    let mut jobs: Vec<(String, Command)> = ALL
        .iter()
        .map(|w| {
            let mut command = Command::new(&exe);
            command.args(["time", w.id, "--target-ms", &target, "--runs", "1"]);
            (w.id.to_string(), command)
        })
        .collect();
    if let Some(python) = python {
        for id in PYTHON_WORKLOADS {
            let mut command = Command::new(python);
            command.arg(&options.python_script).args([
                "time",
                id,
                "--target-ms",
                &target,
                "--runs",
                "1",
            ]);
            jobs.push((id.to_string(), command));
        }
    }
    eprintln!(
        "== timed workloads: {} rounds, each running every workload once (~{} ms, in a \
         rotating order); each figure is the median of its rounds",
        options.runs, options.target_ms
    );
    collect_timings(&mut results, &mut jobs, options.runs);
    match python {
        Some(python) => {
            let script = &options.python_script;
            match run_child(Command::new(python).arg(script).arg("versions")) {
                Ok(output) => {
                    for fields in result_lines(&output) {
                        if let (Some(id), Some(v)) = (fields.get("id"), fields.get("value")) {
                            results
                                .versions
                                .insert(id.trim_start_matches("version/").into(), v.clone());
                        }
                    }
                }
                Err(e) => results.fail(format!("python versions: {e}")),
            }
        }
        None => results
            .note("Python workloads skipped: no interpreter with greenlet and gevent was given"),
    }

    eprintln!(
        "== memory: resident bytes per suspended coroutine, {} child processes each",
        options.process_runs
    );
    let mem_counts = if options.quick {
        &MEM_COUNTS[..2]
    } else {
        MEM_COUNTS
    };
    for &count in mem_counts {
        for (imp, _) in MEM_IMPLS {
            let id = format!("mem-{count}/{imp}");
            collect_memory(&mut results, &id, options.process_runs, || {
                let mut c = Command::new(&exe);
                c.args(["mem", imp, &count.to_string()]);
                if let Some((name, value)) = crate::memory::child_environment(imp) {
                    c.env(name, value);
                }
                c
            });
        }
        if let Some(python) = python {
            let id = format!("mem-{count}/python-greenlet");
            collect_memory(&mut results, &id, options.process_runs, || {
                let mut c = Command::new(python);
                c.arg(&options.python_script)
                    .args(["mem", &count.to_string()]);
                c
            });
        }
    }

    eprintln!("== the vm.max_map_count wall (cap {})", wall_cap());
    collect_walls(&mut results, &exe, options.process_runs);

    let valgrind = tool_version("valgrind", "--version");
    if !options.callgrind {
        results.note("callgrind instruction counts skipped (--no-callgrind)");
    } else if valgrind.is_none() {
        results.note("callgrind instruction counts skipped: valgrind is not installed");
    } else {
        eprintln!(
            "== instructions per iteration under callgrind: ({}) of N and of 0 iterations, / N",
            options.process_runs
        );
        collect_callgrind(&mut results, &exe, options.process_runs);
    }

    let mut qemu = None;
    let mut qemu_agreement = None;
    match &options.aarch64 {
        None => results.note(
            "aarch64 instruction counts skipped: no aarch64 build of greenlet-bench was given \
             (bench/run makes one when the cross toolchain and qemu-user are installed)",
        ),
        Some(aarch64_exe) => match Qemu::aarch64() {
            Err(e) => results.note(format!("aarch64 instruction counts skipped: {e}")),
            Ok(found) => {
                eprintln!(
                    "== instructions per iteration on aarch64, counted by qemu-user ({}): N and 0 iterations, / N",
                    found.one_per_block
                );
                collect_aarch64(&mut results, &found, aarch64_exe, options.process_runs);
                qemu_agreement = qemu_check(&mut results, &exe);
                qemu = tool_version("qemu-aarch64", "--version");
            }
        },
    }

    let lock = lock_versions(&options.lock_file);
    let context = Context {
        date: system::now_utc(),
        cpu: system::cpu(),
        kernel: system::kernel(),
        max_map_count: system::max_map_count(),
        rustc: env!("GREENLET_BENCH_RUSTC").to_string(),
        valgrind,
        qemu,
        qemu_agreement,
        lock,
        source: source_state(options.lock_file.parent().unwrap_or(Path::new("."))),
        elapsed_s: started.elapsed().as_secs_f64(),
        options_line: format!(
            "Timed figures: median of {} rounds, each of which runs every workload (ours and the peers') once for ~{} ms, in an order rotated from round to round, so that a burst of load hits them alike; memory and instruction figures: median of {} child processes",
            options.runs, options.target_ms, options.process_runs
        ),
    };
    let markdown = render_markdown(&results, &context);
    let svg = render_svg(&results, &context);
    let mut ok = true;
    for (path, text) in [(&options.markdown, markdown), (&options.svg, svg)] {
        match std::fs::write(path, text) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                ok = false;
            }
        }
    }
    eprintln!("report done in {:.0} s", started.elapsed().as_secs_f64());
    if results.failures > 0 {
        eprintln!(
            "report: {} measurement(s) failed; their figures are missing (see the notes)",
            results.failures
        );
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------
// Formatting

struct Context {
    date: String,
    cpu: (String, usize),
    kernel: String,
    max_map_count: Option<usize>,
    rustc: String,
    valgrind: Option<String>,
    /// `qemu-aarch64 --version`, if the aarch64 counts were made.
    qemu: Option<String>,
    /// qemu's and callgrind's counts of one workload on this machine.
    qemu_agreement: Option<(f64, f64)>,
    lock: BTreeMap<String, String>,
    source: String,
    elapsed_s: f64,
    options_line: String,
}

/// Comparisons shown as ratios (peer / ours) in the headline table and the
/// chart: (ours, peer).
const COMPARISONS: &[(&str, &str)] = &[
    ("switch/greenlet-raw", "switch/corosensei"),
    ("switch/greenlet-raw", "switch/context"),
    ("switch/greenlet-raw", "switch/generator"),
    ("switch/greenlet", "switch/corosensei"),
    ("switch/greenlet", "switch/generator"),
    ("switch/greenlet", "switch/may"),
    ("switch/greenlet", "switch/python-greenlet"),
    (
        "instructions/switch/greenlet-raw",
        "instructions/switch/corosensei",
    ),
    (
        "instructions/switch/greenlet-raw",
        "instructions/switch/context",
    ),
    (
        "instructions/switch/greenlet-raw",
        "instructions/switch/generator",
    ),
    (
        "instructions/switch/greenlet",
        "instructions/switch/corosensei",
    ),
    ("instructions/switch/greenlet", "instructions/switch/may"),
    ("create/greenlet-pooled", "create/corosensei-reused"),
    ("create/greenlet-pooled", "create/generator"),
    ("create/greenlet-pooled", "create/may"),
    ("create/greenlet-pooled", "create/python-greenlet"),
    ("create/greenlet-pooled", "create/gevent"),
    ("create/greenlet-fresh", "create/corosensei-fresh"),
    (
        "instructions/create/greenlet-pooled",
        "instructions/create/corosensei-reused",
    ),
    ("drop-suspended/greenlet", "drop-suspended/corosensei"),
    ("drop-suspended/greenlet", "drop-suspended/generator"),
    ("drop-suspended/greenlet", "drop-suspended/python-greenlet"),
    (
        "instructions/drop-suspended/greenlet",
        "instructions/drop-suspended/corosensei",
    ),
    ("hub-sleep0/greenlet-hub", "hub-sleep0/gevent"),
    ("hub-sleep0-pair/greenlet-hub", "hub-sleep0-pair/gevent"),
    ("hub-spawn-join/greenlet-hub", "hub-spawn-join/gevent"),
    ("hub-sleep0/greenlet-hub", "hub-sleep0/tokio"),
    ("hub-sleep0-pair/greenlet-hub", "hub-sleep0-pair/tokio"),
    ("hub-spawn-join/greenlet-hub", "hub-spawn-join/tokio"),
    ("hub-spawn-join/greenlet-hub", "hub-spawn-join/may"),
    (
        "instructions/hub-sleep0/greenlet-hub",
        "instructions/hub-sleep0/tokio",
    ),
    (
        "instructions/hub-sleep0-pair/greenlet-hub",
        "instructions/hub-sleep0-pair/tokio",
    ),
    (
        "instructions/hub-spawn-join/greenlet-hub",
        "instructions/hub-spawn-join/tokio",
    ),
    (
        "aarch64-instructions/switch/greenlet-raw",
        "aarch64-instructions/switch/corosensei",
    ),
    (
        "aarch64-instructions/switch/greenlet-raw",
        "aarch64-instructions/switch/context",
    ),
    (
        "aarch64-instructions/switch/greenlet-raw",
        "aarch64-instructions/switch/generator",
    ),
    (
        "aarch64-instructions/switch/greenlet",
        "aarch64-instructions/switch/corosensei",
    ),
    (
        "aarch64-instructions/create/greenlet-pooled",
        "aarch64-instructions/create/corosensei-reused",
    ),
    (
        "aarch64-instructions/drop-suspended/greenlet",
        "aarch64-instructions/drop-suspended/corosensei",
    ),
    (
        "aarch64-instructions/hub-spawn-join/greenlet-hub",
        "aarch64-instructions/hub-spawn-join/tokio",
    ),
    ("mem-10000/greenlet-16k", "mem-10000/corosensei-16k"),
    ("mem-10000/greenlet-16k", "mem-10000/context-16k"),
    ("mem-10000/greenlet-16k", "mem-10000/generator-16k"),
    ("mem-10000/greenlet-16k", "mem-10000/may-16k"),
    ("mem-10000/greenlet-16k", "mem-10000/python-greenlet"),
    ("mem-1000000/greenlet-16k", "mem-1000000/python-greenlet"),
    ("start-10000/greenlet-16k", "start-10000/corosensei-16k"),
    ("start-10000/greenlet-16k", "start-10000/context-16k"),
    ("start-10000/greenlet-16k", "start-10000/generator-16k"),
    ("start-10000/greenlet-16k", "start-10000/may-16k"),
    ("start-10000/greenlet-16k", "start-10000/python-greenlet"),
    (
        "start-1000000/greenlet-16k",
        "start-1000000/python-greenlet",
    ),
];

/// Our own variants against each other: (baseline, variant).
const INTERNAL: &[(&str, &str, &str)] = &[
    (
        "switch/greenlet-raw",
        "switch/greenlet",
        "safe switch (greenlet semantics) vs raw switch",
    ),
    (
        "switch/greenlet-raw",
        "switch/greenlet-raw-mxcsr",
        "raw switch that must reload MXCSR vs the usual one",
    ),
    (
        "switch/greenlet-raw-nofp",
        "switch/greenlet-raw",
        "raw switch vs the same without FP control (what the ABI's FP promise costs)",
    ),
    (
        "instructions/switch/greenlet-raw-nofp",
        "instructions/switch/greenlet-raw",
        "the same, instructions",
    ),
    (
        "switch/corosensei",
        "switch/greenlet-raw-nofp",
        "raw switch without FP control vs corosensei (which keeps no FP control)",
    ),
    (
        "instructions/switch/greenlet-raw",
        "instructions/switch/greenlet",
        "safe vs raw, instructions",
    ),
    (
        "aarch64-instructions/switch/greenlet-raw-nofp",
        "aarch64-instructions/switch/greenlet-raw",
        "aarch64: raw switch vs the same without FP control (FPCR), instructions",
    ),
    (
        "aarch64-instructions/switch/greenlet-raw",
        "aarch64-instructions/switch/greenlet",
        "aarch64: safe vs raw, instructions",
    ),
    (
        "create/greenlet-pooled",
        "create/greenlet-fresh",
        "fresh stack per greenlet vs pooled",
    ),
    (
        "switch/greenlet",
        "create/greenlet-pooled",
        "create-run-drop (pooled) vs one safe round trip",
    ),
    (
        "create/greenlet-pooled",
        "drop-suspended/greenlet",
        "drop-suspended cycle vs create-run-drop",
    ),
    (
        "start-10000/greenlet-16k",
        "start-10000/greenlet-16k-mprotect",
        "create+start holding 10,000: guards by mprotect (the fallback) vs by madvise",
    ),
    (
        "mem-10000/greenlet-16k",
        "mem-10000/greenlet-16k-mprotect",
        "memory per suspended greenlet at 10,000: mprotect guards vs madvise",
    ),
    (
        "start-10000/greenlet-16k",
        "start-1000000/greenlet-16k",
        "create+start holding 1,000,000 vs holding 10,000",
    ),
    (
        "mem-10000/greenlet-16k",
        "mem-1000000/greenlet-16k",
        "memory per suspended greenlet at 1,000,000 vs at 10,000",
    ),
];

/// The part of an id after the group: the implementation.
fn implementation(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn label(id: &str) -> String {
    match implementation(id) {
        "greenlet-raw" => "greenlet raw".into(),
        "greenlet-raw-mxcsr" => "greenlet raw, MXCSR differs".into(),
        "greenlet-raw-nofp" => "greenlet raw, no FP control (not shipped)".into(),
        "greenlet" => "greenlet".into(),
        "greenlet-pooled" => "greenlet pooled".into(),
        "greenlet-fresh" => "greenlet fresh stack".into(),
        "greenlet-16k" => "greenlet 16 KiB".into(),
        "greenlet-16k-mprotect" => "greenlet 16 KiB, mprotect guards".into(),
        "greenlet-default" => "greenlet 128 KiB".into(),
        "corosensei-16k" => "corosensei 16 KiB".into(),
        "generator-16k" => "generator 16 KiB".into(),
        "context-16k" => "context 16 KiB".into(),
        "may-16k" => "may 16 KiB".into(),
        "python-greenlet" => "Python greenlet".into(),
        other => other.replace('-', " "),
    }
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "bytes" | "count" | "greenlets" | "coroutines" => group_thousands(value.round() as u64),
        _ if value >= 1000.0 => group_thousands(value.round() as u64),
        _ if value >= 100.0 => format!("{value:.0}"),
        _ if value >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

/// "median [min, max]", each formatted for `unit`.
fn median_range(summary: &Summary, unit: &str) -> String {
    format!(
        "{} [{}, {}]",
        format_value(summary.median, unit),
        format_value(summary.min, unit),
        format_value(summary.max, unit)
    )
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_ratio(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

fn ratio(results: &Results, ours: &str, peer: &str) -> Option<f64> {
    let (o, p) = (results.median(ours)?, results.median(peer)?);
    (o > 0.0).then_some(p / o)
}

fn what_of(id: &str) -> String {
    let bare = bare(id);
    if let Some(w) = crate::workloads::find(bare) {
        return w.what.to_string();
    }
    match bare {
        "switch/python-greenlet" => {
            "`g.switch()` ping-pong with a greenlet that loops `main.switch()`".into()
        }
        "create/python-greenlet" => "`greenlet(empty).switch()`".into(),
        "create/gevent" => "`gevent.spawn(empty).join()`".into(),
        "drop-suspended/python-greenlet" => {
            "new, `switch()` in (it switches back), `del`: GreenletExit".into()
        }
        _ => String::new(),
    }
}

/// The tables of instruction counts whose ids start with `counted` (one of
/// [`COUNTED`]): switch, create, drop while suspended, hub.
fn counted_tables(out: &mut String, results: &Results, counted: &str) {
    let groups: [(&str, &str, &[&str]); 6] = [
        (
            "Switch round trip",
            "switch/",
            &["switch/greenlet-raw", "switch/greenlet"],
        ),
        (
            "Create, run to completion, drop",
            "create/",
            &["create/greenlet-pooled", "create/greenlet-fresh"],
        ),
        (
            "Drop of a suspended coroutine",
            "drop-suspended/",
            &["drop-suspended/greenlet"],
        ),
        (
            "Hub: sleep(0), nothing else ready",
            "hub-sleep0/",
            &["hub-sleep0/greenlet-hub"],
        ),
        (
            "Hub: two greenlets (tasks) alternate sleep(0), a round",
            "hub-sleep0-pair/",
            &["hub-sleep0-pair/greenlet-hub"],
        ),
        (
            "Hub: spawn + join",
            "hub-spawn-join/",
            &["hub-spawn-join/greenlet-hub"],
        ),
    ];
    for (title, group, baselines) in groups {
        let _ = write!(out, "### {title}\n\n");
        let baselines: Vec<String> = baselines.iter().map(|b| format!("{counted}{b}")).collect();
        let baselines: Vec<&str> = baselines.iter().map(String::as_str).collect();
        timing_table(out, results, &format!("{counted}{group}"), &baselines);
    }
}

/// A table of the rows whose ids start with `prefix`, with a ratio column
/// for each of `baselines`.
fn timing_table(out: &mut String, results: &Results, prefix: &str, baselines: &[&str]) {
    let ids: Vec<&String> = results
        .rows
        .keys()
        .filter(|k| k.starts_with(prefix))
        .collect();
    if ids.is_empty() {
        out.push_str("_No figures: see the notes at the end._\n\n");
        return;
    }
    let mut ids = ids;
    // Ours first, in the order of the workload list, then peers.
    let order = |id: &str| {
        ALL.iter()
            .position(|w| w.id == bare(id))
            .unwrap_or(ALL.len())
    };
    ids.sort_by_key(|id| (order(id), (*id).clone()));
    let unit = &results.rows[ids[0]].unit;
    let _ = write!(
        out,
        "| implementation | median ({unit}) | min | max | runs |"
    );
    for b in baselines {
        let _ = write!(out, " ÷ {} |", label(b));
    }
    out.push_str(" what one iteration does |\n|---|--:|--:|--:|--:|");
    for _ in baselines {
        out.push_str("--:|");
    }
    out.push_str("---|\n");
    for id in ids {
        let row = &results.rows[id];
        let ours = id.contains("/greenlet") && !id.contains("python");
        let name = if ours {
            format!("**{}**", label(id))
        } else {
            label(id)
        };
        let _ = write!(
            out,
            "| {name} | {} | {} | {} | {} |",
            format_value(row.summary.median, &row.unit),
            format_value(row.summary.min, &row.unit),
            format_value(row.summary.max, &row.unit),
            row.runs
        );
        for b in baselines {
            match ratio(results, b, id) {
                Some(r) => {
                    let _ = write!(out, " {} |", format_ratio(r));
                }
                None => out.push_str(" – |"),
            }
        }
        let _ = writeln!(out, " {} |", table_cell(&what_of(id)));
    }
    out.push('\n');
}

fn render_markdown(results: &Results, context: &Context) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# greenlet benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `bench/run` on {}, in {:.0} s. {}; min and max beside each median. A ratio \
         is the other implementation's median divided by ours: above 1 we are faster (or \
         smaller), below 1 we are slower.\n",
        context.date, context.elapsed_s, context.options_line
    );
    out.push_str("![ratios](results.svg)\n\n");

    out.push_str("## Machine and versions\n\n| | |\n|---|---|\n");
    let (model, cpus) = &context.cpu;
    let _ = writeln!(
        out,
        "| CPU | {model} ({cpus} logical CPUs; shared and noisy, hence medians) |"
    );
    let _ = writeln!(out, "| memory | {} |", system::memory_total());
    let _ = writeln!(out, "| kernel | {} |", context.kernel);
    let _ = writeln!(
        out,
        "| vm.max_map_count | {} |",
        context
            .max_map_count
            .map_or("unknown".into(), |n| group_thousands(n as u64))
    );
    let _ = writeln!(out, "| source | {} |", context.source);
    let _ = writeln!(
        out,
        "| rustc | {} (release profile, `debug = 1`) |",
        context.rustc
    );
    let crates: Vec<String> = [
        "greenlet",
        "greenlet-hub",
        "corosensei",
        "context",
        "generator",
        "may",
        "tokio",
        "mio",
        "memmap2",
        "libc",
    ]
    .iter()
    .filter_map(|c| context.lock.get(*c).map(|v| format!("{c} {v}")))
    .collect();
    let _ = writeln!(out, "| crates (Cargo.lock) | {} |", crates.join(", "));
    if results.versions.is_empty() {
        out.push_str("| Python | not measured |\n");
    } else {
        let v = |k: &str| {
            results
                .versions
                .get(k)
                .cloned()
                .unwrap_or_else(|| "?".into())
        };
        let _ = writeln!(
            out,
            "| Python | CPython {}, greenlet {}, gevent {} (PyPI, in bench/.venv) |",
            v("python"),
            v("greenlet"),
            v("gevent")
        );
    }
    let _ = writeln!(
        out,
        "| valgrind | {} |",
        context.valgrind.as_deref().unwrap_or("not installed")
    );
    let _ = writeln!(
        out,
        "| qemu-user (aarch64 counts) | {} |\n",
        context.qemu.as_deref().unwrap_or("not used")
    );

    out.push_str(
        "## Headline ratios (theirs ÷ ours)\n\n| measure | ours | theirs | ours | theirs | ratio |\n\
         |---|---|---|--:|--:|--:|\n",
    );
    for (ours, peer) in COMPARISONS {
        if let (Some(o), Some(p), Some(r)) = (
            results.rows.get(*ours),
            results.rows.get(*peer),
            ratio(results, ours, peer),
        ) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | **{}** |",
                measure_of(ours),
                label(bare(ours)),
                label(bare(peer)),
                format_value(o.summary.median, &o.unit),
                format_value(p.summary.median, &p.unit),
                format_ratio(r)
            );
        }
    }
    out.push_str("\nOurs against ours:\n\n| comparison | ratio |\n|---|--:|\n");
    for (base, variant, what) in INTERNAL {
        if let Some(r) = ratio(results, base, variant) {
            let _ = writeln!(out, "| {what} | {} |", format_ratio(r));
        }
    }
    out.push('\n');

    out.push_str(
        "## Switch round trip\n\nNanoseconds for one round trip: two switches, there and back.\n\n",
    );
    timing_table(
        &mut out,
        results,
        "switch/",
        &["switch/greenlet-raw", "switch/greenlet"],
    );
    out.push_str(
        "## Instructions per iteration (callgrind)\n\nInstructions counted by `valgrind --tool=callgrind` \
         for the whole process, run with N iterations and with 0, the difference divided by N. \
         Stable where timings on this shared machine are not. may's count includes its scheduler \
         and worker thread. Work in the kernel is not counted, so rows that map a fresh stack look \
         cheaper here than they are.\n\n",
    );
    counted_tables(&mut out, results, "instructions/");
    out.push_str(
        "## Instructions per iteration on aarch64 (qemu)\n\nThe same workloads built for \
         aarch64-unknown-linux-gnu and run under qemu-user, which, made to translate one \
         instruction per block and to log every block it runs, writes a line per instruction \
         executed in user space; N iterations minus 0, divided by N, the median of the runs [min, max]: exact, and the \
         same in every run, for code on one thread. \
         No aarch64 timings: qemu's clock says nothing about a real core. may's and tokio's counts \
         include their worker threads, which under qemu run truly in parallel, so they can vary \
         from run to run. On aarch64 the floating-point control state a switch keeps is FPCR: \
         the rows that speak of MXCSR and the x87 control word mean it there.",
    );
    match context.qemu_agreement {
        Some((qemu, callgrind)) => {
            let _ = write!(
                out,
                " The check that the two ways of counting agree: the same counting on this \
                 machine's own build gives {qemu:.2} instructions for a raw switch round trip, \
                 callgrind {callgrind:.2}."
            );
        }
        None => out.push_str(" (Not checked against callgrind in this run: see the notes.)"),
    }
    out.push_str("\n\n");
    counted_tables(&mut out, results, "aarch64-instructions/");
    out.push_str("## Create, run to completion, drop\n\nNanoseconds per empty coroutine.\n\n");
    timing_table(
        &mut out,
        results,
        "create/",
        &["create/greenlet-pooled", "create/greenlet-fresh"],
    );
    out.push_str(
        "## Drop of a suspended coroutine\n\nNanoseconds for a whole cycle: create, start (it \
         suspends), destroy while suspended so that its cleanup runs. Subtract the create row \
         above for the cost of the exit alone.\n\n",
    );
    timing_table(
        &mut out,
        results,
        "drop-suspended/",
        &["drop-suspended/greenlet"],
    );
    out.push_str(
        "## Hub (greenlet-hub) against gevent, tokio and may\n\nNanoseconds: `sleep(0)` from main \
         with nothing else ready (gevent goes to its hub and back; ours counts the hub's turn in \
         place and goes to the hub every 32nd call, to look at I/O; tokio's `yield_now` from a \
         task on a current-thread runtime polls its I/O driver, an `epoll_wait`, every time), a \
         round of two greenlets (tokio: tasks) alternating `sleep(0)` (each call hands over \
         through the hub, for all of them), and spawning an empty task and joining it. tokio runs \
         each loop in a spawned task on a current-thread runtime with its I/O and time drivers \
         on, as a hub always has them.\n\n",
    );
    timing_table(
        &mut out,
        results,
        "hub-sleep0/",
        &["hub-sleep0/greenlet-hub"],
    );
    timing_table(
        &mut out,
        results,
        "hub-sleep0-pair/",
        &["hub-sleep0-pair/greenlet-hub"],
    );
    timing_table(
        &mut out,
        results,
        "hub-spawn-join/",
        &["hub-spawn-join/greenlet-hub"],
    );

    out.push_str(
        "## Memory per suspended coroutine\n\nResident bytes (from `/proc/self/statm`) per live, \
         suspended coroutine: the growth of the process's resident set while making them, divided \
         by how many were made, each run in a fresh child process; the median of the runs [min, \
         max]. Stacks are committed lazily, so this is the pages actually touched plus the \
         bookkeeping. \"create+start\" is the time per coroutine to create and start it while \
         making them, the median of the runs [min, max]; a peer that stops at the wall is \
         measured up to there.",
    );
    if let Some(runs) = results
        .rows
        .iter()
        .find(|(id, _)| id.starts_with("mem-"))
        .map(|(_, row)| row.runs)
    {
        let _ = write!(out, " Runs per cell: {runs}.");
    }
    out.push_str("\n\n");
    out.push_str("| implementation |");
    for count in MEM_COUNTS {
        let _ = write!(
            out,
            " {} live: bytes each [min, max] |",
            group_thousands(*count as u64)
        );
    }
    out.push_str("\n|---|");
    for _ in MEM_COUNTS {
        out.push_str("---|");
    }
    out.push('\n');
    let mut mem_impls: Vec<&str> = MEM_IMPLS.iter().map(|(i, _)| *i).collect();
    mem_impls.push("python-greenlet");
    for imp in mem_impls {
        let _ = write!(out, "| {} |", label(&format!("mem/{imp}")));
        for count in MEM_COUNTS {
            match results.rows.get(&format!("mem-{count}/{imp}")) {
                Some(row) => {
                    let _ = write!(out, " {}", median_range(&row.summary, "bytes"));
                    if let Some(start) = results.rows.get(&format!("start-{count}/{imp}")) {
                        let _ = write!(
                            out,
                            "; create+start {} ns",
                            median_range(&start.summary, "ns")
                        );
                    }
                    let reached = row.fields.get("reached").cloned().unwrap_or_default();
                    if reached != count.to_string() {
                        let _ = write!(
                            out,
                            " — **stopped at {}**: {}",
                            group_thousands(reached.parse().unwrap_or(0)),
                            table_cell(row.fields.get("error").map_or("", String::as_str))
                        );
                    }
                    out.push_str(" |");
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');

    out.push_str(
        "## The `vm.max_map_count` wall\n\nHow many suspended coroutines one process can hold before \
         the kernel refuses another stack mapping, and what the program sees then; each in a child \
         process, up to a cap of twice `vm.max_map_count`; the median of the runs [min, max], the \
         outcome of the last. How many mappings a stack takes is up to the implementation: a guard \
         made with `mprotect` splits a mapping in two. Ours with its default guards meets no wall \
         below the cap: see the memory table above for 1,000,000 live.\n\n| implementation | live at the wall | \
         what happened | exit |\n|---|--:|---|---|\n",
    );
    for (imp, what) in WALL_IMPLS {
        if let Some(row) = results.rows.get(&format!("wall/{imp}")) {
            let outcome = match row.fields.get("outcome").map(String::as_str) {
                Some("err") => {
                    let recovered = row.fields.get("recovered").map(String::as_str) == Some("true");
                    let from = match row.fields.get("guard") {
                        Some(guard) => {
                            format!("`Err` from `Builder::spawn` (stack guards: {guard})")
                        }
                        None => "`Err`".to_string(),
                    };
                    format!(
                        "{from}{}: “{}”",
                        if recovered {
                            " (after dropping them, the next one works)"
                        } else {
                            ""
                        },
                        table_cell(&shorten_registry_paths(
                            row.fields.get("message").map_or("", String::as_str)
                        ))
                    )
                }
                Some("panic") => {
                    let maps = match row.fields.get("maps").map(String::as_str) {
                        Some("unknown") | None => String::new(),
                        Some(n) => format!(" ({n} mappings in the process)"),
                    };
                    format!(
                        "**panic**{maps}: “{}”",
                        table_cell(&shorten_registry_paths(
                            row.fields.get("message").map_or("", String::as_str)
                        ))
                    )
                }
                _ => format!(
                    "no error up to the cap (twice vm.max_map_count), with {} mappings in the \
                     process (stack guards: {})",
                    row.fields.get("maps").map_or("?", String::as_str),
                    row.fields.get("guard").map_or("?", String::as_str)
                ),
            };
            let _ = writeln!(
                out,
                "| {what} | {} | {outcome} | {} |",
                median_range(&row.summary, "count"),
                row.fields.get("exit").map_or("", String::as_str)
            );
        }
    }
    out.push('\n');

    out.push_str("## How to read and rerun\n\n");
    out.push_str(
        "- `bench/run` builds `greenlet-bench` in release and runs `greenlet-bench report`; \
         `greenlet-bench list` names every workload, `greenlet-bench time ID` times one.\n\
         - Every timed figure runs in its own process: calibrated to the target time per run, \
         warm-up runs, then the runs. may runs with one worker, so its coroutines take turns on one \
         thread as ours do.\n\
         - Python figures include the interpreter's loop (tens of ns per iteration).\n\
         - `cargo run --release -p greenlet-bench -- --smoke` runs every Rust workload once with \
         tiny counts (CI).\n\n",
    );
    if !results.notes.is_empty() {
        out.push_str("## Notes from this run\n\n");
        for note in &results.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    out
}

/// Text made safe for a markdown table cell: a `|` would end the cell even
/// inside backquotes.
fn table_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A panic location inside the cargo registry, shortened to the crate's own
/// path (`corosensei-0.3.4/src/...`).
fn shorten_registry_paths(text: &str) -> String {
    match (text.find("/.cargo/registry/src/"), text.find(" at /")) {
        (Some(registry), Some(at)) if registry > at => {
            let rest = &text[registry..];
            // Skip `/.cargo/registry/src/<index>/`.
            let tail = rest.splitn(6, '/').nth(5).unwrap_or(rest);
            format!("{} at {tail}", &text[..at])
        }
        _ => text.to_string(),
    }
}

/// What a comparison measures, with its unit: "switch round trip (ns)".
fn measure_of(id: &str) -> String {
    let rest = bare(id);
    let counted = rest.len() < id.len();
    let group = rest.split('/').next().unwrap_or("");
    let what = match group {
        "switch" => "switch round trip",
        "create" => "create, run, drop",
        "drop-suspended" => "drop while suspended",
        "hub-sleep0" => "hub: sleep(0), nothing else ready",
        "hub-sleep0-pair" => "hub: two greenlets alternate sleep(0), a round",
        "hub-spawn-join" => "hub: spawn + join",
        g if g.starts_with("mem-") || g.starts_with("start-") => {
            let (kind, count) = g.split_once('-').unwrap_or((g, ""));
            let live = count
                .parse()
                .map_or_else(|_| count.to_string(), group_thousands);
            let what = if kind == "mem" {
                "memory per suspended coroutine"
            } else {
                "create and start, holding them"
            };
            return format!(
                "{what}, {live} live ({})",
                if kind == "mem" { "bytes" } else { "ns" }
            );
        }
        g => g,
    };
    let unit = if id.starts_with("aarch64-") {
        "aarch64 instructions"
    } else if counted {
        "instructions"
    } else {
        "ns"
    };
    format!("{what} ({unit})")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of the headline ratios on a log scale, bars
/// growing from 1× to the right (we are faster) or to the left (slower).
fn render_svg(results: &Results, context: &Context) -> String {
    struct Bar {
        section: String,
        label: String,
        ratio: f64,
    }
    let mut bars = Vec::new();
    for (ours, peer) in COMPARISONS {
        let Some(r) = ratio(results, ours, peer) else {
            continue;
        };
        // "switch round trip (ns)", "switch round trip (instructions)", ...
        let mut section = measure_of(ours);
        if let Some(first) = section.get(..1) {
            section = first.to_uppercase() + &section[1..];
        }
        let label = format!("{} vs {}", label(bare(peer)), label(bare(ours)));
        bars.push(Bar {
            section,
            label,
            ratio: r,
        });
    }
    let lo = bars.iter().map(|b| b.ratio).fold(0.5_f64, f64::min) / 1.3;
    let hi = bars.iter().map(|b| b.ratio).fold(2.0_f64, f64::max) * 1.3;
    let (width, left, right) = (960.0, 330.0, 900.0);
    let x = |v: f64| left + (v.ln() - lo.ln()) / (hi.ln() - lo.ln()) * (right - left);
    let row_height = 22.0;
    // A heading each time the section changes.
    let headings = bars
        .iter()
        .enumerate()
        .filter(|(i, b)| *i == 0 || bars[i - 1].section != b.section)
        .count();
    let top = 84.0;
    let height = top + (bars.len() as f64 + headings as f64 * 1.4) * row_height + 70.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width} {height:.0}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"20\" y=\"28\" font-size=\"18\" font-weight=\"bold\">greenlet against its peers: theirs ÷ ours</text>"
    );
    let _ = writeln!(
        s,
        "<text x=\"20\" y=\"48\" fill=\"#444\">Right of 1× (green): greenlet is faster or smaller by that factor; left (red): slower. Log scale; medians.</text>"
    );
    // Grid and ticks.
    let plot_bottom = height - 50.0;
    let mut tick = 10f64.powf(lo.log10().floor());
    while tick <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = tick * m;
            if v >= lo && v <= hi {
                let xv = x(v);
                let stroke = if (v - 1.0).abs() < 1e-9 {
                    "#222\" stroke-width=\"1.5"
                } else {
                    "#ddd"
                };
                let _ = writeln!(
                    s,
                    "<line x1=\"{xv:.1}\" y1=\"{:.1}\" x2=\"{xv:.1}\" y2=\"{plot_bottom:.1}\" stroke=\"{stroke}\"/>",
                    top - 14.0
                );
                let text = if v >= 1.0 {
                    format!("{v:.0}×")
                } else {
                    format!("{v}×")
                };
                let _ = writeln!(
                    s,
                    "<text x=\"{xv:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\" font-size=\"11\">{text}</text>",
                    top - 18.0
                );
            }
        }
        tick *= 10.0;
    }
    let mut y = top;
    let mut current = "";
    for bar in &bars {
        if bar.section != current {
            current = &bar.section;
            y += row_height * 0.4;
            let _ = writeln!(
                s,
                "<text x=\"20\" y=\"{:.1}\" font-weight=\"bold\" fill=\"#222\">{}</text>",
                y + 13.0,
                escape(current)
            );
            y += row_height;
        }
        let (x1, x2) = (x(1.0), x(bar.ratio));
        let (start, len) = if x2 >= x1 {
            (x1, x2 - x1)
        } else {
            (x2, x1 - x2)
        };
        let colour = if bar.ratio >= 1.0 {
            "#3a9d5d"
        } else {
            "#d0533f"
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 10.0,
            y + 14.0,
            escape(&bar.label)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{start:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
            y + 3.0,
            len.max(1.0),
            row_height - 6.0
        );
        // A slower bar's figure goes right of the 1× line, clear of the
        // row labels that its bar may reach.
        let (tx, anchor) = if x2 >= x1 {
            (x2 + 5.0, "start")
        } else {
            (x1 + 5.0, "start")
        };
        let _ = writeln!(
            s,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" font-weight=\"bold\">{}</text>",
            y + 14.5,
            format_ratio(bar.ratio)
        );
        y += row_height;
    }
    let _ = writeln!(
        s,
        "<text x=\"20\" y=\"{:.1}\" fill=\"#666\" font-size=\"11\">{} · {} · {} · {}</text>",
        height - 20.0,
        escape(&context.date),
        escape(&context.cpu.0),
        escape(&context.kernel),
        escape(&context.rustc)
    );
    s.push_str("</svg>\n");
    s
}
