//! [`Async<T>`]: an I/O object registered with the thread's reactor.

use crate::driver::Driver;
use crate::source::{Dir, Source};
use afd_reactor::Source as Registrable;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// An I/O object (a socket; on Linux any file epoll can watch) registered with the thread's
/// reactor, so that its operations can be awaited.
///
/// Every operation tries the I/O first and waits only after `WouldBlock`, so a socket that is
/// ready costs no more than the call itself. Waiting re-arms the registration for the one
/// direction that blocked ([`Mode::Edge`](afd_reactor::Mode::Edge), with
/// [`rearm`](afd_reactor::Reactor::rearm)): one poll submission per wait, made by the next
/// turn of the reactor.
///
/// `Async<T>` belongs to the thread that made it (it is not `Send`): each thread has its own
/// reactor, driven by [`block_on`](crate::block_on) on that thread. To use several cores, run
/// one `block_on` per thread, each with its own sockets (for instance several listeners with
/// `SO_REUSEPORT` on Linux, or one listener whose accepted streams are handed out as std
/// sockets and wrapped on their thread).
///
/// Dropping an `Async<T>` deregisters it, then closes the I/O object.
///
/// # Examples
/// ```
/// use afd_async::{Async, block_on};
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use std::net::{TcpListener, TcpStream};
///
/// # #[cfg(any(windows, target_os = "linux"))]
/// block_on(async {
///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
///     let addr = listener.get_ref().local_addr()?;
///     let mut client = Async::<TcpStream>::connect(addr).await?;
///     let (mut server, _) = listener.accept().await?;
///     client.write_all(b"hello").await?;
///     let mut buf = [0; 5];
///     server.read_exact(&mut buf).await?;
///     assert_eq!(&buf, b"hello");
///     std::io::Result::Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Async<T: Registrable> {
    io: Option<T>,
    source: Rc<Source>,
    driver: Rc<Driver>,
}

impl<T: Registrable> Unpin for Async<T> {}

impl<T: Registrable + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

#[cfg(unix)]
impl<T: Registrable + std::os::fd::AsFd> Async<T> {
    /// Put `io` in non-blocking mode and register it with the thread's reactor.
    ///
    /// # Errors
    /// The error of making it non-blocking or of registering it (for instance `AlreadyExists`
    /// if it is registered already, or a file epoll cannot watch).
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// let socket = Async::new(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(io: T) -> io::Result<Self> {
        socket2::SockRef::from(&io).set_nonblocking(true)?;
        Self::new_nonblocking(io)
    }
}

#[cfg(windows)]
impl<T: Registrable + std::os::windows::io::AsSocket> Async<T> {
    /// Put `io` in non-blocking mode and register it with the thread's reactor.
    ///
    /// # Errors
    /// The error of making it non-blocking or of registering it (for instance `AlreadyExists`
    /// if it is registered already).
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// let socket = Async::new(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(io: T) -> io::Result<Self> {
        socket2::SockRef::from(&io).set_nonblocking(true)?;
        Self::new_nonblocking(io)
    }
}

