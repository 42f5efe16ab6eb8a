//! The waitable conformance suite: one set of test bodies, run on the simulated kernel (both wait
//! paths, natively and under Miri), on the real NT kernel (under Wine: the thread-pool path) and
//! on the epoll kernel (eventfds and pidfds). Each body is generic over a [`WaitHarness`].
#![allow(dead_code)]

use afd_reactor::kernel::Kernel;
use afd_reactor::{Event, Events, Mode, Reactor, Token, Waitable};
use std::io;
use std::time::{Duration, Instant};

/// What a test needs from a kernel's world of waitable objects.
pub trait WaitHarness: Sized {
    type K: Kernel;
    /// A handle the tests register (owned: `close` closes it).
    type W: Waitable;
    fn new() -> Self;
    fn reactor(&mut self) -> &mut Reactor<Self::K>;
    /// An auto-reset event (Linux: an eventfd, which a wait does not consume).
    fn auto_event(&mut self, signaled: bool) -> Self::W;
    /// A manual-reset event (Linux: an eventfd too).
    fn manual_event(&mut self, signaled: bool) -> Self::W;
    /// Set the event (`SetEvent`; an eventfd write).
    fn set(&mut self, w: &Self::W);
    /// Take the event's signal, if any, as its user would (Linux: read the eventfd); on Windows a
    /// wait has already taken an auto-reset event's.
    fn reset(&mut self, w: &Self::W);
    /// Whether the object holds a signal now (looked at without taking it).
    fn is_set(&mut self, w: &Self::W) -> bool;
    /// A running process, which ends at [`end_process`](Self::end_process).
    fn process(&mut self) -> Self::W;
    fn end_process(&mut self, w: &Self::W);
    /// Another handle to `w`'s object.
    fn duplicate(&mut self, w: &Self::W) -> Self::W;
    /// Close the handle.
    fn close(&mut self, w: Self::W);
    /// True if a satisfied wait consumes an auto-reset event's signal (Windows, the sim); false
    /// on Linux, where the user reads the eventfd.
    fn consumes(&self) -> bool {
        true
    }
    /// How long to wait for something that should arrive (generous under Wine).
    fn patience(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// How long to wait to be sure nothing arrives.
    fn quiet(&self) -> Duration {
        Duration::from_millis(50)
    }
    /// Let the kernel's own threads act on a signal just given (a thread-pool callback).
    fn settle(&mut self) {}
    /// True where a cancel that races the object's signal may lose the signal unreported: the
    /// thread-pool path under Wine (docs/fidelity.md). Then a test accepts "neither still set
    /// nor reported", never "both".
    fn may_lose_a_racing_signal(&mut self) -> bool {
        false
    }
}

/// After a deregistration: the signal is still the object's, or reported lost; never both, and
/// never neither (but where the kernel may lose a racing signal).
#[track_caller]
fn assert_accounted<H: WaitHarness>(h: &mut H, lost: bool, still_set: bool) {
    if !h.consumes() {
        assert!(!lost && still_set, "lost {lost}, still set {still_set}");
    } else if h.may_lose_a_racing_signal() {
        assert!(!(lost && still_set), "lost {lost} and still set");
    } else {
        assert_ne!(lost, still_set, "lost {lost}, still set {still_set}");
    }
}

/// Poll until a signaled event for `token` arrives (or the patience runs out); returns it.
#[track_caller]
pub fn wait_signal<H: WaitHarness>(h: &mut H, token: Token) -> Event {
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    while start.elapsed() < patience {
        h.reactor()
            .poll(&mut events, Some(patience / 10))
            .expect("poll");
        if let Some(e) = events.iter().find(|e| e.token() == token) {
            assert!(e.is_signaled(), "{e:?} is not a signal");
            return *e;
        }
    }
    panic!("no signal for {token:?} within {patience:?}");
}

/// Poll for `quiet` and return every event seen.
#[track_caller]
pub fn collect<H: WaitHarness>(h: &mut H, quiet: Duration) -> Vec<Event> {
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
pub fn assert_no_event_for<H: WaitHarness>(h: &mut H, token: Token) {
    let quiet = h.quiet();
    let seen = collect(h, quiet);
    assert!(
        seen.iter().all(|e| e.token() != token),
        "unexpected events for {token:?}: {seen:?}"
    );
}

/// Poll until the kernel holds no wait of a deregistered registration.
#[track_caller]
pub fn settle_waits<H: WaitHarness>(h: &mut H) {
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    while h.reactor().stats().waits_in_kernel > h.reactor().stats().waitables {
        assert!(
            start.elapsed() < patience,
            "waits still in the kernel: {:?}",
            h.reactor().stats()
        );
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
    }
}

/// A set auto-reset event is one signaled event, and (where waits consume) is reset by it.
pub fn a_signal_is_one_event_and_is_consumed<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(1)).unwrap();
    assert_no_event_for(&mut h, Token(1));
    h.set(&ev);
    let e = wait_signal(&mut h, Token(1));
    assert!(!e.is_readable() && !e.is_error() && !e.is_timer() && !e.is_wake());
    if h.consumes() {
        assert!(!h.is_set(&ev), "the wait consumed the signal");
        assert_no_event_for(&mut h, Token(1));
    }
    assert!(!h.reactor().deregister_waitable(&ev).unwrap());
    let s = h.reactor().stats();
    assert_eq!((s.signals, s.waitables), (1, 0));
    h.close(ev);
}

