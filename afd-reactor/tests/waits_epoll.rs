//! The waitable conformance suite on the epoll kernel (Linux), natively: eventfds for events,
//! pidfds for processes. A wait consumes nothing on Linux (the user reads the eventfd).
#![cfg(target_os = "linux")]

#[macro_use]
mod waits;

use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::{EpollReactor, Reactor};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use waits::WaitHarness;

struct EpollWaits {
    reactor: EpollReactor,
    /// The children behind pidfds, by pidfd number.
    children: HashMap<RawFd, Child>,
}

fn check(ret: libc::c_long, what: &str) -> libc::c_long {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
    ret
}

fn eventfd(signaled: bool) -> OwnedFd {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::eventfd(u32::from(signaled), libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    check(fd.into(), "eventfd");
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl WaitHarness for EpollWaits {
    type K = EpollKernel;
    type W = OwnedFd;

    fn new() -> Self {
        Self {
            reactor: Reactor::new().unwrap(),
            children: HashMap::new(),
        }
    }

    fn reactor(&mut self) -> &mut EpollReactor {
        &mut self.reactor
    }

    fn auto_event(&mut self, signaled: bool) -> OwnedFd {
        eventfd(signaled)
    }

    fn manual_event(&mut self, signaled: bool) -> OwnedFd {
        eventfd(signaled)
    }

    fn set(&mut self, w: &OwnedFd) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to a descriptor we own.
        let n = unsafe { libc::write(w.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        check(n as libc::c_long, "eventfd write");
    }

    fn reset(&mut self, w: &OwnedFd) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (nothing to read) is fine.
        unsafe { libc::read(w.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    fn is_set(&mut self, w: &OwnedFd) -> bool {
        let mut p = libc::pollfd {
            fd: w.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        check(n.into(), "poll");
        p.revents & libc::POLLIN != 0
    }

    fn process(&mut self) -> OwnedFd {
        let child = Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        // SAFETY: pidfd_open takes a pid and flags, no pointers; a non-negative result is a new
        // descriptor we own. The child is ours and not yet reaped, so the pid names it.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        check(fd, "pidfd_open");
        // SAFETY: just returned by pidfd_open, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        self.children.insert(fd.as_raw_fd(), child);
        fd
    }

    fn end_process(&mut self, w: &OwnedFd) {
        let child = self
            .children
            .get_mut(&w.as_raw_fd())
            .expect("a process of ours");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn duplicate(&mut self, w: &OwnedFd) -> OwnedFd {
        w.as_fd().try_clone_to_owned().unwrap()
    }

    fn close(&mut self, w: OwnedFd) {
        if let Some(mut child) = self.children.remove(&w.as_raw_fd()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(w);
    }

    fn consumes(&self) -> bool {
        false
    }
}

afd_reactor_wait_conformance!(EpollWaits);
