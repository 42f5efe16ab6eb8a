//! Adversarial review 14 of the `async` branch at a9d9dff: `Reactor::rearm` and the `Edge`
//! contract (fbac73a), and the new afd-async crate. Each finding is a test that fails on the code
//! under review (F1-F7); the probes at the end (P*) pin what was checked and held up.
//!
//! Every test runs its body on a thread of its own (so it has its own reactor) under a time
//! limit: a test that would hang fails after a few seconds instead.
//!
//! Run: `cargo test -p afd-async --test review14_findings` (Linux natively; the Windows build
//! runs the same file under Wine).

use afd_async::{Async, Timer, block_on, held};
use futures_lite::future::{self, poll_once};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

mod util;
use util::on_thread;
#[cfg(any(windows, target_os = "linux"))]
use util::tcp_pair;

/// A waker that does nothing and counts nothing: its `Arc` count tells who still holds it.
struct Counted;
impl Wake for Counted {
    fn wake(self: Arc<Self>) {}
}

fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

// =================================================================================================
// F1 (panic, RefCell re-entrancy; medium): a waker dropped while the driver's timer table is
// borrowed may run code that drops a `Timer`: `BorrowMutError` (`RefCell already borrowed`).
//
// `Driver::remove_timer` does
//     if let Some(TimerSlot { id: Some(id), fired: false, .. }) = self.timers.borrow_mut().remove(key)
// The removed `TimerSlot` (with the task's `Waker`) is a temporary of the `if let` scrutinee,
// created after the `RefMut`, so it is dropped first, while `timers` is still mutably borrowed.
// `Driver::poll_timer` does the same when a timer is polled with a waker that does not
// `will_wake` the kept one (`*w = Some(waker.clone())` drops the old waker under the borrow):
// a `Timer` moved to, or polled from, another task.
//
// Dropping a `Waker` runs its owner's code: an executor whose task is freed with its last waker
// drops the task's future, and with it any `Timer` (or `Async`) it holds. That `Timer`'s
// `disarm` -> `remove_timer` borrows `timers` again and panics. The panic also leaks the inner
// timer's slot (held() still counts it). `held()` called from such a drop panics the same way
// (`timers.borrow()`).
//
// The source side already avoids this (wakers are moved into `to_wake` and woken with no borrow
// held, `Readiness::drop` uses `try_borrow_mut`); the timer table does not.
//
// Fix: never drop a `Waker` (or anything holding one) under a `RefCell` borrow: in
// `remove_timer`, bind the removed slot to a local first and drop it after the borrow ends
// (`let slot = self.timers.borrow_mut().remove(key); if let Some(..) = &slot { .. } drop(slot)`);
// in `poll_timer`, `std::mem::replace` the old waker out and drop it after `timers` is released.
// =================================================================================================

thread_local! {
    /// A timer that a waker's drop drops (what an executor does when a task's last waker goes).
    static INNER: RefCell<Option<Timer>> = const { RefCell::new(None) };
}

/// A waker whose drop drops `INNER`'s timer.
struct DropsATimer;
impl Wake for DropsATimer {
    fn wake(self: Arc<Self>) {}
}
impl Drop for DropsATimer {
    fn drop(&mut self) {
        let timer = INNER.with(|t| t.borrow_mut().take());
        drop(timer);
    }
}

/// An armed timer in `INNER` (polled once, so it holds a slot and a reactor timer).
fn arm_inner() {
    let mut inner = Timer::after(Duration::from_secs(60));
    assert!(poll(&mut inner, Waker::noop()).is_pending());
    INNER.with(|t| *t.borrow_mut() = Some(inner));
}

#[test]
fn f1a_dropping_a_timer_whose_waker_drops_another_timer_does_not_panic() {
    on_thread(10, || {
        arm_inner();
        let mut outer = Timer::after(Duration::from_secs(60));
        {
            // Polled by a task whose only other waker handle is gone: the slot holds the last.
            let waker = Waker::from(Arc::new(DropsATimer));
            assert!(poll(&mut outer, &waker).is_pending());
        }
        assert_eq!((held().sources, held().timers), (0, 2));
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(outer)));
        assert!(
            dropped.is_ok(),
            "dropping a Timer panicked: its slot's waker was dropped under the timers borrow"
        );
        assert_eq!(
            (held().sources, held().timers),
            (0, 0),
            "both timers are gone"
        );
    });
}

