//! wepoll (C): level-triggered epoll emulation. It has no wake-up call.

use super::sys::{LISTENER, Ready, Sys, WakeFn, Want};
use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::windows::io::AsRawSocket;
use std::time::Duration;
use wepoll_ffi as ep;

pub struct Wepoll {
    handle: ep::HANDLE,
    events: Vec<ep::epoll_event>,
}

impl Wepoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain FFI call with no arguments to uphold.
        let handle = unsafe { ep::epoll_create1(0) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Wepoll {
            handle,
            events: vec![
                ep::epoll_event {
                    events: 0,
                    data: ep::epoll_data { u64_: 0 }
                };
                1024
            ],
        })
    }

    fn ctl(&mut self, op: u32, s: &impl AsRawSocket, key: usize, flags: u32) -> io::Result<()> {
        let mut ev = ep::epoll_event {
            events: flags,
            data: ep::epoll_data { u64_: key as u64 },
        };
        // SAFETY: `handle` is a live epoll port (closed only in Drop); `ev` outlives the call.
        let rc =
            unsafe { ep::epoll_ctl(self.handle, op as i32, s.as_raw_socket() as usize, &mut ev) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for Wepoll {
    fn drop(&mut self) {
        // SAFETY: the handle came from epoll_create1 and is closed exactly once, here.
        unsafe { ep::epoll_close(self.handle) };
    }
}

fn flags(want: Want) -> u32 {
    match want {
        Want::Read => ep::EPOLLIN | ep::EPOLLRDHUP,
        Want::Write => ep::EPOLLOUT,
    }
}

impl Sys for Wepoll {
    const EDGE: bool = false;
    type Listener = TcpListener;
    type Tcp = TcpStream;
    type Udp = UdpSocket;

    fn listener(&mut self, l: TcpListener) -> io::Result<TcpListener> {
        self.ctl(ep::EPOLL_CTL_ADD, &l, LISTENER, ep::EPOLLIN)?;
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
        self.ctl(ep::EPOLL_CTL_ADD, s, key, flags(want))
    }
    fn rearm(
        &mut self,
        s: &mut TcpStream,
        key: usize,
        want: Want,
        changed: bool,
    ) -> io::Result<()> {
        if changed {
            self.ctl(ep::EPOLL_CTL_MOD, s, key, flags(want))?;
        }
        Ok(())
    }
    fn remove(&mut self, s: &mut TcpStream) -> io::Result<()> {
        self.ctl(ep::EPOLL_CTL_DEL, s, 0, 0)
    }
    fn udp(&mut self, s: UdpSocket) -> UdpSocket {
        s
    }
    fn add_udp(&mut self, u: &mut UdpSocket, key: usize) -> io::Result<()> {
        self.ctl(ep::EPOLL_CTL_ADD, u, key, ep::EPOLLIN)
    }
    fn remove_udp(&mut self, u: &mut UdpSocket) -> io::Result<()> {
        self.ctl(ep::EPOLL_CTL_DEL, u, 0, 0)
    }
    fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            // Round up, so a short timeout does not become a busy loop.
            Some(t) => t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: the buffer holds `len` writable entries and lives across the call.
        let n = unsafe {
            ep::epoll_wait(
                self.handle,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        out.extend(self.events[..n as usize].iter().map(|e| {
            // SAFETY: every registration stored the key in `u64_`.
            let key = unsafe { e.data.u64_ } as usize;
            let bad = ep::EPOLLERR | ep::EPOLLHUP;
            Ready {
                key,
                readable: e.events & (ep::EPOLLIN | ep::EPOLLRDHUP | bad) != 0,
                writable: e.events & (ep::EPOLLOUT | bad) != 0,
            }
        }));
        Ok(())
    }
    fn waker(&mut self) -> io::Result<Option<WakeFn>> {
        Ok(None)
    }
}
