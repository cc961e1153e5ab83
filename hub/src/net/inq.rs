//! Reads that also learn whether they left the receive queue empty.
//!
//! A read that fills its whole buffer cannot tell, from its result alone,
//! whether more bytes are waiting: the next read has to try, and on a
//! request/response connection it usually fails with `WouldBlock`, one
//! wasted system call per exchange. Linux's `TCP_INQ` socket option makes
//! `recvmsg` report, in a control message (`TCP_CM_INQ`), how many bytes
//! the kernel still holds after the read: with none, the direction is
//! drained and the next read waits for the next edge instead (see
//! [`IoSource::read_with_hint`](crate::io::IoSource::read_with_hint)).
//!
//! The count is taken after the kernel has processed the socket's backlog,
//! and a FIN counts as one byte, so a zero means that whatever arrives
//! next raises a new edge. Nothing is read ahead or kept in user space:
//! the stream's bytes stay where `std` would leave them.
//!
//! The option is only turned on for a stream whose read once filled its
//! buffer exactly (an HTTP server reading into a large buffer never does,
//! and never pays for the `setsockopt` or for `recvmsg`'s larger
//! argument). Where the option is refused or no count comes back, reads
//! stay plain ones.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::BorrowedFd;

/// How a stream's reads learn what they leave queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Inq {
    /// Plain reads: no read has filled its buffer yet.
    Off,
    /// `TCP_INQ` is on: reads go through [`recv`] and learn the count.
    On,
    /// The system refused the option or sent no count: plain reads for good.
    Unavailable,
}

/// Turns `TCP_INQ` on for the socket; false if the system refuses it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn enable(fd: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open descriptor, borrowed for the duration of the
    // call; the option value points to a live `c_int` whose size is the
    // length passed, and the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INQ,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// No `TCP_INQ` here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn enable(_fd: BorrowedFd<'_>) -> bool {
    false
}

/// Linux's `UIO_MAXIOV`: `recvmsg` refuses more buffers than this (std's
/// `read_vectored` caps them the same way).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAX_IOV: usize = 1024;

/// Reads into `bufs` with `recvmsg`: the bytes read and, if the kernel
/// said (`TCP_CM_INQ`), how many it still holds.
///
/// # Errors
///
/// `recvmsg`'s (`WouldBlock` when nothing is queued, ...).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn recv(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
) -> io::Result<(usize, Option<usize>)> {
    use std::os::fd::AsRawFd;
    // Room for the count's message and then some (a timestamp the caller
    // asked for), aligned for `cmsghdr`.
    let mut control = [0usize; 8];
    // SAFETY: `msghdr` is a plain C struct of integers and pointers, for
    // which all zeroes (null pointers, zero lengths, zero padding on the
    // targets that have padding fields) is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: `IoSliceMut` is ABI-compatible with `iovec` on Unix (std
    // documents it), so `msg_iov` points to `msg_iovlen` buffers, each
    // valid for writes of its length and mutably borrowed for the call;
    // `msg_control` points to `msg_controllen` writable bytes of this
    // frame; no address is asked for; `fd` is open for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    let Ok(n) = usize::try_from(n) else {
        return Err(io::Error::last_os_error());
    };
    let mut left = None;
    // SAFETY: after a successful `recvmsg`, `msg.msg_control` and
    // `msg.msg_controllen` delimit control messages the kernel wrote into
    // `control` (the length is cut to what fit); `CMSG_FIRSTHDR` and
    // `CMSG_NXTHDR` only return headers that lie wholly inside that range,
    // or null. A `TCP_CM_INQ` message whose length covers a `c_int` has one
    // at `CMSG_DATA`, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let int_len = libc::CMSG_LEN(size_of::<libc::c_int>() as libc::c_uint) as usize;
            if header.cmsg_level == libc::SOL_TCP
                && header.cmsg_type == libc::TCP_CM_INQ
                && header.cmsg_len as usize >= int_len
            {
                let count = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                left = usize::try_from(count).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, left))
}

/// Never called: [`enable`] is false here.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn recv(
    _fd: BorrowedFd<'_>,
    _bufs: &mut [IoSliceMut<'_>],
) -> io::Result<(usize, Option<usize>)> {
    Err(io::ErrorKind::Unsupported.into())
}
