//! The tour's crawler: three GETs started together, all three under way
//! before the first one is answered (so the total is about the slowest, not
//! the sum; the tour prints the times).

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
    // The three GETs were under way at once: each request reached the
    // server before it sent its first answer (run one after another, the
    // first answer would come after one request).
    assert_eq!(crawl.arrived_before_first_answer, 3, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("started")).count(), 3);
    assert_eq!(lines.iter().filter(|l| l.contains("finished")).count(), 3);
    assert!(lines.last().unwrap().contains("3 pages in"), "{lines:#?}");
}
