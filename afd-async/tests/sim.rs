//! The async layer's readiness logic on afd-reactor's simulated kernel: wakeups, dropped
//! futures, two waiters, re-arm costs, errors, timers, wakes from other threads, and many tasks
//! on a `LocalExecutor`. Each test runs on its own thread, so each has its own reactor.

use afd_async::{Async, Held, Timer, block_on, held, with_kernel, with_reactor};
use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::sim::SimKernel;
use afd_reactor::{Reactor, SimSocket};
use async_executor::LocalExecutor;
use futures_lite::future::{self, poll_once, yield_now};
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

fn sim() {
    with_reactor(Reactor::with_kernel(SimKernel::new(7))).expect("a fresh thread");
}

fn kernel<R>(f: impl FnOnce(&SimKernel) -> R) -> R {
    with_kernel(f).expect("a sim reactor")
}

fn socket() -> Async<SimSocket> {
    let raw = kernel(|k| k.open_socket());
    Async::new_nonblocking(SimSocket(raw)).expect("register")
}

fn set(s: &Async<SimSocket>, events: PollEvents) {
    kernel(|k| k.set_readiness(s.get_ref().0, events));
}

fn submits() -> u64 {
    afd_async::stats().unwrap().nt.submit
}

fn cancels() -> u64 {
    afd_async::stats().unwrap().nt.cancel
}

#[test]
fn readable_wakes_the_waiting_task() {
    sim();
    let s = socket();
    block_on(future::zip(async { s.readable().await.unwrap() }, async {
        yield_now().await;
        set(&s, PollEvents::RECEIVE);
    }));
    assert_eq!(held().waiters, 0);
}

#[test]
fn two_tasks_waiting_on_one_direction_both_wake() {
    sim();
    let s = socket();
    let woke = Cell::new(0);
    block_on(future::zip(
        future::zip(
            async {
                s.readable().await.unwrap();
                woke.set(woke.get() + 1);
            },
            async {
                s.readable().await.unwrap();
                woke.set(woke.get() + 1);
            },
        ),
        async {
            yield_now().await;
            yield_now().await;
            set(&s, PollEvents::RECEIVE);
        },
    ));
    assert_eq!(woke.get(), 2);
}

#[test]
fn a_future_dropped_mid_wait_loses_no_wakeup_and_leaks_nothing() {
    sim();
    let s = socket();
    block_on(async {
        // Wait, then give up before the event.
        let mut first = Box::pin(s.readable());
        assert!(poll_once(&mut first).await.is_none());
        assert_eq!(held().waiters, 1);
        drop(first);
        assert_eq!(held().waiters, 0, "the dropped future's waker is gone");
        // A future woken, then dropped before it is polled again: the next waiter still hears.
        let mut second = Box::pin(s.readable());
        assert!(poll_once(&mut second).await.is_none());
        set(&s, PollEvents::RECEIVE);
        Timer::after(Duration::from_millis(20)).await; // the event is dispatched meanwhile
        drop(second);
        // Still readable: a new wait re-arms and hears it at once.
        s.readable().await.unwrap();
    });
    assert_eq!(
        held(),
        Held {
            sources: 1,
            waitables: 0,
            timers: 0,
            waiters: 0
        }
    );
    drop(s);
    assert_eq!(held(), Held::default());
}

#[test]
fn a_wait_costs_one_submission_and_never_a_cancel() {
    sim();
    let s = socket();
    block_on(async {
        // Settle the registration's first poll.
        set(&s, PollEvents::RECEIVE);
        s.readable().await.unwrap();
        let (submit0, cancel0) = (submits(), cancels());
        for _ in 0..100 {
            set(&s, PollEvents::NONE); // the task read to WouldBlock
            let wait = s.readable();
            let make_ready = async {
                yield_now().await;
                set(&s, PollEvents::RECEIVE);
            };
            future::zip(wait, make_ready).await.0.unwrap();
        }
        let (submit, cancel) = (submits() - submit0, cancels() - cancel0);
        assert_eq!(submit, 100, "one submission per wait");
        assert_eq!(cancel, 0, "no cancel");
    });
}

#[test]
fn a_writer_that_waits_is_added_and_hears_a_reset_with_the_reader() {
    sim();
    let s = socket();
    block_on(async {
        set(&s, PollEvents::NONE);
        let reader = async { s.readable().await };
        let writer = async { s.writable().await };
        let reset = async {
            yield_now().await;
            yield_now().await;
            set(&s, PollEvents::ABORT);
        };
        let ((r, w), ()) = future::zip(future::zip(reader, writer), reset).await;
        r.unwrap();
        w.unwrap();
    });
}

#[test]
fn read_with_retries_after_would_block() {
    sim();
    let s = socket();
    let data = Cell::new(false);
    block_on(future::zip(
        async {
            let got = s
                .read_with(|_| {
                    if data.get() {
                        Ok(42)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                })
                .await
                .unwrap();
            assert_eq!(got, 42);
        },
        async {
            yield_now().await;
            data.set(true);
            set(&s, PollEvents::RECEIVE);
        },
    ));
}

#[test]
fn a_poll_the_reactor_could_not_arm_is_an_error_not_a_hang() {
    sim();
    let s = socket();
    let result = block_on(future::zip(s.readable(), async {
        yield_now().await;
        yield_now().await;
        // Someone's CancelIoEx on the socket: the reactor's poll ends, not by its own cancel.
        kernel(|k| k.cancel_io(s.get_ref().0));
    }));
    let err = result.0.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other, "{err}");
    // The next wait retries the poll.
    block_on(future::zip(s.readable(), async {
        yield_now().await;
        set(&s, PollEvents::RECEIVE);
    }))
    .0
    .unwrap();
}

