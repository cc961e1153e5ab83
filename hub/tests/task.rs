//! `Task`: spawn, join, get, kill, link, joinall, killall, failures.

mod util;

use greenlet::SwitchError;
use greenlet_hub::{
    Error, Event, Failure, Task, joinall, killall, set_error_hook, sleep, spawn, spawn_later,
    try_spawn,
};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{DropFlag, Log, flag, is_set, ms};

#[test]
fn a_task_starts_when_the_spawner_blocks() {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let t = spawn(move || {
        r.set(true);
        Ok(1)
    });
    assert!(!ran.get(), "spawn must not run the task at once");
    assert!(!t.ready());
    assert_eq!(t.get(None).unwrap(), 1);
    assert!(ran.get() && t.ready() && t.successful());
    assert!(t.error().is_none());
}

#[test]
fn join_waits_and_get_moves_the_value_out() {
    let t = spawn(|| {
        sleep(ms(1))?;
        Ok(vec![1, 2, 3])
    });
    t.join(None).unwrap();
    assert!(t.ready());
    assert_eq!(t.get(None).unwrap(), [1, 2, 3]);
    assert!(matches!(t.get(None), Err(Error::ValueTaken)));
    // Still successful: it did return a value.
    assert!(t.successful());
}

#[test]
fn join_with_a_timeout() {
    let never = Event::new();
    let n = never.clone();
    let t = spawn(move || n.wait(None));
    assert!(matches!(t.join(ms(1)), Err(Error::TimedOut)));
    assert!(matches!(t.join(Duration::ZERO), Err(Error::TimedOut)));
    never.set();
    t.join(Duration::from_secs(3600)).unwrap(); // a timeout that never fires
    assert!(t.successful());
}

#[test]
fn a_task_error_reaches_its_joiners() {
    let t: Task<()> = spawn(|| Err(Error::failed(std::io::Error::other("broken pipe"))));
    t.join(None).unwrap();
    assert!(t.ready() && !t.successful());
    match t.get(None) {
        Err(Error::Failed(e)) => assert_eq!(e.to_string(), "broken pipe"),
        other => panic!("{other:?}"),
    }
    // Errors can be read again.
    assert!(matches!(t.get(None), Err(Error::Failed(_))));
    assert!(matches!(t.error(), Some(Error::Failed(_))));
}

#[test]
fn a_panic_reaches_the_joiner_and_the_hook_and_others_go_on() {
    util::quiet_expected_panics();
    let failures = Log::new();
    let f = failures.clone();
    set_error_hook(Some(Rc::new(move |failure: &Failure| f.push(failure))));
    let log = Log::new();
    let l = log.clone();
    let survivor = spawn(move || {
        for i in 0..3 {
            l.push(i);
            sleep(Duration::ZERO)?;
        }
        Ok("survived")
    });
    let bad: Task<()> = spawn(|| {
        sleep(Duration::ZERO)?;
        panic!("expected: boom")
    });
    bad.join(None).unwrap();
    assert!(bad.ready() && !bad.successful());
    assert!(matches!(bad.error(), Some(Error::Panicked(m)) if m == "expected: boom"));
    // get raises the panic again, with its payload.
    let raised = panic::catch_unwind(AssertUnwindSafe(|| bad.get(None))).unwrap_err();
    assert_eq!(raised.downcast_ref::<&str>(), Some(&"expected: boom"));
    // ... and again (with the message) on later gets.
    let again = panic::catch_unwind(AssertUnwindSafe(|| bad.get(None))).unwrap_err();
    assert_eq!(
        again.downcast_ref::<String>().map(String::as_str),
        Some("expected: boom")
    );
    assert_eq!(survivor.get(None).unwrap(), "survived");
    assert_eq!(log.take(), ["0", "1", "2"]);
    assert_eq!(
        failures.take(),
        [format!(
            "task #{} failed with panic: expected: boom",
            bad.id()
        )]
    );
    set_error_hook(None);
}

