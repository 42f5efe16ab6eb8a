//! The cross-thread wake-up (WRL-001 §3): `NtSetIoCompletion` under [`WAKE_KEY`], coalesced.

use crate::kernel::{Post, WAKE_KEY};
use crate::reactor::event::Token;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const CLOSED: u8 = 2;

pub(crate) struct WakerShared {
    poster: Box<dyn Post>,
    /// IDLE: no wake packet queued; QUEUED: one is (further wakes are absorbed by it); CLOSED: the
    /// reactor is gone.
    state: AtomicU8,
    pub(crate) token: Token,
    pub(crate) calls: AtomicU64,
    pub(crate) posts: AtomicU64,
}

impl WakerShared {
    pub(crate) fn new(poster: Box<dyn Post>, token: Token) -> Arc<Self> {
        Arc::new(Self {
            poster,
            state: AtomicU8::new(IDLE),
            token,
            calls: AtomicU64::new(0),
            posts: AtomicU64::new(0),
        })
    }

    /// The reactor dequeued our packet: the next wake posts again. Returns false if closed.
    pub(crate) fn on_packet(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The reactor is shutting down: wakes fail from now on and post nothing.
    pub(crate) fn close(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }
}

/// Wakes a [`Reactor`](crate::Reactor) blocked in `poll` from any thread. `Send + Sync + Clone`.
///
/// The wake is an `NtSetIoCompletion` packet under a key no socket state can have. Wakes are
/// coalesced: however many threads call [`Waker::wake`], at most one wake packet is queued until
/// the reactor dequeues it; the poll that dequeues it returns an event with
/// [`Event::is_wake`](crate::Event::is_wake) and this waker's token. A wake is never lost: after
/// `wake` returns, some poll returns — the one in progress, or the next.
///
/// A `Waker` that outlives its reactor is harmless: `wake` then fails with
/// [`io::ErrorKind::NotConnected`] and makes no call (the port it would post to is kept open by
/// the waker, so no call can ever reach a closed or reused handle).
///
/// # Examples
/// ```
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Events, Reactor, Token};
/// use std::time::Duration;
///
/// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
/// let waker = reactor.waker(Token(99))?;
/// std::thread::spawn(move || waker.wake().unwrap());
/// let mut events = Events::with_capacity(8);
/// reactor.poll(&mut events, None)?; // returns once woken
/// assert!(events.iter().any(|e| e.is_wake() && e.token() == Token(99)));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Waker {
    pub(crate) shared: Arc<WakerShared>,
    pub(crate) apc: usize,
}

impl Waker {
    /// Wake the reactor (WRL-001 §3).
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] if the reactor has shut down; the kernel's error if the
    /// packet could not be posted (the next `wake` tries again).
    pub fn wake(&self) -> io::Result<()> {
        let s = &self.shared;
        s.calls.fetch_add(1, Ordering::Relaxed);
        match s
            .state
            .compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                if let Err(e) = s.poster.post(WAKE_KEY, self.apc) {
                    let _ =
                        s.state
                            .compare_exchange(QUEUED, IDLE, Ordering::AcqRel, Ordering::Acquire);
                    return Err(e);
                }
                s.posts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(QUEUED) => Ok(()), // coalesced into the packet already queued
            Err(_) => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "afd-reactor: the reactor of this waker has shut down",
            )),
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("token", &self.shared.token)
            .field("state", &self.shared.state.load(Ordering::Relaxed))
            .finish()
    }
}
