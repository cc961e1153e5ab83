//! greenlet-bench: measures `greenlet` against its peers (corosensei,
//! context, generator, may, Python's greenlet and gevent), side by side in
//! one run.
//!
//! `bench/run` is the one command: it builds this binary in release and runs
//! `report`, which re-executes this binary once per measurement so that no
//! measurement disturbs another (may's worker threads, thousands of stack
//! mappings, a panic at the `vm.max_map_count` wall), and writes
//! `bench/RESULTS.md` and `bench/results.svg`.
//!
//! ```text
//! greenlet-bench --smoke                  every Rust workload once, tiny counts (CI)
//! greenlet-bench list                     the workloads
//! greenlet-bench time ID [--target-ms MS] [--runs N]
//! greenlet-bench once ID N                N iterations, untimed output (for callgrind)
//! greenlet-bench mem IMPL COUNT           resident bytes per suspended coroutine
//! greenlet-bench wall IMPL [--cap N]      live coroutines until the mapping limit
//! greenlet-bench count-aarch64 EXE ID...  instructions per iteration of EXE, an aarch64
//!                                         build of this binary, under qemu-aarch64
//! greenlet-bench report [--md PATH] [--svg PATH] [--python PATH | --no-python]
//!                       [--no-callgrind] [--aarch64 EXE] [--target-ms MS] [--runs N]
//!                       [--quick]
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod harness;
mod memory;
mod report;
mod system;
mod workloads;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  greenlet-bench --smoke                  every Rust workload once, tiny counts (CI)
  greenlet-bench list                     the workloads
  greenlet-bench time ID [--target-ms MS] [--runs N]
  greenlet-bench once ID N                run N iterations (for callgrind)
  greenlet-bench mem IMPL COUNT           resident bytes per suspended coroutine
  greenlet-bench wall IMPL [--cap N]      live coroutines until the mapping limit
  greenlet-bench count-aarch64 EXE ID...  instructions per iteration of EXE, an aarch64
                                          build of this binary, under qemu-aarch64
  greenlet-bench report [--md PATH] [--svg PATH] [--python PATH | --no-python]
                        [--no-callgrind] [--aarch64 EXE] [--target-ms MS] [--runs N]
                        [--quick]
    --aarch64 EXE: greenlet-bench built for aarch64-unknown-linux-gnu, whose
    instructions per iteration are counted under qemu-aarch64";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["--smoke"] | ["smoke"] => Ok(smoke()),
        ["list"] => Ok(list()),
        ["time", id, options @ ..] => time(id, options),
        ["once", id, iterations] => once(id, iterations),
        ["mem", imp, count] => count
            .parse()
            .map_err(|e| format!("COUNT: {e}"))
            .map(|n| memory::mem(imp, n)),
        ["wall", imp, options @ ..] => wall(imp, options),
        ["report", options @ ..] => report(options),
        ["count-aarch64", exe, ids @ ..] if !ids.is_empty() => {
            report::count_aarch64(std::path::Path::new(exe), ids)
        }
        [] | ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(format!("unknown command line {args:?}")),
    };
    result.unwrap_or_else(|message| {
        eprintln!("greenlet-bench: {message}\n{USAGE}");
        ExitCode::from(2)
    })
}

/// Reads `--name VALUE` options into `(name, value)` pairs; flags that take
/// no value are listed in `flags`.
fn options<'a>(args: &[&'a str], flags: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut rest = args.iter();
    while let Some(&name) = rest.next() {
        if !name.starts_with("--") {
            return Err(format!("unexpected argument {name:?}"));
        }
        if flags.contains(&name) {
            out.push((name, ""));
        } else {
            let value = rest.next().ok_or_else(|| format!("{name} needs a value"))?;
            out.push((name, *value));
        }
    }
    Ok(out)
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{name} {value:?}: {e}"))
}

fn workload(id: &str) -> Result<&'static workloads::Workload, String> {
    workloads::find(id)
        .ok_or_else(|| format!("unknown workload {id:?}; `greenlet-bench list` names them"))
}

fn list() -> ExitCode {
    for w in workloads::ALL {
        println!("{:<30} {}", w.id, w.what);
    }
    for (imp, what) in memory::MEM_IMPLS {
        println!("{:<30} {what}", format!("mem IMPL={imp}"));
    }
    for (imp, what) in memory::WALL_IMPLS {
        println!("{:<30} {what}", format!("wall IMPL={imp}"));
    }
    println!("(Python workloads: bench/python/bench.py list)");
    ExitCode::SUCCESS
}

fn time(id: &str, args: &[&str]) -> Result<ExitCode, String> {
    let w = workload(id)?;
    let (mut target_ms, mut runs) = (200u64, 7usize);
    for (name, value) in options(args, &[])? {
        match name {
            "--target-ms" => target_ms = parse(name, value)?,
            "--runs" => runs = parse(name, value)?,
            _ => return Err(format!("unknown option {name}")),
        }
    }
    let timing = harness::measure(w.timed, Duration::from_millis(target_ms), runs.max(1));
    harness::Line::new(w.id).timing(&timing).print();
    Ok(ExitCode::SUCCESS)
}

