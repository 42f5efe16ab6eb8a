//! polling 3.x: oneshot, re-armed with `modify` after each event (as async-io uses it).

use super::sys::{LISTENER, Ready, Sys, WakeFn, Want};
use polling::{Event, Events, Poller};
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

pub struct Polling {
    poller: Arc<Poller>,
    events: Events,
}

impl Polling {
    pub fn new() -> io::Result<Self> {
        Ok(Polling {
            poller: Arc::new(Poller::new()?),
            events: Events::with_capacity(NonZeroUsize::new(1024).expect("non-zero")),
        })
    }
}

fn event(key: usize, want: Want) -> Event {
    match want {
        Want::Read => Event::readable(key),
        Want::Write => Event::writable(key),
    }
}

impl Sys for Polling {
    const EDGE: bool = false;
    type Listener = TcpListener;
    type Tcp = TcpStream;
    type Udp = UdpSocket;

    fn listener(&mut self, l: TcpListener) -> io::Result<TcpListener> {
        // SAFETY: every workload drops the poller before the sockets it registered, or deletes
        // a socket (`remove`) before closing it; so no registered socket is closed under it.
        unsafe { self.poller.add(&l, Event::readable(LISTENER))? };
        Ok(l)
    }
    fn accept(&mut self, l: &mut TcpListener) -> io::Result<TcpStream> {
        l.accept().map(|(s, _)| s)
    }
    fn listener_done(&mut self, l: &mut TcpListener) -> io::Result<()> {
        self.poller.modify(&*l, Event::readable(LISTENER))
    }
    fn tcp(&mut self, s: TcpStream) -> TcpStream {
        s
    }
    fn add(&mut self, s: &mut TcpStream, key: usize, want: Want) -> io::Result<()> {
        // SAFETY: as in `listener`.
        unsafe { self.poller.add(&*s, event(key, want)) }
    }
    fn rearm(&mut self, s: &mut TcpStream, key: usize, want: Want, _: bool) -> io::Result<()> {
        self.poller.modify(&*s, event(key, want))
    }
    fn remove(&mut self, s: &mut TcpStream) -> io::Result<()> {
        self.poller.delete(&*s)
    }
    fn udp(&mut self, s: UdpSocket) -> UdpSocket {
        s
    }
    fn add_udp(&mut self, u: &mut UdpSocket, key: usize) -> io::Result<()> {
        // SAFETY: as in `add`.
        unsafe { self.poller.add(&*u, Event::readable(key)) }
    }
    fn remove_udp(&mut self, u: &mut UdpSocket) -> io::Result<()> {
        self.poller.delete(&*u)
    }
    fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        self.events.clear();
        self.poller.wait(&mut self.events, timeout)?;
        out.extend(self.events.iter().map(|e| Ready {
            key: e.key,
            readable: e.readable,
            writable: e.writable,
        }));
        Ok(())
    }
    fn waker(&mut self) -> io::Result<Option<WakeFn>> {
        // `notify` wakes `wait`, which then returns with no event.
        let p = Arc::clone(&self.poller);
        Ok(Some(Arc::new(move || p.notify())))
    }
}
