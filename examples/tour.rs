//! The tour: the programs of the greenlet and gevent tutorial this project
//! grew from, replayed in Rust. `cargo run --release --example tour`.
//!
//! Each section prints what it shows; the comments give the Python original's
//! output for comparison.

use greenlet::{Event, Greenlet, SwitchError, getcurrent, settrace};

#[path = "support/generator.rs"]
mod generator;
use generator::{Generator, permutations};
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

/// A slot for a greenlet that a body refers to before it exists (the
/// Python programs use module globals for this). Cleared at the end of each
/// section so the greenlets that refer to each other can be freed.
type Slot = Rc<RefCell<Option<Greenlet>>>;

fn slot() -> Slot {
    Rc::new(RefCell::new(None))
}

fn get(slot: &Slot) -> Greenlet {
    slot.borrow()
        .clone()
        .expect("slot filled before the first switch")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    two_greenlets()?;
    values_both_ways()?;
    dead_state()?;
    tracing();
    exit_on_drop()?;
    generators();
    gevent()?;
    Ok(())
}

/// The gevent part, on the hub (`greenlet-hub`): three tasks that yield to
/// each other, then two tasks sharing a `Semaphore(1)` with different sleeps
/// (scaled down to milliseconds so the tour stays quick).
fn gevent() -> Result<(), greenlet_hub::Error> {
    println!("\n== 7. gevent: three tasks, each printing its identity and a counter five times");
    greenlet_hub::demos::counters(|line| println!("{line}"))?;
    println!("\n== 8. gevent: a Semaphore(1) shared by two tasks with different sleeps");
    greenlet_hub::demos::semaphore(|line| println!("{line}"))?;
    println!("\n== 9. gevent: a crawler, three green HTTP GETs started together");
    greenlet_hub::crawler::crawler(|line| println!("{line}"))?;
    Ok(())
}

/// gr1 prints 12, switches to gr2 which prints 56 and switches back; gr1
/// prints 34 and ends, returning to main. gr2's 78 is never printed.
fn two_greenlets() -> Result<(), SwitchError> {
    println!("== 1. two greenlets (expect 12 56 34, never 78)");
    let (gr1, gr2) = (slot(), slot());
    let (to2, to1) = (gr2.clone(), gr1.clone());
    *gr1.borrow_mut() = Some(Greenlet::new(move |()| {
        println!("12");
        get(&to2).switch::<(), ()>(())?;
        println!("34");
        Ok(())
    }));
    *gr2.borrow_mut() = Some(Greenlet::new(move |()| {
        println!("56");
        get(&to1).switch::<(), ()>(())?;
        println!("78");
        Ok(())
    }));
    get(&gr1).switch::<(), ()>(())?;
    println!("gr2 is still suspended: active={}", get(&gr2).is_active());
    gr1.borrow_mut().take();
    gr2.borrow_mut().take(); // the last handle: gr2 exits, 78 stays unprinted
    Ok(())
}

/// gr1 starts with ("hello", " world") and switches their concatenation to
/// gr2, which prints it and switches 10 back; gr1 prints 10 and returns;
/// main prints what its switch returned: gr1's return value.
fn values_both_ways() -> Result<(), SwitchError> {
    println!("\n== 2. values both ways");
    let (gr1, gr2) = (slot(), slot());
    let (to2, to1) = (gr2.clone(), gr1.clone());
    *gr1.borrow_mut() = Some(Greenlet::new(move |(x, y): (&str, &str)| {
        let z: i32 = get(&to2).switch(format!("{x}{y}"))?;
        println!("test1 {z}");
        Ok(())
    }));
    *gr2.borrow_mut() = Some(Greenlet::new(move |u: String| {
        println!("test2 {u}");
        get(&to1).switch::<i32, ()>(10)?;
        Ok(())
    }));
    let returned: () = get(&gr1).switch(("hello", " world"))?;
    println!("main got {returned:?} (Python prints None)");
    gr1.borrow_mut().take();
    gr2.borrow_mut().take();
    Ok(())
}

