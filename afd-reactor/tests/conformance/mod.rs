//! The conformance suite: one set of test bodies, run on the simulated kernel (natively, under
//! Miri) and on the real NT kernel (under Wine). Each body is generic over a [`Harness`] that knows
//! how to make a socket ready, drain it, close it, and so on, on its kernel.
#![allow(dead_code)]

use afd_reactor::kernel::Kernel;
use afd_reactor::{Event, Events, Interest, Mode, Reactor, Source, Token};
use std::io;
use std::time::{Duration, Instant};

/// What a test needs from a kernel's world.
pub trait Harness: Sized {
    type K: Kernel;
    /// A socket the tests register (owned: dropping or `close` closes it).
    type Sock: Source;
    fn new() -> Self;
    fn reactor(&mut self) -> &mut Reactor<Self::K>;
    /// A connected socket: writable, nothing to read.
    fn socket(&mut self) -> Self::Sock;
    /// Make data arrive on `s` (the peer writes).
    fn make_readable(&mut self, s: &Self::Sock);
    /// Read everything `s` has (to WouldBlock).
    fn drain(&mut self, s: &Self::Sock);
    /// The peer shuts down its sending side (FIN).
    fn peer_shutdown(&mut self, s: &Self::Sock);
    /// The peer closes its socket gracefully (FIN).
    fn peer_close(&mut self, s: &Self::Sock);
    /// The peer resets the connection (RST: closes with `SO_LINGER` {on, 0}).
    fn peer_reset(&mut self, s: &Self::Sock);
    /// A socket whose non-blocking connect is in progress and will fail (nobody listens).
    fn failing_connect(&mut self) -> Self::Sock;
    /// Close `s` (closesocket) without telling the reactor.
    fn close(&mut self, s: Self::Sock);
    /// Bind `s` to another completion port first, as another runtime would.
    fn bind_elsewhere(&mut self, s: &Self::Sock);
    /// Cancel every I/O request issued on `s`, as the user's `CancelIoEx(s, NULL)` does.
    fn cancel_io(&mut self, s: &Self::Sock);
    /// How long to wait for something that should arrive (generous under Wine).
    fn patience(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// How long to wait to be sure nothing arrives.
    fn quiet(&self) -> Duration {
        Duration::from_millis(50)
    }
    /// True if closing a socket and opening another reuses the handle value at once (the sim).
    fn reuses_handles_at_once(&self) -> bool;
    /// True if closing a registered socket ends its poll (Windows: `LOCAL_CLOSE`). Linux says
    /// nothing when a descriptor is closed: the registration stays until the number is
    /// registered again, or teardown.
    fn close_is_noticed(&self) -> bool {
        true
    }
    /// True if every socket is polled through the helper (no association ever made).
    fn helper_only(&self) -> bool {
        false
    }
    /// Handles that are open but are not sockets (a file, a pipe, an event or port...), with a
    /// name for messages. The harness keeps them open.
    fn not_sockets(&mut self) -> Vec<(&'static str, u64)>;
    /// A value that names no open handle.
    fn invalid_value(&self) -> u64;
    /// The value of a socket that has just been closed (nothing opened since), and a guard:
    /// while it lives no other socket can be opened by this process, so a test running in
    /// parallel cannot be handed the value. Open no socket on this harness while holding it.
    fn closed_socket_value(&mut self) -> (u64, Box<dyn std::any::Any>);
    /// Rounds of the handle-reuse churn (each: 8 sockets registered, made ready, closed).
    fn churn_rounds(&self) -> usize;
}

/// Poll until an event for `token` arrives (or the patience runs out); returns it.
#[track_caller]
pub fn wait_for<H: Harness>(h: &mut H, token: Token) -> Event {
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    while start.elapsed() < patience {
        h.reactor()
            .poll(&mut events, Some(patience / 10))
            .expect("poll");
        if let Some(e) = events.iter().find(|e| e.token() == token) {
            return *e;
        }
    }
    panic!("no event for {token:?} within {patience:?}");
}

/// Poll for `quiet` and return every event seen.
#[track_caller]
pub fn collect<H: Harness>(h: &mut H, quiet: Duration) -> Vec<Event> {
    let mut events = Events::with_capacity(64);
    let mut all = Vec::new();
    let start = Instant::now();
    loop {
        let left = quiet.saturating_sub(start.elapsed());
        h.reactor().poll(&mut events, Some(left)).expect("poll");
        all.extend(events.iter().copied());
        if start.elapsed() >= quiet {
            return all;
        }
    }
}

#[track_caller]
pub fn assert_no_event_for<H: Harness>(h: &mut H, token: Token) {
    let quiet = h.quiet();
    let seen = collect(h, quiet);
    assert!(
        seen.iter().all(|e| e.token() != token),
        "unexpected events for {token:?}: {seen:?}"
    );
}

/// Poll until the reactor holds no zombie and nothing is in flight for dead states; returns the
/// events those polls delivered.
#[track_caller]
pub fn settle_zombies<H: Harness>(h: &mut H) -> Vec<Event> {
    let patience = h.patience();
    let start = Instant::now();
    let mut seen = Vec::new();
    while h.reactor().stats().zombies > 0 {
        assert!(
            start.elapsed() < patience,
            "zombies never drained: {:?}",
            h.reactor().stats()
        );
        seen.extend(collect(h, Duration::from_millis(10)));
    }
    seen
}

/// Closes `old` and opens a new socket; returns it and whether it got `old`'s handle value
/// (always, on a harness that reuses values at once).
fn close_and_open_another<H: Harness>(h: &mut H, old: H::Sock) -> (H::Sock, bool) {
    let old_value = old.raw_socket();
    h.close(old);
    let new = h.socket();
    let reused = new.raw_socket() == old_value;
    if h.reuses_handles_at_once() {
        assert!(reused, "the sim recycles handle values at once");
    }
    (new, reused)
}

const A: Token = Token(1);
const B: Token = Token(2);
const C: Token = Token(3);
const WAKE: Token = Token(99);
const TIMER: Token = Token(50);

// --- events and modes (docs/design.md §5) -------------------------------------------------------------

pub fn readable_event_is_delivered<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    let e = wait_for(&mut h, A);
    assert!(
        e.is_readable() && !e.is_writable() && !e.is_error(),
        "{e:?}"
    );
}

pub fn writable_event_is_delivered<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::WRITABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable() && !e.is_readable(), "{e:?}");
}

