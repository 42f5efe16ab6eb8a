//! The Linux layer (Linux only, this platform's only FFI): safe wrappers over the few system
//! calls the epoll kernel makes — `epoll_create1`, `epoll_ctl`, `epoll_wait`, an `eventfd`, a
//! probe of a socket (`getsockopt(TCP_INFO)`), and `fcntl(F_DUPFD_CLOEXEC)` for waits.
//!
//! Every wrapper takes file descriptors by value and passes them to the kernel, which validates
//! them: a closed descriptor gives `EBADF`, never undefined behaviour. No wrapper closes a
//! descriptor it was given; only [`dup_cloexec`] duplicates one, and returns the duplicate owned.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub use libc::epoll_event as EpollEvent;
pub use libc::{
    EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT, EPOLLOUT, EPOLLPRI, EPOLLRDHUP,
};

/// The result of a system call that returns -1 and sets `errno` on failure.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new epoll instance (close-on-exec).
    ///
    /// # Errors
    /// `epoll_create1`'s failure (out of file descriptors or memory).
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is a new descriptor we own, or -1.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut event = EpollEvent { events, u64: data };
        // SAFETY: `event` is a valid epoll_event for the duration of the call; the kernel
        // validates `fd` (EBADF, EPERM, ENOENT, EEXIST are reported, never acted on blindly).
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) })?;
        Ok(())
    }

    /// `EPOLL_CTL_ADD`: watch `fd` for `events`, reporting `data`.
    ///
    /// # Errors
    /// `EEXIST` if this (open file, descriptor) pair is already watched; `EPERM` for a file epoll
    /// cannot poll (a regular file, a directory); `EBADF` for a closed descriptor.
    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// `EPOLL_CTL_MOD`: change what `fd` is watched for.
    ///
    /// # Errors
    /// `ENOENT` if the open file `fd` names now is not watched (the one added was closed, and the
    /// number reused); `EBADF` for a closed descriptor.
    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    /// `EPOLL_CTL_DEL`: stop watching `fd`.
    ///
    /// # Errors
    /// `ENOENT` if the open file `fd` names is not watched under that number; `EBADF` for a
    /// closed descriptor.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // A non-null event, for kernels before 2.6.9, which required one even here.
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait for events, at most `timeout` (`None`: forever; rounded up to whole milliseconds, so
    /// the wait never ends early). Returns how many entries of `out` were filled.
    ///
    /// # Errors
    /// `epoll_wait`'s failure; `EINTR` is returned as `ErrorKind::Interrupted`.
    pub fn wait(&self, out: &mut [EpollEvent], timeout: Option<Duration>) -> io::Result<usize> {
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
        };
        let max = libc::c_int::try_from(out.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `out` is valid for writes of `max` entries for the duration of the call.
        let n = check(unsafe { libc::epoll_wait(self.fd.as_raw_fd(), out.as_mut_ptr(), max, ms) })?;
        Ok(n as usize)
    }
}

/// A non-blocking, close-on-exec eventfd: the epoll kernel's wake-up.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with counter 0.
    ///
    /// # Errors
    /// `eventfd`'s failure (out of file descriptors).
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is a new descriptor we own, or -1.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// The descriptor, to watch it.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Add 1 to the counter: the eventfd becomes readable.
    ///
    /// # Errors
    /// `write`'s failure (the counter cannot overflow here: it is reset by every `reset`).
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 on our own descriptor.
        let n = unsafe { libc::write(self.raw(), (&raw const one).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reset the counter to 0 (not readable any more). A counter already 0 is not an error.
    pub fn reset(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own descriptor; EAGAIN (already 0) is
        // the only expected failure and leaves nothing to do.
        let _ = unsafe { libc::read(self.raw(), (&raw mut value).cast(), 8) };
    }
}

/// A new close-on-exec descriptor for the open file `fd` names (`fcntl(F_DUPFD_CLOEXEC)`), owned
/// by the caller: it keeps the file open, whatever becomes of `fd` (closed, its number reused).
///
/// # Errors
/// `EBADF` if `fd` names nothing; `EMFILE` when out of descriptors.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the kernel validates `fd` (EBADF), and the result is a new descriptor
    // nobody else owns, or -1.
    let dup = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// `TCP_LISTEN` in `tcp_info.tcpi_state`.
pub const TCP_LISTEN: u8 = 10;
/// `TCP_CLOSE` in `tcp_info.tcpi_state`: not connected (never, or no more).
pub const TCP_CLOSE: u8 = 7;

/// What `TCP_INFO` says of a TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_state` (`TCP_LISTEN`, `TCP_CLOSE`, ...).
    pub state: u8,
    /// `tcpi_rtt` (µs): 0 until a round trip was measured, which the handshake's SYN-ACK does;
    /// so 0 on a socket whose connect never completed.
    pub rtt: u32,
    /// `tcpi_segs_out`: segments sent, 0 on a socket that never tried to connect (no SYN).
    pub segs_out: u32,
    /// `tcpi_delivered` (Linux 4.18 and later): segments the peer acknowledged, the SYN
    /// included, so 0 only while no handshake has completed.
    pub delivered: Option<u32>,
}

impl TcpInfo {
    /// A TCP socket that never tried to connect (`connect` not called yet).
    pub fn never_tried(&self) -> bool {
        self.state == TCP_CLOSE && self.segs_out == 0
    }

    /// A TCP socket whose handshake never completed (a failed connect): nothing it sent was
    /// ever acknowledged. Without `tcpi_delivered` (kernels before 4.18), no round trip was
    /// measured, which an accepted connection without timestamps can also show.
    pub fn never_connected(&self) -> bool {
        match self.delivered {
            Some(delivered) => delivered == 0,
            None => self.rtt == 0,
        }
    }
}

/// `TCP_INFO` of `fd`, or `None` if it is not a TCP socket (or not open, or the running kernel's
/// `tcp_info` is too old to have `tcpi_segs_out`, Linux 4.2).
pub fn tcp_info(fd: RawFd) -> Option<TcpInfo> {
    // SAFETY: `tcp_info` is plain data, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is valid for `len` bytes of writes (the kernel copies at most that much),
    // `len` for a read and a write; the kernel validates `fd` and fails for anything but a TCP
    // socket.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    let has = |end: usize| len as usize >= end;
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_segs_out) + size_of::<u32>();
    let delivered_end = std::mem::offset_of!(libc::tcp_info, tcpi_delivered) + size_of::<u32>();
    (ret == 0 && has(needed)).then_some(TcpInfo {
        state: info.tcpi_state,
        rtt: info.tcpi_rtt,
        segs_out: info.tcpi_segs_out,
        delivered: has(delivered_end).then_some(info.tcpi_delivered),
    })
}

/// Whether `fd` is a stream socket (a Unix one, say) that has never been connected: `SO_TYPE`
/// is a stream or sequenced-packet type and `getpeername` says `ENOTCONN`. (Linux reports a
/// hang-up for such a socket, as for a TCP socket not connected yet.) Also returns the system
/// calls it made (1 or 2).
pub fn unconnected_stream(fd: RawFd) -> (bool, u64) {
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` is valid for `len` bytes of writes; the kernel validates `fd`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut kind).cast(),
            &mut len,
        )
    };
    if ret != 0 || !(kind == libc::SOCK_STREAM || kind == libc::SOCK_SEQPACKET) {
        return (false, 1);
    }
    // SAFETY: `sockaddr_storage` is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is valid for `len` bytes of writes; the kernel validates `fd`.
    let ret = unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) };
    let unconnected = ret != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN);
    (unconnected, 2)
}
