//! The tour's demos: their interleavings are deterministic.

mod util;

use greenlet_hub::demos;
use util::Log;

#[test]
fn three_counters_interleave_round_robin() {
    let log = Log::new();
    let l = log.clone();
    demos::counters(move |line| l.push(line)).unwrap();
    let lines = log.take();
    assert_eq!(lines.len(), 15);
    for (i, line) in lines.iter().enumerate() {
        let name = ["A", "B", "C"][i % 3];
        assert!(line.starts_with(name), "{line}");
        assert!(line.ends_with(&format!("counts {}", i / 3)), "{line}");
    }
}

#[test]
fn semaphore_workers_alternate() {
    let log = Log::new();
    let l = log.clone();
    demos::semaphore(move |line| l.push(line)).unwrap();
    let expected: Vec<String> = (0..5)
        .flat_map(|_| [1, 2])
        .flat_map(|n| {
            [
                format!("worker {n} acquired"),
                format!("worker {n} released"),
            ]
        })
        .collect();
    assert_eq!(log.take(), expected);
}