#[test]
fn f1b_polling_a_timer_from_another_task_does_not_panic() {
    on_thread(10, || {
        arm_inner();
        let mut timer = Timer::after(Duration::from_secs(60));
        {
            let first = Waker::from(Arc::new(DropsATimer));
            assert!(poll(&mut timer, &first).is_pending());
        }
        // Now polled by another task: `poll_timer` replaces (drops) the first task's waker.
        let second = Waker::from(Arc::new(Counted));
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll(&mut timer, &second)));
        assert!(
            polled.is_ok(),
            "re-polling a Timer from another task panicked (old waker dropped under the borrow)"
        );
        drop(timer);
        assert_eq!((held().sources, held().timers), (0, 0));
    });
}

// =================================================================================================
// F2 (wrong timing: an interval fires early, twice back to back; low): after the task falls
// behind, `Timer::interval` yields the late tick and then another one at once.
//
// `poll_due` sets the next due time to `max(when + period, now)`. When the task polls more than
// one period late, `when + period` is already past, so the next tick is due *now*: the stream
// yields the late tick, then a second one immediately (measured: 400 ns apart for a 20 ms
// period). The docs promise "An interval yields once per period; if the task falls behind, the
// ticks it missed are not queued: the next one is due one period after the tick it took." (the
// reactor's own repeating timers skip to the next grid point after `now`). A loop that does work
// per tick does it twice in a row after every stall.
//
// Fix: `let next = when + p; if next > now { next } else { now + p }` (or the next grid point
// after `now`, as `afd_reactor::Timers::pop_due` does).
// =================================================================================================

#[test]
fn f2_an_interval_that_fell_behind_waits_a_period_after_the_late_tick() {
    use futures_lite::StreamExt;
    on_thread(10, || {
        block_on(async {
            let period = Duration::from_millis(20);
            let mut ticks = Timer::interval(period);
            ticks.next().await.unwrap();
            std::thread::sleep(5 * period); // the task is busy for five periods
            ticks.next().await.unwrap(); // late: due at once, fine
            let taken = Instant::now();
            ticks.next().await.unwrap();
            let gap = taken.elapsed();
            assert!(
                gap >= period * 3 / 4,
                "the tick after a late one came {gap:?} after it (period {period:?})"
            );
        });
    });
}

// =================================================================================================
// F3 (leak; low-medium): a poll-style read or write (`AsyncRead::poll_read`, `poll_write`,
// `accept`) that is dropped while pending leaves its task's `Waker` in the registration until
// the socket's next event, which may never come.
//
// `Direction::add_poll_waiter` keeps `(POLL_WAITER, waker)`; nothing removes it but `fire`. A
// future like `AsyncReadExt::read` has no `Drop` to take it back, so a read abandoned by a
// timeout (`future::or(stream.read(..), timer)`), a cancelled task, or a `select` loser keeps the
// task's waker (and with async-executor, the task's allocation) alive for as long as the socket
// stays idle. Each distinct task adds one more (dedup is per waker), so an idle connection read
// by short-lived tasks grows without bound. The crate docs say "Dropping a future leaks nothing"
// and `held()` cannot see these (it counts registrations and timers only).
//
// Fix: keep poll-style waiters in one slot per direction (like async-io's `Direction::waker`:
// replace, do not accumulate), or have `Async`'s I/O futures (`read`, `write`, `accept` written
// as named futures) remove their waiter on drop; at least make `held()` count waiters.
// =================================================================================================

