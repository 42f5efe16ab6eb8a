//! The per-socket state machine (docs/design.md §3 and §5): pure logic, no NT calls.
//!
//! A [`Machine`] tracks one registration: its life ([`Life::Active`] or [`Life::Zombie`]; *Dead*
//! is the slot being freed), its poll ([`PollState::Idle`], [`PollState::Pending`] or
//! [`PollState::Cancelling`]), and what the user wants ([`Mode`], the AFD mask of the interest).
//! Both kernels drive the same code: the reactor asks the machine what to do ([`Machine::update`])
//! and tells it what happened ([`Machine::on_submitted`], [`Machine::on_completion`], …); the
//! machine answers with plain values the reactor acts on.
//!
//! Invariants kept here:
//! - at most one poll outstanding per socket (a wider interest cancels, waits for the cancellation
//!   packet, then resubmits; a narrower one keeps the pending poll and filters its result);
//! - a state is freed only by the completion that ends its last poll, or when no poll is out;
//! - no mode re-arms a condition the user did not ask for: the mask is the interest's bits (minus,
//!   in edge mode, the ones already reported) plus `CONNECT_FAIL | LOCAL_CLOSE`.

use crate::afd::{NtStatus, PollEvents};
use crate::kernel::Submitted;

/// Events every poll requests whatever the interest: a failed connect must wake the user, and a
/// socket closed without deregistering must be noticed (docs/design.md §9).
pub const ALWAYS: PollEvents = PollEvents(PollEvents::CONNECT_FAIL.0 | PollEvents::LOCAL_CLOSE.0);

/// The conditions of every readiness (readable, writable, priority) that `delivered` reports,
/// within `interest`: what an `Edge` registration stops asking for once they are delivered. A
/// readiness is reported as a whole (an event for data disarms the peer-closed condition of
/// readable too), as the user sees it, so that `rearm` of it costs one submission.
const fn readiness_of(delivered: PollEvents, interest: PollEvents) -> PollEvents {
    let read = crate::Interest::READABLE.afd_events();
    let write = crate::Interest::WRITABLE.afd_events();
    let prio = crate::Interest::PRIORITY.afd_events();
    let fail = PollEvents::CONNECT_FAIL;
    let mut out = PollEvents::NONE;
    if delivered.intersects(read.union(fail)) {
        out = out.union(read);
    }
    if delivered.intersects(write.union(fail)) {
        out = out.union(write);
    }
    if delivered.intersects(prio) {
        out = out.union(prio);
    }
    out.intersection(interest)
}

/// The conditions of the readinesses of `interest` not wholly in `reported`: what an `Edge`
/// registration still asks for. A condition two readinesses share (`ABORT`) is asked for while
/// either is armed, so a reset still reaches a writer after the reader's event.
const fn unreported(interest: PollEvents, reported: PollEvents) -> PollEvents {
    let mut out = PollEvents::NONE;
    let mut i = 0;
    while i < READINESS.len() {
        let mine = READINESS[i].intersection(interest);
        if !reported.contains(mine) {
            out = out.union(mine);
        }
        i += 1;
    }
    out
}

/// The conditions of each readiness (readable, writable, priority).
const READINESS: [PollEvents; 3] = [
    crate::Interest::READABLE.afd_events(),
    crate::Interest::WRITABLE.afd_events(),
    crate::Interest::PRIORITY.afd_events(),
];

/// True if `conditions` names readiness `i` of [`READINESS`]: by any condition of its own
/// (`ABORT`, which two share, names neither).
const fn names(conditions: PollEvents, i: usize) -> bool {
    conditions.intersects(READINESS[i].difference(PollEvents::ABORT))
}

/// `reported` after a `rearm` of `conditions`: the readinesses `conditions` names are armed
/// again, the other reported ones stay reported (with their shared conditions), and so
/// does a failed connect.
const fn rearmed(interest: PollEvents, reported: PollEvents, conditions: PollEvents) -> PollEvents {
    let mut out = reported.intersection(PollEvents::CONNECT_FAIL);
    let mut i = 0;
    while i < READINESS.len() {
        let mine = READINESS[i].intersection(interest);
        if reported.contains(mine) && !names(conditions, i) {
            out = out.union(mine);
        }
        i += 1;
    }
    out
}

