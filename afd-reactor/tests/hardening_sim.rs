//! Issue 10 (hardening): one test per defect the two outside reviews found, on the simulated
//! kernel (natively and under Miri). Each test was written first, against the reactor before the
//! fix, and failed there; the closing note lists what each one showed.
//!
//! Item numbers refer to the issue. The NT-only items (the hang of item 10, and the real-kernel
//! halves of items 4 and 8) are tested under Wine in `nt_layer.rs` and the conformance suite.

mod sim_util;

use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::HELPER_KEY;
use afd_reactor::kernel::sim::SimKernel;
use afd_reactor::{Config, Events, Interest, Mode, Reactor, SimSocket, Token};
use sim_util::{
    Flipper, a_held_failing_post_and_a_wake_joining_it, assert_reported_readable, poll, reactor,
    socket,
};
use std::io;
use std::time::Duration;

const A: Token = Token(1);
const B: Token = Token(2);
const C: Token = Token(3);
const W: Token = Token(90);
const T: Token = Token(70);

/// The reactor's count of polls in flight is exactly what the kernel holds (pending, or
/// completed with its packet still queued): no block was given back early.
#[track_caller]
fn assert_in_flight_matches_the_kernel(r: &Reactor<SimKernel>) {
    let k = r.kernel();
    let held = r
        .debug_slots()
        .iter()
        .filter(|(block, _, _)| k.holds_block(*block))
        .count();
    let st = r.stats();
    assert_eq!(
        st.in_flight,
        held,
        "reactor: {st:?}; kernel: {:?}",
        k.stats()
    );
    assert_eq!(st.in_flight, k.pending_polls() + queued_polls(r), "{st:?}");
}

fn queued_polls(r: &Reactor<SimKernel>) -> usize {
    let slots = r.debug_slots();
    r.kernel()
        .queued_entries()
        .iter()
        .filter(|e| slots.iter().any(|(_, g, _)| *g == e.apc_context as u64))
        .count()
}

// --- 1. a Source trusted twice ------------------------------------------------------------------

