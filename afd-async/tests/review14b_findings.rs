//! Adversarial review 14b of the fixes from review 14 (branch `async` at 997122f): lazy arming
//! (`park`/`poll_ready`/`armed_at`, `Readiness` arming on first poll), `Reactor::disarm` in
//! `add_source`, the cap on poll-style waiters (`POLL_WAITERS`, `Evicted`), `block_on`'s wake
//! retries, and `forget_reactor`/`shutdown` against a running `block_on`. Each finding is a test
//! that fails on the code under review (A1-A4); the reactor-level findings (R1-R3) are in
//! afd-reactor/tests/review14b_findings.rs. The probes at the end (Q*) pin what held up.
//!
//! Every test runs its body on a thread of its own (so it has its own reactor) under a time
//! limit: a test that would hang fails after a few seconds instead.
//!
//! Run: `cargo test -p afd-async --test review14b_findings` (Linux natively; the Windows build
//! runs the same file under Wine).

use afd_async::{Async, Timer, block_on, held};
use futures_lite::future::{self, poll_once};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

mod util;
use util::on_thread;
#[cfg(any(windows, target_os = "linux"))]
use util::tcp_pair;

/// A future that counts its polls.
struct Counting<'a, F> {
    inner: Pin<Box<F>>,
    polls: &'a Cell<u64>,
}
impl<F: Future> Future for Counting<'_, F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

// =================================================================================================
// A1 (busy loop: 100% CPU while idle; high): five or more tasks waiting poll-style in one
// direction of one socket (five acceptor tasks on one listener, five writers sharing a stream,
// five `read`s of one socket in a `FuturesUnordered`) evict each other for ever: the executor
// never sleeps.
//
// `Direction::add_poll_waiter` keeps at most `POLL_WAITERS` (4) poll-style wakers; the fifth
// evicts the oldest and `Evicted::drop` wakes it "so a task that still waits polls again and
// loses nothing". But a task that still waits does exactly that: polled again, its
// `poll_ready` sees `parked_at == tick` and calls `add_poll_waiter`, which evicts the next
// oldest and wakes it, which evicts the next... Each poll wakes one other task, so the ring of
// five turns for ever with no event at all. `block_on` polls 16 times, turns the reactor with a
// zero timeout (it is woken), and goes on: the thread spins at 100% CPU until a connection
// comes. Measured here: hundreds of thousands of polls of five idle `accept`s in 300 ms (one
// each is right), with no socket event. Four tasks are fine; the fifth starts the ring.
//
// Fix: never wake a waiter to evict it while it still waits: keep every live poll-style waiter
// (dedup by `will_wake` keeps one per task) and bound abandoned ones another way (e.g. a waker
// per task-future that `Drop` removes: named `Accept`/`Read` futures; or replace the waker of the
// same task only, as async-io's one-slot `Direction::waker` plus a `wakers` list for tasks that
// use `readable()`); or, if a cap is kept, evict without waking (an evicted task that still waits
// then needs another way back: e.g. evict only wakers of tasks that were woken since, or wake at
// most once per tick).
// =================================================================================================

#[cfg(any(windows, target_os = "linux"))]
#[test]
fn a1_five_acceptors_on_one_listener_do_not_spin_while_idle() {
    use async_executor::LocalExecutor;
    on_thread(30, || {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let polls = Cell::new(0u64);
        let ex = LocalExecutor::new();
        let (idle_polls, accepted) = block_on(ex.run(async {
            let tasks: Vec<_> = (0..5)
                .map(|_| {
                    let accept = Counting {
                        inner: Box::pin(listener.accept()),
                        polls: &polls,
                    };
                    ex.spawn(accept)
                })
                .collect();
            // Idle: no connection comes for 300 ms.
            Timer::after(Duration::from_millis(300)).await;
            let idle_polls = polls.get();
            // Then five connections: every acceptor gets one.
            let clients: Vec<_> = (0..5)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let mut accepted = 0;
            for t in tasks {
                t.await.unwrap();
                accepted += 1;
            }
            drop(clients);
            (idle_polls, accepted)
        }));
        assert_eq!(accepted, 5);
        assert!(
            idle_polls <= 50,
            "five idle acceptors were polled {idle_polls} times in 300 ms with no event (each \
             poll evicts and wakes the next: a busy loop)"
        );
    });
}

