//! `async`/`.await` on [afd-reactor](afd_reactor): the reactor's readiness events wake tasks, as
//! async-io does on `polling`.
//!
//! - [`Async<T>`] wraps a socket (on Linux, any file epoll can watch): `readable().await`,
//!   `writable().await`, [`read_with`](Async::read_with) / [`write_with`](Async::write_with);
//!   futures-io `AsyncRead`/`AsyncWrite` for `Async<TcpStream>` and `&Async<TcpStream>` (so one
//!   task can read while another writes); [`accept`](Async::accept) and
//!   [`incoming`](Async::incoming) for listeners; [`connect`](Async::connect); UDP
//!   `send_to`/`recv_from`/`send`/`recv`.
//! - [`Timer`]: after, at, interval (a `Stream`), on the reactor's timers.
//! - [`Waitable<T>`] wraps a waitable handle (Windows: an event, a process, a semaphore, any
//!   `AsHandle` that can be waited on; Linux: an eventfd, a pidfd, any `AsFd` epoll can watch):
//!   [`wait`](Waitable::wait)`.await` returns once per signal, and a signal that comes while no
//!   task waits is kept for the next wait. [`child_exit`] awaits a `std::process::Child`'s exit.
//! - [`block_on`] drives the reactor on the current thread. Run `async_executor::LocalExecutor`
//!   on it to have many tasks.
//!
//! # A complete program
//! An echo server and a client, on one thread:
//! ```
//! use afd_async::{Async, block_on};
//! use async_executor::LocalExecutor;
//! use futures_lite::{AsyncReadExt, AsyncWriteExt};
//! use std::net::{TcpListener, TcpStream};
//!
//! async fn echo(mut stream: Async<TcpStream>) -> std::io::Result<()> {
//!     let mut buf = vec![0; 16 * 1024];
//!     loop {
//!         let n = stream.read(&mut buf).await?;
//!         if n == 0 {
//!             return Ok(()); // the peer closed
//!         }
//!         stream.write_all(&buf[..n]).await?;
//!     }
//! }
//!
//! # #[cfg(any(windows, target_os = "linux"))]
//! # fn main() -> std::io::Result<()> {
//! let ex = LocalExecutor::new();
//! block_on(ex.run(async {
//!     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
//!     let addr = listener.get_ref().local_addr()?;
//!     let client = ex.spawn(async move {
//!         let mut client = Async::<TcpStream>::connect(addr).await?;
//!         client.write_all(b"hello").await?;
//!         let mut buf = [0; 5];
//!         client.read_exact(&mut buf).await?;
//!         assert_eq!(&buf, b"hello");
//!         std::io::Result::Ok(())
//!     });
//!     // Serve: a task per connection (here, until the client is done).
//!     let (stream, _peer) = listener.accept().await?;
//!     ex.spawn(echo(stream)).detach();
//!     client.await
//! }))
//! # }
//! # #[cfg(not(any(windows, target_os = "linux")))] fn main() {}
//! ```
//!
//! # What it costs
//! Every operation tries the I/O first and waits only after `WouldBlock`, so a ready socket
//! costs the call alone. A wait re-arms the one direction that blocked: the registration is in
//! the reactor's [`Edge`](afd_reactor::Mode::Edge) mode, and a wait is a
//! [`rearm`](afd_reactor::Reactor::rearm), one poll submission made by the reactor's next turn
//! (on Windows, one `IOCTL_AFD_POLL`; on Linux, one `epoll_ctl`). A direction is armed only
//! while a task waits for it (registrations start [disarmed](afd_reactor::Reactor::disarm)), so
//! a writer that blocks never has to cancel a poll for reading that no task waits for; only a
//! reader and a writer waiting at once on one socket share its one poll (a cancel and a
//! resubmission when the second starts waiting). On Linux, a read that returns less than its
//! buffer holds means the socket was drained: the next read waits for the event instead of
//! making a call that would return `WouldBlock` (as tokio does). On Windows the next read is
//! tried: a fast peer's next message is often there by then, and a wait that puts the thread to
//! sleep costs more than a read that fails. A registration costs one poll submission (the
//! reactor checks the socket with it).
//!
//! A task woken from another thread costs one kernel call (the reactor's
//! [`Waker`](afd_reactor::Waker)), and only if the loop is waiting in the kernel; a task woken
//! by an event on the loop's own thread costs nothing.
//!
//! # Guarantees
//! - Dropping a future in the middle of a wait loses no wakeup: every task waiting in a
//!   direction is woken by its next event, so two tasks waiting to read one socket both wake.
//! - Dropping a future leaks nothing; dropping an [`Async<T>`] deregisters it before the I/O
//!   object closes. No event reaches a registration after it is gone, even if the socket's
//!   handle value is reused at once (the reactor's guarantee).
//! - A failed connect is an error, never a hang.
//! - A [`Waitable<T>`]'s signal is never lost to a dropped future: a signal no task waits for
//!   is kept for the next [`wait`](Waitable::wait), and each signal is returned by one wait.
//!
//! # Threads
//! Each thread has its own reactor, made on first use (an `NtReactor` on Windows, an
//! `EpollReactor` on Linux); [`with_reactor`] installs another one. [`Async<T>`],
//! [`Waitable<T>`] and [`Timer`] belong to the thread that made them (they are not `Send`), and
//! the thread's `block_on` drives them. To use several cores, run one `block_on` per thread.
//! The reactor is torn down (its polls drained) when the thread ends and the last `Async`,
//! `Waitable` and `Timer` made on it are gone.
//!
//! # Compared with smol and tokio
//! smol's async-io has one reactor for the process, driven by whichever thread blocks (or by
//! its own thread), and on Windows re-arms through `polling`, which cancels and resubmits a
//! socket's poll whenever its interest grows. tokio's current-thread runtime owns its tasks and
//! its reactor (mio). Here, as with tokio's current-thread runtime, one thread owns the reactor
//! and its sockets; the executor is yours. The benchmark (`bash scripts/bench.sh`, see the
//! repository's README) runs the same HTTP server on all three.
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod block_on;
mod driver;
mod io;
mod net;
#[cfg(target_os = "linux")]
mod pidfd;
mod source;
mod timer;
mod wait;