/// How readiness is reported after an event. Set for every registration with
/// [`Config::mode`](crate::Config::mode), or for one with
/// [`register_with_mode`](crate::Reactor::register_with_mode).
///
/// | mode | after an event | you call |
/// |---|---|---|
/// | `Level` | re-armed: a condition that still holds is reported again by the next `poll` | `reregister`, only to change the interest |
/// | `Oneshot` | disarmed | `reregister` or [`rearm`](crate::Reactor::rearm), to hear anything more from the socket |
/// | `Edge` | the conditions just reported are disarmed, the others stay armed | [`rearm`](crate::Reactor::rearm) for the one that returned `WouldBlock` |
///
/// # The `Edge` contract
/// **Each readiness is reported once, and once more after every `rearm` of it, which you call
/// when an operation returns `WouldBlock`.** A `rearm` costs the re-arm alone: no call at once,
/// and one poll submission at the next `poll`, shared by the socket's other re-arms. Beside the
/// two contracts Rust users know:
///
/// | | a new event comes when | what you call |
/// |---|---|---|
/// | epoll `EPOLLET` | the state changes (new data, new room), whether you drained or not | nothing |
/// | mio | new readiness after you have seen `WouldBlock` | nothing: on Windows, mio's own `read`/`write` re-arm when they return `WouldBlock` |
/// | afd-reactor `Edge` | the readiness holds after you have called `rearm` | `rearm`, when you see `WouldBlock` |
///
/// [`disarm`](crate::Reactor::disarm) is the inverse: a readiness it names counts as reported
/// until its `rearm`, so a registration made and disarmed polls nothing until a task waits.
///
/// This is mio's contract with its hidden call made visible: AFD has no edge trigger (a poll
/// reports what holds when it is submitted, and a writable socket is always writable), so an
/// edge must be re-armed by someone. An async layer makes the call in its I/O wrappers, as mio
/// does.
///
/// # Coming from mio
/// A program ported from mio that reads to `WouldBlock` and never calls `rearm` (or
/// `reregister`) never hears from that socket's readable side again. Use `Level` (the default)
/// for mio-style code that does not re-arm; it costs one poll submission per event, as `Edge`
/// does.
///
/// # Examples
/// ```
/// use afd_reactor::afd::PollEvents;
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, Token};
/// use std::time::Duration;
/// // On the simulated kernel (feature `test-rig`), which lets the example make data arrive.
/// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
/// let s = SimSocket(reactor.kernel().open_socket());
/// reactor.register_with_mode(&s, Token(1), Interest::READABLE, Mode::Edge)?;
/// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
/// let mut events = Events::with_capacity(8);
/// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
/// assert_eq!(events.len(), 1);
/// // Still readable, but Edge reported it once: nothing more until `rearm`.
/// reactor.poll(&mut events, Some(Duration::from_millis(10)))?;
/// assert!(events.is_empty());
/// reactor.rearm(&s, Interest::READABLE)?;
/// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
/// assert_eq!(events.len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Level-triggered: after each event the socket is re-armed with the current interest, so a
    /// condition that still holds is reported again on the next poll.
    #[default]
    Level,
    /// One-shot: after an event the socket is disarmed until the user calls `reregister`.
    Oneshot,
    /// Edge: each readiness is reported once, and once more after every
    /// [`rearm`](crate::Reactor::rearm) of it (call it when an operation returns `WouldBlock`).
    /// `reregister` re-arms every condition. Other conditions stay armed.
    Edge,
}

/// The registration's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Registered: completions are delivered to the user.
    Active,
    /// Deregistered (or its socket closed) while a poll was still in the kernel: kept allocated,
    /// delivering nothing, until that poll's packet is dequeued.
    Zombie,
}

/// The socket's one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollState {
    /// No poll in the kernel; the block is ours.
    Idle,
    /// A poll for `mask` is in the kernel; the block is the kernel's.
    Pending {
        /// The AFD events the poll asked for.
        mask: PollEvents,
    },
    /// The poll for `mask` was cancelled; its packet (cancelled or raced) is still to come.
    Cancelling {
        /// The AFD events the poll asked for.
        mask: PollEvents,
    },
}