#[test]
fn item01_a_source_whose_value_changes_cannot_free_a_slot_twice() {
    let mut r = reactor(1);
    let a = socket(&r);
    let b = socket(&r);
    r.kernel().add_readiness(a.0, PollEvents::RECEIVE);
    r.register_with_mode(&a, A, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    assert!(
        poll(&mut r, 8, Some(Duration::ZERO))
            .iter()
            .any(|e| e.token() == A)
    );
    // `a` is disarmed (oneshot): no poll in flight, so deregistering it frees its slot at once.
    r.register(&b, B, Interest::READABLE).unwrap();
    let flipper = Flipper::new([a.0, b.0]);
    let _ = r.deregister(&flipper);
    let _ = r.deregister(&a);
    let _ = r.deregister(&b);
    // Two new registrations must get two different slots, or the second rewrites a block the
    // kernel holds for the first (the simulation panics on that).
    let c = socket(&r);
    let d = socket(&r);
    r.register(&c, C, Interest::READABLE).unwrap();
    r.register(&d, Token(4), Interest::READABLE).unwrap();
    let slots = r.debug_slots();
    let mut blocks: Vec<_> = slots.iter().map(|(b, _, _)| *b).collect();
    blocks.dedup();
    assert_eq!(blocks.len(), slots.len(), "two registrations share a slot");
    assert_in_flight_matches_the_kernel(&r);
    assert_eq!(r.stats().registered, 2, "{:?}", r.stats());
}

#[test]
fn item01_reregister_reads_the_source_once() {
    let mut r = reactor(2);
    let a = socket(&r);
    let b = socket(&r);
    r.register_with_mode(&a, A, Interest::READABLE, Mode::Oneshot)
        .unwrap();
    r.register_with_mode(&b, B, Interest::READABLE, Mode::Edge)
        .unwrap();
    let flipper = Flipper::new([a.0, b.0]);
    // Whichever socket it names, the one it changes is the one it names once.
    r.reregister(&flipper, C, Interest::READABLE).unwrap();
    assert_eq!(flipper.calls.get(), 1, "raw_socket asked more than once");
    r.kernel().add_readiness(a.0, PollEvents::RECEIVE);
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(seen.iter().any(|e| e.token() == C), "{seen:?}");
}

// --- 2. forged completions from safe code --------------------------------------------------------

#[test]
fn item02_a_packet_forged_with_a_live_key_and_context_completes_nothing() {
    let mut r = reactor(3);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    let (block, generation, _) = r.debug_slots()[0];
    let _ = r
        .kernel()
        .inject_packet(block.as_ptr() as usize, generation as usize);
    let _ = r.kernel().inject_packet(HELPER_KEY, generation as usize);
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(seen.is_empty(), "{seen:?}");
    let st = r.stats();
    assert_eq!((st.registered, st.in_flight), (1, 1), "{st:?}");
    assert!(r.kernel().holds_block(block), "the kernel still holds it");
    assert_in_flight_matches_the_kernel(&r);
    assert_reported_readable(&mut r, s, A);
}

// --- 3. our completions told from the user's overlapped I/O by a tag ------------------------------

#[test]
fn item03_user_io_on_a_registered_socket_never_completes_another_poll() {
    let mut r = reactor(4);
    let a = socket(&r);
    let b = socket(&r);
    r.register(&a, A, Interest::READABLE).unwrap();
    r.register(&b, B, Interest::READABLE).unwrap();
    let slots = r.debug_slots();
    let (key_a, gen_b) = (slots[0].0.as_ptr() as usize, slots[1].1);
    // The user's overlapped I/O on `a` comes back under `a`'s key with the user's OVERLAPPED
    // address as ApcContext. An x64 user-mode address never has bit 63 set; one that happens to
    // equal `b`'s generation in every other bit must not complete `b`'s poll.
    let lookalike = (gen_b & !(1 << 63)) as usize;
    let _ = r.kernel().inject_packet(key_a, lookalike);
    let _ = r.kernel().inject_packet(key_a, 0x7ff6_1234_5678);
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(seen.is_empty(), "{seen:?}");
    let st = r.stats();
    assert_eq!(
        (st.registered, st.in_flight, st.misrouted),
        (2, 2, 0),
        "{st:?}"
    );
    assert_eq!((st.foreign_discarded, st.stale_discarded), (2, 0), "{st:?}");
    assert_in_flight_matches_the_kernel(&r);
}

// --- 4. FILE_SKIP_COMPLETION_PORT_ON_SUCCESS on a user's socket ----------------------------------

#[test]
fn item04_a_socket_that_skips_the_port_on_success_still_reports_and_tears_down() {
    let mut r = reactor(5);
    r.set_teardown_timeout(Duration::from_millis(100));
    let s = socket(&r); // writable now
    r.kernel().set_skip_on_success(s.0);
    r.register(&s, A, Interest::WRITABLE).unwrap();
    let seen = poll(&mut r, 8, Some(Duration::from_millis(50)));
    assert!(
        seen.iter().any(|e| e.token() == A && e.is_writable()),
        "the poll completed at submit and nothing was reported: {seen:?}"
    );
    assert_in_flight_matches_the_kernel(&r);
    let report = r.shutdown().expect("teardown");
    assert_eq!(report.leaked, 0, "{report}");
}

// --- 5. layered service providers ----------------------------------------------------------------

#[test]
fn item05_the_base_of_a_layered_socket_is_never_associated() {
    let mut r = reactor(6);
    let base = r.kernel().open_socket();
    let layered = SimSocket(r.kernel().open_layered_socket(base));
    r.register(&layered, A, Interest::READABLE).unwrap();
    assert_eq!(
        r.kernel().stats().provider_bases_associated,
        0,
        "associating the provider's base breaks the provider's own I/O"
    );
    r.kernel().add_readiness(base, PollEvents::RECEIVE);
    assert!(
        poll(&mut r, 8, Some(Duration::ZERO))
            .iter()
            .any(|e| e.token() == A)
    );
}

// --- 6. helper handles in groups ------------------------------------------------------------------

#[test]
fn item06_no_helper_handle_holds_more_than_32_polls() {
    let mut r = reactor(7);
    let socks: Vec<SimSocket> = (0..100)
        .map(|_| {
            let s = socket(&r);
            r.kernel().bind_to_foreign_port(s.0).unwrap();
            s
        })
        .collect();
    for (i, s) in socks.iter().enumerate() {
        r.register(s, Token(i), Interest::READABLE).unwrap();
    }
    let max = r.kernel().stats().max_helper_polls;
    assert!(max <= 32, "one helper handle held {max} polls");
    r.kernel().add_readiness(socks[99].0, PollEvents::RECEIVE);
    assert!(
        poll(&mut r, 8, Some(Duration::ZERO))
            .iter()
            .any(|e| e.token() == Token(99))
    );
    // The 99 others are cancelled; socket 99's poll ended with its event (its re-arm was never
    // flushed).
    let report = r.shutdown().unwrap();
    assert_eq!((report.cancelled, report.leaked), (99, 0), "{report}");
}

// --- 7. teardown after a failed dequeue ----------------------------------------------------------

#[test]
fn item07_a_dequeue_error_does_not_abandon_teardown() {
    let mut r = reactor(8);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    r.kernel().fail_dequeues(1);
    let first = r.shutdown();
    let k = r.kernel();
    assert_eq!(
        (k.pending_polls(), k.queued_packets()),
        (0, 0),
        "teardown stopped at the error: {first:?}"
    );
    let report = first.expect("a transient error; teardown finished");
    assert_eq!((report.cancelled, report.leaked), (1, 0), "{report}");
    assert_eq!(r.stats().in_flight, 0);
    let again = r.shutdown().expect("nothing in flight");
    assert_eq!(again.leaked, 0);
}

#[test]
fn item07_every_later_shutdown_reports_the_truth() {
    let mut r = reactor(9);
    r.set_teardown_timeout(Duration::from_millis(20));
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    r.kernel().fail_dequeues(u32::MAX);
    assert!(
        r.shutdown().is_err(),
        "the kernel never gave the packet back"
    );
    assert_eq!(r.kernel().stats().polls_cancelled, 1, "cancelled anyway");
    let second = r.shutdown();
    assert!(
        second.is_err(),
        "a poll is still in flight, yet: {second:?}"
    );
    r.kernel().fail_dequeues(0);
    let third = r.shutdown().expect("the kernel recovered: drained now");
    assert_eq!(third.leaked, 0, "{third}");
    assert_eq!(r.stats().in_flight, 0);
}

#[test]
fn item07_an_unbounded_teardown_with_nothing_in_flight_ends_even_if_dequeues_keep_failing() {
    let mut r = reactor(23);
    r.set_teardown_timeout(Duration::MAX);
    r.waker(W).unwrap().wake().unwrap(); // a packet in the queue, no poll in flight
    r.kernel().fail_dequeues(u32::MAX);
    let report = r.shutdown().expect("nothing of ours in flight");
    assert_eq!(report.leaked, 0);
    assert!(report.dequeue_errors >= 1, "{report}");
}

// --- 8. a cancel nobody asked for -----------------------------------------------------------------

#[test]
fn item08_an_external_cancel_disarms_and_reports_instead_of_rearming() {
    let mut r = reactor(10);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    assert_eq!(r.kernel().cancel_io(s.0), 1);
    let submits = r.stats().nt.submit;
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(
        seen.iter().any(|e| e.token() == A && e.is_error()),
        "not reported: {seen:?}"
    );
    let st = r.stats();
    assert_eq!(
        st.nt.submit, submits,
        "re-armed on a handle the user cancelled"
    );
    assert_eq!((st.registered, st.in_flight), (1, 0), "{st:?}");
    assert!(
        poll(&mut r, 8, Some(Duration::ZERO)).is_empty(),
        "reported once"
    );
    r.reregister(&s, A, Interest::READABLE).unwrap();
    assert_reported_readable(&mut r, s, A);
}

// --- 9. the same token twice in one poll -----------------------------------------------------------

#[test]
fn item09_a_registration_is_reported_at_most_once_per_poll() {
    let mut r = reactor(11);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE); // its packet is queued
    let e = r.register(&s, B, Interest::READABLE).unwrap_err(); // drains it into the stash
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert_eq!(
        seen.iter().filter(|e| e.token() == A).count(),
        1,
        "{seen:?}"
    );
}