/// Level mode re-arms after each event: every set is reported, and nothing more.
pub fn level_reports_every_set<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor()
        .register_waitable_with_mode(&ev, Token(2), Mode::Level)
        .unwrap();
    for round in 0..3 {
        h.set(&ev);
        wait_signal(&mut h, Token(2));
        h.reset(&ev); // Linux: read the eventfd, as its user does
        assert!(!h.is_set(&ev), "round {round}");
    }
    assert_no_event_for(&mut h, Token(2));
    h.reactor().deregister_waitable(&ev).unwrap();
    h.close(ev);
}

/// Oneshot: one event for an object that stays signaled, then nothing until
/// `reregister_waitable`, which re-arms it (with a new token).
pub fn oneshot_reports_once_until_reregistered<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.manual_event(false);
    h.reactor()
        .register_waitable_with_mode(&ev, Token(3), Mode::Oneshot)
        .unwrap();
    h.set(&ev);
    wait_signal(&mut h, Token(3));
    assert!(h.is_set(&ev), "a manual-reset event stays signaled");
    assert_no_event_for(&mut h, Token(3));
    let arms = h.reactor().stats().nt.wait_arm;
    h.reactor().reregister_waitable(&ev, Token(4)).unwrap();
    assert_eq!(
        h.reactor().stats().nt.wait_arm,
        arms,
        "no call until the next poll"
    );
    wait_signal(&mut h, Token(4));
    assert_no_event_for(&mut h, Token(4));
    h.reactor().deregister_waitable(&ev).unwrap();
    h.close(ev);
}

/// Level mode on an object that stays signaled reports it at every poll (like an unread
/// readable socket), one event per poll.
pub fn level_on_a_signaled_object_reports_every_poll<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.manual_event(true);
    h.reactor()
        .register_waitable_with_mode(&ev, Token(5), Mode::Level)
        .unwrap();
    for _ in 0..3 {
        wait_signal(&mut h, Token(5));
    }
    h.reactor().deregister_waitable(&ev).unwrap();
    settle_waits(&mut h);
    h.close(ev);
}

/// An object signaled before it is registered is reported.
pub fn signaled_before_registration_is_reported<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(true);
    h.reactor().register_waitable(&ev, Token(6)).unwrap();
    wait_signal(&mut h, Token(6));
    h.reactor().deregister_waitable(&ev).unwrap();
    h.close(ev);
}

/// Deregistered before the signal: nothing consumed, nothing reported.
pub fn deregistered_before_the_signal_consumes_nothing<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(7)).unwrap();
    assert!(!h.reactor().deregister_waitable(&ev).unwrap());
    h.set(&ev);
    h.settle();
    assert_no_event_for(&mut h, Token(7));
    assert!(h.is_set(&ev), "the signal is still the object's");
    assert_eq!(h.reactor().stats().waits_in_kernel, 0);
    h.close(ev);
}

