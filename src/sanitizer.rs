//! Hooks that tell dynamic-analysis tools about stack switches.
//!
//! - Feature `asan`: AddressSanitizer's fiber annotations. Before a switch,
//!   `__sanitizer_start_switch_fiber` names the stack we are going to; after
//!   it, `__sanitizer_finish_switch_fiber` confirms we arrived and reports the
//!   stack we came from. Without them ASan mistakes a switch for a wild stack
//!   pointer and reports false stack-buffer overflows. Build with
//!   `RUSTFLAGS=-Zsanitizer=address` (nightly) and `--features asan`.
//! - Feature `valgrind`: stacks are registered with `VALGRIND_STACK_REGISTER`
//!   (see `stack/mmap.rs`), so memcheck follows switches without its
//!   "client switching stacks?" warning.
//!
//! Without the features every hook here is an empty inline function and the
//! `Fiber` record is zero-sized: the switch pays nothing.
#![allow(unsafe_code)]

#[cfg(feature = "asan")]
mod imp {
    use core::cell::Cell;
    use core::ffi::c_void;
    use core::ptr;

    unsafe extern "C" {
        fn __asan_unpoison_memory_region(addr: *const c_void, size: usize);
        fn __sanitizer_start_switch_fiber(
            fake_stack_save: *mut *mut c_void,
            bottom: *const c_void,
            size: usize,
        );
        fn __sanitizer_finish_switch_fiber(
            fake_stack_save: *mut c_void,
            bottom_old: *mut *const c_void,
            size_old: *mut usize,
        );
    }

    /// Clears ASan's poisoning of a stack that a new greenlet is about to
    /// use. Frames that never returned (a finished greenlet's last frames, a
    /// killed one's) leave their redzones poisoned in the shadow memory; the
    /// next greenlet on the same (pooled) stack would trip over them.
    pub(crate) fn unpoison_stack(bottom: usize, len: usize) {
        // SAFETY: only ASan's shadow memory changes; the range is a stack
        // no live frame uses (it was just taken from the pool or mapped).
        unsafe { __asan_unpoison_memory_region(bottom as *const c_void, len) };
    }

    /// What ASan needs to know about one greenlet's stack.
    pub(crate) struct Fiber {
        fake_stack: Cell<*mut c_void>,
        bottom: Cell<usize>,
        size: Cell<usize>,
    }

    impl Fiber {
        pub(crate) fn new(bottom: usize, size: usize) -> Fiber {
            Fiber {
                fake_stack: Cell::new(ptr::null_mut()),
                bottom: Cell::new(bottom),
                size: Cell::new(size),
            }
        }

        /// A fiber on the same stack with a fake stack of its own: what a
        /// probe started under a suspended greenlet runs as, so that the
        /// greenlet's own fake stack is left alone.
        pub(crate) fn same_stack(&self) -> Fiber {
            Fiber::new(self.bottom.get(), self.size.get())
        }

        /// Announces a switch from `self` to `to`. A greenlet that will never
        /// run again passes no save slot, which lets ASan free its fake stack.
        pub(crate) fn start_switch(&self, to: &Fiber, leaving_for_good: bool) {
            let save = if leaving_for_good {
                ptr::null_mut()
            } else {
                self.fake_stack.as_ptr()
            };
            // SAFETY: `to` describes the stack about to be resumed; `save` is
            // null or a slot that outlives the suspension.
            unsafe {
                __sanitizer_start_switch_fiber(
                    save,
                    to.bottom.get() as *const c_void,
                    to.size.get(),
                )
            };
        }

        /// Confirms arrival on `self`'s stack and records the bounds of the
        /// stack we came from in `from` (how main's bounds become known).
        pub(crate) fn finish_switch(&self, from: Option<&Fiber>) {
            let mut bottom: *const c_void = ptr::null();
            let mut size = 0usize;
            // SAFETY: the slot holds what `start_switch` saved for this
            // greenlet (or null on its first run); the out-pointers are ours.
            unsafe {
                __sanitizer_finish_switch_fiber(self.fake_stack.get(), &mut bottom, &mut size)
            };
            if let Some(from) = from
                && !bottom.is_null()
            {
                from.bottom.set(bottom as usize);
                from.size.set(size);
            }
        }
    }
}

#[cfg(not(feature = "asan"))]
mod imp {
    #[inline(always)]
    pub(crate) fn unpoison_stack(_bottom: usize, _len: usize) {}

    /// Zero-sized without the `asan` feature.
    pub(crate) struct Fiber;

    impl Fiber {
        #[inline(always)]
        pub(crate) fn new(_bottom: usize, _size: usize) -> Fiber {
            Fiber
        }

        #[cfg(feature = "std")]
        #[inline(always)]
        pub(crate) fn same_stack(&self) -> Fiber {
            Fiber
        }

        #[inline(always)]
        pub(crate) fn start_switch(&self, _to: &Fiber, _leaving_for_good: bool) {}

        #[inline(always)]
        pub(crate) fn finish_switch(&self, _from: Option<&Fiber>) {}
    }
}

pub(crate) use imp::{Fiber, unpoison_stack};

#[cfg(feature = "valgrind")]
mod valgrind {
    unsafe extern "C" {
        fn greenlet_valgrind_stack_register(start: usize, end: usize) -> u32;
        fn greenlet_valgrind_stack_deregister(id: u32);
    }

    /// Registers `start..end` as a stack with valgrind; a no-op outside it.
    pub(crate) fn register_stack(start: usize, end: usize) -> u32 {
        // SAFETY: a client request with no memory effect on the program.
        unsafe { greenlet_valgrind_stack_register(start, end) }
    }

    /// Forgets a stack registered by `register_stack`.
    pub(crate) fn deregister_stack(id: u32) {
        // SAFETY: as above.
        unsafe { greenlet_valgrind_stack_deregister(id) }
    }
}

#[cfg(all(feature = "std", not(feature = "valgrind")))]
mod valgrind {
    #[inline(always)]
    pub(crate) fn register_stack(_start: usize, _end: usize) -> u32 {
        0
    }

    #[inline(always)]
    pub(crate) fn deregister_stack(_id: u32) {}
}

#[cfg(feature = "std")]
pub(crate) use valgrind::{deregister_stack, register_stack};