// =================================================================================================
// A2 (a failed `Async::new` tears down another `Async`'s registration: its wait hangs; medium):
// registering an I/O object that is registered already fails with `AlreadyExists`, as documented
// ("`AlreadyExists` if `io` is registered already"), but on the way out `add_source` now calls
// `backend.deregister(io)`, which deregisters the *existing* registration of that socket (the
// reactor knows registrations by socket value). The first `Async` is left without one: a wait in
// progress is never woken (its poll is cancelled), later waits fail with `NotFound`, and
// `stats().registered` drops to 0 while the `Async` lives.
//
// Reached with any second handle on the same socket: `Async::new_nonblocking(a.get_ref()
// .as_fd())` / `.as_socket()` (`Source` is implemented for every `AsFd`/`AsSocket`, borrowed
// ones included), a `try_clone`'s value on Linux... (here the simulated kernel, with two
// `SimSocket`s of one value). The cleanup was added for the case it is meant for, a failed
// `disarm` after a successful `register`, and runs for a failed `register` too.
//
// Fix: deregister only what this call registered:
// `backend.register(io, ..)` -> on `Err`, remove the slab entry and return; then `disarm`, and
// only on its `Err` deregister and remove.
// =================================================================================================

#[test]
fn a2_a_failed_async_new_of_a_registered_socket_keeps_the_first_registration() {
    use afd_reactor::afd::PollEvents;
    use afd_reactor::kernel::sim::SimKernel;
    use afd_reactor::{Reactor, SimSocket};
    on_thread(10, || {
        afd_async::with_reactor(Reactor::with_kernel(SimKernel::new(1))).unwrap();
        let raw = afd_async::with_kernel(|k: &SimKernel| k.open_socket()).unwrap();
        let a = Async::new_nonblocking(SimSocket(raw)).unwrap();
        let woke = block_on(async {
            // A task waits to read; its poll is in the kernel.
            let mut wait = Box::pin(a.readable());
            assert!(poll_once(&mut wait).await.is_none());
            Timer::after(Duration::from_millis(5)).await;
            // Somebody wraps the same socket again: refused, as documented.
            let again = Async::new_nonblocking(SimSocket(raw)).unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "{again}");
            assert_eq!(
                afd_async::stats().unwrap().registered,
                1,
                "the refused Async::new deregistered the first Async's registration"
            );
            // Data arrives for the first one.
            afd_async::with_kernel(|k: &SimKernel| k.set_readiness(raw, PollEvents::RECEIVE))
                .unwrap();
            future::or(async { Some(wait.await) }, async {
                Timer::after(Duration::from_secs(2)).await;
                None
            })
            .await
        });
        let woke =
            woke.expect("the first Async's reader was never woken (its registration is gone)");
        woke.expect("readable");
        drop(a);
        assert_eq!((held().sources, held().timers), (0, 0));
    });
}

// =================================================================================================
// A3 (hang instead of `NotConnected`; low-medium, the F6 fix is incomplete): an `Async` that was
// already waiting when `forget_reactor` (or `shutdown`) took its reactor off the thread hangs
// for good under the next `block_on`, instead of failing with `NotConnected` as the fix and
// `forget_reactor`'s docs promise ("`Async`s made on the old reactor stop working: their waits
// fail with `NotConnected`").
//
// `check_driver` is called only from `arm`, and arming is skipped exactly when a wait is in
// progress:
// - poll-style (`poll_read`, `poll_write`, `accept`): `poll_ready` arms only if
//   `armed_at != Some(parked_at)`. A read that was pending once (armed at tick t) and is polled
//   again after `forget_reactor` finds `armed_at == t`, skips `arm` (and with it the check) and
//   returns `Pending`, waiting on a reactor no `block_on` drives (A3a);
// - `Readiness` (`readable()`, `writable()`, `read_with`...): arms (and checks) on its first poll
//   only; a future first polled before `forget_reactor` and awaited after it returns `Pending`
//   from its `Some((start, id))` branch for ever (A3b).
// Data arriving for the socket changes nothing: nobody polls the old reactor.
//
// Fix: call `check_driver` at the top of `poll_ready`'s `Pending` path and of `Readiness::poll`'s
// waiting branch (cheap: a TLS read and a pointer compare), or have `forget_reactor`/`shutdown`
// fail every source's waiters (fire both directions with an error, so `failed_tick` makes them
// return an error) as it detaches the driver.
// =================================================================================================

