//! Three green HTTP GETs against a local server whose pages answer after
//! 300, 100 and 200 ms: they finish in about 300 ms, not 600.
//!
//! ```text
//! cargo run -p greenlet-hub --example crawler
//! ```

fn main() -> Result<(), greenlet_hub::Error> {
    greenlet_hub::crawler::crawler(|line| println!("{line}"))?;
    Ok(())
}