impl PollState {
    /// True while the kernel holds the block (a packet is still to come).
    pub const fn in_flight(self) -> bool {
        !matches!(self, Self::Idle)
    }
}

/// What the reactor should do for this socket before the next dequeue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Nothing: the pending poll already covers what is wanted, or nothing is wanted.
    Nothing,
    /// Submit a poll for this mask.
    Submit(PollEvents),
    /// Cancel the pending poll (the interest grew beyond its mask).
    Cancel,
}

/// The outcome of a completion packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// Deliver these AFD events (possibly empty: nothing to deliver) and keep the registration;
    /// the caller queues an update (re-arm).
    Deliver(PollEvents),
    /// The registration is over (zombie drained, or its socket closed): free the slot, deliver
    /// nothing.
    Free,
    /// The poll ended in a way nobody here asked for (a cancel from outside, such as the user's
    /// `CancelIoEx`, or a failure): the registration is disarmed until `reregister`, and the
    /// caller reports it once as an error event. Re-arming on the handle could land on a socket
    /// the user is about to close.
    Interrupted,
}

/// What deregistering asks of the reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistered {
    /// No poll is out: free the slot now.
    FreeNow,
    /// A poll is pending: cancel it; the slot is a zombie until its packet is dequeued.
    CancelThenWait,
    /// A cancel is already in flight: the slot is a zombie until its packet is dequeued.
    Wait,
}

/// True for statuses that mean the handle no longer names a socket.
const fn socket_gone(status: NtStatus) -> bool {
    matches!(
        status,
        NtStatus::INVALID_HANDLE | NtStatus::OBJECT_TYPE_MISMATCH
    )
}

/// True for completion statuses that mean the handle the poll was issued on was closed: the
/// registered value must not be called on again (Wine completes a poll with
/// `STATUS_HANDLES_CLOSED` when its issuing handle closes while the socket lives on).
const fn closed_under_the_poll(status: NtStatus) -> bool {
    socket_gone(status) || status.0 == NtStatus::HANDLES_CLOSED.0
}

/// One registration's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Active or zombie.
    pub life: Life,
    /// The socket's poll.
    pub poll: PollState,
    /// The AFD events the interest maps to (without [`ALWAYS`]).
    pub interest: PollEvents,
    /// The reporting mode.
    pub mode: Mode,
    /// Oneshot: false after an event, until `reregister`.
    pub armed: bool,
    /// Conditions reported and not yet re-armed: the interest's in edge mode, and
    /// `CONNECT_FAIL` in every mode.
    pub reported: PollEvents,
    /// The socket is known to be closed (LOCAL_CLOSE, or the kernel said the handle is invalid).
    pub closed: bool,
}

impl Machine {
    /// A fresh registration: active, idle, armed.
    pub const fn new(interest: PollEvents, mode: Mode) -> Self {
        Self {
            life: Life::Active,
            poll: PollState::Idle,
            interest,
            mode,
            armed: true,
            reported: PollEvents::NONE,
            closed: false,
        }
    }

    /// The mask a poll should have in flight now, or `None` if no poll is wanted.
    pub const fn wanted(&self) -> Option<PollEvents> {
        if !matches!(self.life, Life::Active) || self.closed || !self.armed {
            return None;
        }
        let interest = match self.mode {
            Mode::Edge => {
                let left = unreported(self.interest, self.reported);
                if left.is_empty() && !self.interest.is_empty() {
                    // Every readiness reported and none re-armed: no poll, so that the next
                    // `rearm` is one submission (a poll for the always-requested bits alone
                    // would have to be cancelled first).
                    return None;
                }
                left
            }
            Mode::Level | Mode::Oneshot => self.interest,
        };
        let once = self.reported.intersection(PollEvents::CONNECT_FAIL);
        Some(interest.union(ALWAYS).difference(once))
    }