#[cfg(any(windows, target_os = "linux"))]
#[test]
fn f3_an_abandoned_poll_read_does_not_keep_its_tasks_waker() {
    use futures_lite::AsyncReadExt;
    on_thread(10, || {
        let (stream, _peer) = tcp_pair();
        let tasks: Vec<Arc<Counted>> = (0..10).map(|_| Arc::new(Counted)).collect();
        for task in &tasks {
            // Each task reads (nothing has arrived: it waits), then gives up (a timeout, say).
            let waker = Waker::from(Arc::clone(task));
            let mut buf = [0u8; 64];
            let mut reader = &stream;
            let mut read = reader.read(&mut buf);
            assert!(poll(&mut read, &waker).is_pending());
            // Let the reactor turn, as the task would before its timeout fires.
            block_on(Timer::after(Duration::from_millis(1)));
        }
        // Resolution (after review 14b's A1: a cap that evicts by waking made five waiting
        // tasks wake each other for ever): a poll-style wait has no future of its own to remove
        // it (futures-lite's `read` wraps `poll_read`), so its waker stays until the next event
        // in that direction, one per task (deduplicated with `will_wake`), and `held()` counts
        // it. The retention is visible and ends with the next event.
        let kept: usize = tasks.iter().map(|t| Arc::strong_count(t) - 1).sum();
        assert_eq!(afd_async::held().waiters, kept, "held() shows them");
        assert!(kept <= tasks.len(), "one per task at most");
        // Data arrives: the event releases every one of them.
        use std::io::Write;
        (&_peer).write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        block_on(async {
            use futures_lite::AsyncReadExt;
            (&stream).read_exact(&mut one).await.unwrap();
        });
        let kept: usize = tasks.iter().map(|t| Arc::strong_count(t) - 1).sum();
        assert_eq!(kept, 0, "{kept} wakers still held after the event");
        assert_eq!(afd_async::held().waiters, 0);
    });
}

// =================================================================================================
// F4 (cost: a rearm that costs a cancel in the common async path; medium): a task that streams
// to a quiet peer pays a cancel and a second submission at EVERY blocked write, because the
// async layer keeps the socket's READ readiness armed although no task waits to read.
//
// An AFD socket has one poll. A blocked write does `rearm(WRITABLE)`; if a READ poll is in the
// kernel then, the state machine must cancel it and resubmit READ|WRITE (on Windows one
// `NtCancelIoFileEx`, one more packet to dequeue, a second `IOCTL_AFD_POLL`; on Linux a second
// `epoll_ctl`). The SEND event then leaves READ armed alone, so it repeats at the next block.
// The Edge contract avoids this only when every readiness is reported ("no poll, so a rearm never
// needs a cancel"), but the layer arms READ when nobody reads:
// - (F4a) after a short read: `poll_read_stream` calls `park(Read)` on `n < len` ("the socket was
//   drained"), and `park` re-arms at once. A server that reads its request (a short read, almost
//   always), then writes a large response;
// - (F4b) from the registration on: `add_source` registers READABLE in Edge mode, so READ is
//   armed until it is first reported, i.e. for good if the peer sends nothing (an upload, a push
//   stream, a response to a client that waits).
// Either way, while waiting for anything between writes (the next chunk from a file or an
// upstream socket, a timer: anything that turns the reactor), each blocked write cancels.
// Measured natively: 16 MiB in 256 KiB chunks to a slow reader, 7 blocked writes -> 7 cancels and
// 14 submissions, in both cases (0 cancels and 7 submissions wanted); under Wine 8 on AFD,
// 8 blocked writes -> 8 `NtCancelIoFileEx` and 16 `IOCTL_AFD_POLL`. (The author's net test
// asserts "no cancel" for a request/answer exchange, whose writes never block.)
//
// Fix: arm a readiness only when a task waits for it. (a) Make the short-read shortcut lazy:
// `park` after a short read records `parked_at` but does not re-arm; `poll_ready` re-arms (once
// per tick) when it is about to return `Pending`. (b) Start the layer's registrations with
// nothing armed (every readiness "reported"; needs a reactor call such as a register that starts
// disarmed, or `register` + an immediate no-poll state for Edge): the layer always tries the I/O
// first and re-arms before it waits, so the first wait arms what it needs with one submission.
// A reader that really waits while a writer blocks still costs a cancel (one poll per socket);
// only a second poll per socket would avoid that.
// =================================================================================================

