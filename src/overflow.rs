//! Reports a greenlet stack overflow instead of letting it corrupt memory.
//!
//! A greenlet that runs past the bottom of its stack touches the guard page
//! and the kernel raises SIGSEGV (or SIGBUS). Our handler runs on an
//! alternate signal stack, checks whether the fault address is inside the
//! guard of the greenlet running on this thread, and if so prints which
//! greenlet overflowed, its stack size and how to ask for more, then aborts.
//! Any other fault goes on to the handler that was installed before ours
//! (for instance Rust's own, which reports thread stack overflows).
//!
//! EDITORS, BEWARE: everything reachable from `handle_fault` runs in a
//! signal handler. It must stay async-signal-safe: no allocation, no lock,
//! no `std::io`, no formatting machinery; only `write(2)` of a buffer on the
//! stack and `abort(3)`.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr;
use std::sync::Once;

/// The actions that were installed for SIGSEGV and SIGBUS before ours.
/// Written once, before our handler is installed; only read afterwards.
struct Previous(UnsafeCell<[MaybeUninit<libc::sigaction>; 2]>);

// SAFETY: written only inside `Once::call_once` before any handler that
// reads it is installed; read-only from then on.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new([
    MaybeUninit::uninit(),
    MaybeUninit::uninit(),
]));
static INSTALL: Once = Once::new();

const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// Installs the handler (once per process) and makes sure this thread has an
/// alternate signal stack (once per thread).
pub(crate) fn ensure_installed() {
    if cfg!(miri) {
        // Miri has no signals; it reports out-of-bounds accesses itself.
        return;
    }
    INSTALL.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: an all-zero sigaction is a valid value to fill in.
            let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
            action.sa_sigaction = handle_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `sa_mask` is a valid sigset to initialise.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: we are inside `call_once`: nothing reads PREVIOUS yet,
            // and the slot is written before our handler can run.
            let previous = unsafe { (*PREVIOUS.0.get())[i].as_mut_ptr() };
            // SAFETY: valid action; `previous` is writable.
            unsafe { libc::sigaction(sig, &action, previous) };
        }
    });
    let _ = ALTERNATE_STACK.try_with(|_| ());
}

/// A thread's alternate signal stack, if we had to make one (threads made by
/// Rust's std usually have one already).
struct AlternateStack {
    mapping: Option<memmap2::MmapMut>,
}

std::thread_local! {
    static ALTERNATE_STACK: AlternateStack = AlternateStack::ensure();
}

impl AlternateStack {
    fn ensure() -> AlternateStack {
        let mut old = MaybeUninit::<libc::stack_t>::uninit();
        // SAFETY: querying only; `old` is writable.
        let rc = unsafe { libc::sigaltstack(ptr::null(), old.as_mut_ptr()) };
        // SAFETY: sigaltstack filled `old` when it returned 0.
        if rc != 0 || unsafe { old.assume_init() }.ss_flags & libc::SS_DISABLE == 0 {
            return AlternateStack { mapping: None };
        }
        // SAFETY: getauxval has no preconditions.
        let minimum = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        let size = minimum.max(libc::SIGSTKSZ).max(64 * 1024);
        let Ok(mut mapping) = memmap2::MmapMut::map_anon(size) else {
            return AlternateStack { mapping: None };
        };
        let stack = libc::stack_t {
            ss_sp: mapping.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: `stack` describes a mapping we keep until this thread's
        // destructor disables it.
        if unsafe { libc::sigaltstack(&stack, ptr::null_mut()) } != 0 {
            return AlternateStack { mapping: None };
        }
        AlternateStack {
            mapping: Some(mapping),
        }
    }
}

impl Drop for AlternateStack {
    fn drop(&mut self) {
        if self.mapping.is_some() {
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling before the mapping is unmapped below.
            unsafe { libc::sigaltstack(&disable, ptr::null_mut()) };
        }
    }
}

/// The signal handler. Async-signal-safe (see the module docs).
extern "C" fn handle_fault(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    if let Some((guard_start, guard_end, size, id)) = crate::greenlet::running_guard()
        && (guard_start..guard_end).contains(&address)
    {
        report_overflow(id, size, address);
        // SAFETY: abort is async-signal-safe.
        unsafe { libc::abort() };
    }
    let index = if sig == libc::SIGSEGV { 0 } else { 1 };
    // SAFETY: written before our handler was installed (see `Previous`).
    let previous = unsafe { (*PREVIOUS.0.get())[index].assume_init_ref() };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default and return: the faulting instruction runs
        // again and the kernel applies the default action (a crash).
        // SAFETY: an all-zero sigaction with SIG_DFL is valid.
        let mut default: libc::sigaction = unsafe { core::mem::zeroed() };
        default.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid action for a valid signal.
        unsafe { libc::sigaction(sig, &default, ptr::null_mut()) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed as a three-argument
        // handler, as SA_SIGINFO says.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(handler) };
        f(sig, info, context);
    } else {
        // SAFETY: without SA_SIGINFO the handler takes the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(handler) };
        f(sig);
    }
}

/// Writes the overflow report to stderr with `write(2)` only.
fn report_overflow(id: u64, size: usize, address: usize) {
    let mut buffer = Buffer {
        bytes: [0; 512],
        len: 0,
    };
    buffer.push(b"\ngreenlet: stack overflow in greenlet #");
    buffer.push_decimal(id as usize);
    buffer.push(b": it ran past the end of its ");
    buffer.push_decimal(size);
    buffer.push(b"-byte stack (fault at ");
    buffer.push_hex(address);
    buffer.push(
        b", in the guard page).\ngreenlet: give it a bigger stack with \
        greenlet::Builder::new().stack_size(bytes), or recurse less. Aborting.\n",
    );
    let mut written = 0;
    while written < buffer.len {
        // SAFETY: writing initialised bytes of a stack buffer to fd 2.
        let n = unsafe {
            libc::write(
                2,
                buffer.bytes[written..].as_ptr().cast(),
                buffer.len - written,
            )
        };
        if n <= 0 {
            break;
        }
        written += n as usize;
    }
}

/// A fixed buffer with just enough formatting for the report.
struct Buffer {
    bytes: [u8; 512],
    len: usize,
}

impl Buffer {
    fn push(&mut self, text: &[u8]) {
        let n = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_decimal(&mut self, mut value: usize) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, mut value: usize) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[value & 15];
            value >>= 4;
            if value == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }
}
