//! The tour's crawler: three GETs started together, all three under way
//! before the first one finishes (so the total is about the slowest, not the
//! sum; the tour prints the times).

use std::cell::RefCell;
use std::rc::Rc;

#[test]
fn three_gets_take_about_the_slowest() {
    let lines = Rc::new(RefCell::new(Vec::new()));
    let out = lines.clone();
    let crawl = greenlet_hub::crawler::crawler(move |line| out.borrow_mut().push(line)).unwrap();
    let lines = lines.borrow();
    // No upper bound on time (a loaded machine may be slow); concurrency is
    // shown by the order of events below. The lower bound is the slowest
    // route's delay, which no schedule can beat.
    assert!(crawl.total >= std::time::Duration::from_millis(300));
    assert_eq!(crawl.finished, ["/fast", "/medium", "/slow"]);
    // The three starts come before any finish.
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("started"))
        .collect();
    let first_finish = lines.iter().position(|l| l.contains("finished")).unwrap();
    assert_eq!(starts.len(), 3);
    assert!(starts.iter().all(|&s| s < first_finish), "{lines:#?}");
    assert!(lines.last().unwrap().contains("3 pages in"), "{lines:#?}");
}
