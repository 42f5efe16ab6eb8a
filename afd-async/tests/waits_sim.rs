//! `Waitable<T>` on afd-reactor's simulated kernel, on both of its wait paths (wait completion
//! packets, and the thread-pool fallback): signals from other tasks, signals before a wait, one
//! return per signal, dropped futures, refused re-arms, processes, and tokens shared with sockets.
//! Each case runs on its own thread (its own reactor), once per path.

mod util;

use afd_async::{Async, Held, Timer, Waitable, block_on, held, with_kernel, with_reactor};
use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::RawWaitable;
use afd_reactor::kernel::sim::{Faults, SimKernel, WaitPath};
use afd_reactor::{Reactor, SimSocket, SimWaitable};
use futures_lite::future::{self, poll_once, yield_now};
use std::cell::Cell;
use std::io;
use std::time::Duration;
use util::on_thread;

const PATHS: [WaitPath; 2] = [WaitPath::Packets, WaitPath::ThreadPool];

/// Run `case` once per wait path, each on a fresh thread with a sim reactor.
fn on_both_paths(case: fn()) {
    for path in PATHS {
        on_thread(20, move || {
            with_reactor(Reactor::with_kernel(SimKernel::new(7))).expect("a fresh thread");
            kernel(|k| k.set_wait_path(path));
            case();
        });
    }
}

fn kernel<R>(f: impl FnOnce(&SimKernel) -> R) -> R {
    with_kernel(f).expect("a sim reactor")
}

/// An auto-reset event, registered.
fn auto_event() -> (Waitable<SimWaitable>, RawWaitable) {
    let raw = kernel(|k| k.open_event(false, false));
    (Waitable::new(SimWaitable(raw)).expect("register"), raw)
}

fn signal(raw: RawWaitable) {
    kernel(|k| k.signal(raw));
}

/// Let the loop turn (dispatch what is due) without waiting for anything in particular.
async fn turn() {
    Timer::after(Duration::from_millis(5)).await;
}

fn arms() -> u64 {
    afd_async::stats().unwrap().nt.wait_arm
}

#[test]
fn a_task_awaiting_an_event_wakes_when_another_task_sets_it() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(future::zip(async { event.wait().await.unwrap() }, async {
            yield_now().await;
            assert_eq!(held().waiters, 1, "the first task waits");
            signal(raw);
        }));
        assert_eq!(held().waiters, 0);
        assert_eq!(
            kernel(|k| k.signals(raw)),
            0,
            "the wait consumed the signal"
        );
    });
}

#[test]
fn a_signal_from_a_timer_task_wakes_the_waiter() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(future::zip(async { event.wait().await.unwrap() }, async {
            Timer::after(Duration::from_millis(20)).await;
            signal(raw);
        }));
    });
}

#[test]
fn a_signal_before_the_first_wait_is_not_lost() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        signal(raw); // consumed by the wait armed at registration
        block_on(async {
            turn().await; // delivered and remembered, with no task waiting
            let arms0 = arms();
            event.wait().await.unwrap();
            assert_eq!(arms() - arms0, 0, "a remembered signal costs no call");
        });
        // Also when it is not yet delivered at the first wait.
        let (event, raw) = auto_event();
        signal(raw);
        block_on(event.wait()).unwrap();
    });
}

#[test]
fn two_signals_make_two_waits_return() {
    on_both_paths(|| {
        // One at a time.
        let (event, raw) = auto_event();
        block_on(async {
            for _ in 0..2 {
                let ((), r) = future::zip(
                    async {
                        yield_now().await;
                        signal(raw);
                    },
                    event.wait(),
                )
                .await;
                r.unwrap();
            }
        });
        // Both before any wait: one consumed by the armed wait (remembered), one kept by the
        // event itself (the registration is disarmed by then); the second wait re-arms for it.
        let (event, raw) = auto_event();
        signal(raw);
        block_on(async {
            turn().await;
            signal(raw);
            assert_eq!(kernel(|k| k.signals(raw)), 1);
            event.wait().await.unwrap();
            event.wait().await.unwrap();
            assert_eq!(kernel(|k| k.signals(raw)), 0);
            // No third: it waits.
            assert!(
                future::or(async { Some(event.wait().await) }, async {
                    Timer::after(Duration::from_millis(30)).await;
                    None
                })
                .await
                .is_none()
            );
        });
    });
}