impl<T: Registrable> Async<T> {
    /// Register `io`, already in non-blocking mode, with the thread's reactor (readable and
    /// writable, both disarmed: a direction is armed only while a task waits for it).
    ///
    /// # Errors
    /// The reactor's error: `AlreadyExists` if `io` is registered already, `NotConnected` if the
    /// thread's reactor has shut down, or the kernel's refusal.
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// socket.set_nonblocking(true)?;
    /// let socket = Async::new_nonblocking(socket)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new_nonblocking(io: T) -> io::Result<Self> {
        let driver = Driver::current()?;
        let source = driver.add_source(&io)?;
        Ok(Self {
            io: Some(io),
            source,
            driver,
        })
    }

    /// The I/O object.
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// let socket = Async::new(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// println!("bound to {}", socket.get_ref().local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn get_ref(&self) -> &T {
        self.io
            .as_ref()
            .expect("io is taken only by into_inner and drop")
    }

    /// Deregister the I/O object and give it back (still in non-blocking mode).
    ///
    /// # Errors
    /// The reactor's error if it could not deregister it (the object is lost then: it is
    /// dropped, and so closed).
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// let socket = Async::new(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// let socket: std::net::UdpSocket = socket.into_inner()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_inner(mut self) -> io::Result<T> {
        let io = self
            .io
            .take()
            .expect("io is taken only by into_inner and drop");
        self.driver.remove_source(&self.source, &io)?;
        Ok(io)
    }

    /// Wait until the I/O object is readable: the next readiness event after this call (data, a
    /// connection to accept, the peer's close, a reset). Readiness can be spurious: the I/O may
    /// still return `WouldBlock`.
    ///
    /// # Errors
    /// `NotConnected` if the thread's reactor has shut down; `Other` if the reactor could not
    /// poll the socket (the kernel refused the poll, or someone's `CancelIoEx` cancelled it).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     let b = UdpSocket::bind("127.0.0.1:0")?;
    ///     b.send_to(b"ping", a.get_ref().local_addr()?)?;
    ///     a.readable().await?;
    ///     let mut buf = [0; 4];
    ///     assert_eq!(a.get_ref().recv(&mut buf)?, 4);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readable(&self) -> Readiness<'_, T> {
        Readiness::new(self, Dir::Read)
    }

    /// Wait until the I/O object is writable: the next readiness event after this call (room to
    /// write, a connect that finished or failed, a reset).
    ///
    /// # Errors
    /// As [`readable`](Self::readable).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     a.writable().await?;
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn writable(&self) -> Readiness<'_, T> {
        Readiness::new(self, Dir::Write)
    }

    /// Run `op` until it does not return `WouldBlock`, waiting for readability in between.
    ///
    /// # Errors
    /// `op`'s error, or [`readable`](Self::readable)'s.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     UdpSocket::bind("127.0.0.1:0")?.send_to(b"ping", a.get_ref().local_addr()?)?;
    ///     let mut buf = [0; 16];
    ///     let (n, _from) = a.read_with(|s| s.recv_from(&mut buf)).await?;
    ///     assert_eq!(&buf[..n], b"ping");
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// Run `op` until it does not return `WouldBlock`, waiting for writability in between.
    ///
    /// # Errors
    /// `op`'s error, or [`writable`](Self::writable)'s.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     let b = UdpSocket::bind("127.0.0.1:0")?;
    ///     let to = b.local_addr()?;
    ///     let n = a.write_with(|s| s.send_to(b"ping", to)).await?;
    ///     assert_eq!(n, 4);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// Ask the reactor to report `dir` again: a `rearm` (no kernel call now; one poll submission
    /// at the reactor's next turn, or none if that direction is armed already).
    fn arm(&self, dir: Dir) -> io::Result<()> {
        self.check_driver()?;
        self.driver.backend().rearm(self.get_ref(), dir.interest())
    }

    /// This `Async` must belong to the thread's reactor: one that `forget_reactor` took off the
    /// thread is driven by no `block_on`, and waiting on it would hang.
    fn check_driver(&self) -> io::Result<()> {
        if self.driver.is_current() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "afd-async: this Async belongs to a reactor that is no longer its thread's \
             (forget_reactor or shutdown was called): no block_on drives it",
        ))
    }

    /// Poll-style readiness: `Ready(Ok)` if an event came in `dir` since it was last parked
    /// (so the I/O is worth trying); else the direction is armed (once per tick) and the task
    /// kept, to be woken by the next event.
    pub(crate) fn poll_ready(&self, dir: Dir, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.source.state.borrow_mut();
        let d = &mut state.dirs[dir as usize];
        match d.parked_at {
            Some(at) if at == d.tick => {
                let arm = d.armed_at != Some(at);
                d.add_poll_waiter(cx);
                drop(state);
                // Every wait checks it is driven (`arm` does, and so does a wait that does not).
                if arm {
                    self.arm(dir)?;
                    self.source.state.borrow_mut().dirs[dir as usize].armed_at = Some(at);
                } else {
                    self.check_driver()?;
                }
                Poll::Pending
            }
            Some(_) => {
                d.parked_at = None;
                if d.failed_tick == Some(d.tick) {
                    return Poll::Ready(Err(arm_failed()));
                }
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Ok(())),
        }
    }

    /// Poll-style: the I/O in `dir` returned `WouldBlock` (or a short read): park, so that the
    /// next `poll_ready` waits for an event instead of trying the I/O again. Nothing is armed
    /// here: the direction is armed when a task is about to wait for it (a poll submitted then
    /// reports what holds by then, so nothing is missed), and a direction no task waits for
    /// holds no poll that a wait in the other direction would have to cancel.
    pub(crate) fn park(&self, dir: Dir) {
        let mut state = self.source.state.borrow_mut();
        let d = &mut state.dirs[dir as usize];
        d.parked_at = Some(d.tick);
    }

    /// Poll-style I/O in `dir`: try `op`, and wait after `WouldBlock`.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match self.poll_ready(dir, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match op(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.park(dir),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl<T: Registrable> Drop for Async<T> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            // Deregister before `io` closes. An error (the reactor has shut down) leaves nothing
            // to undo.
            let _ = self.driver.remove_source(&self.source, &io);
        }
    }
}