    /// What to do before the next dequeue. Never asks for a second poll while one is out.
    pub const fn update(&self) -> Update {
        match (self.poll, self.wanted()) {
            (PollState::Idle, Some(mask)) => Update::Submit(mask),
            (PollState::Pending { mask }, Some(want)) if !mask.contains(want) => Update::Cancel,
            _ => Update::Nothing,
        }
    }

    /// The result of submitting a poll for `mask`. Returns false if the kernel refused it and the
    /// machine stayed idle. After [`Submitted::Completed`] the poll is pending until the caller
    /// reports its result with [`Machine::on_completion`] (it already holds it; no packet comes).
    ///
    /// A refusal because the handle is no longer a socket (`INVALID_HANDLE`, or
    /// `OBJECT_TYPE_MISMATCH` when the value now names another kind of object) means the socket is
    /// gone. Any other refusal disarms the registration until `reregister`, so a persistent
    /// failure cannot spin; the reactor reports it once as an error event.
    pub fn on_submitted(&mut self, mask: PollEvents, outcome: Submitted) -> bool {
        debug_assert!(matches!(self.poll, PollState::Idle));
        match outcome {
            Submitted::Queued | Submitted::Completed => {
                self.poll = PollState::Pending { mask };
                true
            }
            Submitted::Refused(status) => {
                if socket_gone(status) {
                    self.closed = true;
                } else {
                    self.armed = false;
                }
                false
            }
        }
    }

    /// A cancel was issued for the pending poll (whatever it returned: if the poll had already
    /// finished its packet is queued, and a closed handle's poll ends with LOCAL_CLOSE).
    pub fn on_cancel_issued(&mut self) {
        if let PollState::Pending { mask } = self.poll {
            self.poll = PollState::Cancelling { mask };
        }
    }

    /// An event with `delivered` (AFD events, already within the interest) reached the user. The
    /// mode's bookkeeping is redone here — a no-op right after [`Machine::on_completion`] — so a
    /// registration that `reregister` re-armed while its event was kept for a later poll is
    /// disarmed again (oneshot) or stops asking for what it reported (edge) once that event is
    /// delivered.
    pub fn on_delivered(&mut self, delivered: PollEvents) {
        match self.mode {
            Mode::Level => {}
            Mode::Oneshot => self.armed = false,
            Mode::Edge => self.reported |= readiness_of(delivered, self.interest),
        }
        self.reported |= delivered.intersection(PollEvents::CONNECT_FAIL);
    }

    /// The user changed interest (and possibly mode). Re-arms edge and oneshot conditions.
    pub fn on_reregister(&mut self, interest: PollEvents, mode: Mode) {
        self.interest = interest;
        self.mode = mode;
        self.armed = true;
        self.reported = PollEvents::NONE;
    }

    /// The user re-armed the conditions `conditions` (AFD events of an interest): in edge mode
    /// they are reported again; in oneshot mode the registration is re-armed; in every mode a
    /// registration disarmed by an error is retried. The interest, the mode and a failed
    /// connect's once-only report are kept.
    pub fn on_rearm(&mut self, conditions: PollEvents) {
        self.armed = true;
        self.reported = rearmed(self.interest, self.reported, conditions);
    }

    /// What a `disarm` of `conditions` withholds from an answer already in flight or kept for a
    /// later poll: in edge mode the readinesses it names (and `ABORT` only if no readiness of the
    /// interest it leaves armed shares it); in oneshot mode everything; in level mode nothing.
    pub const fn withheld_by_disarm(&self, conditions: PollEvents) -> PollEvents {
        match self.mode {
            Mode::Level => PollEvents::NONE,
            Mode::Oneshot => PollEvents(u32::MAX),
            Mode::Edge => {
                let mut named = PollEvents::NONE;
                let mut left = PollEvents::NONE;
                let mut i = 0;
                while i < READINESS.len() {
                    let mine = READINESS[i].intersection(self.interest);
                    if names(conditions, i) {
                        named = named.union(mine);
                    } else if !self.reported.contains(mine) {
                        left = left.union(mine);
                    }
                    i += 1;
                }
                named.difference(left)
            }
        }
    }