#[cfg(any(windows, target_os = "linux"))]
fn stream_to_a_slow_reader(read_request_first: bool) -> (u64, u64, u64) {
    use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use std::io::{Read, Write};
    on_thread(30, move || {
        let (mut stream, mut peer) = tcp_pair();
        let reader = std::thread::spawn(move || {
            if read_request_first {
                peer.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = peer.read(&mut buf).unwrap();
                if n == 0 {
                    return total;
                }
                total += n as u64;
                std::thread::sleep(Duration::from_micros(500)); // a slow client
            }
        });
        let (cancels, submits, blocks) = block_on(async {
            if read_request_first {
                let mut req = vec![0u8; 4096];
                let n = stream.read(&mut req).await.unwrap();
                assert!(n > 0 && n < req.len(), "a short read");
            }
            // Let the reactor turn once (the re-arm of the read side, if any, is submitted).
            Timer::after(Duration::from_millis(5)).await;
            let before = afd_async::stats().unwrap().nt;
            let body = vec![7u8; 16 << 20];
            let mut blocks = 0u64;
            for chunk in body.chunks(256 * 1024) {
                // Count the blocked writes: a poll_write that returns Pending.
                let mut rest = chunk;
                while !rest.is_empty() {
                    let mut w = &stream;
                    let mut pending = false;
                    let n = future::poll_fn(|cx| {
                        let p = Pin::new(&mut w).poll_write(cx, rest);
                        pending |= p.is_pending();
                        p
                    })
                    .await
                    .unwrap();
                    blocks += u64::from(pending);
                    rest = &rest[n..];
                }
                // Waiting for the next chunk (from a file, an upstream socket...).
                Timer::after(Duration::from_micros(200)).await;
            }
            let after = afd_async::stats().unwrap().nt;
            stream.close().await.unwrap();
            (
                after.cancel - before.cancel,
                after.submit - before.submit,
                blocks,
            )
        });
        drop(stream);
        assert_eq!(reader.join().unwrap(), 16 << 20);
        (cancels, submits, blocks)
    })
}

#[cfg(any(windows, target_os = "linux"))]
#[test]
fn f4a_a_blocked_write_after_a_short_read_costs_no_cancel() {
    let (cancels, submits, blocks) = stream_to_a_slow_reader(true);
    assert!(
        blocks > 0,
        "the writer never blocked: the test proves nothing"
    );
    assert_eq!(
        cancels, 0,
        "{cancels} cancels (and {submits} submissions) for {blocks} blocked writes: the read \
         side re-armed by the short-read shortcut is cancelled at each one"
    );
}

// F4b: see F4 (the READ poll of the registration, never answered by a quiet peer).
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn f4b_a_blocked_write_to_a_quiet_peer_costs_no_cancel() {
    let (cancels, submits, blocks) = stream_to_a_slow_reader(false);
    assert!(
        blocks > 0,
        "the writer never blocked: the test proves nothing"
    );
    assert_eq!(
        cancels, 0,
        "{cancels} cancels ({submits} submissions) for {blocks} blocked writes"
    );
}

// =================================================================================================
// F5 (lost wakeup, hang; low: needs a failed post): one failed wake post leaves `block_on`
// asleep in the kernel for good, and every later wake from another thread is lost too.
//
// `Signal::wake_by_ref` swaps `woken` to true and `sleeping` to false, then posts; a post that
// fails is ignored ("the post is owed: it is delivered by the loop's next turn"). But the loop
// is blocked in `poll(None)`: its next turn only comes with some other event. Meanwhile `woken`
// stays true and `sleeping` false, so every later `wake` returns at once without posting: the
// task is never polled again (here: forever, although it was woken twice from another thread).
// On the simulated kernel, `fail_posts(1)`; on Windows, an `NtSetIoCompletion` that fails
// (quota, low memory).
//
// Fix: in `Signal::wake_by_ref`, on a post error other than `NotConnected`, retry (bounded, with
// a short sleep) or set `sleeping` back to true so the next wake posts again; better, have
// `afd_reactor::Waker::wake` keep retrying an owed post itself, or let `block_on` bound its wait
// while the reactor has owed wakes.
// =================================================================================================

