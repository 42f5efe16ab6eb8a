//! Linux: a process's pidfd (`pidfd_open(2)`, Linux 5.3), readable once the process has exited:
//! what [`child_exit`](crate::child_exit) waits on.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A pidfd for process `pid` (close-on-exec, as `pidfd_open` always makes them).
///
/// The caller must make sure `pid` still names the process it means: for a child, that it has
/// not been reaped (a `std::process::Child` whose `try_wait` has not returned its status, and
/// which the caller borrows mutably, so nothing else reaps it meanwhile).
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `pidfd_open(pid, flags)` takes two integers and no memory of ours; it returns a
    // new descriptor or -1 with errno set.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd_open: bad descriptor"))?;
    // SAFETY: `fd` was just returned by the kernel as a new open descriptor, which nothing else
    // owns: the `OwnedFd` becomes its only owner and closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