#[test]
fn a_semaphore_released_three_times_makes_three_waits_return() {
    on_both_paths(|| {
        let raw = kernel(|k| k.open_semaphore(0));
        let sem = Waitable::new(SimWaitable(raw)).unwrap();
        for _ in 0..3 {
            signal(raw);
        }
        block_on(async {
            for _ in 0..3 {
                sem.wait().await.unwrap();
            }
        });
        assert_eq!(kernel(|k| k.signals(raw)), 0);
    });
}

#[test]
fn a_dropped_wait_future_loses_no_signal() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(async {
            // Dropped while waiting, before the signal.
            let mut first = Box::pin(event.wait());
            assert!(poll_once(&mut first).await.is_none());
            assert_eq!(held().waiters, 1);
            drop(first);
            assert_eq!(held().waiters, 0, "the dropped future's waker is gone");
            // Woken by the signal, then dropped before it is polled again.
            let mut second = Box::pin(event.wait());
            assert!(poll_once(&mut second).await.is_none());
            signal(raw);
            turn().await; // the signal is dispatched meanwhile
            drop(second);
            // The next wait has it at once.
            let mut third = Box::pin(event.wait());
            assert!(matches!(poll_once(&mut third).await, Some(Ok(()))));
        });
        assert_eq!(
            held(),
            Held {
                sources: 0,
                waitables: 1,
                timers: 0,
                waiters: 0
            }
        );
        drop(event);
        assert_eq!(held(), Held::default());
        assert_eq!(
            kernel(|k| k.waits_open()),
            0,
            "the reactor's wait is closed"
        );
    });
}

#[test]
fn a_refused_rearm_is_an_error_and_the_next_wait_retries() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(async {
            signal(raw);
            event.wait().await.unwrap(); // disarmed now
            kernel(|k| {
                k.set_faults(Faults {
                    submit_failure: 1000,
                    ..Faults::none()
                })
            });
            let e = event.wait().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Other, "{e}");
            kernel(|k| k.set_faults(Faults::none()));
            let ((), r) = future::zip(
                async {
                    yield_now().await;
                    signal(raw);
                },
                event.wait(),
            )
            .await;
            r.unwrap();
        });
        assert_eq!(held().waiters, 0);
    });
}

#[test]
fn a_refused_rearm_with_nobody_waiting_is_retried_by_the_next_wait() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(async {
            signal(raw);
            event.wait().await.unwrap();
            kernel(|k| {
                k.set_faults(Faults {
                    submit_failure: 1000,
                    ..Faults::none()
                })
            });
            // A wait that re-arms, dropped before the reactor's refusal comes.
            let mut w = Box::pin(event.wait());
            assert!(poll_once(&mut w).await.is_none());
            drop(w);
            turn().await; // the error event, with nobody waiting
            kernel(|k| k.set_faults(Faults::none()));
            signal(raw);
            event.wait().await.unwrap();
        });
    });
}

#[test]
fn a_process_ending_wakes_the_waiter_and_stays_signaled() {
    on_both_paths(|| {
        let raw = kernel(|k| k.open_process());
        let process = Waitable::new(SimWaitable(raw)).unwrap();
        block_on(async {
            let ((), r) = future::zip(
                async {
                    Timer::after(Duration::from_millis(10)).await;
                    kernel(|k| k.exit_process(raw));
                },
                process.wait(),
            )
            .await;
            r.unwrap();
            process.wait().await.unwrap(); // still ended
        });
        let handle = process.into_inner().unwrap();
        assert_eq!(kernel(|k| k.signals(handle.0)), 1);
        assert_eq!(held(), Held::default());
    });
}

#[test]
fn two_tasks_waiting_on_one_event_share_its_signals_one_each() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        let done = Cell::new(0);
        block_on(async {
            let waiter = || async {
                event.wait().await.unwrap();
                done.set(done.get() + 1);
            };
            let signaller = async {
                yield_now().await;
                yield_now().await;
                assert_eq!(held().waiters, 2);
                signal(raw);
                turn().await;
                turn().await;
                assert_eq!(done.get(), 1, "one signal, one return");
                assert_eq!(held().waiters, 1);
                signal(raw);
            };
            future::zip(future::zip(waiter(), waiter()), signaller).await;
        });
        assert_eq!(done.get(), 2);
    });
}

