//! Tests of the tester: the text form round-trips, and the shrinker and the
//! failure report do what `differential.rs` promises (the seed and a small
//! program that still fails). A real disagreement is rare by design, so
//! these inject fake ones: an oracle that calls a program failing when it
//! has some shape, and a fake "Python" whose trace differs from the Rust
//! driver's on one kind of event.

use crate::program::{self, Handler, Op, Program};
use crate::{Failure, disagreements, failure_report, rust_driver, shrink};
use std::path::Path;

/// The number of operations in all scripts.
fn ops(program: &Program) -> usize {
    program.scripts.iter().map(Vec::len).sum()
}

/// Generated programs, from the seeds the differential run uses.
fn generated(count: u64) -> impl Iterator<Item = Program> {
    (0..count).map(|i| program::generate(program::program_seed(1, i)))
}

// ---------------------------------------------------------------------------
// The text form

#[test]
fn generated_programs_print_and_parse_back_unchanged() {
    let mut all = String::new();
    let mut programs = Vec::new();
    for program in generated(5_000) {
        let text = program.to_string();
        assert_eq!(
            program::parse(&text),
            Ok(vec![program.clone()]),
            "round trip of\n{text}"
        );
        // Several in one file, with comments and blank lines between, as in
        // regressions.txt and a file for GREENLET_DIFF_REPLAY.
        if programs.len() < 500 {
            all.push_str(&format!("# seed {}\n\n{text}\n", program.seed));
            programs.push(program);
        }
    }
    assert_eq!(program::parse(&all), Ok(programs));
}

#[test]
fn the_regressions_file_parses_and_prints_back_the_same_programs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/regressions.txt");
    let text = std::fs::read_to_string(&path).expect("regressions.txt");
    let programs = program::parse(&text).expect("regressions.txt parses");
    assert!(programs.len() >= 15, "{} regressions", programs.len());
    let printed: String = programs.iter().map(Program::to_string).collect();
    assert_eq!(program::parse(&printed), Ok(programs));
}

#[test]
fn the_documented_example_parses() {
    // The example in program.rs's docs.
    let text = "program 17\ngreenlets 1\ng0 new:1:0 sw:1:5:c q:1 del:1\ng1 sw:0:6:p ret:7\nend\n";
    let parsed = program::parse(text).expect("parses");
    let expected = Program {
        seed: 17,
        scripts: vec![
            vec![
                Op::New { k: 1, parent: 0 },
                Op::Switch {
                    k: 1,
                    value: 5,
                    handler: Handler::Catch,
                },
                Op::Query { k: 1 },
                Op::Drop { k: 1 },
            ],
            vec![
                Op::Switch {
                    k: 0,
                    value: 6,
                    handler: Handler::Propagate,
                },
                Op::Return { value: 7 },
            ],
        ],
    };
    assert_eq!(parsed, vec![expected.clone()]);
    assert_eq!(parsed[0].to_string(), text);
}

#[test]
fn malformed_programs_are_errors_not_panics() {
    for bad in [
        "program x\ngreenlets 0\ng0\nend\n",
        "program 1\ng0\nend\n",
        "program 1\ngreenlets 1\ng0 new:1:0\nend\n",
        "program 1\ngreenlets 1\ng0\ng2\nend\n",
        "program 1\ngreenlets 0\ng0 jump:1\nend\n",
        "program 1\ngreenlets 0\ng0 sw:1:2:x\nend\n",
        "program 1\ngreenlets 0\ng0 sw:1\nend\n",
        "program 1\ngreenlets 0\ng0\n",
    ] {
        assert!(program::parse(bad).is_err(), "accepted:\n{bad}");
    }
}

// ---------------------------------------------------------------------------
// The shrinker

/// An injected disagreement that depends on the program's shape only: some
/// script throws at a greenlet `gK` (K ≥ 1) whose own script panics. The
/// smallest programs it calls failing have these two operations and nothing
/// else.
fn throws_at_a_panicker(program: &Program) -> bool {
    program.scripts.iter().flatten().any(|op| match *op {
        Op::Throw { k, .. } if k >= 1 => program
            .scripts
            .get(k)
            .is_some_and(|s| s.iter().any(|op| matches!(op, Op::Panic { .. }))),
        _ => false,
    })
}

/// Asserts what the shrinker promises about `small`, shrunk from `big`: it
/// still fails, and none of its one-step reductions does (a local minimum).
fn assert_locally_minimal(big: &Program, small: &Program, fails: impl Fn(&Program) -> bool) {
    assert!(fails(small), "the shrunk program passes:\n{small}");
    assert_eq!(small.seed, big.seed, "the shrunk program keeps its seed");
    for smaller in shrink::candidates(small) {
        assert!(
            !fails(&smaller),
            "not a local minimum: \n{small}\nstill fails without one step:\n{smaller}"
        );
    }
}