#[test]
fn kill_a_blocked_task_runs_its_cleanup() {
    let cleaned = flag();
    let c = cleaned.clone();
    let t = spawn(move || {
        let _guard = DropFlag(c);
        sleep(Duration::from_secs(3600))?;
        Ok(())
    });
    sleep(Duration::ZERO).unwrap();
    assert!(!t.ready());
    t.kill(None).unwrap();
    assert!(t.ready() && !t.successful());
    assert!(matches!(t.error(), Some(Error::Killed)));
    assert!(matches!(t.get(None), Err(Error::Killed)));
    assert!(is_set(&cleaned));
}

#[test]
fn kill_before_start_means_it_never_runs() {
    let ran = Rc::new(Cell::new(false));
    let dropped = flag();
    let (r, d) = (ran.clone(), dropped.clone());
    let guard = DropFlag(d);
    let t = spawn(move || {
        drop(guard);
        r.set(true);
        Ok(())
    });
    t.kill(None).unwrap();
    assert!(t.ready());
    assert!(is_set(&dropped), "the unstarted body must be dropped");
    sleep(ms(1)).unwrap();
    assert!(!ran.get());
    assert!(matches!(t.error(), Some(Error::Killed)));
}

#[test]
fn kill_is_idempotent_and_a_no_op_on_finished_tasks() {
    let t = spawn(|| Ok(5));
    t.join(None).unwrap();
    t.kill(None).unwrap();
    t.kill_nowait();
    assert_eq!(t.get(None).unwrap(), 5);

    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let blocked = spawn(move || {
        let r = sleep(Duration::from_secs(3600));
        c.set(c.get() + 1);
        r
    });
    sleep(Duration::ZERO).unwrap();
    blocked.kill_nowait();
    blocked.kill_nowait();
    blocked.kill(None).unwrap();
    blocked.kill(None).unwrap();
    assert_eq!(count.get(), 1, "the kill is delivered once");
}

#[test]
fn a_kill_that_arrives_while_the_task_is_ready_is_raised_at_its_next_block() {
    let log = Log::new();
    let e = Event::new();
    let (l, e2) = (log.clone(), e.clone());
    let t = spawn(move || {
        e2.wait(None)?; // woken by set, then killed before it runs
        l.push("woken normally");
        let r = sleep(Duration::from_secs(3600));
        l.push(format!("then {r:?}"));
        r
    });
    sleep(Duration::ZERO).unwrap();
    e.set();
    t.kill(None).unwrap();
    assert_eq!(log.take(), ["woken normally", "then Err(Exit)"]);
}

#[test]
fn a_task_that_swallows_its_kill_keeps_running() {
    let t = spawn(|| {
        let first = sleep(Duration::from_secs(3600));
        assert!(matches!(first, Err(Error::Exit)));
        sleep(ms(1))?;
        Ok("ignored the kill")
    });
    sleep(Duration::ZERO).unwrap();
    t.kill(None).unwrap();
    assert_eq!(t.get(None).unwrap(), "ignored the kill");
}

#[test]
fn a_task_killing_itself_gets_exit() {
    let slot: Rc<RefCell<Option<Task<()>>>> = Rc::default();
    let s = slot.clone();
    let t = spawn(move || {
        let me = s.borrow().clone().unwrap();
        me.kill(None)?;
        unreachable!("kill of the current task returns Exit");
    });
    *slot.borrow_mut() = Some(t.clone());
    t.join(None).unwrap();
    assert!(matches!(t.error(), Some(Error::Killed)));
    slot.borrow_mut().take();
}

#[test]
fn exit_propagates_through_bodies_written_against_the_core_api() {
    // A helper returning the core's error type still carries the kill.
    fn helper() -> Result<(), SwitchError> {
        sleep(Duration::from_secs(3600))?;
        Ok(())
    }
    let t = spawn(|| {
        helper()?;
        Ok(())
    });
    sleep(Duration::ZERO).unwrap();
    t.kill(None).unwrap();
    assert!(matches!(t.error(), Some(Error::Killed)));
}

#[test]
fn spawn_later_starts_after_its_delay_and_can_be_killed_before() {
    let start = Instant::now();
    let t = spawn_later(ms(3), move || Ok(start.elapsed()));
    let early = spawn(|| Ok(()));
    early.join(None).unwrap();
    assert!(!t.ready());
    assert!(t.get(None).unwrap() >= ms(3));

    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let never = spawn_later(ms(1), move || {
        r.set(true);
        Ok(())
    });
    never.kill(None).unwrap();
    sleep(ms(3)).unwrap();
    assert!(!ran.get());
}