#[cfg(any(windows, target_os = "linux"))]
#[test]
fn a3a_a_read_pending_before_forget_reactor_fails_after_it() {
    use futures_lite::AsyncReadExt;
    use std::io::Write;
    on_thread(10, || {
        let (stream, mut peer) = tcp_pair();
        let mut buf = [0u8; 16];
        let mut r = &stream;
        // The read waits (nothing has arrived): the direction is armed at this tick.
        assert!(block_on(poll_once(r.read(&mut buf))).is_none());
        assert!(afd_async::forget_reactor().unwrap());
        peer.write_all(b"hello").unwrap();
        let mut r = &stream;
        let outcome = block_on(future::or(async { Some(r.read(&mut buf).await) }, async {
            Timer::after(Duration::from_secs(2)).await;
            None
        }));
        let result = outcome.expect(
            "a read that was pending before forget_reactor hangs after it (no NotConnected, \
             nothing drives its reactor)",
        );
        // An error (the fix) or the data (if the old reactor were still driven) are both fine.
        if let Err(e) = result {
            assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
        }
    });
}

#[cfg(any(windows, target_os = "linux"))]
#[test]
fn a3b_a_readable_future_pending_before_forget_reactor_fails_after_it() {
    use std::io::Write;
    on_thread(10, || {
        let (stream, mut peer) = tcp_pair();
        let mut wait = Box::pin(stream.readable());
        assert!(block_on(poll_once(&mut wait)).is_none());
        assert!(afd_async::forget_reactor().unwrap());
        peer.write_all(b"hello").unwrap();
        let outcome = block_on(future::or(async { Some(wait.await) }, async {
            Timer::after(Duration::from_secs(2)).await;
            None
        }));
        let result = outcome.expect(
            "a readable() that was pending before forget_reactor hangs after it (no \
             NotConnected, nothing drives its reactor)",
        );
        if let Err(e) = result {
            assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
        }
    });
}

// =================================================================================================
// A4 (lost wakeup, hang; low: needs failed posts): a wake from another thread whose post fails
// three times in a row is lost until some other wake or event comes: `block_on` sleeps in the
// kernel for good with its task woken.
//
// `Signal::post` retries `reactor.wake()` 3 times with `yield_now` between (microseconds in
// all), then sets `sleeping` back to true "so that the next wake tries too". If no next wake
// comes (one reply from a worker thread, one channel message), nothing ends the wait: the
// reactor's owed wake is delivered only "the next time its loop runs", and the loop is blocked
// in `poll(None)`. A failure of `NtSetIoCompletion` (quota, non-paged pool) lasts longer than
// three `yield_now`s, so the retry rarely helps when it is needed. Here: `fail_posts(3)` and one
// wake.
//
// (Also seen: when the failing thread stores `sleeping = true` after the loop has already woken
// for another reason, the flag is stale while the loop runs, and the next wake from the loop's
// own thread makes a kernel post, a spurious extra turn. Harmless, but the docs say a local wake
// costs nothing.)
//
// Fix: do not give up while the loop sleeps: retry with a growing sleep until the post succeeds
// or the reactor is gone (a waking thread may block briefly; a lost wake is worse), or make the
// loop's idle wait bounded (e.g. `poll(Some(100 ms))` once any post has failed, recorded in a
// flag the loop checks before it sleeps, plus a bounded wait always, since the failure may come
// after the loop went to sleep).
// =================================================================================================

#[test]
fn a4_a_wake_whose_three_posts_fail_is_not_lost() {
    use afd_reactor::Reactor;
    use afd_reactor::kernel::sim::SimKernel;
    on_thread(5, || {
        afd_async::with_reactor(Reactor::with_kernel(SimKernel::new(1))).unwrap();
        let (tx, rx) = mpsc::channel::<Waker>();
        let remote = std::thread::spawn(move || {
            let waker = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100)); // block_on is asleep in the kernel
            waker.wake(); // the one wake: its three posts fail
        });
        afd_async::with_kernel(|k: &SimKernel| k.fail_posts(3)).unwrap();
        let mut sent = Some(tx);
        block_on(future::poll_fn(|cx| match sent.take() {
            Some(tx) => {
                tx.send(cx.waker().clone()).unwrap();
                Poll::Pending
            }
            None => Poll::Ready(()),
        }));
        remote.join().unwrap();
    });
}

