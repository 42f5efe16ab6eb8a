//! Tokens, interests, events: the user-facing vocabulary (familiar to mio users).

use crate::afd::PollEvents;
use std::fmt;

/// Identifies a registration, timer or waker in the events it produces. Chosen by the user.
///
/// Sockets, timers and wakers share one token space, and the reactor never checks a token for
/// uniqueness: that is yours to keep, as with mio. Every event says where it comes from, though
/// ([`Event::is_timer`], [`Event::is_wake`], or neither for a socket), and events from different
/// sources are never merged: a timer and a waker on the same token give two events.
///
/// # Examples
/// ```
/// use afd_reactor::Token;
/// const LISTENER: Token = Token(0);
/// assert_eq!(LISTENER.0, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub usize);

/// The readiness a registration asks for.
///
/// Whatever the interest, a failed connect is reported (as an [`Event::is_error`] event), and a
/// socket closed while registered is noticed (its registration is removed, with no event), as
/// long as the registration has a poll in the kernel: every registration does, except a `Oneshot`
/// one after its event, an `Edge` one whose every readiness was reported, and one disarmed by an
/// error event, until `rearm` or `reregister`. Everything else is
/// reported only if asked for.
///
/// The interest may be empty ([`Interest::NONE`]): the registration then stays, but is *paused*.
/// It reports nothing but a failed connect until [`reregister`](crate::Reactor::reregister) widens
/// it again; a reset or a peer's close that happens meanwhile is reported then. That is the way
/// to apply backpressure to a socket whose only interest was readable.
///
/// # Examples
/// ```
/// use afd_reactor::Interest;
/// let mut both = Interest::READABLE;
/// both |= Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// assert_eq!(both, Interest::READABLE | Interest::WRITABLE);
/// assert_eq!(both.remove(Interest::WRITABLE), Interest::READABLE);
/// assert!(Interest::NONE.is_empty());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Interest(u8);

impl Interest {
    /// Nothing: registered but paused.
    pub const NONE: Self = Self(0);
    /// Data to read, a connection to accept, or the peer closed (read returns 0 or an error).
    pub const READABLE: Self = Self(1);
    /// Room to write, or a connect finished (successfully or not).
    pub const WRITABLE: Self = Self(2);
    /// Out-of-band (urgent) data.
    pub const PRIORITY: Self = Self(4);