    /// The user disarmed the conditions `conditions` (AFD events of an interest) until their
    /// `rearm`: in edge mode the readinesses they name count as reported; in oneshot mode the
    /// registration is disarmed; in level mode nothing changes. A poll in flight is kept, and
    /// what it reports is filtered (see [`Machine::withheld_by_disarm`]).
    pub fn on_disarm(&mut self, conditions: PollEvents) {
        match self.mode {
            Mode::Level => {}
            Mode::Oneshot => self.armed = false,
            Mode::Edge => {
                let mut i = 0;
                while i < READINESS.len() {
                    if names(conditions, i) {
                        self.reported |= READINESS[i].intersection(self.interest);
                    }
                    i += 1;
                }
            }
        }
    }

    /// The user deregistered. A pending poll makes the machine a zombie.
    pub fn on_deregister(&mut self) -> Deregistered {
        match self.poll {
            PollState::Idle => Deregistered::FreeNow,
            PollState::Pending { .. } => {
                self.life = Life::Zombie;
                Deregistered::CancelThenWait
            }
            PollState::Cancelling { .. } => {
                self.life = Life::Zombie;
                Deregistered::Wait
            }
        }
    }

    /// The packet of the outstanding poll was dequeued, with the IO_STATUS_BLOCK status and the
    /// events the poll reported (read only when `status` is a success; pass `NONE` otherwise).
    ///
    /// The caller has already checked that a poll was in flight (a packet for an idle machine is
    /// stale and never reaches here).
    pub fn on_completion(&mut self, status: NtStatus, reported: PollEvents) -> Completed {
        debug_assert!(self.poll.in_flight());
        let asked = matches!(self.poll, PollState::Cancelling { .. });
        self.poll = PollState::Idle;
        let reported = if status.is_success() {
            reported
        } else {
            // Cancelled, handles closed (Wine), or a failure: the buffer holds no answer.
            self.closed |= closed_under_the_poll(status);
            if !asked && !self.closed && matches!(self.life, Life::Active) {
                // Not our cancel: the user's CancelIoEx (often just before a close), or a
                // failure. Never re-arm blindly on the handle.
                self.armed = false;
                return Completed::Interrupted;
            }
            PollEvents::NONE
        };
        if reported.contains(PollEvents::LOCAL_CLOSE) {
            self.closed = true;
        }
        if matches!(self.life, Life::Zombie) || self.closed {
            return Completed::Free;
        }
        let open = match self.mode {
            Mode::Edge => unreported(self.interest, self.reported),
            // Disarmed while its poll was out (`disarm`): nothing until it is re-armed.
            Mode::Oneshot if !self.armed => PollEvents::NONE,
            Mode::Level | Mode::Oneshot => self.interest,
        };
        let deliver = reported
            .intersection(open.union(PollEvents::CONNECT_FAIL))
            .difference(self.reported.intersection(PollEvents::CONNECT_FAIL));
        if !deliver.is_empty() {
            match self.mode {
                Mode::Level => {}
                Mode::Oneshot => self.armed = false,
                Mode::Edge => self.reported |= readiness_of(deliver, self.interest),
            }
            // A failed connect stays failed: report it once per (re)registration in every mode,
            // so neither a paused registration nor an edge one spins on it.
            self.reported |= deliver.intersection(PollEvents::CONNECT_FAIL);
        }
        Completed::Deliver(deliver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: PollEvents = PollEvents::RECEIVE;
    const S: PollEvents = PollEvents::SEND;

    fn armed(interest: PollEvents, mode: Mode) -> Machine {
        let mut m = Machine::new(interest, mode);
        let Update::Submit(mask) = m.update() else {
            panic!("a new registration submits")
        };
        assert!(m.on_submitted(mask, Submitted::Queued));
        m
    }

    #[test]
    fn new_registration_submits_interest_plus_always_bits() {
        let m = Machine::new(R, Mode::Level);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS));
    }

    #[test]
    fn one_poll_at_a_time() {
        let m = armed(R, Mode::Level);
        assert_eq!(
            m.update(),
            Update::Nothing,
            "pending poll covers the interest"
        );
    }

