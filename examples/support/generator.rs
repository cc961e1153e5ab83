//! A generator (an `Iterator`) built from greenlets, shared by the tour and
//! `tests/generator.rs`: each `next` switches into the body, which switches
//! each item back to whoever asked. Abandoning a generator drops its
//! greenlet, which makes the body's pending `emit` return
//! `Err(SwitchError::Exit)`: `?` carries it out and the body's destructors
//! run.

use greenlet::{Greenlet, SwitchError, getcurrent};
use std::marker::PhantomData;

/// A generator built from greenlets: each `next` switches into the body,
/// which switches each item back to whoever asked.
pub struct Generator<T: 'static> {
    greenlet: Greenlet,
    _items: PhantomData<T>,
}

impl<T: 'static> Generator<T> {
    pub fn new(
        body: impl FnOnce(&dyn Fn(T) -> Result<(), SwitchError>) -> Result<(), SwitchError> + 'static,
    ) -> Self {
        let greenlet = Greenlet::new(move |()| {
            let emit = |item: T| -> Result<(), SwitchError> {
                let asker = greenlet::parent().expect("a generator has a parent");
                asker.switch::<Option<T>, ()>(Some(item))
            };
            body(&emit)?;
            Ok(None::<T>)
        });
        Generator {
            greenlet,
            _items: PhantomData,
        }
    }
}

impl<T: 'static> Iterator for Generator<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.greenlet.is_dead() {
            return None;
        }
        // Items go to whoever asks now: main, or an outer generator.
        self.greenlet.set_parent(&getcurrent()).expect("no cycle");
        self.greenlet
            .switch::<(), Option<T>>(())
            .expect("generator body failed")
    }
}

/// A recursive generator: the permutations of `items`, in lexicographic
/// order when `items` is sorted. Each level is a generator whose parent is
/// the level above, so the items climb the parent tree one switch at a time.
pub fn permutations(items: Vec<u32>) -> Generator<Vec<u32>> {
    Generator::new(move |emit| {
        if items.len() <= 1 {
            return emit(items);
        }
        for (i, &first) in items.iter().enumerate() {
            let mut rest = items.clone();
            rest.remove(i);
            for mut tail in permutations(rest) {
                tail.insert(0, first);
                emit(tail)?;
            }
        }
        Ok(())
    })
}
