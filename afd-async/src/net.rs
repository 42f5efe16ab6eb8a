//! TCP and UDP on [`Async`].

use crate::io::Async;
use crate::source::Dir;
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::task::{Context, Poll};

impl Async<TcpListener> {
    /// Bind a listener to `addr`.
    ///
    /// # Errors
    /// The error of binding, or of registering the listener.
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// use std::net::TcpListener;
    /// let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    /// println!("listening on {}", listener.get_ref().local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl Into<SocketAddr>) -> io::Result<Self> {
        Self::new(TcpListener::bind(addr.into())?)
    }

    /// Accept a connection: the stream is registered with this thread's reactor.
    ///
    /// # Errors
    /// The error of `accept`, or of registering the stream.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::{TcpListener, TcpStream};
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let _client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let (stream, peer) = listener.accept().await?;
    ///     assert_eq!(peer, stream.get_ref().peer_addr()?);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Async<TcpStream>, SocketAddr)>> {
        match self.poll_io(Dir::Read, cx, |l| l.accept()) {
            Poll::Ready(Ok((stream, addr))) => Poll::Ready(Async::new(stream).map(|s| (s, addr))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The connections as they come: a `Stream` of accepted streams that never ends.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use futures_lite::StreamExt;
    /// use std::net::{TcpListener, TcpStream};
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    ///     let _client = TcpStream::connect(listener.get_ref().local_addr()?)?;
    ///     let mut incoming = listener.incoming();
    ///     let stream = incoming.next().await.expect("never ends")?;
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

/// The stream of [`Async::<TcpListener>::incoming`](Async::incoming): accepted connections,
/// registered with the thread's reactor. It never ends; an error is an item, and the stream goes
/// on after it.
///
/// # Examples
/// ```
/// use afd_async::{Async, Incoming, block_on};
/// use futures_lite::StreamExt;
/// use std::net::{TcpListener, TcpStream};
/// # #[cfg(any(windows, target_os = "linux"))]
/// block_on(async {
///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
///     let addr = listener.get_ref().local_addr()?;
///     let _clients = [TcpStream::connect(addr)?, TcpStream::connect(addr)?];
///     let incoming: Incoming<'_> = listener.incoming();
///     let two: Vec<_> = incoming.take(2).collect().await;
///     assert!(two.iter().all(|s| s.is_ok()));
///     std::io::Result::Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    listener: &'a Async<TcpListener>,
}

impl Stream for Incoming<'_> {
    type Item = io::Result<Async<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some(r.map(|(stream, _)| stream)))
    }
}

impl Async<TcpStream> {
    /// Connect to `addr` without blocking the thread.
    ///
    /// # Errors
    /// The connect's error (`ConnectionRefused` if nobody listens, and so on): a failed connect
    /// is an error, never a hang.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::{TcpListener, TcpStream};
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0")?;
    ///     let stream = Async::<TcpStream>::connect(listener.local_addr()?).await?;
    ///     assert_eq!(stream.get_ref().peer_addr()?, listener.local_addr()?);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn connect(addr: impl Into<SocketAddr>) -> io::Result<Self> {
        let addr = addr.into();
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if in_progress(&e) => {}
            Err(e) => return Err(e),
        }
        let stream = Async::new_nonblocking(TcpStream::from(socket))?;
        loop {
            // A finished connect is writable; a failed one is writable and in error.
            stream.writable().await?;
            if let Some(e) = stream.get_ref().take_error()? {
                return Err(e);
            }
            match stream.get_ref().peer_addr() {
                Ok(_) => return Ok(stream),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Poll-style read, shared by `AsyncRead` for `Async<TcpStream>` and `&Async<TcpStream>`.
    ///
    /// On Linux, a read that returns less than asked for means the socket was drained then: the
    /// next read waits for the reactor's event instead of making a call that would return
    /// `WouldBlock`. On Windows every read is tried.
    fn poll_read_stream(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let len = buf.len();
        match self.poll_io(Dir::Read, cx, |s| (&*s).read(buf)) {
            Poll::Ready(Ok(n)) => {
                // Linux: a short read means drained; the next read waits for the event instead
                // of making a call that would return `WouldBlock`. Windows: the next read is
                // tried (a fast peer's next message is often there by then, and a wait in the
                // kernel costs more than a read that fails; measured under Wine, a wait that
                // puts the thread to sleep adds about 0.6 ms to a round trip).
                if cfg!(not(windows)) && n > 0 && n < len {
                    self.park(Dir::Read);
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_write_stream(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(Dir::Write, cx, |s| (&*s).write(buf))
    }

    fn poll_write_vectored_stream(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(Dir::Write, cx, |s| (&*s).write_vectored(bufs))
    }
}

/// True for the error of a non-blocking connect that has started.
fn in_progress(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// futures-io's traits for a stream type (`Async<TcpStream>`, and `&Async<TcpStream>` so that
/// one task can read while another writes).
macro_rules! stream_io {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_read_stream(cx, buf)
            }
        }

        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_stream(cx, buf)
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_vectored_stream(cx, bufs)
            }
            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(shutdown_write(self.get_ref()))
            }
        }
    };
}