    /// Both sets.
    pub const fn add(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self` without `other`.
    pub const fn remove(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// True if readable is included.
    pub const fn is_readable(self) -> bool {
        self.0 & Self::READABLE.0 != 0
    }

    /// True if writable is included.
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE.0 != 0
    }

    /// True if priority is included.
    pub const fn is_priority(self) -> bool {
        self.0 & Self::PRIORITY.0 != 0
    }

    /// True if nothing is included (a paused registration).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The AFD events this interest polls for (without the always-requested ones).
    ///
    /// Readable: `RECEIVE | ACCEPT | DISCONNECT | ABORT`; writable: `SEND | ABORT`; priority:
    /// `RECEIVE_EXPEDITED`.
    pub const fn afd_events(self) -> PollEvents {
        let mut bits = 0;
        if self.is_readable() {
            bits |= PollEvents::RECEIVE.0
                | PollEvents::ACCEPT.0
                | PollEvents::DISCONNECT.0
                | PollEvents::ABORT.0;
        }
        if self.is_writable() {
            bits |= PollEvents::SEND.0 | PollEvents::ABORT.0;
        }
        if self.is_priority() {
            bits |= PollEvents::RECEIVE_EXPEDITED.0;
        }
        PollEvents(bits)
    }
}

impl std::ops::BitOr for Interest {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.add(rhs)
    }
}

impl std::ops::BitOrAssign for Interest {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.add(rhs);
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.is_readable(), "READABLE"),
            (self.is_writable(), "WRITABLE"),
            (self.is_priority(), "PRIORITY"),
        ];
        let mut list = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n);
        match list.next() {
            None => f.write_str("NONE"),
            Some(first) => {
                f.write_str(first)?;
                list.try_for_each(|n| write!(f, " | {n}"))
            }
        }
    }
}

const READABLE: u16 = 1;
const WRITABLE: u16 = 2;
const ERROR: u16 = 4;
const READ_CLOSED: u16 = 8;
const WRITE_CLOSED: u16 = 16;
const PRIORITY: u16 = 32;
const TIMER: u16 = 64;
const WAKE: u16 = 128;
const SIGNALED: u16 = 256;
const WAITABLE: u16 = 512;

/// One readiness report: a socket's readiness, a timer firing, a wake, or a waitable handle
/// signaled.
///
/// An event comes from exactly one source: a timer ([`is_timer`](Self::is_timer)), a
/// [`Waker`](crate::Waker) ([`is_wake`](Self::is_wake)), a registered waitable handle
/// ([`is_waitable`](Self::is_waitable): signaled, or an error), or, when none is set, a
/// registered socket. In one [`poll`](crate::Reactor::poll), each registration and each waker appears at
/// most once (a second report is merged into the first), and each timer at most once.
///
/// # What happened to the socket
/// The flags come from what the kernel reports about the socket, never from the result of a
/// read, so they say the same thing on every Windows and under Wine. (Under Wine 8, a read after
/// a reset usually returns `Ok(0)`; Windows and Wine 10 fail it with `ConnectionReset`.)
///
/// | what happened | [`is_readable`] | [`is_writable`] | [`is_read_closed`] | [`is_write_closed`] | [`is_reset`] | [`is_error`] |
/// |---|---|---|---|---|---|---|
/// | data arrived, or a connection waits to be accepted | ✓ | | | | | |
/// | room to write, or a connect succeeded | | ✓ | | | | |
/// | the peer closed or shut down its sending side (FIN) | ✓ | | ✓ | | | |
/// | the connection was reset or aborted (RST) | ✓ | ✓ | ✓ | ✓ | ✓ | |
/// | a connect failed | ✓ | ✓ | ✓ | ✓ | | ✓ |
/// | the reactor could not arm the socket, or your `CancelIoEx` cancelled its poll | | | | | | ✓ |
///
/// - [`is_readable`] and [`is_writable`] are set only for what the registration's [`Interest`]
///   asked for. Which rows reach a registration depends on the interest too: readable hears of
///   every row but "room to write"; writable alone does not hear of data or a peer's FIN (it
///   does hear of a reset); a failed
///   connect is reported whatever the interest, even to a paused registration
///   ([`Interest::NONE`]).
/// - A peer that closed its socket and one that only shut down its sending side look the same
///   (both send a FIN): you learn which when a write fails, or a reset event follows.
/// - After a failed connect, the socket's error says why: `socket.take_error()`.
/// - After an error event of the last row, the registration stays but is disarmed: it reports
///   nothing more until you [`reregister`](crate::Reactor::reregister) it (which retries).
/// - A socket you close while it is registered produces no event: the registration is removed.
///
/// [`is_readable`]: Self::is_readable
/// [`is_writable`]: Self::is_writable
/// [`is_read_closed`]: Self::is_read_closed
/// [`is_write_closed`]: Self::is_write_closed
/// [`is_reset`]: Self::is_reset
/// [`is_error`]: Self::is_error
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: Token,
    flags: u16,
    /// The AFD events behind a socket event (empty for timers, wakes and errors).
    afd: PollEvents,
}

impl Event {
    pub(crate) fn from_afd(token: Token, afd: PollEvents, interest: Interest) -> Self {
        let has = |e: PollEvents| afd.intersects(e);
        let fail = PollEvents::CONNECT_FAIL;
        let mut flags = 0;
        let readable = PollEvents::RECEIVE | PollEvents::ACCEPT | PollEvents::DISCONNECT;
        if interest.is_readable() && has(readable | PollEvents::ABORT | fail) {
            flags |= READABLE;
        }
        if interest.is_writable() && has(PollEvents::SEND | PollEvents::ABORT | fail) {
            flags |= WRITABLE;
        }
        if has(fail) {
            flags |= ERROR;
        }
        if has(PollEvents::DISCONNECT | PollEvents::ABORT | fail) {
            flags |= READ_CLOSED;
        }
        if has(PollEvents::ABORT | fail) {
            flags |= WRITE_CLOSED;
        }
        if has(PollEvents::RECEIVE_EXPEDITED) {
            flags |= PRIORITY;
        }
        Self { token, flags, afd }
    }

    pub(crate) const fn error(token: Token) -> Self {
        Self {
            token,
            flags: ERROR,
            afd: PollEvents::NONE,
        }
    }

    pub(crate) const fn timer(token: Token) -> Self {
        Self {
            token,
            flags: TIMER,
            afd: PollEvents::NONE,
        }
    }

    pub(crate) const fn signaled(token: Token) -> Self {
        Self {
            token,
            flags: SIGNALED | WAITABLE,
            afd: PollEvents::NONE,
        }
    }

    /// A waitable registration could not be re-armed.
    pub(crate) const fn waitable_error(token: Token) -> Self {
        Self {
            token,
            flags: ERROR | WAITABLE,
            afd: PollEvents::NONE,
        }
    }

    pub(crate) const fn wake(token: Token) -> Self {
        Self {
            token,
            flags: WAKE,
            afd: PollEvents::NONE,
        }
    }

    /// The token of the registration, timer or waker.
    pub const fn token(&self) -> Token {
        self.token
    }

    /// Readable: data, a pending connection, or the peer closed (read to 0 / error).
    pub const fn is_readable(&self) -> bool {
        self.flags & READABLE != 0
    }

    /// Writable: room to write, or a connect finished.
    pub const fn is_writable(&self) -> bool {
        self.flags & WRITABLE != 0
    }

    /// An error: a failed connect (`take_error` on the socket says why), or the reactor could
    /// not arm the socket (the kernel refused the poll, or your `CancelIoEx` cancelled it): the
    /// registration then stays disarmed until `reregister` (which retries).
    pub const fn is_error(&self) -> bool {
        self.flags & ERROR != 0
    }

    /// The peer will send no more: it closed or shut down its side (FIN), or the connection was
    /// reset.
    pub const fn is_read_closed(&self) -> bool {
        self.flags & READ_CLOSED != 0
    }

    /// Writing will fail: the connection was reset, or the connect failed.
    pub const fn is_write_closed(&self) -> bool {
        self.flags & WRITE_CLOSED != 0
    }

    /// The connection was reset or aborted (the peer sent RST, or the local stack aborted it).
    ///
    /// Known from the kernel's report (AFD's `ABORT`), whatever a read would say: under Wine 8
    /// a read after a reset usually returns `Ok(0)`, as if the peer had closed. Reported only if
    /// the registration asked for readable or writable.
    pub const fn is_reset(&self) -> bool {
        self.afd.0 & PollEvents::ABORT.0 != 0
    }

    /// Out-of-band data is available.
    pub const fn is_priority(&self) -> bool {
        self.flags & PRIORITY != 0
    }

    /// A timer fired.
    pub const fn is_timer(&self) -> bool {
        self.flags & TIMER != 0
    }

    /// A [`Waker`](crate::Waker) was woken.
    pub const fn is_wake(&self) -> bool {
        self.flags & WAKE != 0
    }

    /// A registered waitable handle was signaled
    /// ([`Reactor::register_waitable`](crate::Reactor::register_waitable)): an event set, a
    /// process ended, a semaphore released, a waitable timer due; on Linux an eventfd or a pidfd
    /// readable. (Always with [`is_waitable`](Self::is_waitable).)
    pub const fn is_signaled(&self) -> bool {
        self.flags & SIGNALED != 0
    }

    /// The event is a registered waitable handle's: signaled ([`is_signaled`](Self::is_signaled)),
    /// or an error ([`is_error`](Self::is_error)) saying the reactor could not re-arm its wait,
    /// which stays disarmed until
    /// [`reregister_waitable`](crate::Reactor::reregister_waitable). It tells a waitable's error
    /// from a socket's on the same token.
    pub const fn is_waitable(&self) -> bool {
        self.flags & WAITABLE != 0
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Event");
        d.field("token", &self.token);
        for (on, name) in [
            (self.is_readable(), "readable"),
            (self.is_writable(), "writable"),
            (self.is_error(), "error"),
            (self.is_read_closed(), "read_closed"),
            (self.is_write_closed(), "write_closed"),
            (self.is_reset(), "reset"),
            (self.is_priority(), "priority"),
            (self.is_timer(), "timer"),
            (self.is_wake(), "wake"),
            (self.is_signaled(), "signaled"),
            (self.is_waitable(), "waitable"),
        ] {
            if on {
                d.field(name, &true);
            }
        }
        d.finish()
    }
}

/// A buffer of events filled by [`Reactor::poll`](crate::Reactor::poll).
///
/// Its capacity bounds how many events one poll returns (and how many packets it dequeues).
///
/// # Examples
/// ```
/// use afd_reactor::Events;
/// let events = Events::with_capacity(1024);
/// assert!(events.is_empty());
/// assert_eq!(events.capacity(), 1024);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Events {
    list: Vec<Event>,
    capacity: usize,
}

impl Events {
    /// An empty buffer for up to `capacity` events per poll. A capacity of 0 makes `poll` fail
    /// with `InvalidInput`.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The most events one poll returns.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of events from the last poll.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if the last poll returned no event.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The events of the last poll.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }

