//! afd-reactor: level-triggered; on Windows on each socket or through the helper handle, on
//! Linux on epoll.

use super::sys::{LISTENER, Ready, Sys, WAKE, WakeFn, Want};
#[cfg(target_os = "linux")]
use afd_reactor::kernel::epoll::EpollKernel as Kernel;
#[cfg(windows)]
use afd_reactor::kernel::nt::NtKernel as Kernel;
use afd_reactor::{Events, Interest, Reactor, Token};
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

pub struct Afd {
    reactor: Reactor<Kernel>,
    events: Events,
}

impl Afd {
    pub fn new(helper: bool) -> io::Result<Self> {
        #[cfg(windows)]
        let kernel = Kernel::new()?.force_helper(helper);
        #[cfg(target_os = "linux")]
        let kernel = {
            let _ = helper; // no helper handles on Linux
            Kernel::new()?
        };
        Ok(Afd {
            reactor: Reactor::with_kernel(kernel),
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

impl Sys for Afd {
    const EDGE: bool = false;
    type Listener = TcpListener;
    type Tcp = TcpStream;
    type Udp = UdpSocket;

    fn listener(&mut self, l: TcpListener) -> io::Result<TcpListener> {
        self.reactor
            .register(&l, Token(LISTENER), Interest::READABLE)?;
        Ok(l)
    }
    fn accept(&mut self, l: &mut TcpListener) -> io::Result<TcpStream> {
        l.accept().map(|(s, _)| s)
    }
    fn listener_done(&mut self, _: &mut TcpListener) -> io::Result<()> {
        Ok(())
    }
    fn tcp(&mut self, s: TcpStream) -> TcpStream {
        s
    }
    fn add(&mut self, s: &mut TcpStream, key: usize, want: Want) -> io::Result<()> {
        self.reactor.register(s, Token(key), interest(want))
    }
    fn rearm(
        &mut self,
        s: &mut TcpStream,
        key: usize,
        want: Want,
        changed: bool,
    ) -> io::Result<()> {
        if changed {
            self.reactor.reregister(s, Token(key), interest(want))?;
        }
        Ok(())
    }
    fn remove(&mut self, s: &mut TcpStream) -> io::Result<()> {
        self.reactor.deregister(s)
    }
    fn udp(&mut self, s: UdpSocket) -> UdpSocket {
        s
    }
    fn add_udp(&mut self, u: &mut UdpSocket, key: usize) -> io::Result<()> {
        self.reactor.register(u, Token(key), Interest::READABLE)
    }
    fn remove_udp(&mut self, u: &mut UdpSocket) -> io::Result<()> {
        self.reactor.deregister(u)
    }
    fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        self.reactor.poll(&mut self.events, timeout)?;
        out.extend(self.events.iter().map(|e| Ready {
            key: e.token().0,
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            writable: e.is_writable() || e.is_error(),
        }));
        Ok(())
    }
    fn waker(&mut self) -> io::Result<Option<WakeFn>> {
        let w = self.reactor.waker(Token(WAKE))?;
        Ok(Some(Arc::new(move || w.wake())))
    }
    const DROP_WAITS: bool = true;
    fn teardown(self, wait: bool) -> bool {
        if wait {
            drop(self);
        } else {
            self.reactor.abandon();
        }
        wait
    }
    fn counters(&self) -> String {
        let s = self.reactor.stats();
        format!(
            "nt_total={} nt_submit={} nt_dequeue={} nt_cancel={} nt_post={} nt_associate={} \
             nt_base_socket={} events={} packets={}",
            s.nt.total(),
            s.nt.submit,
            s.nt.dequeue,
            s.nt.cancel,
            s.nt.post,
            s.nt.associate,
            s.nt.base_socket,
            s.events,
            s.packets
        )
    }
}
