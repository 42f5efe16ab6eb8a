//! The event loop: `Reactor::poll`, and what it does with each packet.
//!
//! # Sharing a poll's room
//! Three sources fill the user's [`Events`]: due timers, the stash (events dequeued outside a poll,
//! completed at submit, or that did not fit), and the completion port. When more than one has
//! something, the room is split evenly between the ones that do (the port always counts: its
//! queue length is unknown), the remainder going first to whichever source's turn it is (the turn
//! rotates every poll); room a source does not use goes to the others. So with room for at least
//! one event per busy source, every source makes progress in every poll, and with less, none
//! waits more than three polls. No registration is reported twice in one poll (an event kept for
//! a later poll holds the registration's re-arm until it is delivered, so a registration never
//! has two events outstanding), a waker's wakes in one poll make one event, and no
//! timer fires twice in one poll.
//!
//! # Work that needs no waiting
//! A call returns without events only once nothing is left that needs no waiting: a resubmit
//! (say, after the cancel a wider interest needs) or the rest of a full batch is done first,
//! even with a zero timeout (within [`NO_WAIT_ROUNDS`] rounds, so a kernel that keeps answering
//! cannot hold the call forever).

use super::{Reactor, err, slot_of};
use crate::afd::{CompletionEntry, PollEvents};
use crate::kernel::{HELPER_KEY, Kernel, POLL_TAG, PollVia, WAIT_KEY, WAKE_KEY};
use crate::reactor::event::{Event, Events};
use crate::state::Update;
use std::io;
use std::time::{Duration, Instant};

/// Rounds of work that needs no waiting one call may do after its timeout has passed.
const NO_WAIT_ROUNDS: usize = 64;

/// An event not yet in the user's `Events`: kept in the stash, re-checked when delivered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stashed {
    /// A socket's readiness, as AFD events, for registration `generation`.
    Ready { generation: u64, afd: PollEvents },
    /// Registration `generation` was disarmed: the kernel refused its poll, or the poll was
    /// cancelled from outside.
    Error { generation: u64 },
    /// Waker `id` (slot and generation: its packets' ApcContext) was woken.
    Wake { id: usize },
    /// Waitable registration `generation`'s wait was satisfied.
    Signaled { generation: u64 },
    /// Waitable registration `generation` could not be armed (the kernel refused): disarmed.
    WaitRefused { generation: u64 },
}

/// The share of the room each source may take first in this poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shares {
    stash: usize,
    timers: usize,
}

/// Split `room` evenly between the busy sources (the port always counts), the remainder going
/// to them in turn order, starting with the first busy source at or after `turn` (0 stash,
/// 1 timers, 2 port). Returns the shares and the turn for the next poll (the source after the one
/// that went first), so with room for one event each busy source is served within three polls.
fn shares(room: usize, stash_busy: bool, timers_busy: bool, turn: usize) -> (Shares, usize) {
    let busy = [stash_busy, timers_busy, true];
    let n = busy.iter().filter(|&&b| b).count();
    let (base, extra) = (room / n, room % n);
    let order = (0..3).map(|i| (turn + i) % 3).filter(|&s| busy[s]);
    let mut quota = [0; 3];
    let mut first = 2;
    for (rank, source) in order.enumerate() {
        if rank == 0 {
            first = source;
        }
        quota[source] = base + usize::from(rank < extra);
    }
    let shares = Shares {
        stash: quota[0],
        timers: quota[1],
    };
    (shares, (first + 1) % 3)
}