/// Only a finished body makes a greenlet dead; switching into a dead one
/// goes to its parent, here main itself, so the 10 comes straight back.
fn dead_state() -> Result<(), SwitchError> {
    println!("\n== 3. dead greenlets");
    let (gr1, gr2) = (slot(), slot());
    let (to2, to1) = (gr2.clone(), gr1.clone());
    *gr1.borrow_mut() = Some(Greenlet::new(move |()| {
        get(&to2).switch::<i32, ()>(1)?;
        println!("test1 finished");
        Ok(())
    }));
    *gr2.borrow_mut() = Some(Greenlet::new(move |x: i32| {
        println!("test2 first {x}");
        let z: () = get(&to1).switch(())?;
        println!("test2 back {z:?}");
        Ok(())
    }));
    let (g1, g2) = (get(&gr1), get(&gr2));
    g1.switch::<(), ()>(())?;
    println!(
        "gr1 is dead?: {}, gr2 is dead?: {}",
        g1.is_dead(),
        g2.is_dead()
    );
    g2.switch::<(), ()>(())?;
    println!(
        "gr1 is dead?: {}, gr2 is dead?: {}",
        g1.is_dead(),
        g2.is_dead()
    );
    println!("{}", g2.switch::<i32, i32>(10)?);
    gr1.borrow_mut().take();
    gr2.borrow_mut().take();
    Ok(())
}

/// A tracer sees every switch and throw: main -> g1, g1 -> g2, and the
/// panic in g2 travelling to main as a throw. The panic arrives in main.
fn tracing() {
    println!("\n== 4. tracing");
    let main = getcurrent();
    let g2 = Greenlet::new(|()| -> Result<(), SwitchError> { panic!("excep in coroutine") });
    let to2 = g2.clone();
    let g1 = Greenlet::new(move |()| to2.switch::<(), ()>(()));
    println!(
        "main id {}, gr1 id {}, gr2 id {}",
        main.id(),
        g1.id(),
        g2.id()
    );
    let old = settrace(Some(Rc::new(
        |event: Event, origin: &Greenlet, target: &Greenlet| {
            println!("{} from {} to {}", event.as_str(), origin.id(), target.id());
        },
    )));
    // The default hook would print the panic too; the tour prints it itself.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| g1.switch::<(), ()>(())));
    panic::set_hook(hook);
    settrace(old);
    match outcome {
        Err(payload) => println!(
            "Exception : {}",
            payload.downcast_ref::<&str>().unwrap_or(&"?")
        ),
        Ok(r) => println!("no panic arrived: {r:?}"),
    }
}

/// Dropping the last handles of a suspended greenlet raises GreenletExit in
/// it. Code after its switch never runs; a guard's `Drop` does.
fn exit_on_drop() -> Result<(), SwitchError> {
    println!("\n== 5. exit on drop");
    for with_guard in [false, true] {
        let huge: Rc<RefCell<Vec<u64>>> = Rc::default();
        let (gr1, gr2) = (slot(), slot());
        let (to2, to1) = (gr2.clone(), gr1.clone());
        let buffer = huge.clone();
        *gr1.borrow_mut() = Some(Greenlet::new(move |()| get(&to2).switch::<(), ()>(())));
        *gr2.borrow_mut() = Some(Greenlet::new(move |()| {
            buffer.borrow_mut().extend((0..100).map(|x| x * x));
            // With the guard, dropping it (however the body ends) empties
            // the buffer; the line after the switch runs only on resumption.
            let _guard = with_guard.then(|| Clear(buffer.clone()));
            get(&to1).switch::<(), ()>(())?;
            println!("finish switch del huge");
            buffer.borrow_mut().clear();
            Ok(())
        }));
        get(&gr1).switch::<(), ()>(())?;
        gr1.borrow_mut().take();
        gr2.borrow_mut().take();
        let label = if with_guard {
            "with a guard"
        } else {
            "without a guard"
        };
        println!("{label}: length of huge is {}", huge.borrow().len());
    }
    Ok(())
}

struct Clear(Rc<RefCell<Vec<u64>>>);

impl Drop for Clear {
    fn drop(&mut self) {
        println!("guard: finish switch del huge");
        self.0.borrow_mut().clear();
    }
}

fn generators() {
    println!("\n== 6. generators (nested and recursive)");
    let squares = Generator::new(|emit| {
        for i in 1..=5u64 {
            emit(i * i)?;
        }
        Ok(())
    });
    println!("squares: {:?}", squares.collect::<Vec<_>>());
    let perms: Vec<String> = permutations(vec![1, 2, 3])
        .map(|p| p.iter().map(u32::to_string).collect::<Vec<_>>().join(""))
        .collect();
    println!("permutations of 123: {}", perms.join(" "));
}
