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

/// Tasks waiting for the next event of something (a direction of a socket, a waitable), by
/// waiter id (`POLL_WAITER` for poll-style ones).
#[derive(Default)]
pub(crate) struct Waiters {
    list: Vec<(u64, Waker)>,
    next_id: u64,
}

impl Waiters {
    /// A new waiter: returns its id.
    pub(crate) fn add(&mut self, waker: &Waker) -> u64 {
        self.next_id += 1;
        self.list.push((self.next_id, waker.clone()));
        self.next_id
    }

    /// Keep `waker` for waiter `id` (a future polled again, perhaps by another task). Returns
    /// the waker it replaces, for the caller to drop once it holds no borrow.
    #[must_use = "drop the old waker after the borrow ends"]
    pub(crate) fn update(&mut self, id: u64, waker: &Waker) -> Option<Waker> {
        match self.list.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) if w.will_wake(waker) => None,
            Some((_, w)) => Some(std::mem::replace(w, waker.clone())),
            None => {
                self.list.push((id, waker.clone()));
                None
            }
        }
    }

    /// Forget waiter `id`. Returns its waker, for the caller to drop once it holds no borrow.
    #[must_use = "drop the waker after the borrow ends"]
    pub(crate) fn remove(&mut self, id: u64) -> Option<Waker> {
        let at = self.list.iter().position(|(i, _)| *i == id)?;
        Some(self.list.swap_remove(at).1)
    }

    /// Keep a poll-style waiter's waker, once per task (`will_wake`).
    fn add_poll(&mut self, waker: &Waker) {
        let known = self
            .list
            .iter()
            .any(|(id, w)| *id == POLL_WAITER && w.will_wake(waker));
        if !known {
            self.list.push((POLL_WAITER, waker.clone()));
        }
    }

    /// Every waiter's waker, for the caller to wake once it holds no borrow.
    pub(crate) fn drain_into(&mut self, to_wake: &mut Vec<Waker>) {
        to_wake.extend(self.list.drain(..).map(|(_, w)| w));
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[derive(Default)]
pub(crate) struct Direction {
    /// Events seen in this direction so far.
    pub(crate) tick: u64,
    /// The tick of the last event that was the reactor failing to arm the socket.
    pub(crate) failed_tick: Option<u64>,
    /// Tasks waiting for the next event.
    pub(crate) waiters: Waiters,
    /// Poll-style: the tick at which the I/O last returned `WouldBlock` (or a short read): while
    /// it is still the tick, nothing happened since and trying the I/O again would be a wasted
    /// call.
    pub(crate) parked_at: Option<u64>,
    /// The tick at which a poll-style wait last armed the direction.
    pub(crate) armed_at: Option<u64>,
}

impl Direction {
    /// Wait for the next event: returns the tick to compare with and the waiter's id.
    pub(crate) fn add_waiter(&mut self, waker: &Waker) -> (u64, u64) {
        (self.tick, self.waiters.add(waker))
    }

    /// Keep `waker` for waiter `id` (see [`Waiters::update`]).
    #[must_use = "drop the old waker after the borrow ends"]
    pub(crate) fn update_waiter(&mut self, id: u64, waker: &Waker) -> Option<Waker> {
        self.waiters.update(id, waker)
    }

    /// Forget waiter `id` (see [`Waiters::remove`]).
    #[must_use = "drop the waker after the borrow ends"]
    pub(crate) fn remove_waiter(&mut self, id: u64) -> Option<Waker> {
        self.waiters.remove(id)
    }

    /// Keep a poll-style waiter's waker, once per task (`will_wake`). A poll-style wait has no
    /// future to remove it when abandoned, so it stays until the next event in this direction:
    /// one waker per task that waited, counted by `held()`. (Evicting some to bound them would
    /// wake tasks that still wait, and five of them would wake each other for ever.)
    pub(crate) fn add_poll_waiter(&mut self, cx: &Context<'_>) {
        self.waiters.add_poll(cx.waker());
    }

    fn fire(&mut self, failed: bool, to_wake: &mut Vec<Waker>) {
        self.tick += 1;
        if failed {
            self.failed_tick = Some(self.tick);
        }
        self.waiters.drain_into(to_wake);
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
