//! Helpers shared by the `net_*` tests: descriptor counts and flags, and
//! loopback addresses. Loopback only, always.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::RawFd;

/// IPv4 loopback, port 0.
pub const V4: &str = "127.0.0.1:0";

/// Open descriptors of this process (entries of /proc/self/fd, less the
/// one `read_dir` itself holds while listing).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// `fcntl(fd, F_GETFD)` has `FD_CLOEXEC`.
pub fn is_cloexec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's
    // flags; `fd` is open (the caller holds the socket).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "fcntl(F_GETFD) failed");
    flags & libc::FD_CLOEXEC != 0
}

/// `fcntl(fd, F_GETFL)` has `O_NONBLOCK`.
pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: as in `is_cloexec`, for the status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "fcntl(F_GETFL) failed");
    flags & libc::O_NONBLOCK != 0
}

/// `[::1]:0` if this machine has IPv6 loopback, else `None` (the caller
/// prints why it skips).
pub fn v6_loopback() -> Option<SocketAddr> {
    let addr: SocketAddr = "[::1]:0".parse().unwrap();
    std::net::TcpListener::bind(addr).ok().map(|_| addr)
}

/// True when this test binary runs under qemu-user (an aarch64 binary on
/// an x86_64 host, as ci/test runs them).
pub fn under_qemu() -> bool {
    cfg!(target_arch = "aarch64")
        && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| !c.contains("CPU implementer"))
}