// --- 11. fairness: timers, the stash and the port share the room ----------------------------------

#[test]
fn item11_due_timers_do_not_starve_sockets_and_wakes() {
    let mut r = reactor(12);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE);
    let waker = r.waker(W).unwrap();
    waker.wake().unwrap();
    let period = Duration::from_millis(1);
    r.add_timer(T, Duration::ZERO, Some(period)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        // A user slower than the timer's period, with room for one event per poll.
        std::thread::sleep(2 * period);
        seen.extend(poll(&mut r, 1, Some(Duration::ZERO)));
    }
    for token in [A, W, T] {
        assert!(
            seen.iter().any(|e| e.token() == token),
            "{token:?} starved: {seen:?}"
        );
    }
}

#[test]
fn item11_every_source_progresses_in_every_poll_with_room() {
    let mut r = reactor(13);
    let socks: Vec<SimSocket> = (0..10).map(|_| socket(&r)).collect();
    for (i, s) in socks.iter().enumerate() {
        r.register(s, Token(100 + i), Interest::READABLE).unwrap();
        r.kernel().add_readiness(s.0, PollEvents::RECEIVE);
    }
    // A refused register drains the ten queued completions into the stash.
    let e = r.register(&socks[0], A, Interest::READABLE).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    r.add_timer(T, Duration::ZERO, None).unwrap(); // overdue by the next poll
    let waker = r.waker(W).unwrap();
    waker.wake().unwrap(); // in the port, behind the stash
    let first = poll(&mut r, 3, Some(Duration::ZERO));
    assert!(
        first.iter().any(|e| e.is_timer()),
        "timer held back: {first:?}"
    );
    assert!(
        first.iter().any(|e| e.is_wake()),
        "port held back: {first:?}"
    );
    assert!(
        first.iter().any(|e| e.token().0 >= 100),
        "stash held back: {first:?}"
    );
}

