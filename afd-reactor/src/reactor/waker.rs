//! The cross-thread wake-up (WRL-001 §3): `NtSetIoCompletion` under [`WAKE_KEY`], coalesced.

use crate::kernel::Post;
use crate::reactor::event::Token;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// A wake packet is queued (further wakes are absorbed by it).
const QUEUED: u8 = 1;
/// The reactor is gone: wakes fail and post nothing.
const CLOSED: u8 = 2;

pub(crate) struct WakerShared {
    poster: Box<dyn Post>,
    /// `QUEUED | CLOSED` bits. Every wake and every packet is a read-modify-write of this one
    /// location, so a wake absorbed by a queued packet is ordered before the reactor's clearing of
    /// `QUEUED`: what the waking thread wrote before `wake` is visible once that packet's event is
    /// returned, and a wake that comes after the clearing posts a new packet.
    state: AtomicU8,
    pub(crate) token: Token,
    pub(crate) calls: AtomicU64,
    pub(crate) posts: AtomicU64,
}

impl WakerShared {
    pub(crate) fn new(poster: Box<dyn Post>, token: Token) -> Arc<Self> {
        Arc::new(Self {
            poster,
            state: AtomicU8::new(0),
            token,
            calls: AtomicU64::new(0),
            posts: AtomicU64::new(0),
        })
    }

    /// The reactor dequeued our packet: the next wake posts again. Returns false if closed.
    pub(crate) fn on_packet(&self) -> bool {
        self.state.fetch_and(!QUEUED, Ordering::AcqRel) & CLOSED == 0
    }

    /// The reactor is shutting down: wakes fail from now on and post nothing.
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
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
    /// packet could not be posted (out of quota). The next `wake` tries again; wakes made by other
    /// threads while this one was posting were absorbed by the failed post, so after an error,
    /// call `wake` again.
    pub fn wake(&self) -> io::Result<()> {
        let s = &self.shared;
        s.calls.fetch_add(1, Ordering::Relaxed);
        let before = s.state.fetch_or(QUEUED, Ordering::AcqRel);
        if before & CLOSED != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "afd-reactor: the reactor of this waker has shut down",
            ));
        }
        if before & QUEUED != 0 {
            return Ok(()); // coalesced into the packet already queued
        }
        if let Err(e) = s.poster.post_wake(self.apc) {
            s.state.fetch_and(!QUEUED, Ordering::AcqRel);
            return Err(e);
        }
        s.posts.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