// =================================================================================================
// Probes: checked and held up.
// =================================================================================================

/// Q1: lazy arming. A short read parks without arming; the task then waits with `readable()`
/// instead of reading again (the `Readiness` arms), and again with a `read` (poll_ready arms):
/// both wake when the rest arrives. Data that arrived between the park and the arm is reported
/// (a poll submitted at arm time reports what holds then).
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn q1_short_read_then_readable_or_read_loses_nothing() {
    use futures_lite::AsyncReadExt;
    use std::io::Write;
    on_thread(20, || {
        let (stream, mut peer) = tcp_pair();
        block_on(async {
            peer.write_all(b"abc").unwrap();
            let mut buf = [0u8; 64];
            let mut r = &stream;
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0 && n < buf.len()); // short: parked, not armed
            // Data arrives between the park and any arm.
            peer.write_all(b"def").unwrap();
            Timer::after(Duration::from_millis(20)).await;
            stream.readable().await.unwrap();
            let n2 = r.read(&mut buf).await.unwrap();
            assert!(n2 > 0);
            // Now a read that parks and waits (poll_ready arms), data from another thread.
            let peer2 = peer.try_clone().unwrap();
            let w = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                (&peer2).write_all(b"ghi").unwrap();
            });
            let n3 = future::or(async { Some(r.read(&mut buf).await.unwrap()) }, async {
                Timer::after(Duration::from_secs(3)).await;
                None
            })
            .await
            .expect("read after a short read hung");
            assert!(n3 > 0);
            w.join().unwrap();
        });
        drop(stream);
        assert_eq!(held(), afd_async::Held::default());
    });
}

/// Q2: four poll-style waiters (the cap) and two `readable()` waiters on one direction: all wake
/// on one event, nothing spins, nothing is left held.
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn q2_four_acceptors_and_two_readable_waiters_all_wake() {
    use async_executor::LocalExecutor;
    on_thread(20, || {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let polls = Cell::new(0u64);
        let ex = LocalExecutor::new();
        block_on(ex.run(async {
            let acceptors: Vec<_> = (0..4)
                .map(|_| {
                    ex.spawn(Counting {
                        inner: Box::pin(listener.accept()),
                        polls: &polls,
                    })
                })
                .collect();
            let readers: Vec<_> = (0..2).map(|_| ex.spawn(listener.readable())).collect();
            Timer::after(Duration::from_millis(100)).await;
            assert!(polls.get() <= 20, "{} polls while idle", polls.get());
            let clients: Vec<_> = (0..4)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            for r in readers {
                r.await.unwrap();
            }
            for a in acceptors {
                a.await.unwrap();
            }
            drop(clients);
        }));
        drop(ex);
        drop(listener);
        assert_eq!(held(), afd_async::Held::default());
    });
}

/// Q3: `forget_reactor` and `shutdown` inside a running `block_on` are refused (also from a
/// nested one), and the `Async` keeps working; after the `block_on`, a new `Async` fails nothing.
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn q3_forget_and_shutdown_refused_while_block_on_runs() {
    use std::io::{Read, Write};
    on_thread(20, || {
        let (stream, mut peer) = tcp_pair();
        block_on(async {
            let e = afd_async::forget_reactor().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
            let e = block_on(async { afd_async::shutdown().unwrap_err() });
            assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
            peer.write_all(b"x").unwrap();
            let mut buf = [0u8; 4];
            assert_eq!(stream.read_with(|s| (&*s).read(&mut buf)).await.unwrap(), 1);
        });
        drop(stream);
        assert!(afd_async::forget_reactor().unwrap());
        // A panic inside block_on releases it too.
        let _ = std::panic::catch_unwind(|| block_on(async { panic!("inside") }));
        assert!(afd_async::forget_reactor().is_ok());
    });
}

/// Q4: a connect to a closed port is an error on a registration that started disarmed, and a
/// `Timer` armed on a forgotten reactor moves to the new one and fires.
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn q4_failed_connect_and_a_timer_that_moves() {
    on_thread(20, || {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = block_on(Async::<std::net::TcpStream>::connect(port)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        let mut t = Timer::after(Duration::from_millis(50));
        assert!(block_on(poll_once(&mut t)).is_none());
        assert!(afd_async::forget_reactor().unwrap());
        block_on(&mut t);
        drop(t);
        assert_eq!(held(), afd_async::Held::default());
    });
}
