//! The generator built from greenlets (`examples/support/generator.rs`, the
//! one the tour uses): plain, nested, recursive, and abandoned half-way.

#[path = "../examples/support/generator.rs"]
mod generator;

use generator::{Generator, permutations};
use std::cell::Cell;
use std::rc::Rc;

#[test]
fn a_generator_yields_in_order_and_ends() {
    let squares = Generator::new(|emit| {
        for i in 1..=5u64 {
            emit(i * i)?;
        }
        Ok(())
    });
    assert_eq!(squares.collect::<Vec<_>>(), [1, 4, 9, 16, 25]);
}

#[test]
fn recursive_generators_nest_through_the_parent_tree() {
    let all: Vec<Vec<u32>> = permutations(vec![1, 2, 3, 4]).collect();
    assert_eq!(all.len(), 24);
    assert_eq!(all[0], [1, 2, 3, 4]);
    assert_eq!(all[23], [4, 3, 2, 1]);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, all, "lexicographic order, no repeats");
}

#[test]
fn an_abandoned_generator_runs_its_cleanup() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let cleaned = Rc::new(Cell::new(false));
    let flag = Flag(cleaned.clone());
    let mut naturals = Generator::new(move |emit| {
        let _flag = flag;
        let mut n = 0u64;
        loop {
            emit(n)?;
            n += 1;
        }
    });
    assert_eq!(naturals.next(), Some(0));
    assert_eq!(naturals.next(), Some(1));
    assert!(!cleaned.get());
    drop(naturals);
    assert!(cleaned.get(), "dropping the generator made its body exit");
}