#[test]
fn the_shrinker_reduces_an_injected_shape_to_its_two_operations() {
    let big: Vec<Program> = generated(20_000)
        .filter(|p| throws_at_a_panicker(p) && ops(p) >= 30 && p.greenlets() >= 4)
        .take(10)
        .collect();
    assert_eq!(big.len(), 10, "the generator makes such programs");
    for program in &big {
        let mut rounds = 0;
        let small = shrink::shrink(program, |batch| {
            rounds += 1;
            batch.iter().map(throws_at_a_panicker).collect()
        });
        assert_locally_minimal(program, &small, throws_at_a_panicker);
        // Here every local minimum is a global one: any operation but one
        // throw and one panic can go, and any greenlet but the thrower and
        // the one it throws at.
        assert_eq!(ops(&small), 2, "from\n{program}\nto\n{small}");
        assert!(small.greenlets() <= 2, "from\n{program}\nto\n{small}");
        // One batch per round, and each round removes something.
        assert!(rounds <= ops(program) + program.greenlets() + 1);
    }
}

#[test]
fn removing_a_greenlet_renumbers_the_ones_after_it() {
    let program = program::parse(
        "program 5\ngreenlets 3\n\
         g0 new:1:0 new:2:0 new:3:2 sw:3:5:c par:3:1 q:2 cur\n\
         g1 th:3:6:p\ng2 ret:7\ng3 sw:0:8:c\nend\n",
    )
    .expect("parses")
    .remove(0);
    let expected = program::parse(
        "program 5\ngreenlets 2\n\
         g0 new:1:0 sw:2:5:c par:2:1 cur\n\
         g1 th:2:6:p\ng2 sw:0:8:c\nend\n",
    )
    .expect("parses")
    .remove(0);
    assert_eq!(shrink::without_greenlet(&program, 2), expected);
}

/// An injected disagreement in the traces: a fake "Python" that reports a
/// body ending with a panic as ending with a raise. The real comparison
/// (`disagreements`) runs each program on the Rust driver against it.
fn fake_python(program: &Program) -> Vec<String> {
    rust_driver::run(program)
        .into_iter()
        .map(|line| line.replace(" end panic ", " end raise "))
        .collect()
}

fn fake_references(batch: &[Program]) -> Vec<Vec<String>> {
    batch.iter().map(fake_python).collect()
}

fn fails_against_fake_python(program: &Program) -> bool {
    disagreements(std::slice::from_ref(program), &[fake_python(program)])[0]
}

/// Large generated programs that the fake Python disagrees with.
fn failing_against_fake_python(count: usize) -> Vec<Program> {
    let big: Vec<Program> = generated(5_000)
        .filter(|p| ops(p) >= 25 && p.greenlets() >= 3 && fails_against_fake_python(p))
        .take(count)
        .collect();
    assert_eq!(big.len(), count, "the generator makes such programs");
    big
}

#[test]
fn the_shrinker_reduces_an_injected_trace_difference_to_a_few_lines() {
    rust_driver::quiet_tag_panics();
    for program in failing_against_fake_python(4) {
        let small = shrink::shrink(&program, |batch| {
            disagreements(batch, &fake_references(batch))
        });
        assert_locally_minimal(&program, &small, fails_against_fake_python);
        // The smallest such program makes a greenlet, switches to it and
        // panics there (three operations); a local minimum may also start
        // it less directly, through a child that dies unstarted.
        assert!(ops(&small) <= 4, "from\n{program}\nto\n{small}");
        assert!(small.greenlets() <= 2, "from\n{program}\nto\n{small}");
    }
}

/// The program block right after `=== program SEED disagrees` in a report.
fn shown_programs(report: &str) -> Vec<(u64, Program)> {
    let mut shown = Vec::new();
    let mut lines = report.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("=== program ") else {
            continue;
        };
        let seed = rest.split(' ').next().unwrap().parse().expect("a seed");
        let how = lines.next().expect("how it was shrunk");
        assert!(how.ends_with("(put it in a file for GREENLET_DIFF_REPLAY):"));
        let mut block = String::new();
        for line in lines.by_ref() {
            block.push_str(line);
            block.push('\n');
            if line == "end" {
                break;
            }
        }
        let mut parsed = program::parse(&block).expect("the shown program parses");
        assert_eq!(parsed.len(), 1);
        shown.push((seed, parsed.remove(0)));
    }
    shown
}

#[test]
fn a_failure_report_shows_the_seed_and_a_shrunk_program_that_replays() {
    rust_driver::quiet_tag_panics();
    let big = failing_against_fake_python(3);
    let expected: Vec<Vec<String>> = big.iter().map(fake_python).collect();
    let failures: Vec<Failure<'_>> = big
        .iter()
        .zip(&expected)
        .map(|(program, expected)| Failure {
            origin: "injected".to_owned(),
            program,
            expected,
        })
        .collect();

    let mut reference = fake_references;
    let report = failure_report(&failures, Some(&mut reference));
    let shown = shown_programs(&report);
    assert!(!shown.is_empty(), "{report}");
    for (seed, small) in &shown {
        let program = big
            .iter()
            .find(|p| p.seed == *seed)
            .expect("a failing seed");
        assert!(report.contains(&format!("=== program {seed} disagrees (injected) ===")));
        assert_locally_minimal(program, small, fails_against_fake_python);
        assert!(ops(small) < ops(program));
    }
    // The traces are shown side by side, the differing lines marked.
    assert!(report.contains(" end raise "), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with('!') && l.contains(" end panic "))
    );

    // Without Python nothing is shrunk: the program is shown whole.
    let report = failure_report(&failures[..1], None);
    assert!(report.contains("not shrunk (no Python here)"));
    assert_eq!(shown_programs(&report), vec![(big[0].seed, big[0].clone())]);
}
