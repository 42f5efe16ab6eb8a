//! [`Waitable<T>`]: a waitable handle (an event, a process, a semaphore...; on Linux an eventfd
//! or a pidfd) registered with the thread's reactor, so that its signals can be awaited; and
//! [`child_exit`].

use crate::driver::Driver;
use crate::source::Waiters;
use afd_reactor::Event;
use afd_reactor::Waitable as Handle;
use afd_reactor::kernel::RawWaitable;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A waitable registration's state in the async layer.
pub(crate) struct WaitSource {
    /// Its key in the driver's waitables (its token).
    pub(crate) key: Cell<usize>,
    /// The handle's value, read once from the user's handle.
    pub(crate) raw: RawWaitable,
    pub(crate) state: RefCell<WaitState>,
}

pub(crate) struct WaitState {
    /// A signal was delivered and no `wait()` has taken it yet.
    signaled: bool,
    /// The registration is armed (it was registered, or re-armed, and its event has not come).
    armed: bool,
    /// Error events seen so far (the reactor could not re-arm the wait).
    errors: u64,
    /// Tasks waiting for the next signal.
    pub(crate) waiters: Waiters,
}

impl WaitState {
    fn add_waiter(&mut self, waker: &Waker) -> (u64, u64) {
        (self.errors, self.waiters.add(waker))
    }
}

impl WaitSource {
    pub(crate) fn new(raw: RawWaitable) -> Self {
        Self {
            key: Cell::new(usize::MAX),
            raw,
            state: RefCell::new(WaitState {
                signaled: false,
                armed: true, // registered armed
                errors: 0,
                waiters: Waiters::default(),
            }),
        }
    }

    /// An event for this registration: a signal (kept until a `wait()` takes it), or an error
    /// (its wait could not be re-armed). Either way the registration is disarmed now, and every
    /// waiting task is woken: one takes the signal, the others re-arm and wait again.
    pub(crate) fn on_event(&self, event: &Event, to_wake: &mut Vec<Waker>) {
        let mut state = self.state.borrow_mut();
        if event.is_signaled() {
            state.signaled = true;
        } else if event.is_error() {
            state.errors += 1;
        } else {
            return;
        }
        state.armed = false;
        state.waiters.drain_into(to_wake);
    }
}

/// A waitable handle registered with the thread's reactor, so that its signals can be awaited:
/// on Windows any `AsHandle` that can be waited on (an event, a process, a semaphore, a waitable
/// timer), on Linux any `AsFd` epoll can watch for reading (an eventfd, a pidfd, a timerfd), and
/// on the simulated kernel an `afd_reactor::SimWaitable` (feature `test-rig`).
///
/// [`wait`](Self::wait) resolves once per signal. The registration is in the reactor's
/// [`Oneshot`](afd_reactor::Mode::Oneshot) mode: armed when it is made, and re-armed by a
/// `wait()` that finds it disarmed after a signal (one
/// [`reregister_waitable`](afd_reactor::Reactor::reregister_waitable): no kernel call then, one
/// at the reactor's next turn). A signal delivered while no task waits is remembered, and the
/// next `wait()` takes it at once, making no call.
///
/// # What a wait consumes
/// On Windows a wait consumes the signal as `WaitForSingleObject` does: an auto-reset event is
/// reset and a semaphore's count taken by the wait that reports it. A manual-reset event and an
/// ended process stay signaled: every `wait()` returns at once (reset the event first if you
/// want to wait for the next `SetEvent`). On Linux a wait consumes nothing: read the eventfd
/// after `wait()` returns, or the next `wait()` returns at once.
///
/// # Dropping
/// Dropping a [`wait`](Self::wait) future loses no signal: a signal it would have returned stays
/// for the next `wait()`. Dropping the `Waitable` deregisters the handle, then drops it. A signal
/// that the registration consumed (Windows) but that no `wait()` returned is lost then; to hand
/// it on (`SetEvent` again), end the registration with
/// [`into_inner_with_signal`](Self::into_inner_with_signal), which says whether there was one.
///
/// `Waitable<T>` belongs to the thread that made it (it is not `Send`), like
/// [`Async`](crate::Async).
///
/// # Examples
/// On the simulated kernel (an auto-reset event, set by another task); on Windows, a
/// `Waitable::new(event)` of an `OwnedHandle` from `CreateEventW` works the same way:
/// ```
/// use afd_async::{Waitable, block_on, with_kernel, with_reactor};
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Reactor, SimWaitable};
/// use futures_lite::future;
///
/// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
/// let raw = with_kernel(|k: &SimKernel| k.open_event(false, false)).unwrap();
/// let event = Waitable::new(SimWaitable(raw))?;
/// block_on(future::zip(event.wait(), async {
///     future::yield_now().await; // the first task waits by now
///     with_kernel(|k: &SimKernel| k.signal(raw)); // SetEvent
/// }))
/// .0?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Waitable<T: Handle> {
    io: Option<T>,
    source: Rc<WaitSource>,
    driver: Rc<Driver>,
}

