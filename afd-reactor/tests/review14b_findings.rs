//! Adversarial review 14b (branch `async` at 997122f, "Fixes from review 14"): `Reactor::disarm`
//! and `Machine::on_disarm`, the inverse of `rearm`. Each finding is a test that fails on the
//! code under review (R1-R3); the afd-async findings are in afd-async/tests/review14b_findings.rs.
//!
//! Run: `cargo test -p afd-reactor --test review14b_findings` (the simulated kernel: the same on
//! Linux and under Wine).

use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::sim::SimKernel;
use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, Token};
use std::time::Duration;

// =================================================================================================
// R1 (broken promise and a red CI; medium): "A registration made and disarmed before the next
// `poll` costs no poll submission at all until a `rearm`" is false. `register_with_mode`
// submits the registration's first poll inside `register` itself (`let first = match
// self.submit(index)`, so that a kernel refusal is the register's error), before `disarm` can be
// called. `disarm` then keeps that poll in the kernel and filters its answer. So every
// `Async::new` still costs one IOCTL_AFD_POLL for READ|WRITE (answered at once by a writable
// socket, or left in the kernel on a listener or a connecting socket), and the doc example on
// `Reactor::disarm` itself fails: `assert_eq!(reactor.stats().nt.submit, 0)` sees 1.
// `cargo test --workspace` (scripts/test.sh step "native tests", i.e. CI) fails on that doctest
// (`afd-reactor/src/reactor/mod.rs - reactor::Reactor<K>::disarm (line 945)`). The conformance
// body added with it sidesteps the first poll ("what the registration's own poll found, if
// anything"), so the suite did not notice.
//
// What follows in practice is small (one submission per registration, as before the change: the
// old `register(READABLE)` submitted one too, and a writable socket answers it at once), but
// the API documents a cost property it does not have, and CI is red.
//
// Fix: either say what happens ("`register` submits the first poll; `disarm` right after it
// leaves that poll in the kernel, its answer filtered; nothing more is submitted until a
// `rearm`") and fix the doctest to `submit == 1`, or give the layer a registration that starts
// disarmed (e.g. `register_with_mode` + a `Mode`/flag whose first `update` is `Nothing`, with
// the socket checked by the base-handle/association calls instead of the first poll).
// =================================================================================================

#[test]
fn r1_register_then_disarm_submits_only_the_registrations_poll_as_documented() {
    let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    let s = SimSocket(reactor.kernel().open_socket());
    let both = Interest::READABLE | Interest::WRITABLE;
    reactor
        .register_with_mode(&s, Token(1), both, Mode::Edge)
        .unwrap();
    reactor.disarm(&s, both).unwrap();
    reactor
        .kernel()
        .set_readiness(s.0, PollEvents::RECEIVE | PollEvents::SEND);
    let mut events = Events::with_capacity(8);
    reactor
        .poll(&mut events, Some(Duration::from_millis(10)))
        .unwrap();
    assert!(
        events.is_empty(),
        "a disarmed registration reported {events:?}"
    );
    // Resolution: the docs now say what happens (the fix the finding offers first):
    // `register` submits the registration's one poll (it checks the socket), and a `disarm`
    // right after it submits nothing more until a `rearm`.
    assert_eq!(
        reactor.stats().nt.submit,
        1,
        "the registration's own poll, and nothing after the disarm"
    );
    reactor
        .poll(&mut events, Some(Duration::from_millis(10)))
        .unwrap();
    assert_eq!(reactor.stats().nt.submit, 1, "still nothing until a rearm");
}

// =================================================================================================
// R2 (an event after `disarm`; low, direct reactor users only: afd-async disarms only right
// after registering): an event the reactor kept for a later `poll` (its `Events` was full, or the
// poll completed at submit) is delivered after `disarm` of that very readiness.
//
// `disarm` promises "stop reporting what `conditions` names until its `rearm`" and "what [a poll
// already in the kernel] reports of a disarmed readiness is not delivered". A poll that has
// completed but whose event waits in the stash (`meta.held`) is past `on_completion`'s filter,
// and `emit` re-checks it against the interest only ("with the interest as it is now"), not
// against what `disarm` withdrew. Here: two readable Edge registrations, a poll with room for
// one event; the other one's event is kept (both polls completed at submit, as on NT with
// FILE_SKIP_COMPLETION_PORT_ON_SUCCESS); `disarm(READABLE)` of that one; the next poll still
// reports it readable.
//
// Fix: in `Reactor::disarm`, when the registration is `held`, take the disarmed readiness's
// conditions out of its stashed `Ready` item (drop the item, clear `held` and queue an update if
// nothing is left); or keep a per-registration "withheld since disarm" mask that `emit`
// subtracts (cleared by `rearm`/`reregister`).
// =================================================================================================

#[test]
fn r2_disarm_withholds_an_event_kept_for_a_later_poll() {
    let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    let a = SimSocket(reactor.kernel().open_socket());
    let b = SimSocket(reactor.kernel().open_socket());
    for (s, t) in [(a, 1), (b, 2)] {
        reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
        reactor
            .register_with_mode(&s, Token(t), Interest::READABLE, Mode::Edge)
            .unwrap();
    }
    let mut events = Events::with_capacity(1); // room for one: the other event is kept
    reactor
        .poll(&mut events, Some(Duration::from_millis(10)))
        .unwrap();
    let first: Vec<Token> = events.iter().map(|e| e.token()).collect();
    assert_eq!(first.len(), 1, "{events:?}");
    let (kept, kept_token) = if first[0] == Token(1) {
        (b, Token(2))
    } else {
        (a, Token(1))
    };
    // The user disarms the other one's readiness before it has seen its event.
    reactor.disarm(&kept, Interest::READABLE).unwrap();
    let mut late = Vec::new();
    for _ in 0..3 {
        reactor
            .poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        late.extend(events.iter().filter(|e| e.token() == kept_token).copied());
    }
    assert!(
        late.is_empty(),
        "reported after disarm(READABLE) (the event was kept for a later poll): {late:?}"
    );
}

// =================================================================================================
// R3 (docs and behaviour disagree; low): for a `Oneshot` registration, what a poll already in the
// kernel reports is delivered after `disarm`, although `disarm`'s docs say "A poll already in
// the kernel is kept, and what it reports of a disarmed readiness is not delivered".
//
// `Machine::on_disarm` only clears `armed` in oneshot mode, and `on_completion` delivers what a
// oneshot poll reports whatever `armed` says (the commit's own unit test pins it: "oneshot: an
// answer already in flight is still delivered"). So `disarm` of a oneshot registration is not
// "as after an event": the next readiness is still reported, once.
//
// Fix: either filter it (in `on_completion`, a oneshot machine that is not armed delivers
// nothing but a failed connect), or document the exception on `disarm` ("Oneshot: the poll in
// flight, if any, still reports once").
// =================================================================================================

#[test]
fn r3_disarm_of_a_oneshot_registration_withholds_its_poll_in_flight() {
    let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    let s = SimSocket(reactor.kernel().open_socket());
    reactor
        .register_with_mode(&s, Token(1), Interest::READABLE, Mode::Oneshot)
        .unwrap();
    let mut events = Events::with_capacity(8);
    reactor.poll(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(events.is_empty());
    assert_eq!(
        reactor.kernel().pending_polls(),
        1,
        "its poll is in the kernel"
    );
    reactor.disarm(&s, Interest::READABLE).unwrap();
    reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
    reactor
        .poll(&mut events, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(
        events.is_empty(),
        "a disarmed oneshot registration reported what its poll in flight found: {events:?}"
    );
}