stream_io!(Async<TcpStream>);
stream_io!(&Async<TcpStream>);

/// `poll_close`: send FIN. A stream that is no longer connected has nothing left to close.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match stream.shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        result => result,
    }
}

impl Async<UdpSocket> {
    /// Bind a UDP socket to `addr`.
    ///
    /// # Errors
    /// The error of binding, or of registering the socket.
    ///
    /// # Examples
    /// ```
    /// use afd_async::Async;
    /// use std::net::UdpSocket;
    /// let socket = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(addr: impl Into<SocketAddr>) -> io::Result<Self> {
        Self::new(UdpSocket::bind(addr.into())?)
    }

    /// Receive a datagram and the address it came from.
    ///
    /// # Errors
    /// The error of `recv_from`.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     let b = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     b.send_to(b"ping", a.get_ref().local_addr()?).await?;
    ///     let mut buf = [0; 16];
    ///     let (n, from) = a.recv_from(&mut buf).await?;
    ///     assert_eq!((&buf[..n], from), (&b"ping"[..], b.get_ref().local_addr()?));
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|s| s.recv_from(buf)).await
    }

    /// Send a datagram to `addr`.
    ///
    /// # Errors
    /// The error of `send_to`.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     let to = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    ///     assert_eq!(a.send_to(b"ping", to).await?, 4);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn send_to(&self, buf: &[u8], addr: impl Into<SocketAddr>) -> io::Result<usize> {
        let addr = addr.into();
        self.write_with(|s| s.send_to(buf, addr)).await
    }

    /// Receive a datagram from the connected peer (see `UdpSocket::connect`).
    ///
    /// # Errors
    /// The error of `recv`.
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     let b = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     a.get_ref().connect(b.get_ref().local_addr()?)?;
    ///     b.get_ref().connect(a.get_ref().local_addr()?)?;
    ///     a.send(b"ping").await?;
    ///     let mut buf = [0; 16];
    ///     let n = b.recv(&mut buf).await?;
    ///     assert_eq!(&buf[..n], b"ping");
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|s| s.recv(buf)).await
    }

    /// Send a datagram to the connected peer.
    ///
    /// # Errors
    /// The error of `send` (for instance `NotConnected` if the socket has no peer).
    ///
    /// # Examples
    /// ```
    /// use afd_async::{Async, block_on};
    /// use std::net::UdpSocket;
    /// # #[cfg(any(windows, target_os = "linux"))]
    /// block_on(async {
    ///     let a = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0))?;
    ///     a.get_ref().connect(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)?;
    ///     assert_eq!(a.send(b"ping").await?, 4);
    ///     std::io::Result::Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|s| s.send(buf)).await
    }
}