impl<T: Handle> Unpin for Waitable<T> {}

impl<T: Handle + fmt::Debug> fmt::Debug for Waitable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waitable").field("io", &self.io).finish()
    }
}

impl<T: Handle> Waitable<T> {
    /// Register `handle` with the thread's reactor, armed at once (in the reactor's
    /// [`Oneshot`](afd_reactor::Mode::Oneshot) mode). The reactor waits on a duplicate of its
    /// own; the handle's value is read once, here.
    ///
    /// # Errors
    /// The reactor's error: `AlreadyExists` if the handle is registered already, `NotConnected`
    /// if the thread's reactor has shut down, or the kernel's refusal to wait on the object
    /// (a mutex on Windows; a regular file on Linux).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Waitable, with_kernel, with_reactor};
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable};
    /// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
    /// let process = with_kernel(|k: &SimKernel| k.open_process()).unwrap();
    /// let process = Waitable::new(SimWaitable(process))?;
    /// assert_eq!(afd_async::held().waitables, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(handle: T) -> io::Result<Self> {
        let driver = Driver::current()?;
        // The value, read once: `handle` stays ours (and so open) until it is deregistered.
        let source = driver.add_waitable(handle.raw_waitable())?;
        Ok(Self {
            io: Some(handle),
            source,
            driver,
        })
    }

    /// The handle.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Waitable, with_kernel, with_reactor};
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable};
    /// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
    /// let raw = with_kernel(|k: &SimKernel| k.open_event(true, false)).unwrap();
    /// let event = Waitable::new(SimWaitable(raw))?;
    /// assert_eq!(event.get_ref().0, raw);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn get_ref(&self) -> &T {
        self.io
            .as_ref()
            .expect("io is taken only by into_inner and drop")
    }

    /// Deregister the handle and give it back. A signal the registration consumed and no
    /// `wait()` returned is lost (see [`into_inner_with_signal`](Self::into_inner_with_signal)).
    ///
    /// # Errors
    /// The reactor's error if it could not deregister the handle (it has shut down): the handle
    /// is lost then (dropped, and so closed if it was owned).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Waitable, with_kernel, with_reactor};
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable};
    /// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
    /// let raw = with_kernel(|k: &SimKernel| k.open_semaphore(0)).unwrap();
    /// let semaphore = Waitable::new(SimWaitable(raw))?;
    /// let handle: SimWaitable = semaphore.into_inner()?;
    /// assert_eq!(afd_async::held().waitables, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_inner(self) -> io::Result<T> {
        self.into_inner_with_signal().map(|(handle, _)| handle)
    }

    /// Deregister the handle and give it back, with whether a signal was left unobserved: one
    /// was delivered, or consumed by the registration's wait on its way (the reactor's
    /// [`deregister_waitable`](afd_reactor::Reactor::deregister_waitable) says so), and no
    /// `wait()` returned it. On Windows the object no longer holds such a signal if a wait
    /// consumes it (an auto-reset event, a semaphore): signal it again to pass it on. On Linux
    /// nothing was consumed (the eventfd still holds its count); `true` only says a signal was
    /// reported that no `wait()` took. Where the reactor runs on thread-pool waits (Wine), a
    /// signal that comes just as the handle is deregistered can be lost unreported (the reactor's
    /// `deregister_waitable` explains).
    ///
    /// # Errors
    /// As [`into_inner`](Self::into_inner).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Waitable, with_kernel, with_reactor};
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable};
    /// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
    /// let raw = with_kernel(|k: &SimKernel| k.open_event(false, false)).unwrap();
    /// let event = Waitable::new(SimWaitable(raw))?;
    /// with_kernel(|k: &SimKernel| k.signal(raw)); // consumed by the armed wait at once
    /// let (handle, unobserved) = event.into_inner_with_signal()?;
    /// assert!(unobserved);
    /// with_kernel(|k: &SimKernel| {
    ///     assert_eq!(k.signals(raw), 0);
    ///     k.signal(handle.0); // hand it back
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_inner_with_signal(mut self) -> io::Result<(T, bool)> {
        let io = self
            .io
            .take()
            .expect("io is taken only by into_inner and drop");
        let lost = self.driver.remove_waitable(&self.source)?;
        let kept = self.source.state.borrow().signaled;
        Ok((io, lost || kept))
    }

    /// Wait for the next signal: the one remembered since the last `wait()` returned, at once,
    /// or else the next one (the registration is re-armed first if a signal disarmed it). Each
    /// signal is returned by one `wait()`: if several tasks wait on one `Waitable`, a signal
    /// wakes them all, one returns and the others wait again.
    ///
    /// Cancellation-safe: dropping the future loses no signal.
    ///
    /// # Errors
    /// `NotConnected` if the thread's reactor has shut down or was forgotten; `Other` if the
    /// reactor could not re-arm the wait (the kernel refused it): the next `wait()` tries again.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Waitable, block_on, with_kernel, with_reactor};
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable};
    /// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
    /// let raw = with_kernel(|k: &SimKernel| k.open_process()).unwrap();
    /// let process = Waitable::new(SimWaitable(raw))?;
    /// with_kernel(|k: &SimKernel| k.exit_process(raw));
    /// block_on(async {
    ///     process.wait().await?;
    ///     process.wait().await // an ended process stays signaled
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&self) -> Signaled<'_, T> {
        Signaled {
            waitable: self,
            waiting: None,
        }
    }

    /// Re-arm the registration (it is disarmed): no kernel call now, one at the reactor's next
    /// turn.
    fn arm(&self) -> io::Result<()> {
        self.check_driver()?;
        self.driver.rearm_waitable(&self.source)?;
        self.source.state.borrow_mut().armed = true;
        Ok(())
    }

    /// This `Waitable` must belong to the thread's reactor: one that `forget_reactor` took off
    /// the thread is driven by no `block_on`, and waiting on it would hang.
    fn check_driver(&self) -> io::Result<()> {
        if self.driver.is_current() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "afd-async: this Waitable belongs to a reactor that is no longer its thread's \
             (forget_reactor or shutdown was called): no block_on drives it",
        ))
    }
}