impl<K: Kernel> Reactor<K> {
    /// Wait for events (up to `events.capacity()`), at most `timeout` (`None`: until one arrives;
    /// too large a duration, e.g. `Duration::MAX`, is the same as `None`).
    ///
    /// Before waiting it submits the re-arms and interest changes gathered since the last call
    /// (one NT call per socket at most), then dequeues a batch of packets in one NT call. Stale
    /// packets (previous incarnations) and packets that are not the reactor's are discarded and
    /// counted, never delivered. Due timers, events kept from earlier calls and the port share the
    /// room fairly; each registration and each waker appears at most once per call, each timer
    /// fires at most once per call; and a call returns empty only when nothing that needs no
    /// waiting is left (a zero timeout still finishes a resubmit or a full batch).
    ///
    /// # Errors
    /// `InvalidInput` if `events` has capacity 0; `NotConnected` after shutdown; the kernel's
    /// dequeue error (no packet is lost: they stay queued for the next call).
    /// # Examples
    /// A socket on the real reactor (Windows) becomes readable:
    /// ```
    /// # #[cfg(windows)] fn main() -> std::io::Result<()> {
    /// use afd_reactor::{Events, Interest, NtReactor, Token};
    /// use std::io::{Read, Write};
    /// use std::net::{TcpListener, TcpStream};
    /// use std::time::Duration;
    ///
    /// let mut reactor = NtReactor::new()?;
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server, _) = listener.accept()?;
    /// server.set_nonblocking(true)?;
    /// reactor.register(&server, Token(1), Interest::READABLE)?;
    ///
    /// client.write_all(b"ping")?;
    /// let mut events = Events::with_capacity(64);
    /// reactor.poll(&mut events, Some(Duration::from_secs(5)))?;
    /// let event = events.iter().next().expect("readable within 5 s");
    /// assert!(event.token() == Token(1) && event.is_readable());
    /// let mut buf = [0; 16];
    /// assert_eq!(server.read(&mut buf)?, 4);
    /// reactor.deregister(&server)?;
    /// # Ok(()) }
    /// # #[cfg(not(windows))] fn main() {}
    /// ```
    ///
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// let mut events = Events::with_capacity(64);
    /// reactor.poll(&mut events, Some(Duration::ZERO))?; // nothing ready yet
    /// assert!(events.is_empty());
    /// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
    /// reactor.poll(&mut events, None)?;
    /// assert_eq!(events.iter().next().unwrap().token(), Token(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        if events.capacity() == 0 {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "afd-reactor: poll needs an Events buffer with capacity > 0",
            ));
        }
        self.check_running()?;
        self.poll_count += 1;
        self.timers.new_poll();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut late_rounds = 0;
        loop {
            self.wakers.sweep();
            for id in self.wakers.take_owed() {
                // A wake whose post failed: delivered like any other kept event.
                self.stash_item(Stashed::Wake { id });
            }
            self.flush_updates();
            let now = Instant::now();
            let (share, next_turn) = shares(
                events.room(),
                !self.stash.is_empty(),
                self.timers.is_due(now),
                self.turn,
            );
            self.turn = next_turn;
            self.take_stash(events, share.stash);
            self.fire_timers(events, now, share.timers);
            let mut full_batch = false;
            let room = events.room();
            if room > 0 {
                let nothing_else = events.is_empty() && self.stash.is_empty();
                let wait = if nothing_else && self.updates.is_empty() {
                    let until = match (deadline, self.timers.next_deadline()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    until.map(|u| u.saturating_duration_since(now))
                } else {
                    Some(Duration::ZERO)
                };
                let n = room.min(self.entries.len());
                self.stats.nt.dequeue += 1;
                let got = match self.kernel.dequeue(&mut self.entries[..n], wait) {
                    // Never trust a count beyond the buffer.
                    Ok(got) => got.min(n),
                    // Return what this call already collected rather than lose it; the packets
                    // stay queued, and a persistent failure shows again on the next call.
                    Err(_) if !events.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                };
                for i in 0..got {
                    if let Some(item) = self.dispatch(self.entries[i]) {
                        self.emit(events, item);
                    }
                }
                full_batch = got == n;
            }
            // Room the port left: the rest of the stash, then timers due by now.
            self.take_stash(events, usize::MAX);
            self.fire_timers(events, Instant::now(), usize::MAX);
            if !events.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let more = full_batch || !self.updates.is_empty() || !self.stash.is_empty();
                if !more || late_rounds == NO_WAIT_ROUNDS {
                    return Ok(());
                }
                late_rounds += 1;
            }
        }
    }

    /// Deliver stashed events, at most `quota` of them (dropped ones count).
    fn take_stash(&mut self, events: &mut Events, quota: usize) {
        let mut taken = 0;
        while taken < quota && events.room() > 0 {
            let Some(item) = self.stash.pop_front() else {
                return;
            };
            if let Stashed::Wake { id } = item {
                self.wakers.set_stashed(id, false);
            }
            self.emit(events, item);
            taken += 1;
        }
    }

    /// Fire timers due at `now`, at most `quota` of them.
    fn fire_timers(&mut self, events: &mut Events, now: Instant, quota: usize) {
        let mut fired = 0;
        while fired < quota && events.room() > 0 {
            match self.timers.pop_due(now) {
                Some(token) => events.push(Event::timer(token)),
                None => return,
            }
            fired += 1;
        }
    }

    /// Put `item` in the user's `events`, or stash it if there is no room. Dropped if its
    /// registration has ended, its waker is gone, or that waker already has an event in this
    /// poll. A registration is re-armed once its event is delivered.
    fn emit(&mut self, events: &mut Events, item: Stashed) {
        match item {
            Stashed::Ready { generation, .. } | Stashed::Error { generation } => {
                let Some(index) = self.live_index(generation) else {
                    return; // ended meanwhile: nothing to report
                };
                let meta = self.pool.meta_mut(index).expect("live slot");
                let (event, delivered) = match item {
                    Stashed::Ready { afd, .. } => {
                        // With the interest as it is now (it may have narrowed since).
                        let wanted = meta.interest.afd_events() | PollEvents::CONNECT_FAIL;
                        let afd = afd.intersection(wanted);
                        if afd.is_empty() {
                            meta.held = false;
                            self.queue_update(index);
                            return;
                        }
                        (Event::from_afd(meta.token, afd, meta.interest), afd)
                    }
                    _ => (Event::error(meta.token), PollEvents::NONE),
                };
                if events.room() == 0 {
                    meta.held = true; // re-armed once delivered
                    self.stash.push_back(item);
                    return;
                }
                // Delivered now: the mode's bookkeeping applies (again, if a reregister re-armed
                // the registration while this event was kept). No second event of this
                // registration can come in this poll: its re-arm happens at the next flush.
                meta.machine.on_delivered(delivered);
                meta.held = false;
                events.push(event);
                self.stats.events += 1;
                self.queue_update(index);
            }
            Stashed::Signaled { .. } | Stashed::WaitRefused { .. } => {
                if let Some(event) = self.emit_waitable(item, events.room() > 0) {
                    events.push(event);
                }
            }
            Stashed::Wake { id } => {
                let Some((token, reported_in)) = self.wakers.report(id) else {
                    return;
                };
                if *reported_in == self.poll_count {
                    return; // already in this poll's events: one wake event covers both
                }
                if events.room() == 0 {
                    self.stash_item(item);
                    return;
                }
                *reported_in = self.poll_count;
                events.push(Event::wake(token));
            }
        }
    }

    /// Keep `item` for a later poll. A registration's re-arm waits until it is delivered; a
    /// waker is stashed once however often it is woken meanwhile.
    pub(super) fn stash_item(&mut self, item: Stashed) {
        match item {
            Stashed::Ready { generation, .. } | Stashed::Error { generation } => {
                if let Some(index) = self.live_index(generation) {
                    self.pool.meta_mut(index).expect("live slot").held = true;
                }
            }
            Stashed::Wake { id } => {
                if !self.wakers.set_stashed(id, true) {
                    return; // already waiting in the stash
                }
            }
            Stashed::Signaled { generation } | Stashed::WaitRefused { generation } => {
                self.hold_waitable(generation);
            }
        }
        self.stash.push_back(item);
    }

    /// Apply queued interest changes and re-arms: the submits and cancels gathered since the last
    /// dequeue, so each socket costs at most one NT call per poll.
    fn flush_updates(&mut self) {
        self.flush_wait_updates();
        let mut queue = std::mem::take(&mut self.updates);
        for &(index, generation) in &queue {
            let Some(meta) = self.pool.meta_mut(index) else {
                continue;
            };
            if meta.generation != generation {
                continue; // freed (and maybe reused) since it was queued
            }
            meta.queued = false;
            if meta.held {
                continue; // its event waits in the stash: `emit` queues it again on delivery
            }
            match meta.machine.update() {
                Update::Nothing => {}
                Update::Cancel => self.cancel(index),
                Update::Submit(_) => match self.submit(index) {
                    Ok(None) => {}
                    // Completed at submit: reported by this poll or a later one.
                    Ok(Some(item)) => self.stash_item(item),
                    Err(_) => {
                        let meta = self.pool.meta(index).expect("live slot");
                        if meta.machine.closed {
                            self.finish(index);
                        } else {
                            // Disarmed until the user reregisters: tell them, once.
                            self.stash_item(Stashed::Error { generation });
                        }
                    }
                },
            }
        }
        queue.clear();
        if self.updates.is_empty() {
            self.updates = queue; // keep the allocation
        }
    }

    /// Handle one packet; returns what to report, if anything.
    ///
    /// Only a packet with [`POLL_TAG`] in its ApcContext is taken for one of our polls (the kernel
    /// contract: nothing else carries it), and only if its generation names a poll in flight
    /// (docs/design.md §2); anything else is counted and dropped before it touches any state.
    pub(super) fn dispatch(&mut self, entry: CompletionEntry) -> Option<Stashed> {
        self.stats.packets += 1;
        if entry.key == WAKE_KEY {
            let id = self.wakers.on_packet(entry.apc_context)?;
            return Some(Stashed::Wake { id });
        }
        if entry.key == WAIT_KEY {
            return self.wait_packet(entry.apc_context);
        }
        if entry.apc_context & POLL_TAG == 0 {
            // Not ours: the user's overlapped I/O on a socket we associated (their OVERLAPPED
            // address is the ApcContext).
            self.stats.foreign_discarded += 1;
            return None;
        }
        let generation = entry.apc_context as u64;
        let index = slot_of(generation);
        let live = self
            .pool
            .meta(index)
            .is_some_and(|m| m.generation == generation && m.machine.poll.in_flight());
        if !live {
            self.stats.stale_discarded += 1;
            return None;
        }
        // The tag and the generation prove this is the one packet of this slot's poll in flight:
        // the kernel is done with the block.
        let meta = self.pool.meta(index).expect("live slot");
        let expected_key = match meta.via() {
            PollVia::Socket => self.pool.block(index).expect("live slot").as_ptr() as usize,
            PollVia::Helper(_) => HELPER_KEY,
        };
        self.stats.in_flight -= 1;
        if entry.key != expected_key {
            // Our poll was issued on a handle value that now names another socket of ours, whose
            // key it came back under: the registered socket is gone. Deliver nothing from it.
            self.stats.misrouted += 1;
            let meta = self.pool.meta_mut(index).expect("live slot");
            meta.machine.closed = true;
            return self.complete(index, entry.status(), PollEvents::LOCAL_CLOSE);
        }
        let (status, reported) = self.read_result(index);
        self.complete(index, status, reported)
    }

    /// Dequeue what is already queued (timeout 0) and keep what it reports for the next poll.
    pub(super) fn drain_into_stash(&mut self) -> io::Result<()> {
        loop {
            self.stats.nt.dequeue += 1;
            let n = self
                .kernel
                .dequeue(&mut self.entries, Some(Duration::ZERO))?
                .min(self.entries.len());
            for i in 0..n {
                if let Some(item) = self.dispatch(self.entries[i]) {
                    self.stash_item(item);
                }
            }
            if n < self.entries.len() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Shares, shares};

    #[test]
    fn with_nothing_else_busy_the_port_takes_everything() {
        let (s, _) = shares(64, false, false, 1);
        assert_eq!(
            s,
            Shares {
                stash: 0,
                timers: 0
            }
        );
    }

    #[test]
    fn busy_sources_split_the_room_and_the_remainder_goes_in_turn() {
        // Room 64, three busy sources: 21 each, one more for whoever's turn it is.
        let (s, next) = shares(64, true, true, 0);
        assert_eq!((s.stash, s.timers, next), (22, 21, 1));
        let (s, next) = shares(64, true, true, 1);
        assert_eq!((s.stash, s.timers, next), (21, 22, 2));
        let (s, next) = shares(64, true, true, 2);
        assert_eq!((s.stash, s.timers, next), (21, 21, 0), "the port's turn");
        // Timers and the port, room 2: one each.
        assert_eq!(shares(2, false, true, 0).0.timers, 1);
    }

    #[test]
    fn with_room_for_one_every_busy_source_is_served_within_three_polls() {
        // Whatever comes and goes, a source busy at every poll waits at most two polls.
        for pattern in 0..64u32 {
            let mut turn = 0;
            let mut waited = [0; 3];
            for poll in 0..30 {
                let stash_busy = (pattern >> (poll % 6)) & 1 == 1 || poll % 2 == 0;
                let (s, next) = shares(1, stash_busy, true, turn);
                turn = next;
                let served = [s.stash == 1, s.timers == 1, s.stash + s.timers == 0];
                for src in 1..3 {
                    // timers (always busy) and the port (always counted)
                    waited[src] = if served[src] { 0 } else { waited[src] + 1 };
                    assert!(waited[src] <= 2, "pattern {pattern}: source {src} starved");
                }
            }
        }
    }
}