#[test]
fn timers_fire_in_order_and_dropped_ones_are_cancelled() {
    sim();
    let start = Instant::now();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let ex = LocalExecutor::new();
    block_on(ex.run(async {
        let mut tasks = Vec::new();
        for ms in [30u64, 10, 20] {
            let order = Rc::clone(&order);
            tasks.push(ex.spawn(async move {
                let at = Timer::after(Duration::from_millis(ms)).await;
                assert!(at >= start + Duration::from_millis(ms));
                assert!(
                    Instant::now() >= start + Duration::from_millis(ms),
                    "never early"
                );
                order.borrow_mut().push(ms);
            }));
        }
        // A timer dropped while armed is cancelled at once.
        let mut dropped = Box::pin(Timer::after(Duration::from_secs(60)));
        assert!(poll_once(&mut dropped).await.is_none());
        assert_eq!(held().timers, 1);
        drop(dropped);
        assert_eq!(held().timers, 0);
        for t in tasks {
            t.await;
        }
    }));
    assert_eq!(*order.borrow(), vec![10, 20, 30]);
    assert_eq!(held(), Held::default());
}

#[test]
fn an_interval_yields_per_period_without_queueing_missed_ticks() {
    sim();
    use futures_lite::StreamExt;
    block_on(async {
        let start = Instant::now();
        let mut ticks = Timer::interval(Duration::from_millis(10));
        ticks.next().await.unwrap();
        ticks.next().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        // Fall behind by 5 periods: one tick is due at once, the next a period later.
        std::thread::sleep(Duration::from_millis(50));
        let behind = Instant::now();
        ticks.next().await.unwrap();
        ticks.next().await.unwrap();
        assert!(
            behind.elapsed() >= Duration::from_millis(9),
            "missed ticks were queued"
        );
        let mut once = Timer::after(Duration::from_millis(1));
        assert!(once.next().await.is_some());
        assert!(
            once.next().await.is_none(),
            "a one-shot timer's stream ends"
        );
    });
}

/// A one-slot channel: a value set from another thread wakes the task waiting for it.
#[derive(Default)]
struct Slot {
    value: Mutex<(Option<u32>, Option<Waker>)>,
}

impl Slot {
    fn put(&self, v: u32) {
        let mut g = self.value.lock().unwrap();
        g.0 = Some(v);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }
    async fn take(&self) -> u32 {
        future::poll_fn(|cx| {
            let mut g = self.value.lock().unwrap();
            match g.0.take() {
                Some(v) => Poll::Ready(v),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[test]
fn a_waker_used_from_another_thread_wakes_the_loop() {
    sim();
    let before = afd_async::stats().unwrap().nt.post;
    let slot = Arc::new(Slot::default());
    let remote = Arc::clone(&slot);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        remote.put(7);
    });
    let start = Instant::now();
    assert_eq!(block_on(slot.take()), 7);
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    let posts = afd_async::stats().unwrap().nt.post - before;
    assert!(posts <= 1, "one post at most for one remote wake: {posts}");
}

#[test]
fn wakes_on_the_loops_own_thread_cost_no_kernel_call() {
    sim();
    let s = socket();
    let before = afd_async::stats().unwrap().nt.post;
    block_on(async {
        for _ in 0..50 {
            set(&s, PollEvents::NONE);
            future::zip(s.readable(), async {
                yield_now().await;
                set(&s, PollEvents::RECEIVE);
            })
            .await
            .0
            .unwrap();
        }
    });
    assert_eq!(afd_async::stats().unwrap().nt.post, before);
}

#[test]
fn many_tasks_on_a_local_executor_are_woken_by_readiness() {
    sim();
    const TASKS: usize = 500;
    const ROUNDS: usize = 20;
    let sockets: Vec<Async<SimSocket>> = (0..TASKS).map(|_| socket()).collect();
    let done = Cell::new(0);
    let ex = LocalExecutor::new();
    block_on(ex.run(async {
        let mut tasks = Vec::new();
        for s in &sockets {
            let done = &done;
            tasks.push(ex.spawn(async move {
                for _ in 0..ROUNDS {
                    s.readable().await.unwrap();
                    set(s, PollEvents::NONE); // "read to WouldBlock"
                }
                done.set(done.get() + 1);
            }));
        }
        // The "network": makes a pseudo-random third of the sockets readable per turn.
        let mut seed = 12345u64;
        while done.get() < TASKS {
            for s in &sockets {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if seed >> 62 == 0 {
                    set(s, PollEvents::RECEIVE);
                }
            }
            yield_now().await;
        }
        for t in tasks {
            t.await;
        }
    }));
    assert_eq!(done.get(), TASKS);
    assert_eq!(held().waiters, 0);
    drop(ex);
    drop(sockets);
    assert_eq!(held(), Held::default());
    assert_eq!(afd_async::stats().unwrap().registered, 0);
}