#[test]
fn a_socket_and_a_waitable_with_the_same_key_do_not_hear_each_other() {
    on_both_paths(|| {
        // Both are the first of their kind: key 0 each.
        let socket = Async::new_nonblocking(SimSocket(kernel(|k| k.open_socket()))).unwrap();
        let (event, raw) = auto_event();
        block_on(async {
            // A signal does not make the socket readable.
            let mut read = Box::pin(socket.readable());
            assert!(poll_once(&mut read).await.is_none());
            signal(raw);
            event.wait().await.unwrap();
            assert!(poll_once(&mut read).await.is_none(), "no readiness");
            // The waitable's error event is not the socket's.
            kernel(|k| {
                k.set_faults(Faults {
                    submit_failure: 1000,
                    ..Faults::none()
                })
            });
            assert!(event.wait().await.is_err());
            kernel(|k| k.set_faults(Faults::none()));
            assert!(
                poll_once(&mut read).await.is_none(),
                "no error for the socket"
            );
            // Readiness does not signal the waitable.
            let mut wait = Box::pin(event.wait());
            assert!(poll_once(&mut wait).await.is_none());
            kernel(|k| k.set_readiness(socket.get_ref().0, PollEvents::RECEIVE));
            read.await.unwrap();
            assert!(poll_once(&mut wait).await.is_none(), "no signal");
        });
    });
}

#[test]
fn into_inner_with_signal_reports_a_signal_no_wait_returned() {
    on_both_paths(|| {
        // Consumed by the wait, not yet delivered: the reactor reports it.
        let (event, raw) = auto_event();
        signal(raw);
        let (handle, unobserved) = event.into_inner_with_signal().unwrap();
        assert!(unobserved);
        assert_eq!(kernel(|k| k.signals(handle.0)), 0);
        // Delivered, kept for a wait that never came.
        let (event, raw) = auto_event();
        signal(raw);
        block_on(turn());
        let (_, unobserved) = event.into_inner_with_signal().unwrap();
        assert!(unobserved);
        // Returned by a wait: nothing left.
        let (event, raw) = auto_event();
        signal(raw);
        block_on(event.wait()).unwrap();
        let (_, unobserved) = event.into_inner_with_signal().unwrap();
        assert!(!unobserved);
        assert_eq!(held(), Held::default());
        assert_eq!(kernel(|k| k.waits_open()), 0);
    });
}

#[test]
fn a_wait_after_a_signal_costs_one_arming() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        block_on(async {
            let arms0 = arms();
            for _ in 0..50 {
                let ((), r) = future::zip(
                    async {
                        yield_now().await;
                        signal(raw);
                    },
                    event.wait(),
                )
                .await;
                r.unwrap();
            }
            // The first was armed at registration; each later one re-arms once.
            assert_eq!(arms() - arms0, 49);
        });
    });
}

#[test]
fn held_counts_waitables_and_their_waiters() {
    on_both_paths(|| {
        let (event, raw) = auto_event();
        assert_eq!(held().waitables, 1);
        block_on(future::zip(event.wait(), async {
            yield_now().await;
            assert_eq!(
                held(),
                Held {
                    sources: 0,
                    waitables: 1,
                    timers: 0,
                    waiters: 1
                }
            );
            signal(raw);
        }))
        .0
        .unwrap();
        assert_eq!(afd_async::stats().unwrap().waitables, 1);
        drop(event);
        assert_eq!(held(), Held::default());
        assert_eq!(afd_async::stats().unwrap().waitables, 0);
    });
}

#[test]
fn a_wait_on_a_forgotten_reactor_fails() {
    on_both_paths(|| {
        let (event, _raw) = auto_event();
        assert!(afd_async::forget_reactor().unwrap());
        let e = block_on(event.wait()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    });
}

#[test]
fn registering_a_handle_twice_is_refused() {
    on_both_paths(|| {
        let (_event, raw) = auto_event();
        let e = Waitable::new(SimWaitable(raw)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(held().waitables, 1);
    });
}
