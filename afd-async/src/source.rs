//! One registration's readiness, as tasks see it: for each direction, a count of the events
//! seen so far (its tick) and the tasks waiting for the next one.

use afd_reactor::{Event, Interest};
use std::cell::{Cell, RefCell};
use std::task::{Context, Waker};

/// A direction of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read = 0,
    Write = 1,
}

impl Dir {
    pub(crate) const fn interest(self) -> Interest {
        match self {
            Dir::Read => Interest::READABLE,
            Dir::Write => Interest::WRITABLE,
        }
    }
}

/// The id of a poll-style waiter (`poll_read`, `poll_write`, `poll_accept`...): it has no future
/// to remove it when dropped, so it is only ever removed by the next event.
pub(crate) const POLL_WAITER: u64 = 0;

#[derive(Default)]
pub(crate) struct Direction {
    /// Events seen in this direction so far.
    pub(crate) tick: u64,
    /// The tick of the last event that was the reactor failing to arm the socket.
    pub(crate) failed_tick: Option<u64>,
    /// Tasks waiting for the next event, by waiter id (`POLL_WAITER` for poll-style ones).
    pub(crate) waiters: Vec<(u64, Waker)>,
    next_id: u64,
    /// Poll-style: the tick at which the I/O last returned `WouldBlock` (or a short read): while
    /// it is still the tick, nothing happened since and trying the I/O again would be a wasted
    /// call.
    pub(crate) parked_at: Option<u64>,
    /// The tick at which a poll-style wait last armed the direction.
    pub(crate) armed_at: Option<u64>,
}

/// How many poll-style waiters (tasks in `poll_read`, `poll_write`, `accept`...) a direction
/// keeps. A poll-style wait has no future to remove it when abandoned, so its waker stays until
/// the next event; past this many, the oldest is woken and forgotten (if it still waits, it
/// polls again and is kept again). It bounds what abandoned reads can hold on an idle socket.
pub(crate) const POLL_WAITERS: usize = 4;

impl Direction {
    /// Wait for the next event: returns the tick to compare with and the waiter's id.
    pub(crate) fn add_waiter(&mut self, waker: &Waker) -> (u64, u64) {
        self.next_id += 1;
        let id = self.next_id;
        self.waiters.push((id, waker.clone()));
        (self.tick, id)
    }

    /// Keep `waker` for waiter `id` (a future polled again, perhaps by another task). Returns
    /// the waker it replaces, for the caller to drop once it holds no borrow.
    #[must_use = "drop the old waker after the borrow ends"]
    pub(crate) fn update_waiter(&mut self, id: u64, waker: &Waker) -> Option<Waker> {
        match self.waiters.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) if w.will_wake(waker) => None,
            Some((_, w)) => Some(std::mem::replace(w, waker.clone())),
            None => {
                self.waiters.push((id, waker.clone()));
                None
            }
        }
    }

    /// Forget waiter `id`. Returns its waker, for the caller to drop once it holds no borrow.
    #[must_use = "drop the waker after the borrow ends"]
    pub(crate) fn remove_waiter(&mut self, id: u64) -> Option<Waker> {
        let at = self.waiters.iter().position(|(i, _)| *i == id)?;
        Some(self.waiters.swap_remove(at).1)
    }

    /// Keep a poll-style waiter's waker (once per task). Returns the waker it evicts (the
    /// oldest, past [`POLL_WAITERS`]), for the caller to wake once it holds no borrow.
    #[must_use = "wake the evicted waker after the borrow ends"]
    pub(crate) fn add_poll_waiter(&mut self, cx: &Context<'_>) -> Evicted {
        let waker = cx.waker();
        let mut poll_style = self.waiters.iter().filter(|(id, _)| *id == POLL_WAITER);
        if poll_style.any(|(_, w)| w.will_wake(waker)) {
            return Evicted(None);
        }
        let count = self
            .waiters
            .iter()
            .filter(|(id, _)| *id == POLL_WAITER)
            .count();
        let evicted = if count >= POLL_WAITERS {
            let oldest = self.waiters.iter().position(|(id, _)| *id == POLL_WAITER);
            oldest.map(|at| self.waiters.remove(at).1)
        } else {
            None
        };
        self.waiters.push((POLL_WAITER, waker.clone()));
        Evicted(evicted)
    }

    fn fire(&mut self, failed: bool, to_wake: &mut Vec<Waker>) {
        self.tick += 1;
        if failed {
            self.failed_tick = Some(self.tick);
        }
        to_wake.extend(self.waiters.drain(..).map(|(_, w)| w));
    }
}

/// A registration's state in the async layer.
pub(crate) struct Source {
    /// Its token in the reactor.
    pub(crate) key: Cell<usize>,
    pub(crate) state: RefCell<SourceState>,
}

pub(crate) struct SourceState {
    pub(crate) dirs: [Direction; 2],
}

impl Source {
    pub(crate) fn new() -> Self {
        Self {
            key: Cell::new(usize::MAX),
            state: RefCell::new(SourceState {
                dirs: [Direction::default(), Direction::default()],
            }),
        }
    }

    /// An event for this registration: wake the directions it concerns.
    pub(crate) fn on_event(&self, event: &Event, to_wake: &mut Vec<Waker>) {
        let mut state = self.state.borrow_mut();
        // An error with neither readiness: the reactor could not arm the socket (a refused poll,
        // or someone's CancelIoEx). Both directions hear of it.
        let failed = event.is_error() && !event.is_readable() && !event.is_writable();
        if event.is_readable() || event.is_read_closed() || failed {
            state.dirs[Dir::Read as usize].fire(failed, to_wake);
        }
        if event.is_writable() || event.is_write_closed() || failed {
            state.dirs[Dir::Write as usize].fire(failed, to_wake);
        }
    }
}

/// A poll-style waiter evicted from a full direction: woken when dropped (with no borrow held),
/// so a task that still waits polls again and loses nothing.
pub(crate) struct Evicted(Option<Waker>);

impl Drop for Evicted {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.wake();
        }
    }
}