// --- 12. a wake that returned Ok is never lost --------------------------------------------------

#[test]
fn item12_a_failed_post_does_not_lose_the_wakes_that_joined_it() {
    let mut r = reactor(14);
    let waker = r.waker(W).unwrap();
    let (first, second) = a_held_failing_post_and_a_wake_joining_it(&r, &waker);
    r.kernel().hold_posts(false); // the first post fails
    assert!(first.join().unwrap().is_err(), "the post failed");
    second
        .join()
        .unwrap()
        .expect("the joined wake is told it succeeded");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(poll(&mut r, 8, Some(Duration::ZERO)));
    }
    assert!(
        seen.iter().any(|e| e.is_wake() && e.token() == W),
        "the wake that returned Ok was lost"
    );
}

// --- 13. a zero timeout finishes the work that needs no waiting ----------------------------------

#[test]
fn item13_a_zero_timeout_poll_resubmits_a_widened_interest_at_once() {
    let mut r = reactor(15);
    let s = socket(&r); // writable, not readable
    r.register(&s, A, Interest::READABLE).unwrap();
    assert!(poll(&mut r, 8, Some(Duration::ZERO)).is_empty());
    r.reregister(&s, A, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(
        seen.iter().any(|e| e.token() == A && e.is_writable()),
        "{seen:?}"
    );
}

#[test]
fn item13_a_ready_event_behind_a_full_batch_of_stale_packets_is_not_missed() {
    let mut r = Reactor::with_config(SimKernel::new(16), Config::default().batch(2));
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    for i in 0..2 {
        let _ = r
            .kernel()
            .inject_packet(HELPER_KEY, 0x7ff6_0000_1000 + i * 8);
    }
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE);
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(seen.iter().any(|e| e.token() == A), "{seen:?}");
}

// --- 14. a periodic timer at most once per poll ----------------------------------------------------

#[test]
fn item14_a_periodic_timer_fires_at_most_once_per_poll() {
    let mut r = reactor(17);
    let s = socket(&r);
    r.register(&s, A, Interest::WRITABLE).unwrap();
    r.kernel().set_dequeue_delay(Duration::from_millis(5)); // dispatch slower than the period
    r.add_timer(T, Duration::ZERO, Some(Duration::from_millis(1)))
        .unwrap();
    for _ in 0..3 {
        let seen = poll(&mut r, 16, Some(Duration::ZERO));
        assert!(
            seen.iter().filter(|e| e.token() == T).count() <= 1,
            "{seen:?}"
        );
    }
}