    #[test]
    fn narrower_interest_keeps_the_pending_poll_wider_cancels() {
        let mut m = armed(R | S, Mode::Level);
        m.on_reregister(R, Mode::Level);
        assert_eq!(m.update(), Update::Nothing, "no NT call to narrow");
        m.on_reregister(R | S | PollEvents::RECEIVE_EXPEDITED, Mode::Level);
        assert_eq!(m.update(), Update::Cancel);
        m.on_cancel_issued();
        assert_eq!(
            m.update(),
            Update::Nothing,
            "wait for the cancellation packet"
        );
        assert_eq!(
            m.on_completion(NtStatus::CANCELLED, PollEvents::NONE),
            Completed::Deliver(PollEvents::NONE),
            "our own cancel: re-armed quietly"
        );
        assert_eq!(
            m.update(),
            Update::Submit(R | S | PollEvents::RECEIVE_EXPEDITED | ALWAYS)
        );
    }

    #[test]
    fn completion_filters_events_the_user_no_longer_wants() {
        let mut m = armed(R | S, Mode::Level);
        m.on_reregister(R, Mode::Level);
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, S),
            Completed::Deliver(PollEvents::NONE)
        );
        assert_eq!(
            m.update(),
            Update::Submit(R | ALWAYS),
            "re-armed without SEND"
        );
    }

    #[test]
    fn level_rearms_with_the_same_mask() {
        let mut m = armed(R, Mode::Level);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        assert_eq!(m.update(), Update::Submit(R | ALWAYS));
    }

    #[test]
    fn oneshot_disarms_until_reregister() {
        let mut m = armed(R, Mode::Oneshot);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        assert_eq!(m.update(), Update::Nothing);
        m.on_reregister(R, Mode::Oneshot);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS));
    }

    #[test]
    fn edge_reports_a_condition_once_and_keeps_the_others_armed() {
        let mut m = armed(R | S, Mode::Edge);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, S), Completed::Deliver(S));
        assert_eq!(
            m.update(),
            Update::Submit(R | ALWAYS),
            "writable not re-armed"
        );
        assert!(m.on_submitted(R | ALWAYS, Submitted::Queued));
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        assert_eq!(m.update(), Update::Nothing, "all reported: no poll");
        m.on_reregister(R | S, Mode::Edge);
        assert_eq!(m.update(), Update::Submit(R | S | ALWAYS), "re-established");
    }

    #[test]
    fn edge_rearm_re_establishes_only_what_it_names() {
        let mut m = armed(R | S, Mode::Edge);
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, R | S),
            Completed::Deliver(R | S)
        );
        assert_eq!(m.update(), Update::Nothing, "both reported: no poll");
        m.on_rearm(R);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS), "SEND stays quiet");
        assert!(m.on_submitted(R | ALWAYS, Submitted::Queued));
        m.on_rearm(R);
        assert_eq!(m.update(), Update::Nothing, "already armed: no call");
        m.on_rearm(S);
        assert_eq!(
            m.update(),
            Update::Cancel,
            "widening a pending poll cancels it"
        );
        m.on_rearm(PollEvents::RECEIVE_EXPEDITED);
        assert_eq!(m.interest, R | S, "rearm never widens the interest");
    }

    #[test]
    fn disarm_makes_an_edge_registration_wait_for_its_rearm() {
        let read = crate::Interest::READABLE.afd_events();
        let write = crate::Interest::WRITABLE.afd_events();
        let mut m = Machine::new(read | write, Mode::Edge);
        m.on_disarm(read | write);
        assert_eq!(m.update(), Update::Nothing, "nothing armed: no poll");
        m.on_rearm(write);
        assert_eq!(m.update(), Update::Submit(write | ALWAYS));
        assert!(m.on_submitted(write | ALWAYS, Submitted::Queued));
        m.on_disarm(write);
        assert_eq!(m.update(), Update::Nothing, "the poll in flight is kept");
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, S),
            Completed::Deliver(PollEvents::NONE),
            "and its answer filtered"
        );
        assert_eq!(m.update(), Update::Nothing);
        let mut m = armed(R, Mode::Oneshot);
        m.on_disarm(R);
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, R),
            Completed::Deliver(PollEvents::NONE),
            "oneshot: an answer already in flight is withheld"
        );
        assert_eq!(m.update(), Update::Nothing);
        m.on_rearm(R);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS));
    }

    #[test]
    fn edge_reports_a_readiness_as_a_whole() {
        let read = crate::Interest::READABLE.afd_events();
        let write = crate::Interest::WRITABLE.afd_events();
        let mut m = armed(read | write, Mode::Edge);
        // Data: readable is reported, its peer-closed condition with it; writable stays armed.
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        assert_eq!(m.update(), Update::Submit(write | ALWAYS));
        assert!(m.on_submitted(write | ALWAYS, Submitted::Queued));
        assert_eq!(m.on_completion(NtStatus::SUCCESS, S), Completed::Deliver(S));
        assert_eq!(m.update(), Update::Nothing);
        m.on_rearm(read);
        assert_eq!(m.update(), Update::Submit(read | ALWAYS), "one submission");
        // A reset is both readinesses.
        assert!(m.on_submitted(read | ALWAYS, Submitted::Queued));
        let abort = PollEvents::ABORT;
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, abort),
            Completed::Deliver(abort)
        );
        assert_eq!(m.update(), Update::Nothing);
        // A paused edge registration keeps its always-requested poll.
        let m = armed(PollEvents::NONE, Mode::Edge);
        assert_eq!(m.poll, PollState::Pending { mask: ALWAYS });
    }

    #[test]
    fn rearm_keeps_a_failed_connect_reported_and_retries_a_disarmed_registration() {
        let mut m = armed(S, Mode::Edge);
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, PollEvents::CONNECT_FAIL),
            Completed::Deliver(PollEvents::CONNECT_FAIL)
        );
        m.on_rearm(S | PollEvents::CONNECT_FAIL);
        assert_eq!(m.update(), Update::Submit(S | PollEvents::LOCAL_CLOSE));
        let mut m = armed(R, Mode::Oneshot);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        m.on_rearm(R);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS), "oneshot: re-armed");
        let mut m = armed(R, Mode::Level);
        assert_eq!(
            m.on_completion(NtStatus::CANCELLED, PollEvents::NONE),
            Completed::Interrupted
        );
        assert_eq!(m.update(), Update::Nothing);
        m.on_rearm(R);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS), "retried");
    }

    #[test]
    fn delivering_a_kept_event_after_a_reregister_disarms_again() {
        let mut m = armed(R, Mode::Oneshot);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
        m.on_reregister(R | S, Mode::Oneshot); // before the kept event was delivered
        m.on_delivered(R);
        assert_eq!(
            m.update(),
            Update::Nothing,
            "oneshot: disarmed by its delivered event"
        );
        let mut m = armed(R | S, Mode::Edge);
        assert_eq!(m.on_completion(NtStatus::SUCCESS, S), Completed::Deliver(S));
        m.on_reregister(R | S, Mode::Edge);
        m.on_delivered(S);
        assert_eq!(
            m.update(),
            Update::Submit(R | ALWAYS),
            "edge: SEND was reported"
        );
        let mut m = Machine::new(R, Mode::Level);
        m.on_delivered(R);
        assert_eq!(
            m.update(),
            Update::Submit(R | ALWAYS),
            "level: nothing changes"
        );
    }

    #[test]
    fn no_mode_spins_on_writable_the_user_did_not_ask_for() {
        for mode in [Mode::Level, Mode::Oneshot, Mode::Edge] {
            let m = Machine::new(R, mode);
            let Update::Submit(mask) = m.update() else {
                panic!()
            };
            assert!(!mask.intersects(S), "{mode:?} asked for SEND");
        }
    }

    #[test]
    fn deregister_idle_frees_now_pending_becomes_zombie() {
        let mut idle = Machine::new(R, Mode::Level);
        assert_eq!(idle.on_deregister(), Deregistered::FreeNow);
        let mut m = armed(R, Mode::Level);
        assert_eq!(m.on_deregister(), Deregistered::CancelThenWait);
        assert_eq!(m.life, Life::Zombie);
        m.on_cancel_issued();
        assert_eq!(m.update(), Update::Nothing, "zombies never re-arm");
        // A raced completion with real events still delivers nothing.
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Free);
    }

    #[test]
    fn deregister_while_cancelling_waits() {
        let mut m = armed(R, Mode::Level);
        m.on_reregister(R | S, Mode::Level);
        m.on_cancel_issued();
        assert_eq!(m.on_deregister(), Deregistered::Wait);
        assert_eq!(
            m.on_completion(NtStatus::CANCELLED, PollEvents::NONE),
            Completed::Free
        );
    }

    #[test]
    fn local_close_frees_without_delivery() {
        let mut m = armed(R, Mode::Level);
        assert_eq!(
            m.on_completion(NtStatus::SUCCESS, PollEvents::LOCAL_CLOSE | R),
            Completed::Free
        );
    }

    #[test]
    fn a_closed_issuing_handle_ends_the_registration_without_reading_the_buffer() {
        let mut m = armed(R, Mode::Level);
        // Wine: the handle the poll was issued on was closed. The buffer still holds the
        // requested mask: it must not be read, and the value must not be polled again.
        assert_eq!(
            m.on_completion(NtStatus::HANDLES_CLOSED, R),
            Completed::Free
        );
        assert!(m.closed);
    }

    #[test]
    fn a_cancel_nobody_asked_for_disarms_until_reregister() {
        for status in [NtStatus::CANCELLED, NtStatus::INSUFFICIENT_RESOURCES] {
            let mut m = armed(R, Mode::Level);
            assert_eq!(m.on_completion(status, R), Completed::Interrupted);
            assert_eq!(m.update(), Update::Nothing, "{status}: not re-armed");
            m.on_reregister(R, Mode::Level);
            assert_eq!(m.update(), Update::Submit(R | ALWAYS), "{status}");
        }
        // A zombie's poll ends the same way whoever cancelled it.
        let mut m = armed(R, Mode::Level);
        m.life = Life::Zombie;
        assert_eq!(m.on_completion(NtStatus::CANCELLED, R), Completed::Free);
    }

    #[test]
    fn connect_fail_is_delivered_whatever_the_interest_once() {
        for mode in [Mode::Level, Mode::Oneshot, Mode::Edge] {
            let mut m = armed(PollEvents::NONE, mode);
            assert_eq!(
                m.on_completion(NtStatus::SUCCESS, PollEvents::CONNECT_FAIL),
                Completed::Deliver(PollEvents::CONNECT_FAIL)
            );
            if let Update::Submit(mask) = m.update() {
                assert!(
                    !mask.intersects(PollEvents::CONNECT_FAIL),
                    "{mode:?} re-asks"
                );
            }
            m.on_reregister(PollEvents::NONE, mode);
            assert_eq!(
                m.update(),
                Update::Submit(ALWAYS),
                "{mode:?}: reregister re-arms it"
            );
        }
    }

    #[test]
    fn a_poll_completed_at_submit_is_pending_until_its_result_is_reported() {
        let mut m = Machine::new(R, Mode::Level);
        assert!(m.on_submitted(R | ALWAYS, Submitted::Completed));
        assert!(m.poll.in_flight());
        assert_eq!(m.on_completion(NtStatus::SUCCESS, R), Completed::Deliver(R));
    }

    #[test]
    fn failed_submit_disarms_until_reregister() {
        let mut m = Machine::new(R, Mode::Level);
        assert!(!m.on_submitted(
            R | ALWAYS,
            Submitted::Refused(NtStatus::INSUFFICIENT_RESOURCES)
        ));
        assert_eq!(m.poll, PollState::Idle);
        assert_eq!(m.update(), Update::Nothing, "no retry loop");
        m.on_reregister(R, Mode::Level);
        assert_eq!(m.update(), Update::Submit(R | ALWAYS), "the user retries");
    }

    #[test]
    fn a_handle_that_is_no_longer_a_socket_means_closed() {
        for status in [NtStatus::INVALID_HANDLE, NtStatus::OBJECT_TYPE_MISMATCH] {
            let mut m = Machine::new(R, Mode::Level);
            assert!(!m.on_submitted(R | ALWAYS, Submitted::Refused(status)));
            assert!(m.closed);
            assert_eq!(m.update(), Update::Nothing);
        }
    }
}