pub fn level_reports_again_until_drained<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    wait_for(&mut h, A);
    wait_for(&mut h, A); // not drained: reported again
    h.drain(&s);
    // One poll may already be in flight with the old answer; after it, silence.
    let q = h.quiet();
    let _ = collect(&mut h, q);
    assert_no_event_for(&mut h, A);
}

pub fn oneshot_disarms_until_reregister<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor()
        .register_with_mode(&s, A, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    h.make_readable(&s);
    wait_for(&mut h, A);
    assert_no_event_for(&mut h, A); // data still there, but disarmed
    h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    wait_for(&mut h, A);
}

pub fn edge_reports_each_condition_once<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    let both = Interest::READABLE | Interest::WRITABLE;
    h.reactor()
        .register_with_mode(&s, A, both, Mode::Edge)
        .unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable(), "{e:?}");
    // Writable stays true, but is not reported again; readable still is, once.
    h.make_readable(&s);
    let e = wait_for(&mut h, A);
    assert!(e.is_readable() && !e.is_writable(), "{e:?}");
    assert_no_event_for(&mut h, A);
    // Re-established by reregister (after the user hit WouldBlock).
    h.reactor().reregister(&s, A, both).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable(), "{e:?}");
}

/// The `Edge` contract: each readiness once, and once more after every `rearm` of it, at the
/// cost of the re-arm alone.
pub fn edge_rearm_reports_once_more_for_one_submission<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    let both = Interest::READABLE | Interest::WRITABLE;
    h.reactor()
        .register_with_mode(&s, A, both, Mode::Edge)
        .unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable(), "{e:?}");
    h.make_readable(&s);
    let e = wait_for(&mut h, A);
    assert!(e.is_readable(), "{e:?}");
    assert_no_event_for(&mut h, A);
    // Read to WouldBlock, re-arm readable: nothing until new data, and writable stays quiet.
    h.drain(&s);
    let before = h.reactor().stats().nt;
    h.reactor().rearm(&s, Interest::READABLE).unwrap();
    assert_eq!(h.reactor().stats().nt, before, "rearm itself makes no call");
    assert_no_event_for(&mut h, A);
    let after = h.reactor().stats().nt;
    assert!(
        after.submit - before.submit <= 1 && after.cancel == before.cancel,
        "one submission for the re-arm: {before:?} -> {after:?}"
    );
    h.make_readable(&s);
    let e = wait_for(&mut h, A);
    assert!(e.is_readable() && !e.is_writable(), "{e:?}");
    // Re-arming a condition that holds reports it at once (writable), and only it.
    h.reactor().rearm(&s, Interest::WRITABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable() && !e.is_readable(), "{e:?}");
    // Re-arming twice before a poll is one re-arm; re-arming what is armed is none.
    h.drain(&s);
    h.reactor().rearm(&s, Interest::READABLE).unwrap();
    h.reactor().rearm(&s, Interest::READABLE).unwrap();
    let before = h.reactor().stats().nt;
    assert_no_event_for(&mut h, A);
    h.reactor().rearm(&s, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A);
    let after = h.reactor().stats().nt;
    assert!(after.submit - before.submit <= 1, "{before:?} -> {after:?}");
    // Unknown sockets are refused.
    let other = h.socket();
    assert_eq!(
        h.reactor()
            .rearm(&other, Interest::READABLE)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
}

/// `disarm` after `register`: nothing is polled until a `rearm`, and each `rearm` is one
/// submission (the async layer's way of arming a direction only when a task waits for it).
pub fn a_disarmed_edge_registration_polls_only_what_is_rearmed<H: Harness>() {
    let mut h = H::new();
    let s = h.socket(); // writable
    let both = Interest::READABLE | Interest::WRITABLE;
    h.reactor()
        .register_with_mode(&s, A, both, Mode::Edge)
        .unwrap();
    h.reactor().disarm(&s, both).unwrap();
    h.make_readable(&s);
    let quiet = h.quiet();
    let _ = collect(&mut h, quiet); // what the registration's own poll found, if anything
    let before = h.reactor().stats().nt;
    assert_no_event_for(&mut h, A);
    assert_eq!(
        h.reactor().stats().nt.submit,
        before.submit,
        "nothing armed"
    );
    h.reactor().rearm(&s, Interest::WRITABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable() && !e.is_readable(), "{e:?}");
    h.reactor().rearm(&s, Interest::READABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_readable() && !e.is_writable(), "{e:?}");
    let after = h.reactor().stats().nt;
    assert_eq!(after.submit - before.submit, 2, "one submission per rearm");
    assert_eq!(after.cancel, before.cancel);
}

pub fn no_spin_on_writable_without_interest<H: Harness>() {
    let mut h = H::new();
    let s = h.socket(); // always writable
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    let before = h.reactor().stats().nt;
    assert_no_event_for(&mut h, A);
    let after = h.reactor().stats().nt;
    assert_eq!(
        after.submit, before.submit,
        "re-armed without an event: spinning"
    );
}

