//! Adversarial review 15b (branch `waitable2` at aab1186): waitable handles, second review, on
//! the simulated kernel. The NT (Wine) finding is in review15b_nt_findings.rs.
//!
//! Each test fails on aab1186 for the reason its doc comment states.

use afd_reactor::kernel::sim::{Faults, SimKernel};
use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, SimWaitable, Token};
use std::time::Duration;

/// **F1 — a waitable's "could not re-arm" error event is the same event as a socket's.**
///
/// Scenario: a socket and a waitable registered under one token (tokens are the user's, and the
/// reactor allows any value for any registration; the docs promise that events of different
/// registrations "stay separate"). The kernel refuses to arm both: the socket's poll submit and
/// the waitable's wait (`submit_failure`, i.e. `STATUS_INSUFFICIENT_RESOURCES`).
///
/// What goes wrong: both registrations report their refusal as `Event::error(token)`: flags
/// `ERROR` only, no `afd`, equal as values (`Event: PartialEq`). `Event`'s own docs classify
/// events by source — "a registered waitable handle (`is_signaled`, or an error with its
/// token), or, when none is set, a registered socket" — so an error event with no other flag
/// is claimed by both rows, and nothing in the event says which registration is now disarmed.
/// The user must `reregister` the socket and `reregister_waitable` the handle on every such
/// event (the fix for one is not the fix for the other: a socket whose `reregister` they skip
/// stays disarmed, and so does a waitable: an unreported hang). afd-async avoids it only by
/// reserving `WAITABLE_BIT` in its own tokens.
///
/// Severity: low-medium (an ambiguous event; a hang for a user who shares tokens and guesses
/// wrong).
///
/// Suggested fix: mark a waitable's refusal event as the waitable's (e.g. a `WAITABLE` flag set
/// on both its signaled and its error events, with `Event::is_waitable()`), or document that a
/// waitable must not share a token with a socket.
#[test]
fn f1_a_waitable_refusal_is_indistinguishable_from_a_socket_refusal() {
    let mut r = Reactor::with_kernel(SimKernel::new(15));
    let s = SimSocket(r.kernel().open_socket());
    let ev = SimWaitable(r.kernel().open_event(false, false));
    r.register(&s, Token(7), Interest::READABLE).unwrap();
    r.register_waitable_with_mode(&ev, Token(7), Mode::Level)
        .unwrap();
    // Both fire once (delivered, so both want a re-arm at the next poll)...
    r.kernel()
        .set_readiness(s.0, afd_reactor::afd::PollEvents::RECEIVE);
    r.kernel().signal(ev.0);
    let mut events = Events::with_capacity(16);
    let mut fired = (false, false);
    for _ in 0..10 {
        r.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        for e in &events {
            fired.0 |= e.is_readable();
            fired.1 |= e.is_signaled();
        }
        if fired == (true, true) {
            break;
        }
    }
    assert_eq!(fired, (true, true), "scene not set");
    // ...and the kernel refuses both re-arms.
    r.kernel().set_faults(Faults {
        submit_failure: 1000,
        ..Faults::none()
    });
    let mut errors = Vec::new();
    for _ in 0..10 {
        r.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        errors.extend(events.iter().filter(|e| e.is_error()).copied());
        if errors.len() >= 2 {
            break;
        }
    }
    assert_eq!(errors.len(), 2, "scene not set: {errors:?}");
    // One is the socket's, one the waitable's: the user must be able to tell which.
    assert_ne!(
        errors[0], errors[1],
        "two error events under Token(7), one per registration, are the same value: nothing \
         says which of the socket and the waitable is disarmed ({:?})",
        errors[0]
    );
}

/// **F3 — `deregister_waitable` (and `Teardown::signals_lost`) report a consumed signal for an
/// object whose signal no wait consumes.**
///
/// Scenario: a manual-reset event that is set (or an ended process) is registered; its wait is
/// satisfied at once and its packet queued. The user deregisters before the next `poll`.
///
/// What goes wrong: `end_waitable` answers `true` for every wait whose packet was queued
/// (`WaitCancel::Queued`), whatever the object. The rustdoc promises more: "Returns `true` if a
/// signal the wait had consumed is thereby lost: the wait was satisfied (an auto-reset event
/// reset, a semaphore count taken) but its event was not delivered. Pass it on…". Here nothing
/// was consumed — the kernel still holds the event's signal (`signals() == 1`) — yet the
/// reactor says one was lost; `Teardown::signals_lost` counts it too, and afd-async's
/// `into_inner_with_signal` passes the `true` on as "a signal was left unobserved". A user who
/// follows the doc "hands it back" (`SetEvent` again: harmless for an event, impossible for a
/// process) and, worse, counts lost signals (the very thing `signals_lost` was added for in
/// review 15) gets a false positive for every manual-reset event or process deregistered while
/// signaled — which in `Level` mode is every one of them (an ended process's wait is re-armed
/// and satisfied at every poll).
///
/// Severity: low (a false report, no signal actually lost).
///
/// Suggested fix: document the `true` as "a wait was satisfied and its event not delivered (a
/// signal consumed, if the object is an auto-reset event or a semaphore)"; or learn the object's
/// type at `open_wait` (`NtQueryObject(ObjectTypeInformation)`, plus `NtQueryEvent` for the
/// event type) and report only for objects a wait consumes.
#[test]
fn f3_deregister_of_a_satisfied_manual_reset_wait_reports_it_and_the_event_keeps_its_signal() {
    let mut r = Reactor::with_kernel(SimKernel::new(3));
    let ev = SimWaitable(r.kernel().open_event(true, true)); // manual-reset, set
    r.register_waitable_with_mode(&ev, Token(1), Mode::Level)
        .unwrap();
    // The wait was satisfied at arm time (its packet is queued); a manual-reset event keeps its
    // signal.
    assert_eq!(r.kernel().signals(ev.0), 1, "scene not set");
    let lost = r.deregister_waitable(&ev).unwrap();
    assert_eq!(r.kernel().signals(ev.0), 1, "the event is still set");
    // Resolved by the documented meaning (the reactor cannot learn the object's kind without
    // more calls): `true` says the wait was satisfied and its event not delivered; a
    // manual-reset event still holds its signal, an auto-reset one would not.
    assert!(lost, "the wait was satisfied, and its event not delivered");
}