pub use block_on::{block_on, try_block_on};
pub use io::{Async, Readiness};
pub use net::Incoming;
pub use timer::Timer;
#[cfg(any(windows, target_os = "linux"))]
pub use wait::child_exit;
pub use wait::{Signaled, Waitable};

use afd_reactor::kernel::Kernel;
use afd_reactor::{Reactor, Stats};
use driver::Driver;

/// Make `reactor` this thread's reactor, instead of the platform's default one (made with
/// `Reactor::new()`). Call it before the thread's first [`Async`], [`Timer`] or [`block_on`].
///
/// Use it to choose a [`Config`](afd_reactor::Config) (batch size, teardown bound), or, with
/// the `test-rig` feature, to run the async layer on the simulated kernel.
///
/// # Errors
/// `AlreadyExists` if the thread already has a reactor; the reactor's error if it cannot make
/// its waker (it has shut down).
///
/// # Examples
/// ```
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use afd_reactor::{Config, NtReactor};
/// afd_async::with_reactor(NtReactor::from_config(Config::default().batch(256))?)?;
/// afd_async::block_on(async { /* ... */ });
/// # Ok(()) }
/// # #[cfg(target_os = "linux")] fn main() -> std::io::Result<()> {
/// # use afd_reactor::{Config, EpollReactor};
/// # afd_async::with_reactor(EpollReactor::from_config(Config::default().batch(256))?)?;
/// # afd_async::block_on(async { /* ... */ });
/// # Ok(()) }
/// # #[cfg(not(any(windows, target_os = "linux")))] fn main() {}
/// ```
pub fn with_reactor<K: Kernel + 'static>(reactor: Reactor<K>) -> std::io::Result<()> {
    Driver::install(Box::new(reactor))
}

/// This thread's reactor's statistics (registrations, polls in flight, kernel calls...), made
/// on first use like the reactor itself.
///
/// # Errors
/// The error of making the thread's reactor.
///
/// # Examples
/// ```
/// use afd_async::Async;
/// # #[cfg(any(windows, target_os = "linux"))] {
/// let socket = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0))?;
/// assert_eq!(afd_async::stats()?.registered, 1);
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stats() -> std::io::Result<Stats> {
    Ok(Driver::current()?.stats())
}