#[test]
fn f5_a_failed_wake_post_does_not_leave_block_on_asleep_for_good() {
    use afd_reactor::Reactor;
    use afd_reactor::kernel::sim::SimKernel;
    on_thread(5, || {
        afd_async::with_reactor(Reactor::with_kernel(SimKernel::new(1))).unwrap();
        let (tx, rx) = mpsc::channel::<Waker>();
        let remote = std::thread::spawn(move || {
            let waker = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100)); // block_on is asleep in the kernel
            waker.wake_by_ref(); // its post fails
            std::thread::sleep(Duration::from_millis(100));
            waker.wake(); // and this one posts nothing
        });
        afd_async::with_kernel(|k: &SimKernel| k.fail_posts(1)).unwrap();
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
// F6 (lost wakeup, hang; low): after `forget_reactor`, `Timer`s and `Async`s of one reactor wait
// on a reactor that no `block_on` drives: they hang for good instead of failing.
//
// `block_on` keeps the driver it started with; `Timer::poll_due` and `Async::new` take
// `Driver::current()`, which after `forget_reactor` is a new driver. So (a) a timer first polled
// after `forget_reactor` inside a running `block_on` is armed on a reactor nobody polls, and
// (b) an `Async` made before `forget_reactor`, awaited under a later `block_on`, waits on the old
// reactor, which nobody polls either. Both wait forever; nothing says why. (Dropping them is
// fine: checked in P2.)
//
// Fix: make the mismatch an error (`Readiness`/`poll_*` return an error, a timer panics or never
// arms with a debug assertion) when the object's driver is not the one the current `block_on`
// drives; or have `block_on` follow `Driver::current()` per turn and refuse `forget_reactor`
// while a `block_on` runs on the thread; at least document it on `forget_reactor`.
// =================================================================================================

#[test]
fn f6a_a_timer_awaited_after_forget_reactor_inside_block_on_fires() {
    on_thread(5, || {
        block_on(async {
            let _ = afd_async::forget_reactor();
            Timer::after(Duration::from_millis(10)).await;
        });
    });
}

#[test]
fn f6b_an_async_made_before_forget_reactor_fails_under_a_later_block_on() {
    on_thread(5, || {
        let a = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        let to = a.get_ref().local_addr().unwrap();
        let _ = afd_async::forget_reactor();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(b"ping", to)
                .unwrap();
        });
        // Resolution: an error, not a hang (the fix the finding offers first). The `Async`
        // belongs to a reactor no `block_on` drives any more.
        let mut buf = [0; 8];
        let err = block_on(a.recv(&mut buf)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err}");
        sender.join().unwrap();
    });
}

// =================================================================================================
// F7 (panic -> process abort; low): `try_block_on` (and `Async::new`, `stats`) called from a
// thread-local destructor that runs after the thread's driver's panics in `CURRENT.with`
// ("cannot access a Thread Local Storage value during or after destruction"), and a panic in a
// TLS destructor aborts the whole process.
//
// `Driver::current` uses `CURRENT.with` (`existing`/`uninstall` use `try_with`). A thread-local
// that closes its connections on drop (a pool, a client) with `try_block_on` takes the process
// down instead of getting the documented `Err`.
//
// Seen natively on Linux (SIGABRT); under Wine 8 the destructor order differs and it passes.
//
// Fix: `CURRENT.try_with(..)` in `Driver::current` and `install`, mapping `AccessError` to an
// `io::Error` (for instance `NotConnected`, "the thread is exiting").
// =================================================================================================