    /// Remove all events.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    pub(crate) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.list.len())
    }

    pub(crate) fn push(&mut self, event: Event) {
        debug_assert!(self.room() > 0);
        self.list.push(event);
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_is_read_and_write_closed() {
        let both = Interest::READABLE | Interest::WRITABLE;
        let e = Event::from_afd(Token(1), PollEvents::ABORT, both);
        assert!(e.is_readable() && e.is_writable());
        assert!(e.is_read_closed() && e.is_write_closed() && e.is_reset());
        assert!(!e.is_error());
    }

    #[test]
    fn connect_fail_is_an_error_and_wakes_a_writer() {
        let e = Event::from_afd(Token(1), PollEvents::CONNECT_FAIL, Interest::WRITABLE);
        assert!(e.is_writable() && e.is_error() && e.is_write_closed());
        assert!(!e.is_readable(), "readable was not asked");
        assert!(!e.is_reset(), "a failed connect is not a reset");
    }

    #[test]
    fn disconnect_is_readable_and_read_closed_only() {
        let e = Event::from_afd(Token(1), PollEvents::DISCONNECT, Interest::READABLE);
        assert!(e.is_readable() && e.is_read_closed());
        assert!(!e.is_write_closed() && !e.is_writable() && !e.is_reset());
    }

    #[test]
    fn interest_maps_to_afd_bits() {
        assert!(!Interest::READABLE.afd_events().intersects(PollEvents::SEND));
        assert!(Interest::WRITABLE.afd_events().contains(PollEvents::SEND));
        assert_eq!(Interest::NONE.afd_events(), PollEvents::NONE);
        assert_eq!(
            format!("{:?}", Interest::READABLE | Interest::PRIORITY),
            "READABLE | PRIORITY"
        );
    }
}
