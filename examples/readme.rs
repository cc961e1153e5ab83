//! The example at the top of the README, kept here so that `ci/test` runs it
//! (`cargo run --example readme`).

use greenlet::{Greenlet, SwitchError};

fn main() -> Result<(), SwitchError> {
    let g = Greenlet::new(|greeting: &str| {
        // To the parent (main) and back: the value crosses typed.
        let name: &str = greenlet::parent().unwrap().switch(greeting.len())?;
        Ok(format!("{greeting}, {name}")) // the return value goes to the parent
    });
    assert_eq!(g.switch::<&str, usize>("hello")?, 5);
    assert_eq!(g.switch::<&str, String>("world")?, "hello, world");
    assert!(g.is_dead());
    println!("readme example: ok");
    Ok(())
}
