//! The three async stacks behind [`Stack`]: each used the way its documentation shows, on one
//! thread.
//!
//! - afd-async and smol share one shape (`Async<TcpStream>`, futures-io traits, a `block_on`):
//!   one macro writes both, so they are used identically; both run async-executor's
//!   `LocalExecutor` under their own `block_on`.
//! - tokio: the current-thread runtime with I/O enabled, tasks spawned with `tokio::spawn`.
//!
//! Every stack gets the same listener: a std `TcpListener` bound by the caller (so the same
//! backlog), wrapped.

use super::asyncs::{Conn, Job, Shared, Stack, serve_conn};
use std::future::Future;
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// `Stack` and `Conn` for a crate shaped like async-io: `$krate::Async`, `$krate::block_on`.
macro_rules! async_io_like {
    ($(#[$doc:meta])* $name:ident, $krate:ident) => {
        $(#[$doc])*
        pub struct $name {
            ex: std::rc::Rc<async_executor::LocalExecutor<'static>>,
        }

        impl Conn for $krate::Async<TcpStream> {
            // A readiness wait re-arms the socket: a short read then a wait is enough.
            const EDGE: bool = false;
            fn set_nodelay(&self) -> io::Result<()> {
                self.get_ref().set_nodelay(true)
            }
            async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                futures_lite::AsyncReadExt::read(self, buf).await
            }
            async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                futures_lite::AsyncWriteExt::write_all(self, buf).await
            }
            fn readable(&self) -> impl Future<Output = io::Result<()>> {
                $krate::Async::readable(self)
            }
            fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.get_ref().read(buf)
            }
        }

        impl Stack for $name {
            type Listener = $krate::Async<TcpListener>;
            type Stream = $krate::Async<TcpStream>;
            fn run<T, F: Future<Output = io::Result<T>>>(
                main: impl FnOnce(Self) -> F,
            ) -> io::Result<T> {
                let ex = std::rc::Rc::new(async_executor::LocalExecutor::new());
                let fut = main($name {
                    ex: std::rc::Rc::clone(&ex),
                });
                $krate::block_on(ex.run(fut))
            }
            fn listener(&self, l: TcpListener) -> io::Result<Self::Listener> {
                $krate::Async::new(l)
            }
            async fn accept(&self, l: &Self::Listener) -> io::Result<Self::Stream> {
                l.accept().await.map(|(s, _)| s)
            }
            fn spawn_conn(&self, conn: Self::Stream, job: Job, shared: Arc<Shared>) {
                self.ex.spawn(serve_conn(conn, job, shared)).detach();
            }
        }
    };
}

async_io_like!(
    /// smol's stack: async-io's `Async` and `block_on`, async-executor's `LocalExecutor`.
    Smol,
    async_io
);

async_io_like!(
    /// afd-async's `Async` and `block_on`, async-executor's `LocalExecutor`.
    AfdAsync,
    afd_async
);

/// tokio's current-thread runtime.
pub struct Tokio;

impl Conn for tokio::net::TcpStream {
    // tokio clears a socket's readiness only when an operation returns WouldBlock (and mio
    // re-arms it only then on Windows): reads must go on until then.
    const EDGE: bool = true;
    fn set_nodelay(&self) -> io::Result<()> {
        tokio::net::TcpStream::set_nodelay(self, true)
    }
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read(self, buf).await
    }
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(self, buf).await
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        tokio::net::TcpStream::readable(self)
    }
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::net::TcpStream::try_read(self, buf)
    }
}

impl Stack for Tokio {
    type Listener = tokio::net::TcpListener;
    type Stream = tokio::net::TcpStream;
    fn run<T, F: Future<Output = io::Result<T>>>(main: impl FnOnce(Self) -> F) -> io::Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        rt.block_on(main(Tokio))
    }
    fn listener(&self, l: TcpListener) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::from_std(l)
    }
    async fn accept(&self, l: &Self::Listener) -> io::Result<Self::Stream> {
        l.accept().await.map(|(s, _)| s)
    }
    fn spawn_conn(&self, conn: Self::Stream, job: Job, shared: Arc<Shared>) {
        drop(tokio::spawn(serve_conn(conn, job, shared)));
    }
}