pub fn backpressure_pauses_without_spinning<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    wait_for(&mut h, A);
    // The user cannot take more: drop READABLE (pause). Data stays unread.
    h.reactor().reregister(&s, A, Interest::NONE).unwrap();
    let _ = collect(&mut h, Duration::from_millis(10)); // the in-flight level re-arm, if any
    let before = h.reactor().stats().nt;
    assert_no_event_for(&mut h, A);
    let after = h.reactor().stats().nt;
    assert!(
        after.submit - before.submit <= 1,
        "paused socket kept re-arming: {before:?} -> {after:?}"
    );
    h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    assert!(
        wait_for(&mut h, A).is_readable(),
        "resumes with the data still there"
    );
}

pub fn interest_change_mid_poll_cancels_and_resubmits<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A); // poll pending, nothing to read
    let before = h.reactor().stats().nt;
    h.reactor()
        .reregister(&s, A, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_writable(), "{e:?}");
    let after = h.reactor().stats().nt;
    assert_eq!(
        after.cancel - before.cancel,
        1,
        "one cancel for the wider interest"
    );
    assert!(
        h.reactor().stats().in_flight <= 1,
        "one poll per socket at most"
    );
}

pub fn narrowing_interest_costs_no_nt_call<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor()
        .register(&s, A, Interest::READABLE | Interest::PRIORITY)
        .unwrap();
    assert_no_event_for(&mut h, A);
    let before = h.reactor().stats().nt;
    h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A);
    let after = h.reactor().stats().nt;
    assert_eq!((after.cancel, after.submit), (before.cancel, before.submit));
    h.make_readable(&s);
    wait_for(&mut h, A);
}

pub fn peer_shutdown_is_read_closed<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.peer_shutdown(&s);
    let e = wait_for(&mut h, A);
    assert!(
        e.is_readable() && e.is_read_closed() && !e.is_write_closed(),
        "{e:?}"
    );
}

// --- what happened to the socket: the table in `Event`'s documentation ----------------------------

pub fn peer_close_is_read_closed_and_not_a_reset<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.peer_close(&s);
    let e = wait_for(&mut h, A);
    assert!(e.is_readable() && e.is_read_closed(), "{e:?}");
    assert!(
        !e.is_write_closed() && !e.is_reset() && !e.is_error(),
        "{e:?}"
    );
}

pub fn peer_reset_is_a_reset<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.peer_reset(&s);
    let e = wait_for(&mut h, A);
    assert!(e.is_reset() && e.is_readable(), "{e:?}");
    assert!(e.is_read_closed() && e.is_write_closed(), "{e:?}");
    assert!(!e.is_error() && !e.is_timer() && !e.is_wake(), "{e:?}");
}

pub fn failed_connect_is_an_error<H: Harness>() {
    let mut h = H::new();
    let s = h.failing_connect();
    h.reactor().register(&s, A, Interest::WRITABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_error() && e.is_writable(), "{e:?}");
    assert!(e.is_read_closed() && e.is_write_closed(), "{e:?}");
    assert!(!e.is_reset() && !e.is_readable(), "{e:?}");
}

pub fn a_paused_registration_still_hears_of_a_failed_connect<H: Harness>() {
    let mut h = H::new();
    let s = h.failing_connect();
    h.reactor().register(&s, A, Interest::NONE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_error(), "{e:?}");
    assert!(
        !e.is_readable() && !e.is_writable(),
        "nothing was asked: {e:?}"
    );
}

pub fn a_reset_while_paused_is_reported_once_widened<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.reactor().reregister(&s, A, Interest::NONE).unwrap();
    h.peer_reset(&s);
    assert_no_event_for(&mut h, A);
    h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    let e = wait_for(&mut h, A);
    assert!(e.is_reset() && e.is_readable(), "{e:?}");
}

/// Sockets, timers and wakers share the token space: on one token they stay separate events,
/// each saying where it comes from.
pub fn a_socket_a_timer_and_a_waker_on_one_token_are_three_events<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    h.reactor().add_timer(A, Duration::ZERO, None).unwrap();
    h.reactor().waker(A).unwrap().wake().unwrap();
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    let (mut timer, mut wake, mut socket) = (false, false, false);
    while !(timer && wake && socket) {
        assert!(
            start.elapsed() < patience,
            "timer {timer}, wake {wake}, socket {socket}"
        );
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        let seen: Vec<Event> = events.iter().copied().collect();
        assert!(seen.iter().all(|e| e.token() == A), "{seen:?}");
        let timers = seen.iter().filter(|e| e.is_timer()).count();
        let wakes = seen.iter().filter(|e| e.is_wake()).count();
        let sockets: Vec<&Event> = seen
            .iter()
            .filter(|e| !e.is_timer() && !e.is_wake())
            .collect();
        assert!(
            timers <= 1 && wakes <= 1 && sockets.len() <= 1,
            "one each at most: {seen:?}"
        );
        assert!(sockets.iter().all(|e| e.is_readable()), "{seen:?}");
        timer |= timers == 1;
        wake |= wakes == 1;
        socket |= sockets.len() == 1;
    }
}

pub fn timers_refuse_a_zero_period_and_end_with_shutdown<H: Harness>() {
    let mut h = H::new();
    let e = h
        .reactor()
        .add_timer(TIMER, Duration::ZERO, Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(h.reactor().stats().timers, 0, "nothing was added");
    let id = h
        .reactor()
        .add_timer(TIMER, Duration::from_secs(60), None)
        .unwrap();
    h.reactor().shutdown().unwrap();
    let e = h
        .reactor()
        .add_timer(TIMER, Duration::ZERO, None)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    // Shutdown drops the timers (found by review).
    assert_eq!(h.reactor().stats().timers, 0);
    assert!(!h.reactor().cancel_timer(id), "the timer is gone");
}

// --- incarnations and zombies (docs/design.md §2, §3) -------------------------------------------------

pub fn deregister_with_pending_poll_then_late_packet<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A); // pending
    h.reactor().deregister(&s).unwrap();
    assert_eq!(
        h.reactor().stats().zombies,
        1,
        "pending poll keeps the state as a zombie"
    );
    h.make_readable(&s); // would have fired the poll, were it not cancelled
    assert_no_event_for(&mut h, A);
    settle_zombies(&mut h);
    let st = h.reactor().stats();
    assert_eq!(
        (st.registered, st.zombies, st.in_flight),
        (0, 0, 0),
        "{st:?}"
    );
}