fn once(id: &str, iterations: &str) -> Result<ExitCode, String> {
    let w = workload(id)?;
    let n: u64 = parse("N", iterations)?;
    std::hint::black_box((w.timed)(n));
    Ok(ExitCode::SUCCESS)
}

fn wall(imp: &str, args: &[&str]) -> Result<ExitCode, String> {
    let mut cap = memory::wall_cap();
    for (name, value) in options(args, &[])? {
        match name {
            "--cap" => cap = parse(name, value)?,
            _ => return Err(format!("unknown option {name}")),
        }
    }
    Ok(memory::wall(imp, cap))
}

fn report(args: &[&str]) -> Result<ExitCode, String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut options = report::Options {
        markdown: here.join("RESULTS.md"),
        svg: here.join("results.svg"),
        python: Some(here.join(".venv/bin/python")),
        python_script: here.join("python/bench.py"),
        callgrind: true,
        aarch64: None,
        target_ms: 200,
        runs: 7,
        process_runs: 5,
        lock_file: here.join("../Cargo.lock"),
        quick: false,
    };
    for (name, value) in self::options(args, &["--no-python", "--no-callgrind", "--quick"])? {
        match name {
            "--md" => options.markdown = value.into(),
            "--svg" => options.svg = value.into(),
            "--python" => options.python = Some(value.into()),
            "--no-python" => options.python = None,
            "--no-callgrind" => options.callgrind = false,
            "--aarch64" => options.aarch64 = Some(value.into()),
            "--target-ms" => options.target_ms = parse(name, value)?,
            "--runs" => options.runs = parse(name, value)?,
            // A quick pass through everything, to check the pipeline; the
            // figures are too short-lived to quote.
            "--quick" => {
                options.quick = true;
                options.target_ms = 20;
                options.runs = 5;
                options.process_runs = 1;
            }
            _ => return Err(format!("unknown option {name}")),
        }
    }
    if options.runs < 5 {
        return Err(
            "--runs must be at least 5: every figure is a median of at least 5 runs".into(),
        );
    }
    Ok(report::run(&options))
}

/// Every Rust workload once with a tiny count, then the child-process
/// measurements with small counts. Fails (non-zero) on the first problem.
fn smoke() -> ExitCode {
    let started = Instant::now();
    for w in workloads::ALL {
        let t = Instant::now();
        (w.timed)(0);
        let elapsed = (w.timed)(16);
        println!(
            "smoke {:<30} ok: 16 iterations in {elapsed:?} ({:?} with set-up)",
            w.id,
            t.elapsed()
        );
    }
    let timing = harness::measure(workloads::ALL[0].timed, Duration::from_millis(2), 1);
    println!(
        "smoke harness: calibrated {} iterations, {:.2} ns each",
        timing.iterations, timing.summary.median
    );

    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("smoke: cannot find this executable to re-run it: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut children: Vec<(String, Vec<String>)> = memory::MEM_IMPLS
        .iter()
        .map(|(imp, _)| {
            (
                format!("mem {imp}"),
                vec!["mem".into(), imp.to_string(), "200".into()],
            )
        })
        .collect();
    match system::max_map_count() {
        Some(limit) if limit <= 262_144 => {
            // Far enough for corosensei's two mappings per stack to meet
            // the wall; the full search (twice the limit) is for bench/run.
            let cap = (limit / 2 + 4096).to_string();
            for (imp, _) in memory::WALL_IMPLS {
                children.push((
                    format!("wall {imp}"),
                    vec!["wall".into(), imp.to_string(), "--cap".into(), cap.clone()],
                ));
            }
        }
        limit => println!(
            "smoke: skipped the wall: vm.max_map_count is {limit:?}, too many mappings to make quickly"
        ),
    }
    for (name, args) in children {
        let mut command = Command::new(&exe);
        command.args(&args);
        if let Some((key, value)) = args.get(1).and_then(|imp| memory::child_environment(imp)) {
            command.env(key, value);
        }
        let output = match command.output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("smoke {name}: cannot run a child: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let Some(fields) = stdout.lines().find_map(harness::parse_line) else {
            eprintln!(
                "smoke {name}: no result line; {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            return ExitCode::FAILURE;
        };
        // The walls of corosensei, generator and may end in a panic (the
        // child prints its line from the panic hook, then dies): that is the
        // finding, not a failure of the smoke.
        let panicked_by_design = name.starts_with("wall ")
            && !name.starts_with("wall greenlet")
            && fields.get("outcome").map(String::as_str) == Some("panic");
        if !output.status.success() && !panicked_by_design {
            eprintln!(
                "smoke {name}: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            return ExitCode::FAILURE;
        }
        let get = |k: &str| fields.get(k).map_or("-", String::as_str);
        if name.starts_with("mem") {
            println!(
                "smoke {name:<24} ok: {} of {} live, {} bytes each",
                get("reached"),
                get("requested"),
                get("median")
            );
        } else {
            let message: String = get("message").chars().take(100).collect();
            println!(
                "smoke {name:<24} ok: {} live, then {}: {message}",
                get("reached"),
                get("outcome")
            );
        }
    }
    println!(
        "smoke: skipped Python greenlet/gevent and callgrind counts (bench/run measures them)"
    );
    println!(
        "smoke: all Rust workloads ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
