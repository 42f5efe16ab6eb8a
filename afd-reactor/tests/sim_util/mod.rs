//! Helpers shared by the simulated-kernel test files (hardening, review findings, property).
#![allow(dead_code)]

use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::sim::SimKernel;
use afd_reactor::{Event, Events, Reactor, SimSocket, Source, Token, Waker};
use std::cell::Cell;
use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

pub fn reactor(seed: u64) -> Reactor<SimKernel> {
    Reactor::with_kernel(SimKernel::new(seed))
}

/// A connected socket of the simulated kernel: writable, nothing to read.
pub fn socket(r: &Reactor<SimKernel>) -> SimSocket {
    let s = SimSocket(r.kernel().open_socket());
    r.kernel().set_readiness(s.0, PollEvents::SEND);
    s
}

pub fn poll(r: &mut Reactor<SimKernel>, capacity: usize, timeout: Option<Duration>) -> Vec<Event> {
    let mut events = Events::with_capacity(capacity);
    r.poll(&mut events, timeout).expect("poll");
    events.iter().copied().collect()
}

/// Make data arrive on `s`: the next zero-timeout poll reports `token` readable.
#[track_caller]
pub fn assert_reported_readable(r: &mut Reactor<SimKernel>, s: SimSocket, token: Token) {
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE);
    let seen = poll(r, 8, Some(Duration::ZERO));
    assert!(
        seen.iter().any(|e| e.token() == token && e.is_readable()),
        "{token:?} not reported readable: {seen:?}"
    );
}

/// A `Source` that names `values[0]` on its first call, `values[1]` on its second, and so on
/// (any safe `AsSocket` impl can do this).
pub struct Flipper {
    pub values: [u64; 2],
    pub calls: Cell<usize>,
}

impl Flipper {
    pub fn new(values: [u64; 2]) -> Self {
        Self {
            values,
            calls: Cell::new(0),
        }
    }
}

// SAFETY: both values name sockets of the test's simulated kernel.
unsafe impl Source for Flipper {
    fn raw_socket(&self) -> u64 {
        let n = self.calls.get();
        self.calls.set(n + 1);
        self.values[n % 2]
    }
}

/// Two wakes of `waker` on two threads: the first one's post is held in the kernel, and will
/// fail once released; the second is made while the first is being posted. Returns once both
/// are inside `wake`, with the first post still held (release it with `hold_posts(false)`).
pub fn a_held_failing_post_and_a_wake_joining_it(
    r: &Reactor<SimKernel>,
    waker: &Waker,
) -> (JoinHandle<io::Result<()>>, JoinHandle<io::Result<()>>) {
    r.kernel().hold_posts(true);
    r.kernel().fail_posts(1);
    let wakes_before = r.stats().wakes;
    let first = std::thread::spawn({
        let waker = waker.clone();
        move || waker.wake()
    });
    while r.kernel().posts_waiting() == 0 {
        std::thread::yield_now();
    }
    let second = std::thread::spawn({
        let waker = waker.clone();
        move || waker.wake()
    });
    while r.stats().wakes < wakes_before + 2 {
        std::thread::yield_now();
    }
    (first, second)
}