pub fn deregister_after_completion_queued_delivers_nothing<H: Harness>() {
    // The poll completes (readable) and its packet is queued; deregister races it: cancel finds
    // nothing (NOT_FOUND) and the queued completion must not be delivered.
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    std::thread::sleep(Duration::from_millis(20)); // let the real kernel complete it
    h.reactor().deregister(&s).unwrap();
    assert_no_event_for(&mut h, A);
    settle_zombies(&mut h);
}

pub fn recycled_handle_with_old_packet_still_queued<H: Harness>() {
    // The contract way: deregister, close; the value is reused while the old incarnation's
    // completion is still queued. That packet must never reach the new registration.
    let mut h = H::new();
    let old = h.socket();
    h.reactor().register(&old, A, Interest::READABLE).unwrap();
    h.make_readable(&old); // the old poll completes: its packet is (or will be) queued
    std::thread::sleep(Duration::from_millis(20));
    h.reactor().deregister(&old).unwrap();
    let (new, reused) = close_and_open_another(&mut h, old);
    eprintln!("handle value reused by the new socket: {reused}");
    h.reactor().register(&new, B, Interest::READABLE).unwrap();
    let q = h.quiet();
    let seen = collect(&mut h, q);
    assert!(seen.is_empty(), "stale or spurious events: {seen:?}");
    h.make_readable(&new);
    assert!(wait_for(&mut h, B).is_readable());
    settle_zombies(&mut h);
    assert_eq!(h.reactor().stats().registered, 1);
}

pub fn recycled_handle_after_close_without_deregister<H: Harness>() {
    // Against the contract: closed without deregistering after its poll completed (no LOCAL_CLOSE
    // will come), and the value reused at once. Socket-direct: the new socket's fresh association
    // proves it is a new socket, and the old incarnation ends silently. Helper path: nothing can
    // tell the two apart, so `register` says AlreadyExists; the documented recovery is
    // deregister-by-value, then register.
    let mut h = H::new();
    let old = h.socket();
    h.reactor().register(&old, A, Interest::READABLE).unwrap();
    h.make_readable(&old);
    std::thread::sleep(Duration::from_millis(20));
    let old_value = old.raw_socket();
    h.close(old);
    let new = h.socket();
    let reused = new.raw_socket() == old_value;
    eprintln!("handle value reused by the new socket: {reused}");
    match h.reactor().register(&new, B, Interest::READABLE) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && reused && h.helper_only() => {
            h.reactor().deregister(&new).unwrap();
            h.reactor().register(&new, B, Interest::READABLE).unwrap();
        }
        Err(e) => panic!("register after a recycled value: {e}"),
    }
    let q = h.quiet();
    let seen = collect(&mut h, q);
    assert!(seen.iter().all(|e| e.token() != B), "{seen:?}");
    if reused {
        // Without reuse, the old registration's queued event may still be reported (the
        // documented cost of closing without deregistering); with it, never.
        assert!(
            seen.iter().all(|e| e.token() != A),
            "stale event delivered: {seen:?}"
        );
    }
    h.make_readable(&new);
    assert!(wait_for(&mut h, B).is_readable());
}

pub fn close_without_deregister_is_cleaned_up<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A);
    h.close(s);
    assert_no_event_for(&mut h, A);
    let st = h.reactor().stats();
    if h.close_is_noticed() {
        assert_eq!(
            (st.registered, st.in_flight, st.zombies),
            (0, 0, 0),
            "{st:?}"
        );
        assert_eq!(st.closed_cleanups, 1);
    } else {
        // Nothing said the socket was closed: the registration waits, and teardown ends it.
        assert_eq!((st.registered, st.in_flight), (1, 1), "{st:?}");
        let report = h.reactor().shutdown().unwrap();
        assert_eq!((report.cancelled, report.leaked), (1, 0), "{report:?}");
    }
}

pub fn slot_reuse_after_deregister_is_harmless<H: Harness>() {
    let mut h = H::new();
    for round in 0..20 {
        let s = h.socket();
        let t = Token(100 + round);
        h.reactor().register(&s, t, Interest::READABLE).unwrap();
        h.make_readable(&s);
        if round % 2 == 0 {
            assert!(wait_for(&mut h, t).is_readable());
        }
        h.reactor().deregister(&s).unwrap();
    }
    settle_zombies(&mut h);
    let st = h.reactor().stats();
    assert!(st.slots <= 3, "slots are reused: {st:?}");
    assert_eq!((st.registered, st.in_flight), (0, 0));
}

// --- §5 initial state, helper fallback and bad input --------------------------------------------

pub fn socket_bound_to_another_port_is_polled_through_the_helper<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.bind_elsewhere(&s);
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.make_readable(&s);
    assert!(wait_for(&mut h, A).is_readable());
    h.reactor().deregister(&s).unwrap();
    settle_zombies(&mut h);
}

pub fn registering_twice_is_already_exists<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    let e = h.reactor().register(&s, B, Interest::READABLE).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(h.reactor().stats().registered, 1);
    h.make_readable(&s);
    assert!(
        wait_for(&mut h, A).is_readable(),
        "the first registration still works"
    );
}