impl<T: Handle> Drop for Waitable<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // Deregister before the handle closes. An error (the reactor has shut down) leaves
            // nothing to undo; a consumed signal is lost (documented).
            let _ = self.driver.remove_waitable(&self.source);
            self.io = None;
        }
    }
}

fn wait_failed() -> io::Error {
    io::Error::other(
        "afd-async: the reactor could not re-arm the wait on this handle (the kernel refused it); \
         the next wait tries again",
    )
}

/// The future of [`Waitable::wait`]: the next signal.
///
/// Dropping it before it completes loses nothing: a signal it would have returned stays for the
/// next `wait()`, and the task is forgotten.
///
/// # Examples
/// ```
/// use afd_async::{Signaled, Waitable, block_on, with_kernel, with_reactor};
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Reactor, SimWaitable};
/// use futures_lite::future;
/// with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
/// let raw = with_kernel(|k: &SimKernel| k.open_event(false, false)).unwrap();
/// let event = Waitable::new(SimWaitable(raw))?;
/// block_on(async {
///     let mut wait: Signaled<'_, SimWaitable> = event.wait();
///     assert!(future::poll_once(&mut wait).await.is_none()); // not set: it waits
///     drop(wait); // harmless
///     assert_eq!(afd_async::held().waiters, 0);
///     with_kernel(|k: &SimKernel| k.signal(raw));
///     event.wait().await
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Signaled<'a, T: Handle> {
    waitable: &'a Waitable<T>,
    /// The error count when it started waiting, and its waiter id.
    waiting: Option<(u64, u64)>,
}