pub(crate) fn arm_failed() -> io::Error {
    io::Error::other(
        "afd-async: the reactor could not poll this socket (the kernel refused the poll, or a \
         CancelIoEx cancelled it)",
    )
}

/// The future of [`Async::readable`] and [`Async::writable`]: the next readiness event in one
/// direction after it is first polled.
///
/// Dropping it before it completes loses nothing: other tasks waiting in the same direction are
/// woken by the event all the same, and the task is forgotten.
///
/// # Examples
/// ```
/// use afd_async::{Async, Readiness, block_on};
/// use futures_lite::future;
/// use std::net::UdpSocket;
/// # #[cfg(any(windows, target_os = "linux"))]
/// block_on(async {
///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
///     // Nothing to read: the future waits; dropping it is harmless.
///     let mut wait: Readiness<'_, UdpSocket> = a.readable();
///     assert!(future::poll_once(&mut wait).await.is_none());
///     drop(wait);
///     assert_eq!(afd_async::held().waiters, 0);
///     std::io::Result::Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Readiness<'a, T: Registrable> {
    io: &'a Async<T>,
    dir: Dir,
    /// The tick when it started waiting, and its waiter id.
    waiting: Option<(u64, u64)>,
}

impl<T: Registrable> fmt::Debug for Readiness<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("dir", &self.dir)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl<'a, T: Registrable> Readiness<'a, T> {
    fn new(io: &'a Async<T>, dir: Dir) -> Self {
        Self {
            io,
            dir,
            waiting: None,
        }
    }
}

impl<T: Registrable> Future for Readiness<'_, T> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let source = &this.io.source;
        match this.waiting {
            None => {
                this.io.arm(this.dir)?;
                let mut state = source.state.borrow_mut();
                this.waiting = Some(state.dirs[this.dir as usize].add_waiter(cx.waker()));
                Poll::Pending
            }
            Some((start, id)) => {
                let mut state = source.state.borrow_mut();
                let d = &mut state.dirs[this.dir as usize];
                if d.tick == start {
                    let old = d.update_waiter(id, cx.waker());
                    drop(state);
                    drop(old);
                    this.io.check_driver()?;
                    return Poll::Pending;
                }
                let old = d.remove_waiter(id);
                this.waiting = None;
                // Failed if the reactor's failure to arm came after we started waiting.
                let failed = d.failed_tick.is_some_and(|t| t > start);
                drop(state);
                drop(old);
                if failed {
                    return Poll::Ready(Err(arm_failed()));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<T: Registrable> Drop for Readiness<'_, T> {
    fn drop(&mut self) {
        if let Some((_, id)) = self.waiting {
            // If the state is borrowed (this drop runs inside a waker's drop), the waiter stays
            // until the next event, which drops it.
            let old = match self.io.source.state.try_borrow_mut() {
                Ok(mut state) => state.dirs[self.dir as usize].remove_waiter(id),
                Err(_) => None,
            };
            drop(old); // with no borrow held
        }
    }
}