/// A socket registered before is associated with the port for good: registering it again
/// polls it through the helper without asking the kernel to associate it (a call that could only
/// fail); it still works, and registering it twice is still refused.
pub fn registering_again_skips_the_association_call<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.reactor().deregister(&s).unwrap();
    let before = h.reactor().stats().nt;
    h.reactor().register(&s, B, Interest::READABLE).unwrap();
    let after = h.reactor().stats().nt;
    assert_eq!(
        (after.base_socket - before.base_socket, after.associate),
        (1, before.associate),
        "{after:?}"
    );
    let e = h.reactor().register(&s, C, Interest::READABLE).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    h.make_readable(&s);
    assert!(wait_for(&mut h, B).is_readable());
    let q = h.quiet();
    let seen = collect(&mut h, q);
    assert!(seen.iter().all(|e| e.token() == B), "{seen:?}");
}

/// A socket closed after deregistering, and a new one (on the sim: with the same value, which
/// the hint still lists) registered twice: the second is refused. The new socket was polled
/// through the helper without being associated, so the association the second `register` makes
/// succeeds; that must not be taken for proof of a recycled value.
pub fn a_new_socket_on_a_known_value_registered_twice_is_already_exists<H: Harness>() {
    let mut h = H::new();
    let old = h.socket();
    h.reactor().register(&old, A, Interest::READABLE).unwrap();
    h.reactor().deregister(&old).unwrap();
    let (new, _) = close_and_open_another(&mut h, old);
    h.reactor().register(&new, B, Interest::READABLE).unwrap();
    let e = h
        .reactor()
        .register(&new, C, Interest::READABLE)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(h.reactor().stats().registered, 1);
    h.make_readable(&new);
    assert!(wait_for(&mut h, B).is_readable());
}

/// The socket of such a registration (polled through the helper on the strength of the hint) is
/// closed with its poll pending, and a new socket registered, possibly with the same value: the
/// new one works and the old one never speaks.
pub fn closing_a_socket_registered_again_then_reusing_its_value<H: Harness>() {
    let mut h = H::new();
    let old = h.socket();
    h.reactor().register(&old, A, Interest::READABLE).unwrap();
    h.reactor().deregister(&old).unwrap();
    h.reactor().register(&old, B, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, B); // its poll is pending
    let (new, reused) = close_and_open_another(&mut h, old);
    h.reactor().register(&new, C, Interest::READABLE).unwrap();
    h.make_readable(&new);
    assert!(wait_for(&mut h, C).is_readable());
    let q = h.quiet();
    let seen = collect(&mut h, q);
    assert!(
        seen.iter().all(|e| e.token() == C),
        "an old registration spoke: {seen:?}"
    );
    // The old registration ends when its close is noticed, or when its value is registered again.
    let left = if h.close_is_noticed() || reused { 1 } else { 2 };
    assert_eq!(h.reactor().stats().registered, left);
}

pub fn unknown_sockets_are_not_found<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    let e = h.reactor().deregister(&s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let e = h
        .reactor()
        .reregister(&s, A, Interest::READABLE)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.reactor().deregister(&s).unwrap();
    let e = h.reactor().deregister(&s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "already deregistered");
}

pub fn events_buffer_of_capacity_zero_is_invalid_input<H: Harness>() {
    let mut h = H::new();
    let e = h
        .reactor()
        .poll(&mut Events::with_capacity(0), Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

pub fn poll_timeout_of_duration_max_waits_for_an_event<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::WRITABLE).unwrap();
    let mut events = Events::with_capacity(8);
    h.reactor().poll(&mut events, Some(Duration::MAX)).unwrap();
    assert!(events.iter().any(|e| e.token() == A));
}

// --- §3 wake ----------------------------------------------------------------------------------

pub fn wake_from_another_thread_during_a_blocking_poll<H: Harness>() {
    let mut h = H::new();
    let waker = h.reactor().waker(WAKE).unwrap();
    let t = std::thread::spawn(move || waker.wake().unwrap());
    let mut events = Events::with_capacity(8);
    h.reactor().poll(&mut events, None).unwrap(); // no timeout: only the wake can end it
    assert!(events.iter().any(|e| e.is_wake() && e.token() == WAKE));
    t.join().unwrap();
}

pub fn wakes_are_coalesced_into_one_packet<H: Harness>() {
    let mut h = H::new();
    let waker = h.reactor().waker(WAKE).unwrap();
    for _ in 0..100 {
        waker.wake().unwrap();
    }
    let q = h.quiet();
    let seen = collect(&mut h, q);
    assert_eq!(seen.iter().filter(|e| e.is_wake()).count(), 1, "{seen:?}");
    let st = h.reactor().stats();
    assert_eq!((st.wakes, st.nt.post), (100, 1));
    waker.wake().unwrap(); // the packet was consumed: a new wake posts again
    assert!(wait_for(&mut h, WAKE).is_wake());
}

/// `stats().wakers` counts the wakers a user holds: a dropped one stops counting at once, also
/// after it delivered a wake from another thread, and after `shutdown`.
pub fn a_dropped_waker_stops_counting_at_once<H: Harness>() {
    let mut h = H::new();
    drop(h.reactor().waker(Token(97)).unwrap());
    assert_eq!(h.reactor().stats().wakers, 0);
    let waker = h.reactor().waker(WAKE).unwrap();
    assert_eq!(h.reactor().stats().wakers, 1);
    std::thread::spawn(move || waker.wake().unwrap())
        .join()
        .unwrap();
    assert!(wait_for(&mut h, WAKE).is_wake());
    assert_eq!(h.reactor().stats().wakers, 0, "{:?}", h.reactor().stats());
    h.reactor().shutdown().unwrap();
    assert_eq!(h.reactor().stats().wakers, 0, "{:?}", h.reactor().stats());
}

pub fn waker_outliving_its_reactor_is_harmless<H: Harness>() {
    let mut h = H::new();
    let waker = h.reactor().waker(WAKE).unwrap();
    drop(h);
    let e = waker.wake().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
}

