//! Adversarial review 15 (branch `waitable2` at 948d00d): waitable handles, on the simulated
//! kernel. The NT findings (Wine) are in review15_nt_findings.rs.
//!
//! Each test fails on 948d00d for the reason its doc comment states.

use afd_reactor::kernel::sim::{Faults, SimKernel};
use afd_reactor::{Events, Mode, Reactor, SimWaitable, Token};
use std::time::Duration;

/// **F3 — stale error event after `reregister_waitable` (simulated kernel).**
///
/// Scenario: a `Level` waitable's re-arm is refused by the kernel (`submit_failure`): one error
/// event. The user retries with `reregister_waitable` while the kernel still refuses; in that
/// `poll` the new refusal is stashed (`WaitRefused`) and a due timer takes the only room in the
/// `Events`, so the error event stays in the stash. Before the next `poll` the user calls
/// `reregister_waitable(&ev, Token(2))` again (the rustdoc says a refused registration stays
/// disarmed "until `reregister_waitable`"), and the kernel accepts armings again.
///
/// What goes wrong: the next `poll` delivers the stashed error event — under the *new* token,
/// since `emit_waitable` reads `slot.token` at emit time — and only then re-arms the
/// registration (`emit_waitable` queues the update; `held` kept `flush_wait_updates` from arming
/// it before). The user is told "could not re-arm, disarmed until reregister_waitable" about a
/// registration they have already re-registered and that the reactor is about to arm
/// successfully: a stale event. A user who follows the doc reregisters again (harmless); one who
/// treats the error as fatal (afd-async's `Signaled` does: the wait fails with `Err`) gives up on
/// a healthy registration.
///
/// Severity: stale event (low).
///
/// Suggested fix: in `reregister_waitable`, when clearing `refused`, drop a pending
/// `WaitRefused` of that generation from the stash (or mark it superseded, e.g. keep `refused`
/// as a counter/epoch in the item and let `emit_waitable` drop a `WaitRefused` whose slot is no
/// longer `refused`).
#[test]
fn f3_a_stashed_refusal_is_delivered_after_reregister_waitable() {
    let mut r = Reactor::with_kernel(SimKernel::new(7));
    let ev = SimWaitable(r.kernel().open_event(false, false));
    r.register_waitable_with_mode(&ev, Token(1), Mode::Level)
        .unwrap();
    let mut one = Events::with_capacity(1);
    r.kernel().signal(ev.0);
    r.poll(&mut one, Some(Duration::from_millis(50))).unwrap();
    assert!(one.iter().any(|e| e.is_signaled()), "{one:?}");
    // The re-arm is refused: one error event (the stash went first in this poll, so the timers
    // go first in the next: the fair share rotates).
    r.kernel().set_faults(Faults {
        submit_failure: 1000,
        ..Faults::none()
    });
    r.poll(&mut one, Some(Duration::ZERO)).unwrap();
    assert!(one.iter().any(|e| e.is_error()), "{one:?}");
    // The user retries while the kernel still refuses; a timer is due. The new refusal is
    // stashed, and the timer takes the only room.
    r.reregister_waitable(&ev, Token(1)).unwrap();
    r.add_timer(Token(99), Duration::ZERO, None).unwrap();
    r.poll(&mut one, Some(Duration::ZERO)).unwrap();
    let got: Vec<_> = one.iter().collect();
    assert!(
        got.len() == 1 && got[0].is_timer(),
        "scene not set (the refusal should wait in the stash): {got:?}"
    );
    // The user re-registers (new token); the kernel accepts armings again.
    r.kernel().set_faults(Faults::none());
    r.reregister_waitable(&ev, Token(2)).unwrap();
    let mut events = Events::with_capacity(8);
    r.poll(&mut events, Some(Duration::ZERO)).unwrap();
    let stale: Vec<_> = events.iter().filter(|e| e.is_error()).collect();
    // And the registration is armed: a signal now is reported.
    r.kernel().signal(ev.0);
    let mut later = Events::with_capacity(8);
    r.poll(&mut later, Some(Duration::from_millis(50))).unwrap();
    assert!(
        later
            .iter()
            .any(|e| e.is_signaled() && e.token() == Token(2)),
        "the re-registered waitable is armed"
    );
    assert!(
        stale.is_empty(),
        "an error event ({stale:?}) after reregister_waitable, for a registration that is armed \
         right after it"
    );
}

/// Review 15, written up without a test at the time (there was no field to report it): teardown
/// ended waitable registrations whose waits had consumed signals not yet delivered, and said
/// nothing. `Teardown::signals_lost` now counts them, as `deregister_waitable` would have
/// reported each.
#[test]
fn f4_teardown_reports_the_consumed_signals_it_drops() {
    let mut r = Reactor::with_kernel(SimKernel::new(8));
    let evs: Vec<SimWaitable> = (0..4)
        .map(|_| SimWaitable(r.kernel().open_event(false, false)))
        .collect();
    for (i, ev) in evs.iter().enumerate() {
        r.register_waitable(ev, Token(i)).unwrap();
    }
    // Two consumed (their packets queued), two still waiting.
    r.kernel().signal(evs[0].0);
    r.kernel().signal(evs[1].0);
    let report = r.shutdown().unwrap();
    assert_eq!(report.signals_lost, 2, "{report}");
    assert_eq!(r.kernel().signals(evs[2].0), 0);
    r.kernel().signal(evs[3].0);
    assert_eq!(r.kernel().signals(evs[3].0), 1, "nobody waits any more");
}
