//! mio 1.x: edge-triggered; its users must read until `WouldBlock`.

use super::sys::{LISTENER, Ready, Sys, WAKE, WakeFn, Want};
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::{TcpListener as StdListener, TcpStream as StdStream, UdpSocket as StdUdp};
use std::sync::Arc;
use std::time::Duration;

pub struct Mio {
    poll: Poll,
    events: Events,
}

impl Mio {
    pub fn new() -> io::Result<Self> {
        Ok(Mio {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
        })
    }
}

fn interest(want: Want) -> Interest {
    match want {
        Want::Read => Interest::READABLE,
        Want::Write => Interest::WRITABLE,
    }
}

impl Sys for Mio {
    const EDGE: bool = true;
    type Listener = mio::net::TcpListener;
    type Tcp = mio::net::TcpStream;
    type Udp = mio::net::UdpSocket;

    fn listener(&mut self, l: StdListener) -> io::Result<Self::Listener> {
        let mut l = mio::net::TcpListener::from_std(l);
        self.poll
            .registry()
            .register(&mut l, Token(LISTENER), Interest::READABLE)?;
        Ok(l)
    }
    fn accept(&mut self, l: &mut Self::Listener) -> io::Result<StdStream> {
        // mio's accept makes the connection non-blocking; hand it over as a std stream so
        // every system starts from the same thing.
        let (s, _) = l.accept()?;
        #[cfg(windows)]
        {
            use std::os::windows::io::{FromRawSocket, IntoRawSocket};
            // SAFETY: `into_raw_socket` gives up ownership of a valid socket, which the std
            // stream takes over; nothing else holds it.
            Ok(unsafe { StdStream::from_raw_socket(s.into_raw_socket()) })
        }
        #[cfg(unix)]
        {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: `into_raw_fd` gives up ownership of a valid socket, which the std stream
            // takes over; nothing else holds it.
            Ok(unsafe { StdStream::from_raw_fd(s.into_raw_fd()) })
        }
    }
    fn listener_done(&mut self, _: &mut Self::Listener) -> io::Result<()> {
        Ok(())
    }
    fn tcp(&mut self, s: StdStream) -> Self::Tcp {
        mio::net::TcpStream::from_std(s)
    }
    fn add(&mut self, s: &mut Self::Tcp, key: usize, want: Want) -> io::Result<()> {
        self.poll.registry().register(s, Token(key), interest(want))
    }
    fn rearm(
        &mut self,
        s: &mut Self::Tcp,
        key: usize,
        want: Want,
        changed: bool,
    ) -> io::Result<()> {
        if changed {
            self.poll
                .registry()
                .reregister(s, Token(key), interest(want))?;
        }
        Ok(())
    }
    fn remove(&mut self, s: &mut Self::Tcp) -> io::Result<()> {
        self.poll.registry().deregister(s)
    }
    fn udp(&mut self, s: StdUdp) -> Self::Udp {
        mio::net::UdpSocket::from_std(s)
    }
    fn add_udp(&mut self, u: &mut Self::Udp, key: usize) -> io::Result<()> {
        self.poll
            .registry()
            .register(u, Token(key), Interest::READABLE)
    }
    fn remove_udp(&mut self, u: &mut Self::Udp) -> io::Result<()> {
        self.poll.registry().deregister(u)
    }
    fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        self.poll.poll(&mut self.events, timeout)?;
        out.extend(self.events.iter().map(|e| Ready {
            key: e.token().0,
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            writable: e.is_writable() || e.is_error(),
        }));
        Ok(())
    }
    fn waker(&mut self) -> io::Result<Option<WakeFn>> {
        let w = mio::Waker::new(self.poll.registry(), Token(WAKE))?;
        Ok(Some(Arc::new(move || w.wake())))
    }
}