// --- timers -----------------------------------------------------------------------------------

pub fn timers_fire_after_their_delay_and_repeat<H: Harness>() {
    let mut h = H::new();
    let start = Instant::now();
    h.reactor()
        .add_timer(
            TIMER,
            Duration::from_millis(30),
            Some(Duration::from_millis(10)),
        )
        .unwrap();
    assert!(wait_for(&mut h, TIMER).is_timer());
    assert!(start.elapsed() >= Duration::from_millis(30), "fired early");
    assert!(wait_for(&mut h, TIMER).is_timer(), "repeats");
}

pub fn cancelled_and_infinite_timers_never_fire<H: Harness>() {
    let mut h = H::new();
    let id = h
        .reactor()
        .add_timer(TIMER, Duration::from_millis(5), None)
        .unwrap();
    assert!(h.reactor().cancel_timer(id));
    h.reactor()
        .add_timer(Token(51), Duration::MAX, None)
        .unwrap();
    let seen = collect(&mut h, Duration::from_millis(30));
    assert!(seen.is_empty(), "{seen:?}");
}

// --- §6 teardown --------------------------------------------------------------------------------

pub fn teardown_with_polls_in_flight_drains_everything<H: Harness>() {
    let mut h = H::new();
    let sockets: Vec<_> = (0..20).map(|_| h.socket()).collect();
    for (i, s) in sockets.iter().enumerate() {
        h.reactor()
            .register(s, Token(i), Interest::READABLE)
            .unwrap();
    }
    assert_no_event_for(&mut h, Token(0));
    assert_eq!(h.reactor().stats().in_flight, 20);
    let report = h.reactor().shutdown().unwrap();
    assert_eq!((report.cancelled, report.leaked), (20, 0), "{report}");
    let st = h.reactor().stats();
    assert_eq!(
        (st.in_flight, st.zombies, st.registered),
        (0, 0, 0),
        "{st:?}"
    );
    let e = h
        .reactor()
        .register(&sockets[0], A, Interest::READABLE)
        .unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::NotConnected,
        "register after shutdown"
    );
    let e = h
        .reactor()
        .poll(&mut Events::with_capacity(4), Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected, "poll after shutdown");
    for e in [
        h.reactor().deregister(&sockets[0]).unwrap_err(),
        h.reactor()
            .reregister(&sockets[0], A, Interest::READABLE)
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
    }
}

pub fn teardown_with_an_unbounded_timeout<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    h.reactor().set_teardown_timeout(Duration::MAX); // "wait as long as it takes"
    let report = h.reactor().shutdown().unwrap();
    assert_eq!((report.cancelled, report.leaked), (1, 0), "{report}");
}

pub fn teardown_after_user_closed_some_sockets<H: Harness>() {
    let mut h = H::new();
    let mut sockets: Vec<_> = (0..10).map(|_| h.socket()).collect();
    for (i, s) in sockets.iter().enumerate() {
        h.reactor()
            .register(s, Token(i), Interest::READABLE)
            .unwrap();
    }
    assert_no_event_for(&mut h, Token(0));
    for _ in 0..5 {
        let s = sockets.pop().unwrap();
        h.close(s); // LOCAL_CLOSE packets queue up, undequeued
    }
    let report = h.reactor().shutdown().unwrap();
    assert_eq!(report.leaked, 0, "{report}");
    assert!(report.cancelled <= 10, "{report}");
}

// --- bad input (issue: reliability) ------------------------------------------------------------

pub fn bad_input_is_refused_without_leaking<H: Harness>() {
    use afd_reactor::SimSocket;
    let mut h = H::new();
    let mut cases = h.not_sockets();
    cases.push(("an invalid handle value", h.invalid_value()));
    let refuse = |h: &mut H, what: &str, raw: u64| {
        let e = match h.reactor().register(&SimSocket(raw), A, Interest::READABLE) {
            Ok(()) => panic!("{what}: {raw:#x} was registered"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}");
        assert!(e.to_string().contains("not a socket"), "{what}: {e}");
    };
    for (what, raw) in cases {
        refuse(&mut h, what, raw);
    }
    // The closed value must not be handed to a socket another test opens meanwhile.
    let (raw, no_new_sockets) = h.closed_socket_value();
    refuse(&mut h, "a closed socket", raw);
    drop(no_new_sockets);
    let st = h.reactor().stats();
    assert_eq!(
        (st.registered, st.in_flight, st.zombies),
        (0, 0, 0),
        "{st:?}"
    );
    assert!(
        st.slots <= 1,
        "a refused registration left a state behind: {st:?}"
    );
    // And the reactor still works.
    let s = h.socket();
    h.reactor().register(&s, B, Interest::READABLE).unwrap();
    h.make_readable(&s);
    assert!(wait_for(&mut h, B).is_readable());
}

pub fn empty_interest_is_a_paused_registration<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.make_readable(&s);
    h.reactor().register(&s, A, Interest::NONE).unwrap();
    assert_no_event_for(&mut h, A);
    assert_eq!(h.reactor().stats().registered, 1);
    h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    assert!(wait_for(&mut h, A).is_readable());
}

// --- issue 10: outside cancels, polls ready at submit, helper groups ---------------------------