impl<T: Handle> fmt::Debug for Signaled<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signaled")
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl<T: Handle> Signaled<'_, T> {
    /// Stop waiting: forget the waiter (its waker dropped with no borrow held).
    fn leave(&mut self) {
        if let Some((_, id)) = self.waiting.take() {
            let old = self.waitable.source.state.borrow_mut().waiters.remove(id);
            drop(old);
        }
    }
}

impl<T: Handle> Future for Signaled<'_, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let w = this.waitable;
        let mut state = w.source.state.borrow_mut();
        if state.signaled {
            state.signaled = false;
            drop(state);
            this.leave();
            return Poll::Ready(Ok(()));
        }
        let old = match this.waiting {
            // The reactor could not re-arm the wait since this future started waiting.
            Some((start, _)) if state.errors != start => {
                drop(state);
                this.leave();
                return Poll::Ready(Err(wait_failed()));
            }
            Some((_, id)) => state.waiters.update(id, cx.waker()),
            None => {
                this.waiting = Some(state.add_waiter(cx.waker()));
                None
            }
        };
        let arm = !state.armed;
        drop(state);
        drop(old);
        // Every wait checks it is driven (`arm` does, and so does a wait that does not arm).
        let driven = if arm { w.arm() } else { w.check_driver() };
        if let Err(e) = driven {
            this.leave();
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}

impl<T: Handle> Drop for Signaled<'_, T> {
    fn drop(&mut self) {
        if let Some((_, id)) = self.waiting {
            // If the state is borrowed (this drop runs inside a waker's drop), the waiter stays
            // until the next event, which drops it.
            let old = match self.waitable.source.state.try_borrow_mut() {
                Ok(mut state) => state.waiters.remove(id),
                Err(_) => None,
            };
            drop(old); // with no borrow held
        }
    }
}

/// Wait for `child` to exit, and return its exit status (reaping it, as `Child::wait` does).
///
/// Windows: waits on the child's process handle. Linux: waits on a pidfd (`pidfd_open`, Linux
/// 5.3 and later), made here and closed before it returns. If the child has exited already, it
/// returns at once. Cancellation-safe: dropped, it leaves the child as it was (call it again).
///
/// # Errors
/// `try_wait`'s error; the error of making the pidfd (`ENOSYS` before Linux 5.3, `EMFILE`...) or
/// of registering the handle with the reactor; `wait`'s error (see [`Waitable::wait`]).
///
/// # Examples
/// ```
/// # #[cfg(any(windows, target_os = "linux"))] fn main() -> std::io::Result<()> {
/// use std::process::Command;
/// let mut child = if cfg!(windows) {
///     Command::new("cmd").args(["/c", "exit 3"]).spawn()?
/// } else {
///     Command::new("sh").args(["-c", "exit 3"]).spawn()?
/// };
/// let status = afd_async::block_on(afd_async::child_exit(&mut child))?;
/// assert_eq!(status.code(), Some(3));
/// # Ok(()) }
/// # #[cfg(not(any(windows, target_os = "linux")))] fn main() {}
/// ```
#[cfg(any(windows, target_os = "linux"))]
pub async fn child_exit(child: &mut std::process::Child) -> io::Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        #[cfg(windows)]
        let handle = &*child;
        #[cfg(target_os = "linux")]
        let handle = crate::pidfd::open(child.id())?;
        // A process stays signaled once it has exited: the first signal is the exit.
        Waitable::new(handle)?.wait().await?;
    }
}
