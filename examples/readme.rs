//! The README's two examples, kept here so that `ci/test` runs them
//! (`cargo run --example readme`).

use greenlet::Greenlet;
use greenlet_hub::{sleep, spawn};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    core()?;
    hub()?;
    println!("readme examples: ok");
    Ok(())
}

fn core() -> Result<(), greenlet::SwitchError> {
    let g = Greenlet::new(|greeting: &str| {
        // To the parent (main) and back: the value crosses typed.
        let name: &str = greenlet::parent().unwrap().switch(greeting.len())?;
        Ok(format!("{greeting}, {name}")) // the return value goes to the parent
    });
    assert_eq!(g.switch::<&str, usize>("hello")?, 5);
    assert_eq!(g.switch::<&str, String>("world")?, "hello, world");
    assert!(g.is_dead());
    Ok(())
}

fn hub() -> Result<(), greenlet_hub::Error> {
    let a = spawn(|| {
        sleep(Duration::from_millis(20))?;
        Ok("a")
    });
    let b = spawn(|| {
        sleep(Duration::from_millis(10))?;
        Ok("b")
    });
    assert_eq!((a.get(None)?, b.get(None)?), ("a", "b")); // both slept at once
    Ok(())
}