/// The user cancels the I/O on a registered socket (`CancelIoEx`, often just before closing it).
/// A socket-direct poll is cancelled with it: the reactor reports an error event and does not
/// re-arm on the handle until `reregister`. A helper poll was issued on the reactor's own handle
/// and is not touched.
pub fn an_outside_cancel_disarms_with_an_error_event<H: Harness>() {
    let mut h = H::new();
    let s = h.socket();
    h.reactor().register(&s, A, Interest::READABLE).unwrap();
    assert_no_event_for(&mut h, A); // pending
    h.cancel_io(&s);
    if h.helper_only() {
        assert_no_event_for(&mut h, A);
        assert_eq!(h.reactor().stats().in_flight, 1);
    } else {
        let e = wait_for(&mut h, A);
        assert!(e.is_error() && !e.is_readable(), "{e:?}");
        let submits = h.reactor().stats().nt.submit;
        h.make_readable(&s);
        assert_no_event_for(&mut h, A);
        let st = h.reactor().stats();
        assert_eq!(
            st.nt.submit, submits,
            "re-armed after an outside cancel: {st:?}"
        );
        assert_eq!(
            (st.in_flight, st.interrupted, st.registered),
            (0, 1, 1),
            "{st:?}"
        );
        h.reactor().reregister(&s, A, Interest::READABLE).unwrap();
    }
    h.make_readable(&s);
    assert!(wait_for(&mut h, A).is_readable());
}

/// A poll that is ready as it is submitted completes there and then: the socket (or helper) is
/// in skip-on-success mode, so no packet is queued for it, yet the event is delivered.
pub fn a_poll_ready_at_submit_costs_no_packet<H: Harness>() {
    let mut h = H::new();
    let s = h.socket(); // writable at once
    h.reactor().register(&s, A, Interest::WRITABLE).unwrap();
    let st = h.reactor().stats();
    assert_eq!((st.completed_at_submit, st.in_flight), (1, 0), "{st:?}");
    let e = wait_for(&mut h, A);
    assert!(e.is_writable(), "{e:?}");
    assert_eq!(h.reactor().stats().packets, 0, "a packet was queued anyway");
}

/// Seventy helper-path sockets (more than two helper handles' worth): every one reports, and
/// teardown drains them all.
pub fn helper_path_sockets_spread_over_several_handles<H: Harness>() {
    let mut h = H::new();
    let n = if cfg!(miri) { 40 } else { 70 };
    let sockets: Vec<_> = (0..n)
        .map(|_| {
            let s = h.socket();
            h.bind_elsewhere(&s);
            s
        })
        .collect();
    for (i, s) in sockets.iter().enumerate() {
        h.reactor()
            .register(s, Token(1000 + i), Interest::READABLE)
            .unwrap();
    }
    for s in &sockets {
        h.make_readable(s);
    }
    let mut seen = std::collections::HashSet::new();
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    while seen.len() < n && start.elapsed() < patience {
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        seen.extend(events.iter().map(|e| e.token()));
    }
    assert_eq!(seen.len(), n, "not every helper-path socket reported");
    for s in &sockets {
        h.drain(s);
    }
    let report = h.reactor().shutdown().unwrap();
    assert_eq!(report.leaked, 0, "{report}");
}

// --- wake storm (docs/design.md §4) ------------------------------------------------------------------

pub fn wake_storm_loses_nothing_and_queues_one_packet<H: Harness>() {
    use std::sync::{Arc, Mutex};
    let (threads, per_thread) = if cfg!(miri) { (2, 200) } else { (8, 100_000) };
    let mut h = H::new();
    let waker = h.reactor().waker(WAKE).unwrap();
    let last_call = Arc::new(Mutex::new(Instant::now()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (waker, last_call) = (waker.clone(), Arc::clone(&last_call));
            std::thread::spawn(move || {
                for _ in 1..per_thread {
                    waker.wake().unwrap();
                }
                // Stamp the time *before* the final call: any wake event observed after it
                // covers that call (coalesced into a packet not yet consumed, or its own packet).
                let before_last = Instant::now();
                waker.wake().unwrap();
                let mut last = last_call.lock().unwrap();
                *last = (*last).max(before_last);
            })
        })
        .collect();
    let mut events = Events::with_capacity(16);
    let mut wake_events = 0u64;
    let mut last_event = None;
    let start = Instant::now();
    let mut finished = false;
    while !finished {
        finished = workers.iter().all(|w| w.is_finished());
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for e in events.iter().filter(|e| e.is_wake()) {
            assert_eq!(e.token(), WAKE);
            wake_events += 1;
            last_event = Some(Instant::now());
        }
        // At most one wake packet is queued at any time: every post but one was consumed.
        let st = h.reactor().stats();
        assert!(
            st.nt.post <= wake_events + 1,
            "{} posts, {wake_events} wake events",
            st.nt.post
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "storm did not finish"
        );
    }
    for w in workers {
        w.join().unwrap();
    }
    // No wake lost: the last wake call is covered by a wake event that came after it.
    let last_call = *last_call.lock().unwrap();
    if last_event.is_none_or(|t| t < last_call) {
        let patience = h.patience();
        let e = wait_for(&mut h, WAKE);
        assert!(e.is_wake(), "the last wake was lost (waited {patience:?})");
        wake_events += 1;
    }
    let st = h.reactor().stats();
    eprintln!(
        "wake storm: {} wake calls from {threads} threads, {} packets posted, {wake_events} wake events",
        st.wakes, st.nt.post
    );
    assert_eq!(st.wakes, (threads * per_thread) as u64);
    assert!(st.nt.post <= wake_events + 1);
}

// --- handle-reuse churn (docs/design.md §2, §3) ------------------------------------------------------