#[test]
fn f7_try_block_on_in_a_thread_local_destructor_returns_an_error() {
    const CHILD: &str = "AFD_REVIEW14_F7_CHILD";
    if std::env::var_os(CHILD).is_some() {
        struct ClosesOnDrop;
        impl Drop for ClosesOnDrop {
            fn drop(&mut self) {
                let r = afd_async::try_block_on(async { 1 });
                eprintln!(
                    "try_block_on in a TLS destructor: {:?}",
                    r.map_err(|e| e.kind())
                );
            }
        }
        thread_local! { static POOL: ClosesOnDrop = const { ClosesOnDrop }; }
        std::thread::spawn(|| {
            POOL.with(|_| {}); // registered first, so destroyed after the driver's slot
            block_on(async {});
        })
        .join()
        .unwrap();
        return;
    }
    // In a child process: the failure mode is an abort.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "f7_try_block_on_in_a_thread_local_destructor_returns_an_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the process died ({:?}):\n{stderr}",
        out.status
    );
}

// =================================================================================================
// Probes: checked and held up.
// =================================================================================================

/// P1: nested `block_on`; an `Async` and a `Timer` dropped inside a task woken by an event;
/// a task's future dropped by the executor while a timer and a read wait.
#[test]
fn p1_nested_block_on_and_drops_inside_woken_tasks() {
    use async_executor::LocalExecutor;
    on_thread(10, || {
        let v = block_on(async {
            block_on(async {
                Timer::after(Duration::from_millis(2)).await;
                3
            })
        });
        assert_eq!(v, 3);
        let ex = LocalExecutor::new();
        let a = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        let to = a.get_ref().local_addr().unwrap();
        let t = ex.spawn(async move {
            let _timer = Timer::after(Duration::from_secs(10));
            let mut buf = [0; 8];
            a.recv(&mut buf).await.unwrap();
            drop(a); // inside the task, during the loop's wake pass
            7
        });
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", to)
            .unwrap();
        assert_eq!(block_on(ex.run(t)), 7);
        assert_eq!((held().sources, held().timers), (0, 0));
        // A task dropped with its futures pending.
        let b = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        let t = ex.spawn(async move {
            let _t = Timer::after(Duration::from_secs(10));
            let mut buf = [0; 8];
            b.recv(&mut buf).await
        });
        block_on(ex.run(Timer::after(Duration::from_millis(5))));
        drop(t);
        block_on(ex.run(Timer::after(Duration::from_millis(1))));
        assert_eq!((held().sources, held().timers), (0, 0));
    });
}

/// P2: an `Async` and an armed `Timer` dropped after their reactor was forgotten (and another
/// made): no panic, the old reactor goes with them.
#[test]
fn p2_dropping_after_forget_reactor_is_fine() {
    on_thread(10, || {
        let b = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
        let mut t = Timer::after(Duration::from_secs(10));
        assert!(block_on(poll_once(&mut t)).is_none());
        assert!(afd_async::forget_reactor().unwrap());
        block_on(Timer::after(Duration::from_millis(1)));
        drop(b);
        drop(t);
        assert_eq!((held().sources, held().timers), (0, 0));
    });
}

/// P3: more ready registrations than the driver's 1,024-event buffer: every waiter wakes, round
/// after round (events kept by the reactor for its next polls reach their tasks).
#[test]
fn p3_more_ready_sockets_than_the_event_buffer_all_wake() {
    use afd_reactor::afd::PollEvents;
    use afd_reactor::kernel::sim::SimKernel;
    use afd_reactor::{Reactor, SimSocket};
    use async_executor::LocalExecutor;
    use std::cell::Cell;
    on_thread(30, || {
        afd_async::with_reactor(Reactor::with_kernel(SimKernel::new(3))).unwrap();
        let set = |s: &Async<SimSocket>, e| {
            afd_async::with_kernel(|k: &SimKernel| k.set_readiness(s.get_ref().0, e)).unwrap()
        };
        let sockets: Vec<Async<SimSocket>> = (0..2500)
            .map(|_| {
                let raw = afd_async::with_kernel(|k: &SimKernel| k.open_socket()).unwrap();
                Async::new_nonblocking(SimSocket(raw)).unwrap()
            })
            .collect();
        let done = Cell::new(0);
        let ex = LocalExecutor::new();
        let start = Instant::now();
        block_on(ex.run(async {
            let tasks: Vec<_> = sockets
                .iter()
                .map(|s| {
                    let done = &done;
                    ex.spawn(async move {
                        for _ in 0..3 {
                            s.readable().await.unwrap();
                            set(s, PollEvents::NONE); // read to WouldBlock
                        }
                        done.set(done.get() + 1);
                    })
                })
                .collect();
            while done.get() < sockets.len() && start.elapsed() < Duration::from_secs(20) {
                for s in &sockets {
                    set(s, PollEvents::RECEIVE);
                }
                Timer::after(Duration::from_millis(2)).await;
            }
            for t in tasks {
                t.await;
            }
        }));
        assert_eq!(done.get(), sockets.len());
    });
}

