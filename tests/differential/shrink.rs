//! A small shrinker: removes greenlets and operations from a failing program
//! for as long as the two drivers still disagree on it.
//!
//! Each round builds every one-step smaller candidate (remove a greenlet,
//! with the operations that name it; remove one operation), has both
//! drivers run the whole batch (one Python process per round), and keeps the
//! first candidate that still fails. It stops at a program none of whose
//! one-step reductions fails: a local minimum, usually a few lines long.
//! Every round removes at least one greenlet or operation, so it asks for
//! at most one batch per greenlet and operation of the program it starts
//! from. `self_test.rs` checks all this with injected disagreements.

use crate::program::{Op, Program};

/// `op` with its greenlet indices mapped by `f`; `None` if `f` drops one.
fn map_greenlets(op: Op, f: impl Fn(usize) -> Option<usize>) -> Option<Op> {
    Some(match op {
        Op::New { k, parent } => Op::New {
            k: f(k)?,
            parent: f(parent)?,
        },
        Op::Switch { k, value, handler } => Op::Switch {
            k: f(k)?,
            value,
            handler,
        },
        Op::Throw { k, tag, handler } => Op::Throw {
            k: f(k)?,
            tag,
            handler,
        },
        Op::ThrowExit { k, handler } => Op::ThrowExit { k: f(k)?, handler },
        Op::Query { k } => Op::Query { k: f(k)? },
        Op::Drop { k } => Op::Drop { k: f(k)? },
        Op::SetParent { k, parent } => Op::SetParent {
            k: f(k)?,
            parent: f(parent)?,
        },
        other => other,
    })
}

/// `program` without greenlet `gone` (≥ 1): its script and every operation
/// naming it are removed, and the greenlets after it renumbered.
pub fn without_greenlet(program: &Program, gone: usize) -> Program {
    let renumber = |k: usize| match k.cmp(&gone) {
        std::cmp::Ordering::Less => Some(k),
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(k - 1),
    };
    let scripts = program
        .scripts
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != gone)
        .map(|(_, script)| {
            script
                .iter()
                .filter_map(|&op| map_greenlets(op, renumber))
                .collect()
        })
        .collect();
    Program {
        seed: program.seed,
        scripts,
    }
}

/// Every program one step smaller than `program`, biggest steps first.
pub fn candidates(program: &Program) -> Vec<Program> {
    let mut out = Vec::new();
    for gone in (1..program.scripts.len()).rev() {
        out.push(without_greenlet(program, gone));
    }
    for (k, script) in program.scripts.iter().enumerate() {
        for i in 0..script.len() {
            let mut smaller = program.clone();
            smaller.scripts[k].remove(i);
            out.push(smaller);
        }
    }
    out
}

/// Shrinks `program`, a failing one. `still_fails` runs a batch and says
/// which of its programs fail.
pub fn shrink(program: &Program, mut still_fails: impl FnMut(&[Program]) -> Vec<bool>) -> Program {
    let mut best = program.clone();
    loop {
        let batch = candidates(&best);
        if batch.is_empty() {
            return best;
        }
        let verdicts = still_fails(&batch);
        match batch.into_iter().zip(verdicts).find(|(_, fails)| *fails) {
            Some((smaller, _)) => best = smaller,
            None => return best,
        }
    }
}
