//! [`Timer`]: a future (and, for intervals, a stream) on the reactor's timers.

use crate::driver::{Driver, delay_until};
use futures_core::Stream;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A timer: a future that completes at a point in time, or a stream that yields at intervals.
///
/// The deadline is kept by the thread's reactor (a one-shot reactor timer while the timer is
/// awaited: no thread and no kernel object of its own). It completes with the instant it was
/// due; it may complete a little after it (the reactor's clock has the system timer's
/// resolution), never before.
///
/// An interval yields once per period; if the task falls behind, the ticks it missed are not
/// queued: the next one is due one period after the tick it took.
///
/// Like [`Async`](crate::Async), a timer belongs to its thread's reactor. If that reactor
/// cannot be made or has shut down, the timer never fires.
///
/// # Examples
/// ```
/// use afd_async::{Timer, block_on};
/// use futures_lite::StreamExt;
/// use std::time::{Duration, Instant};
/// # #[cfg(any(windows, target_os = "linux"))]
/// block_on(async {
///     let start = Instant::now();
///     Timer::after(Duration::from_millis(10)).await;
///     assert!(start.elapsed() >= Duration::from_millis(10));
///
///     let mut ticks = Timer::interval(Duration::from_millis(5));
///     for _ in 0..3 {
///         ticks.next().await;
///     }
///     assert!(start.elapsed() >= Duration::from_millis(25));
/// });
/// ```
pub struct Timer {
    /// When it is next due (`None`: never, or a one-shot timer that has fired).
    when: Option<Instant>,
    period: Option<Duration>,
    /// The reactor timer armed for `when`, while one is.
    armed: Option<(Rc<Driver>, usize, Instant)>,
    /// A one-shot timer that has fired: as a stream, it has ended.
    fired: bool,
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("when", &self.when)
            .field("period", &self.period)
            .finish()
    }
}

impl Timer {
    /// A timer that never fires.
    ///
    /// # Examples
    /// ```
    /// use afd_async::Timer;
    /// let _t = Timer::never();
    /// ```
    pub fn never() -> Self {
        Self {
            when: None,
            period: None,
            armed: None,
            fired: false,
        }
    }

    /// A timer due `delay` from now (never, if that is past what `Instant` can hold).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Timer, block_on};
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(Timer::after(std::time::Duration::from_millis(1)));
    /// ```
    pub fn after(delay: Duration) -> Self {
        Instant::now()
            .checked_add(delay)
            .map_or_else(Self::never, Self::at)
    }

    /// A timer due at `when`.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Timer, block_on};
    /// use std::time::{Duration, Instant};
    /// let when = Instant::now() + Duration::from_millis(1);
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// assert!(block_on(Timer::at(when)) >= when);
    /// ```
    pub fn at(when: Instant) -> Self {
        Self {
            when: Some(when),
            period: None,
            armed: None,
            fired: false,
        }
    }

    /// A stream that yields every `period`, first one period from now. A zero period is one
    /// nanosecond.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Timer, block_on};
    /// use futures_lite::StreamExt;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let mut ticks = Timer::interval(std::time::Duration::from_millis(1));
    ///     ticks.next().await;
    ///     ticks.next().await;
    /// });
    /// ```
    pub fn interval(period: Duration) -> Self {
        let period = period.max(Duration::from_nanos(1));
        Instant::now()
            .checked_add(period)
            .map_or_else(Self::never, |start| Self::interval_at(start, period))
    }

    /// A stream that yields at `start`, then every `period`. A zero period is one nanosecond.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Timer, block_on};
    /// use futures_lite::StreamExt;
    /// use std::time::{Duration, Instant};
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let mut ticks = Timer::interval_at(Instant::now(), Duration::from_millis(1));
    ///     ticks.next().await; // at once
    /// });
    /// ```
    pub fn interval_at(start: Instant, period: Duration) -> Self {
        Self {
            when: Some(start),
            period: Some(period.max(Duration::from_nanos(1))),
            armed: None,
            fired: false,
        }
    }

    /// Due `delay` from now instead (a one-shot timer again, even if it was an interval).
    ///
    /// # Examples
    /// ```
    /// use afd_async::Timer;
    /// let mut t = Timer::never();
    /// t.set_after(std::time::Duration::from_secs(1));
    /// ```
    pub fn set_after(&mut self, delay: Duration) {
        self.disarm();
        self.period = None;
        self.fired = false;
        self.when = Instant::now().checked_add(delay);
    }

    fn disarm(&mut self) {
        if let Some((driver, key, _)) = self.armed.take() {
            driver.remove_timer(key);
        }
    }

    /// The shared poll: the instant it was due, once it is.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let Some(when) = self.when else {
            return Poll::Pending;
        };
        loop {
            if Instant::now() >= when {
                self.disarm();
                self.when = self.period.and_then(|p| {
                    let next = when.checked_add(p)?;
                    let now = Instant::now();
                    // Ticks missed while the task was busy are not queued: the next one is a
                    // period after this one was taken.
                    if next > now {
                        Some(next)
                    } else {
                        now.checked_add(p)
                    }
                });
                self.fired = self.period.is_none();
                return Poll::Ready(when);
            }
            match &self.armed {
                // Armed for this deadline on the thread's reactor (not one `forget_reactor`
                // took away, which nothing drives any more).
                Some((driver, key, at)) if *at == when && driver.is_current() => {
                    if !driver.poll_timer(*key, cx.waker()) {
                        return Poll::Pending;
                    }
                    // It fired (the reactor's clock may run a little ahead of ours): re-check.
                    self.armed = None;
                }
                _ => {
                    self.disarm();
                    let Ok(driver) = Driver::current() else {
                        return Poll::Pending;
                    };
                    let Ok(key) = driver.add_timer(delay_until(when)) else {
                        return Poll::Pending;
                    };
                    self.armed = Some((driver, key, when));
                }
            }
        }
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.poll_due(cx)
    }
}

impl Stream for Timer {
    type Item = Instant;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        if self.fired {
            return Poll::Ready(None);
        }
        self.poll_due(cx).map(Some)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
    }
}
