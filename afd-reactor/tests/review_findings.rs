//! Findings of a third, adversarial review of the issue 10 changes: one test per defect, written
//! first (each failed on the code it reviewed), on the simulated kernel.

mod sim_util;

use afd_reactor::afd::PollEvents;
use afd_reactor::{Events, Interest, Mode, SimSocket, Token};
use sim_util::{a_held_failing_post_and_a_wake_joining_it, poll, reactor};
use std::io;
use std::time::Duration;

const A: Token = Token(1);
const W: Token = Token(90);
const W2: Token = Token(91);

/// A wake kept in the stash names its waker by table slot only. The sweep releases a dropped
/// waker whose wake waits in the stash (it checks only QUEUED/OWED), and the slot goes to the
/// next waker asked for: the kept wake is then delivered under that waker's token, which was
/// never woken (and the dropped waker's wake, which returned Ok, is lost).
#[test]
fn f01_a_stashed_wake_of_a_released_waker_is_delivered_to_the_slots_next_waker() {
    let mut r = reactor(1);
    let s = SimSocket(r.kernel().open_socket());
    r.register(&s, A, Interest::READABLE).unwrap();
    let w = r.waker(W).unwrap();
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE); // s's packet is queued
    w.wake().unwrap(); // then the wake packet
    // A refused register drains both packets into the stash: [Ready(s), Wake(slot 0)].
    let e = r.register(&s, A, Interest::READABLE).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    drop(w);
    // Room for one: the stash gives s's event; the sweep at the start released the waker.
    let first = poll(&mut r, 1, Some(Duration::ZERO));
    assert_eq!(first.len(), 1, "{first:?}");
    // A new waker, never woken, takes the released slot.
    let _w2 = r.waker(W2).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(poll(&mut r, 8, Some(Duration::ZERO)));
    }
    assert!(
        !seen.iter().any(|e| e.is_wake() && e.token() == W2),
        "a wake delivered for a waker nobody woke: {seen:?}"
    );
    assert!(
        seen.iter()
            .chain(&first)
            .any(|e| e.is_wake() && e.token() == W),
        "the wake that returned Ok was lost: {seen:?}"
    );
}

/// A wake that joins a post in progress must not return `Ok` before that post is known to have
/// queued a packet: if the post fails, a poll already waiting would never learn of the wake (no
/// packet ends its wait; with `poll(None)` it would never return). Checked deterministically:
/// while the first post is held, the joining wake has not returned; once it returns `Ok`, a wake
/// packet is in the port (the first post failed, so the joining wake posted it itself).
#[test]
fn f02_a_joined_wake_returns_ok_only_once_a_packet_is_queued() {
    let mut r = reactor(2);
    let waker = r.waker(W).unwrap();
    let (first, second) = a_held_failing_post_and_a_wake_joining_it(&r, &waker);
    let start = std::time::Instant::now();
    while !second.is_finished() && start.elapsed() < Duration::from_millis(200) {
        std::thread::yield_now();
    }
    let returned_early = second.is_finished();
    r.kernel().hold_posts(false);
    assert!(first.join().unwrap().is_err(), "the post failed");
    second.join().unwrap().expect("the joining wake: Ok");
    let wake_packets = r
        .kernel()
        .queued_entries()
        .iter()
        .filter(|e| e.key == afd_reactor::kernel::WAKE_KEY)
        .count();
    assert!(
        !returned_early && wake_packets == 1,
        "the joining wake returned Ok while the post it joined was still out \
         ({returned_early}), and {wake_packets} wake packets are queued: a poll already \
         waiting would never return"
    );
    let mut events = Events::with_capacity(8);
    r.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
    assert!(events.iter().any(|e| e.is_wake() && e.token() == W));
}

/// A oneshot registration whose event waits in the stash is disarmed (`on_completion` cleared
/// `armed`) and `held`. A `reregister` meanwhile (say, to add WRITABLE) sets `armed` again, and
/// its re-arm is deferred until the kept event is delivered. Delivering that event does not
/// disarm the registration again: the deferred re-arm is submitted, and the next poll reports
/// the socket a second time, with no `reregister` after the first event ("after an event the
/// socket is disarmed until the user calls reregister").
#[test]
fn f03_a_oneshot_registration_reregistered_while_its_event_is_kept_reports_twice() {
    let mut r = reactor(3);
    let s = SimSocket(r.kernel().open_socket());
    r.kernel().set_readiness(s.0, PollEvents::SEND); // connected: writable at once
    // Ready at submit: skip-on-success, so the event is kept in the stash.
    r.register_with_mode(&s, A, Interest::WRITABLE, Mode::Oneshot)
        .unwrap();
    // Before any poll, the user widens the interest (one arm).
    r.reregister(&s, A, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let first = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(first.iter().any(|e| e.token() == A), "{first:?}");
    // No reregister since that event: a oneshot registration must stay silent.
    let second = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(
        !second.iter().any(|e| e.token() == A),
        "oneshot reported again without a reregister after its event: first {first:?}, \
         then {second:?}"
    );
}