/// Signaled, then deregistered before any poll: the signal is either still the object's or
/// reported lost by `deregister_waitable` — never both, never neither — and no event comes.
pub fn a_signal_consumed_then_deregistered_is_reported<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(8)).unwrap();
    h.set(&ev);
    h.settle();
    let lost = h.reactor().deregister_waitable(&ev).unwrap();
    let still_set = h.is_set(&ev);
    assert_accounted(&mut h, lost, still_set);
    assert_no_event_for(&mut h, Token(8));
    settle_waits(&mut h);
    assert_eq!(h.reactor().stats().signals, 0);
    h.close(ev);
}

/// Two signals and room for one event per poll: the other's event may wait in the stash (or its
/// packet in the port). Deregistered then, its signal is still the object's or reported lost.
pub fn a_signal_not_yet_delivered_when_deregistered_is_reported<H: WaitHarness>() {
    let mut h = H::new();
    let a = h.auto_event(false);
    let b = h.auto_event(false);
    h.reactor().register_waitable(&a, Token(1)).unwrap();
    h.reactor().register_waitable(&b, Token(2)).unwrap();
    h.set(&a);
    h.set(&b);
    h.settle();
    let mut one = Events::with_capacity(1);
    let patience = h.patience();
    let start = Instant::now();
    let first = loop {
        h.reactor()
            .poll(&mut one, Some(Duration::from_millis(20)))
            .unwrap();
        if let Some(e) = one.iter().next() {
            break e.token();
        }
        assert!(start.elapsed() < patience, "no signal");
    };
    let (other, other_token) = if first == Token(1) {
        (&b, Token(2))
    } else {
        (&a, Token(1))
    };
    let lost = h.reactor().deregister_waitable(other).unwrap();
    let still_set = h.is_set(other);
    assert_accounted(&mut h, lost, still_set);
    assert_no_event_for(&mut h, other_token);
    h.close(a);
    h.close(b);
}

/// The reactor waits on its own duplicate: closing the registered handle changes nothing, and
/// teardown still ends the wait.
pub fn closing_the_registered_handle_keeps_the_wait<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    let other = h.duplicate(&ev);
    h.reactor().register_waitable(&ev, Token(9)).unwrap();
    h.close(ev);
    // A new object may get the closed value now; it is not the registered one.
    let newcomer = h.auto_event(true);
    assert_no_event_for(&mut h, Token(9));
    h.set(&other);
    wait_signal(&mut h, Token(9));
    let report = h.reactor().shutdown().unwrap();
    assert_eq!(report.leaked, 0);
    assert!(h.is_set(&newcomer), "nobody waited on the newcomer");
    h.close(other);
    h.close(newcomer);
}

/// A process is signaled when it ends.
pub fn a_process_is_signaled_when_it_ends<H: WaitHarness>() {
    let mut h = H::new();
    let p = h.process();
    h.reactor()
        .register_waitable_with_mode(&p, Token(10), Mode::Oneshot)
        .unwrap();
    assert_no_event_for(&mut h, Token(10));
    h.end_process(&p);
    wait_signal(&mut h, Token(10));
    assert!(!h.reactor().deregister_waitable(&p).unwrap());
    h.close(p);
}