pub fn handle_reuse_churn_never_delivers_a_dead_incarnation<H: Harness>() {
    let mut h = H::new();
    let rounds = h.churn_rounds();
    let mut next_token = 1000usize;
    let mut dead: std::collections::HashSet<Token> = Default::default();
    let mut events = Events::with_capacity(256);
    let mut delivered = 0u64;
    let mut reused = 0u64;
    let mut recent: Vec<u64> = Vec::new();
    for round in 0..rounds {
        let batch: Vec<(H::Sock, Token)> = (0..8)
            .map(|_| {
                let s = h.socket();
                if recent.contains(&s.raw_socket()) {
                    reused += 1;
                }
                let t = Token(next_token);
                next_token += 1;
                h.reactor().register(&s, t, Interest::READABLE).unwrap();
                (s, t)
            })
            .collect();
        // Half become ready (their events are delivered); half keep their poll pending.
        for (s, _) in batch.iter().step_by(2) {
            h.make_readable(s);
        }
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        for e in events.iter() {
            assert!(
                !dead.contains(&e.token()),
                "round {round}: dead incarnation spoke: {e:?}"
            );
            delivered += 1;
        }
        recent.clear();
        for (i, (s, t)) in batch.into_iter().enumerate() {
            recent.push(s.raw_socket());
            match i % 4 {
                // Ready, then deregistered and closed.
                0 | 2 => h.reactor().deregister(&s).unwrap(),
                // Not ready: deregistering cancels its pending poll (a zombie, then a late packet).
                1 => h.reactor().deregister(&s).unwrap(),
                // Not ready: closed without deregistering while its poll is pending; LOCAL_CLOSE
                // ends it, or the next registration of its recycled value does.
                _ => {}
            }
            dead.insert(t);
            h.close(s);
        }
    }
    // Let the last LOCAL_CLOSE packets arrive.
    let q = h.quiet();
    for e in collect(&mut h, q) {
        assert!(
            !dead.contains(&e.token()),
            "dead incarnation spoke after the churn: {e:?}"
        );
    }
    settle_zombies(&mut h);
    let st = h.reactor().stats();
    eprintln!(
        "churn: {rounds} rounds, {} registrations, {reused} on recycled handle values, \
         {delivered} events, {} zombies, {} late packets absorbed, {} stale discarded",
        rounds * 8,
        st.zombies_created,
        st.late_packets,
        st.stale_discarded
    );
    if h.close_is_noticed() {
        assert_eq!(
            (st.registered, st.zombies, st.in_flight),
            (0, 0, 0),
            "{st:?}"
        );
    } else {
        // Each registration left is a socket closed without deregistering whose value was not
        // registered again: its poll still waits, and teardown ends it.
        assert_eq!(st.zombies, 0, "{st:?}");
        assert_eq!(st.registered, st.in_flight, "{st:?}");
        let report = h.reactor().shutdown().unwrap();
        assert_eq!(
            (report.cancelled, report.leaked),
            (st.registered as u64, 0),
            "{report:?}"
        );
    }
    assert_eq!(
        st.late_packets, st.zombies_created,
        "every late packet is accounted for: one per zombie"
    );
    if h.reuses_handles_at_once() {
        assert!(reused > 0, "the churn never recycled a handle value");
    }
}

/// Expand to one `#[test]` per conformance body for harness `$h`: every body, or with
/// `portable`, all but the four about completion-port facts a kernel without ports (epoll) has
/// no counterpart for: a socket bound to another port, the helper handles, a cancel from outside
/// (`CancelIoEx`), and a poll completed at submit (skip-on-success).
macro_rules! afd_reactor_conformance {
    ($h:ty) => {
        afd_reactor_conformance!($h, portable);
        afd_reactor_conformance!(@ $h;
            socket_bound_to_another_port_is_polled_through_the_helper,
            helper_path_sockets_spread_over_several_handles,
            an_outside_cancel_disarms_with_an_error_event,
            a_poll_ready_at_submit_costs_no_packet,
        );
    };
    ($h:ty, portable) => {
        afd_reactor_conformance!(@ $h;
            readable_event_is_delivered,
            writable_event_is_delivered,
            level_reports_again_until_drained,
            oneshot_disarms_until_reregister,
            edge_reports_each_condition_once,
            edge_rearm_reports_once_more_for_one_submission,
            a_disarmed_edge_registration_polls_only_what_is_rearmed,
            no_spin_on_writable_without_interest,
            backpressure_pauses_without_spinning,
            interest_change_mid_poll_cancels_and_resubmits,
            narrowing_interest_costs_no_nt_call,
            peer_shutdown_is_read_closed,
            peer_close_is_read_closed_and_not_a_reset,
            peer_reset_is_a_reset,
            failed_connect_is_an_error,
            a_paused_registration_still_hears_of_a_failed_connect,
            a_reset_while_paused_is_reported_once_widened,
            a_socket_a_timer_and_a_waker_on_one_token_are_three_events,
            timers_refuse_a_zero_period_and_end_with_shutdown,
            deregister_with_pending_poll_then_late_packet,
            deregister_after_completion_queued_delivers_nothing,
            recycled_handle_with_old_packet_still_queued,
            recycled_handle_after_close_without_deregister,
            close_without_deregister_is_cleaned_up,
            slot_reuse_after_deregister_is_harmless,
            registering_twice_is_already_exists,
            registering_again_skips_the_association_call,
            a_new_socket_on_a_known_value_registered_twice_is_already_exists,
            closing_a_socket_registered_again_then_reusing_its_value,
            unknown_sockets_are_not_found,
            events_buffer_of_capacity_zero_is_invalid_input,
            poll_timeout_of_duration_max_waits_for_an_event,
            wake_from_another_thread_during_a_blocking_poll,
            wakes_are_coalesced_into_one_packet,
            waker_outliving_its_reactor_is_harmless,
            a_dropped_waker_stops_counting_at_once,
            timers_fire_after_their_delay_and_repeat,
            cancelled_and_infinite_timers_never_fire,
            teardown_with_polls_in_flight_drains_everything,
            teardown_after_user_closed_some_sockets,
            teardown_with_an_unbounded_timeout,
            bad_input_is_refused_without_leaking,
            empty_interest_is_a_paused_registration,
            wake_storm_loses_nothing_and_queues_one_packet,
            handle_reuse_churn_never_delivers_a_dead_incarnation,
        );
    };
    (@ $h:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                conformance::$name::<$h>();
            }
        )*
    };
}