/// P4: a failed connect is an error, not a hang (Edge reports the failure once, the layer reads
/// it with `take_error`).
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn p4_a_failed_connect_is_an_error() {
    on_thread(20, || {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        }; // closed: nothing listens there now
        let r = block_on(Async::<std::net::TcpStream>::connect(port));
        let e = r.expect_err("connect to a closed port");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    });
}

/// P5: two tasks reading one stream poll-style, with short reads (the `park` shortcut) and a
/// third waiting with `readable()`: every byte is read, nobody hangs.
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn p5_two_poll_style_readers_and_a_readable_waiter_on_one_stream() {
    use async_executor::LocalExecutor;
    use futures_lite::AsyncReadExt;
    use std::cell::Cell;
    use std::io::Write;
    on_thread(20, || {
        let (stream, mut peer) = tcp_pair();
        let writer = std::thread::spawn(move || {
            for i in 0..200u32 {
                peer.write_all(&[i as u8; 333]).unwrap();
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let total = Cell::new(0usize);
        let readable = Cell::new(0usize);
        let ex = LocalExecutor::new();
        block_on(ex.run(async {
            let reader = || async {
                let mut buf = [0u8; 500];
                while total.get() < 200 * 333 {
                    let mut r = &stream;
                    let n = future::or(async { Some(r.read(&mut buf).await.unwrap()) }, async {
                        Timer::after(Duration::from_millis(300)).await;
                        None
                    })
                    .await;
                    match n {
                        Some(n) => total.set(total.get() + n),
                        None if total.get() >= 200 * 333 => return,
                        None => panic!("a reader hung with {} bytes read", total.get()),
                    }
                }
            };
            let a = ex.spawn(reader());
            let b = ex.spawn(reader());
            let c = ex.spawn(async {
                while total.get() < 200 * 333 {
                    future::or(async { stream.readable().await.unwrap() }, async {
                        Timer::after(Duration::from_millis(50)).await;
                    })
                    .await;
                    readable.set(readable.get() + 1);
                }
            });
            a.await;
            b.await;
            c.await;
        }));
        writer.join().unwrap();
        assert_eq!(total.get(), 200 * 333);
    });
}

/// P6: a registration dropped with its poll pending, and its descriptor number (and token) reused
/// at once by a new stream: the old socket's late traffic never wakes the new one's reader.
#[cfg(any(windows, target_os = "linux"))]
#[test]
fn p6_no_stale_event_after_drop_and_handle_reuse() {
    use std::io::Write;
    on_thread(20, || {
        let (a, mut a_peer) = tcp_pair();
        block_on(async {
            let mut wait = Box::pin(a.readable());
            assert!(poll_once(&mut wait).await.is_none());
            Timer::after(Duration::from_millis(5)).await; // its poll is in the kernel
        });
        drop(a); // deregistered, then closed
        let (b, _b_peer) = tcp_pair(); // the number (and the slab key) come back
        let _ = a_peer.write_all(b"late data for the old socket");
        let woke = block_on(future::or(
            async {
                b.readable().await.unwrap();
                true
            },
            async {
                Timer::after(Duration::from_millis(200)).await;
                false
            },
        ));
        assert!(!woke, "the new stream heard the old one's traffic");
        assert_eq!((held().sources, held().timers), (1, 0));
    });
}
