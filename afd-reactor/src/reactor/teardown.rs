//! Teardown (docs/design.md §7): `shutdown`, `abandon`, and `Drop`.

use super::{Reactor, Teardown};
use crate::kernel::Kernel;
use std::io;
use std::time::{Duration, Instant};

/// Teardown cancels this many polls between zero-timeout drains (see `shutdown`).
const CANCEL_BATCH: usize = 64;

impl<K: Kernel> Reactor<K> {
    /// Tear down: drain what is queued, cancel every pending poll, and drain until no poll is in
    /// flight or the configured bound passes ([`Config::teardown_timeout`](crate::Config),
    /// 5 s by default; `Duration::MAX`: no bound). A failed dequeue does not stop it: it cancels
    /// everything anyway and keeps draining until the bound. Called by `Drop` if not called
    /// before.
    ///
    /// You need not deregister sockets, cancel timers or drop wakers first: registrations still
    /// registered are cancelled here (see [`Teardown::cancelled`]), timers are dropped, and wakers
    /// stop posting (their `wake` fails with `NotConnected`). Afterwards `register`,
    /// `reregister`, `deregister`, `poll`, `waker` and `add_timer` fail with `NotConnected`.
    ///
    /// Calling it again reports the truth: `Ok` once nothing is in flight, otherwise it drains
    /// again (within the bound) and reports what is still out.
    ///
    /// # Errors
    /// Polls still in flight at the end: `TimedOut` (or the kind of the kernel's dequeue error,
    /// if dequeues failed), whose inner error is the [`Teardown`] report:
    /// `e.get_ref().and_then(|inner| inner.downcast_ref::<Teardown>())`. Their buffers are
    /// never freed while the kernel may write them: a later `shutdown` keeps draining them, and
    /// dropping the reactor leaks them on purpose.
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?; // a poll is in flight
    /// let report = reactor.shutdown()?;
    /// assert_eq!((report.cancelled, report.leaked), (1, 0));
    /// assert_eq!(reactor.kernel().pending_polls(), 0); // the kernel holds nothing of ours
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&mut self) -> io::Result<Teardown> {
        let start = Instant::now();
        if !self.shut_down {
            self.shut_down = true;
            self.wakers.close_all();
            self.timers.clear();
        }
        let mut report = Teardown::default();
        let packets_before = self.stats.packets;
        let mut last_error: Option<io::Error> = None;
        let mut note = |e: io::Error, report: &mut Teardown| {
            report.dequeue_errors += 1;
            last_error = Some(e);
        };
        // Whether this call has emptied the queue once (of wakes and foreign packets too).
        let mut queue_drained = false;
        if !self.cancelled_all {
            self.cancelled_all = true;
            // 1. What is already queued (e.g. LOCAL_CLOSE of sockets the user closed) first, so
            //    no cancel is issued for a poll that has already ended. A failure here stops
            //    nothing: step 2 cancels regardless, and step 3 empties the queue.
            match self.drain_into_stash() {
                Ok(()) => queue_drained = true,
                Err(e) => note(e, &mut report),
            }
            // 2. Cancel the polls still pending; every registration becomes a zombie or is freed.
            //    Newest slot first, with a zero-timeout drain after every CANCEL_BATCH cancels,
            //    so cancelled requests are reaped while we go (Wine keeps a cancelled request
            //    on the process's list until this thread next enters a wait). Measured under
            //    Wine with 10,000 pending polls: 4.3 s before, 3.2 s after; the rest is Wine's
            //    per-completion cost, which closing the sockets pays as much. On Windows the
            //    drains merely start step 3 early.
            self.hinted = 0;
            let mut live: Vec<(u32, u64)> = self
                .by_socket
                .drain_indices()
                .into_iter()
                .map(|i| (i, self.pool.meta(i).map_or(0, |m| m.generation)))
                .collect();
            live.sort_unstable_by(|a, b| b.cmp(a));
            let (cancelled, lost) = self.end_all_waitables();
            report.cancelled += cancelled;
            report.signals_lost = lost;
            for (k, (index, generation)) in live.into_iter().enumerate() {
                // A drain below may have ended this registration already (e.g. a misrouted
                // packet); the generation tells.
                if self.pool.meta(index).map(|m| m.generation) != Some(generation) {
                    continue;
                }
                if self.end_registration(index) {
                    report.cancelled += 1;
                }
                if (k + 1) % CANCEL_BATCH == 0
                    && let Err(e) = self.drain_into_stash()
                {
                    note(e, &mut report);
                }
            }
        }
        // 3. Drain until nothing is in flight, waiting at most until the bound; past it, still
        //    take whatever is already queued (that costs no waiting). A failed dequeue is retried
        //    until the bound (after a short pause: the kernel is refusing, not waiting).
        let bound = start.checked_add(self.config.teardown_timeout);
        while self.outstanding() > 0 || !queue_drained {
            let wait = if self.outstanding() > 0 {
                bound.map(|b| b.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO) // only what is queued: nothing to wait for
            };
            self.stats.nt.dequeue += 1;
            match self.kernel.dequeue(&mut self.entries, wait) {
                Ok(n) => {
                    let n = n.min(self.entries.len());
                    for i in 0..n {
                        let _ = self.dispatch(self.entries[i]);
                    }
                    if n < self.entries.len() && self.outstanding() == 0 {
                        queue_drained = true;
                    }
                    if n == 0 && wait.is_some_and(|w| w.is_zero()) {
                        break;
                    }
                }
                Err(e) => {
                    note(e, &mut report);
                    if self.outstanding() == 0 {
                        // Only wakes or foreign packets are left in the queue: no memory of
                        // ours is at stake, so a failing kernel does not hold teardown there.
                        break;
                    }
                    let left = bound.map(|b| b.saturating_duration_since(Instant::now()));
                    match left {
                        Some(left) if left.is_zero() => break,
                        Some(left) => std::thread::sleep(left.min(Duration::from_millis(1))),
                        None => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }
        }
        self.stash.clear();
        report.drained = self.stats.packets - packets_before;
        report.leaked = self.outstanding();
        report.elapsed = start.elapsed();
        if report.leaked > 0 {
            let kind = last_error.map_or(io::ErrorKind::TimedOut, |e| e.kind());
            return Err(io::Error::new(kind, report));
        }
        Ok(report)
    }

    /// Polls and waits the kernel still holds: what teardown waits for.
    fn outstanding(&self) -> usize {
        self.stats.in_flight + self.waits.in_kernel
    }

    /// Tear down without waiting: leak the buffers of every poll still in the kernel, on purpose,
    /// and return how many (the kernel writes them whenever each poll ends, so they are never
    /// freed). For hard shutdowns; prefer [`shutdown`](Self::shutdown).
    ///
    /// Waits of waitable registrations are ended when the kernel is dropped (on the thread-pool
    /// path that blocks until each running callback has returned); a signal one of them consumed
    /// and did not deliver is not reported, as `shutdown` reports it
    /// ([`Teardown::signals_lost`](crate::Teardown::signals_lost)).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// assert_eq!(reactor.abandon(), 1); // one poll's buffers leaked on purpose
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abandon(mut self) -> usize {
        self.shut_down = true;
        self.wakers.close_all();
        self.timers.clear();
        let leaked = self.stats.in_flight;
        if leaked > 0 {
            self.pool.leak();
        }
        leaked
    }
}

impl<K: Kernel> Drop for Reactor<K> {
    fn drop(&mut self) {
        if !self.shut_down
            && let Err(e) = self.shutdown()
        {
            // Nothing else can be done from Drop; the buffers are leaked, never freed.
            eprintln!("afd-reactor: teardown incomplete: {e}");
        }
        // The one rule the pool's memory depends on, whatever happened before (a panic in the
        // middle of a teardown, a failed dequeue): never free a block the kernel may still write.
        if self.stats.in_flight > 0 {
            self.pool.leak();
        }
    }
}