#[test]
fn links_run_in_order_after_completion() {
    let log = Log::new();
    let t = spawn(|| Ok(3));
    for name in ["first", "second"] {
        let log = log.clone();
        t.link(move |t| log.push(format!("{name} sees ready={}", t.ready())));
    }
    t.join(None).unwrap();
    sleep(Duration::ZERO).unwrap();
    // Linking a finished task schedules the callback at once.
    let l = log.clone();
    t.link(move |_| l.push("late"));
    sleep(Duration::ZERO).unwrap();
    assert_eq!(
        log.take(),
        ["first sees ready=true", "second sees ready=true", "late"]
    );
}

#[test]
fn a_panicking_link_is_reported_and_the_hub_goes_on() {
    util::quiet_expected_panics();
    let failures = Log::new();
    let f = failures.clone();
    set_error_hook(Some(Rc::new(move |failure: &Failure| f.push(failure))));
    let t = spawn(|| Ok(()));
    t.link(|_| panic!("expected: in a link"));
    t.join(None).unwrap();
    sleep(ms(1)).unwrap();
    assert_eq!(
        failures.take(),
        ["a hub callback failed with panic: expected: in a link"]
    );
    set_error_hook(None);
}

#[test]
fn joinall_with_count_and_timeout() {
    let gate = Event::new();
    let tasks: Vec<Task<u32>> = (0..4)
        .map(|i| {
            let gate = gate.clone();
            spawn(move || {
                if i >= 2 {
                    gate.wait(None)?;
                }
                Ok(i)
            })
        })
        .collect();
    let first_two = joinall(&tasks, None, 2).unwrap();
    assert_eq!(first_two, [0, 1]);
    // The others wait on the gate: a timeout returns what is ready.
    let partial = joinall(&tasks, ms(1), None).unwrap();
    assert_eq!(partial, [0, 1]);
    gate.set();
    let all = joinall(&tasks, None, None).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(tasks.iter().map(|t| t.get(None).unwrap()).sum::<u32>(), 6);
}

#[test]
fn killall_kills_every_task() {
    let cleaned = Rc::new(Cell::new(0));
    let never = Event::new();
    let tasks: Vec<Task<()>> = (0..5)
        .map(|_| {
            let (c, n) = (cleaned.clone(), never.clone());
            spawn(move || {
                let r = n.wait(None);
                c.set(c.get() + 1);
                r
            })
        })
        .collect();
    sleep(Duration::ZERO).unwrap();
    killall(&tasks, None).unwrap();
    assert_eq!(cleaned.get(), 5);
    assert!(
        tasks
            .iter()
            .all(|t| matches!(t.error(), Some(Error::Killed)))
    );
    assert_eq!(
        never.waiter_count(),
        0,
        "killed waiters left the event's list"
    );
}

#[test]
fn try_spawn_and_debug() {
    let t = try_spawn(|| Ok(())).unwrap();
    assert!(format!("{t:?}").contains("unstarted"));
    t.join(None).unwrap();
    assert!(format!("{t:?}").contains("successful"));
}

#[test]
fn many_tasks_spawned_and_joined() {
    let tasks: Vec<Task<usize>> = (0..2_000).map(|i| spawn(move || Ok(i))).collect();
    let total: usize = tasks.iter().map(|t| t.get(None).unwrap()).sum();
    assert_eq!(total, (0..2_000).sum());
    assert_eq!(greenlet_hub::stats().tasks, 0);
}

#[test]
fn killall_including_the_current_task() {
    let never = Event::new();
    let n = never.clone();
    let other = spawn(move || n.wait(None));
    let slot: Rc<RefCell<Vec<Task<()>>>> = Rc::default();
    let s = slot.clone();
    let killer = spawn(move || {
        let all = s.borrow().clone();
        killall(&all, None)?;
        unreachable!("the killer is among them");
    });
    *slot.borrow_mut() = vec![other.clone(), killer.clone()];
    killer.join(None).unwrap();
    assert!(matches!(killer.error(), Some(Error::Killed)));
    assert!(matches!(other.error(), Some(Error::Killed)));
    slot.borrow_mut().clear();
}