/// Many waitables, all signaled: one event each, each with its own token.
pub fn many_waitables_each_report_once<H: WaitHarness>() {
    const N: usize = 200;
    let mut h = H::new();
    let evs: Vec<H::W> = (0..N).map(|_| h.auto_event(false)).collect();
    for (i, ev) in evs.iter().enumerate() {
        h.reactor()
            .register_waitable_with_mode(ev, Token(1000 + i), Mode::Oneshot)
            .unwrap();
    }
    for ev in &evs {
        h.set(ev);
    }
    let mut seen = vec![0u32; N];
    let patience = h.patience();
    let start = Instant::now();
    let mut events = Events::with_capacity(64);
    while seen.contains(&0) && start.elapsed() < patience * 2 {
        h.reactor()
            .poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        for e in &events {
            assert!(e.is_signaled());
            seen[e.token().0 - 1000] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    assert_eq!(h.reactor().stats().signals, N as u64);
    for ev in evs {
        h.reactor().deregister_waitable(&ev).unwrap();
        h.close(ev);
    }
    assert_eq!(h.reactor().stats().waits_in_kernel, 0);
}

/// Teardown cancels armed waits and collects the packets of satisfied ones: nothing leaks.
pub fn teardown_with_armed_waits_drains_them<H: WaitHarness>() {
    let mut h = H::new();
    let evs: Vec<H::W> = (0..10).map(|_| h.auto_event(false)).collect();
    for (i, ev) in evs.iter().enumerate() {
        h.reactor().register_waitable(ev, Token(i)).unwrap();
    }
    for ev in &evs[..5] {
        h.set(ev);
    }
    h.settle();
    let report = h.reactor().shutdown().unwrap();
    // The five still waiting are cancelled; the five satisfied are too unless their packets were
    // queued by the time teardown first drained the port (always, on the sim).
    assert!((5..=10).contains(&report.cancelled), "{report}");
    assert_eq!(report.leaked, 0);
    let s = h.reactor().stats();
    assert_eq!((s.waits_in_kernel, s.waitables), (0, 0));
    let e = h
        .reactor()
        .register_waitable(&evs[0], Token(0))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    for ev in evs {
        h.close(ev);
    }
}

/// Registering twice is `AlreadyExists`; an unknown handle is `NotFound`; nothing leaks.
pub fn bad_calls_are_refused<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(1)).unwrap();
    let e = h.reactor().register_waitable(&ev, Token(2)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    let other = h.auto_event(false);
    let e = h.reactor().deregister_waitable(&other).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let e = h
        .reactor()
        .reregister_waitable(&other, Token(3))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    h.reactor().deregister_waitable(&ev).unwrap();
    let e = h.reactor().deregister_waitable(&ev).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let s = h.reactor().stats();
    assert_eq!((s.waitables, s.waits_in_kernel), (0, 0));
    assert_eq!(s.nt.wait_open, s.nt.wait_close, "every wait made was freed");
    h.close(ev);
    h.close(other);
}

/// A new token from `reregister_waitable` applies to the next event; a registration still
/// armed costs no call.
pub fn reregister_changes_the_token<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(1)).unwrap();
    let calls = h.reactor().stats().nt.total();
    h.reactor().reregister_waitable(&ev, Token(2)).unwrap();
    assert_eq!(h.reactor().stats().nt.total(), calls);
    h.set(&ev);
    wait_signal(&mut h, Token(2));
    h.reactor().deregister_waitable(&ev).unwrap();
    h.close(ev);
}

/// Arming costs one kernel call per signal in Level mode, and the dequeue is shared.
pub fn one_arm_per_signal<H: WaitHarness>() {
    let mut h = H::new();
    let ev = h.auto_event(false);
    h.reactor().register_waitable(&ev, Token(1)).unwrap();
    let before = h.reactor().stats().nt;
    for _ in 0..5 {
        h.set(&ev);
        wait_signal(&mut h, Token(1));
        h.reset(&ev);
    }
    // Let the fifth re-arm happen.
    let _ = collect(&mut h, Duration::from_millis(1));
    let after = h.reactor().stats().nt;
    assert_eq!(after.wait_arm - before.wait_arm, 5);
    assert_eq!(after.wait_cancel + after.wait_open + after.wait_close, 1);
    h.reactor().deregister_waitable(&ev).unwrap();
    h.close(ev);
}

#[macro_export]
macro_rules! afd_reactor_wait_conformance {
    ($h:ty) => {
        afd_reactor_wait_conformance!(@ $h;
            a_signal_is_one_event_and_is_consumed,
            level_reports_every_set,
            oneshot_reports_once_until_reregistered,
            level_on_a_signaled_object_reports_every_poll,
            signaled_before_registration_is_reported,
            deregistered_before_the_signal_consumes_nothing,
            a_signal_consumed_then_deregistered_is_reported,
            a_signal_not_yet_delivered_when_deregistered_is_reported,
            closing_the_registered_handle_keeps_the_wait,
            a_process_is_signaled_when_it_ends,
            many_waitables_each_report_once,
            teardown_with_armed_waits_drains_them,
            bad_calls_are_refused,
            reregister_changes_the_token,
            one_arm_per_signal,
        );
    };
    (@ $h:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                waits::$name::<$h>();
            }
        )*
    };
}