/// What the async layer holds on this thread: registrations, timers, and tasks waiting for an
/// event or a signal. What a test checks to see that dropped futures and `Async`s left nothing behind.
///
/// # Examples
/// ```
/// use afd_async::{Async, Held};
/// # #[cfg(any(windows, target_os = "linux"))] {
/// let socket = Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0))?;
/// assert_eq!(afd_async::held(), Held { sources: 1, waitables: 0, timers: 0, waiters: 0 });
/// drop(socket);
/// assert_eq!(afd_async::held(), Held::default());
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Registered I/O objects (live [`Async`]s).
    pub sources: usize,
    /// Registered waitable handles (live [`Waitable`]s).
    pub waitables: usize,
    /// Armed timers ([`Timer`]s being awaited).
    pub timers: usize,
    /// Tasks waiting for an event in some direction of some registration, or for a signal of
    /// some [`Waitable`].
    pub waiters: usize,
}

/// What the async layer holds on this thread (all zero if it has no reactor).
///
/// # Examples
/// ```
/// use afd_async::{Held, Timer, block_on};
/// # #[cfg(any(windows, target_os = "linux"))] {
/// block_on(Timer::after(std::time::Duration::from_millis(1)));
/// assert_eq!(afd_async::held(), Held::default());
/// # }
/// ```
pub fn held() -> Held {
    Driver::existing().map_or_else(Held::default, |d| d.held())
}

/// Forget this thread's reactor: the next [`Async`], [`Timer`] or [`block_on`] makes a new one
/// (or uses the one [`with_reactor`] installs). The old reactor is torn down, its polls
/// drained, once the last `Async` and `Timer` made on it are dropped. Returns true if the
/// thread had one.
///
/// `Async`s made on the old reactor stop working: their waits fail with `NotConnected` (no
/// `block_on` drives that reactor any more). Timers move to the new one.
///
/// # Errors
/// `ResourceBusy` if a `block_on` is running on this thread (its tasks would be left waiting on
/// a reactor nobody drives).
///
/// # Examples
/// ```
/// # #[cfg(any(windows, target_os = "linux"))] {
/// afd_async::block_on(async {});
/// assert!(afd_async::forget_reactor()?);
/// assert!(!afd_async::forget_reactor()?);
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn forget_reactor() -> std::io::Result<bool> {
    Ok(Driver::uninstall()?.is_some())
}

/// Shut this thread's reactor down now and forget it: every poll is cancelled and drained, and
/// the report says how that went (see [`Reactor::shutdown`]). The `Async`s and `Timer`s made on
/// it stop working (their operations fail with `NotConnected`, or never fire); the next ones
/// made on this thread get a new reactor. Without this call the reactor is torn down when the
/// thread ends, silently.
///
/// # Errors
/// `ResourceBusy` if a `block_on` is running on this thread; the reactor's teardown error (polls
/// the kernel did not give back in time; see [`Reactor::shutdown`]). A thread without a reactor
/// has nothing to shut down: `Ok`, with an empty report.
///
/// # Examples
/// ```
/// # #[cfg(any(windows, target_os = "linux"))] {
/// let socket = afd_async::Async::<std::net::UdpSocket>::bind(([127, 0, 0, 1], 0))?;
/// let report = afd_async::shutdown()?;
/// assert_eq!(report.leaked, 0);
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn shutdown() -> std::io::Result<afd_reactor::Teardown> {
    match Driver::uninstall()? {
        Some(driver) => driver.shutdown(),
        None => Ok(afd_reactor::Teardown::default()),
    }
}

/// Run `f` on this thread's reactor's kernel, if the thread has a reactor whose kernel is a `K`
/// (feature `test-rig`): how a test drives the simulated kernel under the async layer.
///
/// # Examples
/// ```
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Reactor, SimSocket};
/// use afd_async::Async;
/// afd_async::with_reactor(Reactor::with_kernel(SimKernel::new(1)))?;
/// let raw = afd_async::with_kernel(|k: &SimKernel| k.open_socket()).expect("a sim reactor");
/// let socket = Async::new_nonblocking(SimSocket(raw))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(feature = "test-rig")]
pub fn with_kernel<K: 'static, R>(f: impl FnOnce(&K) -> R) -> Option<R> {
    Driver::existing()?.with_kernel(f)
}