// --- 15. wakers are released -----------------------------------------------------------------------

#[test]
fn item15_a_waker_is_released_when_its_last_handle_drops() {
    let mut r = reactor(18);
    for i in 0..1000 {
        let waker = r.waker(Token(10_000 + i)).unwrap();
        drop(waker);
    }
    let kept = r.waker(W).unwrap();
    let copy = kept.clone();
    drop(kept);
    assert_eq!(
        r.stats().wakers,
        1,
        "only the waker still held counts, at once"
    );
    poll(&mut r, 8, Some(Duration::ZERO));
    assert_eq!(
        r.debug_wakers_retained(),
        1,
        "only the waker still held is kept"
    );
    copy.wake().unwrap();
    assert!(
        poll(&mut r, 8, Some(Duration::ZERO))
            .iter()
            .any(|e| e.token() == W)
    );
    drop(copy);
    assert_eq!(r.stats().wakers, 0, "dropped: no longer counted");
    poll(&mut r, 8, Some(Duration::ZERO));
    assert_eq!(r.debug_wakers_retained(), 0, "and freed by the next poll");
}

// --- 16. counters that mean what they say, ids that cannot be forged --------------------------------

#[test]
fn item16_events_counts_only_events_delivered() {
    let mut r = reactor(19);
    let s = socket(&r);
    r.register(&s, A, Interest::READABLE).unwrap();
    r.kernel().add_readiness(s.0, PollEvents::RECEIVE);
    let _ = r.register(&s, B, Interest::READABLE); // stashes the readiness
    r.deregister(&s).unwrap(); // ... which is then never delivered
    let seen = poll(&mut r, 8, Some(Duration::ZERO));
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(r.stats().events, 0, "{:?}", r.stats());
}

#[test]
fn item16_a_timer_id_of_one_reactor_cancels_nothing_on_another() {
    let mut one = reactor(20);
    let mut two = reactor(21);
    let id = one.add_timer(T, Duration::from_secs(3600), None).unwrap();
    two.add_timer(T, Duration::from_millis(1), None).unwrap();
    assert!(!two.cancel_timer(id), "cancelled another reactor's timer");
    let seen = poll(&mut two, 8, Some(Duration::from_secs(5)));
    assert!(seen.iter().any(|e| e.is_timer()), "{seen:?}");
    assert!(one.cancel_timer(id));
}

/// Wakers handed to other threads, woken once there and dropped at once: every wake arrives, even
/// though the waker's last handle is gone by the time its packet is dequeued, and every waker is
/// freed afterwards.
#[test]
fn item15_a_waker_dropped_right_after_waking_still_delivers_its_wake() {
    let mut r = reactor(22);
    let n = if cfg!(miri) { 20 } else { 2_000 };
    let (tx, rx) = std::sync::mpsc::channel::<afd_reactor::Waker>();
    let worker = std::thread::spawn(move || {
        for waker in rx {
            waker.wake().unwrap();
            drop(waker);
        }
    });
    let mut pending: std::collections::HashSet<Token> = Default::default();
    let mut events = Events::with_capacity(16);
    for i in 0..n {
        let token = Token(100_000 + i);
        tx.send(r.waker(token).unwrap()).unwrap();
        pending.insert(token);
        if i % 7 == 0 {
            r.poll(&mut events, Some(Duration::ZERO)).unwrap();
            for e in &events {
                assert!(e.is_wake());
                pending.remove(&e.token());
            }
        }
    }
    drop(tx);
    worker.join().unwrap();
    let start = std::time::Instant::now();
    while !pending.is_empty() && start.elapsed() < Duration::from_secs(10) {
        r.poll(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        for e in &events {
            pending.remove(&e.token());
        }
    }
    assert!(pending.is_empty(), "{} wakes lost", pending.len());
    assert_eq!(r.stats().wakers, 0, "{:?}", r.stats());
    r.poll(&mut events, Some(Duration::ZERO)).unwrap();
    assert_eq!(r.debug_wakers_retained(), 0, "{:?}", r.stats());
}
