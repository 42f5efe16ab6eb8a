//! Helpers shared by the epoll tests (Linux): a heap poll block for driving `EpollKernel` through
//! the `Kernel` trait, a fixed descriptor number, and polling a reactor for a token's events.
#![allow(dead_code)]

use afd_reactor::afd::{AfdPollInfo, IoStatusBlock, PollEvents};
use afd_reactor::kernel::PollBlock;
use afd_reactor::{EpollReactor, Event, Events, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

/// How long to wait for something that should arrive.
pub const LONG: Duration = Duration::from_secs(5);

/// A poll block on the heap asking for exactly `events`, freed when dropped (only after its
/// packet was dequeued).
pub struct Block(pub NonNull<PollBlock>);

impl Block {
    pub fn new(fd: RawFd, events: PollEvents) -> Self {
        let block = PollBlock {
            iosb: IoStatusBlock::pending(),
            info: AfdPollInfo::new(fd as usize, events),
        };
        Self(NonNull::from(Box::leak(Box::new(block))))
    }

    pub fn ptr(&self) -> NonNull<PollBlock> {
        self.0
    }

    /// The result, once the poll is over.
    pub fn get(&self) -> PollBlock {
        // SAFETY: the block is live (freed only on drop); the kernel is done with it.
        unsafe { self.0.as_ptr().read() }
    }

    pub fn reported(&self) -> PollEvents {
        self.get().info.reported_events()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: made by `Box::leak` in `new`; dropped only once its poll is over.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// Move `fd`'s file to descriptor number `at` (closing `fd`): the test owns `at` from now on.
pub fn move_to(fd: OwnedFd, at: RawFd) -> OwnedFd {
    // SAFETY: `dup2` on a descriptor we own; `at` is a number no other test uses.
    let got = unsafe { libc::dup2(fd.as_raw_fd(), at) };
    assert_eq!(got, at, "dup2: {}", io::Error::last_os_error());
    drop(fd);
    // SAFETY: `at` now names the file, and nothing else owns that descriptor.
    unsafe { OwnedFd::from_raw_fd(at) }
}

/// A non-blocking TCP socket that has not tried to connect.
pub fn unconnected_tcp() -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Poll until an event for `token` arrives (at most [`LONG`]).
#[track_caller]
pub fn wait_for(r: &mut EpollReactor, events: &mut Events, token: Token) -> Event {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        r.poll(events, Some(Duration::from_millis(100))).unwrap();
        if let Some(e) = events.iter().find(|e| e.token() == token) {
            return *e;
        }
    }
    panic!("no event for {token:?} within {LONG:?}");
}

/// Every event for `token` over `polls` polls of 20 ms each.
pub fn events_over(r: &mut EpollReactor, token: Token, polls: usize) -> Vec<Event> {
    let mut events = Events::with_capacity(16);
    let mut got = Vec::new();
    for _ in 0..polls {
        r.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        got.extend(events.iter().filter(|e| e.token() == token).copied());
    }
    got
}
