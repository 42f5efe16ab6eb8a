//! One interface over the five systems, so every workload runs the same code on each.
//!
//! Each system is used the way its documentation asks: afd-reactor and wepoll level-triggered,
//! polling oneshot (re-armed with `modify` after each event, as async-io does), mio
//! edge-triggered (so its users must read until `WouldBlock`).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// A readiness report.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub key: usize,
    pub readable: bool,
    pub writable: bool,
}

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

/// The key of the listener.
pub const LISTENER: usize = usize::MAX - 1;
/// The key wake-ups are reported under (where the system reports them at all).
pub const WAKE: usize = usize::MAX - 2;

/// Something that wakes a blocked `wait` from another thread.
pub type WakeFn = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// A readiness system under test.
pub trait Sys: Sized {
    /// Reads must continue until `WouldBlock` before the next event can come (edge-triggered).
    const EDGE: bool;
    /// A listening socket in this system's clothes.
    type Listener;
    /// A connection in this system's clothes.
    type Tcp: Read + Write;
    /// A UDP socket in this system's clothes (the micro workloads need no peer).
    type Udp;

    /// Wraps and registers a (non-blocking) listener, readable, under [`LISTENER`].
    fn listener(&mut self, l: TcpListener) -> io::Result<Self::Listener>;
    /// Accepts one connection; `WouldBlock` when there is none.
    fn accept(&mut self, l: &mut Self::Listener) -> io::Result<TcpStream>;
    /// Called after the accept loop drained the listener (re-arms a oneshot registration).
    fn listener_done(&mut self, l: &mut Self::Listener) -> io::Result<()>;
    /// Wraps a non-blocking connection.
    fn tcp(&mut self, s: TcpStream) -> Self::Tcp;
    /// Registers a connection.
    fn add(&mut self, s: &mut Self::Tcp, key: usize, want: Want) -> io::Result<()>;
    /// Called after each handled event: re-arms a oneshot registration, or changes the interest
    /// when `changed`.
    fn rearm(&mut self, s: &mut Self::Tcp, key: usize, want: Want, changed: bool)
    -> io::Result<()>;
    /// Deregisters a connection (before it is closed).
    fn remove(&mut self, s: &mut Self::Tcp) -> io::Result<()>;
    /// Wraps a non-blocking UDP socket.
    fn udp(&mut self, s: UdpSocket) -> Self::Udp;
    /// Registers a UDP socket, readable.
    fn add_udp(&mut self, u: &mut Self::Udp, key: usize) -> io::Result<()>;
    /// Deregisters a UDP socket.
    fn remove_udp(&mut self, u: &mut Self::Udp) -> io::Result<()>;
    /// Waits for readiness; appends what it found to `out`.
    fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()>;
    /// A wake function, if the system has one.
    fn waker(&mut self) -> io::Result<Option<WakeFn>>;
    /// The system's own counters as `key=value` fields (afd-reactor's NT calls), or nothing.
    fn counters(&self) -> String {
        String::new()
    }
    /// Whether dropping the system waits until the kernel has given back every pending poll's
    /// memory (afd-reactor cancels them and waits for each packet). The peers do not: mio
    /// collects what is already queued and leaves the rest to reference counts, polling leaves
    /// pending packets to reference counts, wepoll frees its socket states at once.
    const DROP_WAITS: bool = false;
    /// Tears the system down with every poll pending. `wait: false` asks a system whose drop
    /// waits ([`Self::DROP_WAITS`]) not to (afd-reactor: `abandon`, which leaks the pending
    /// polls' memory on purpose, as the peers' drops leave it); returns whether it waited.
    fn teardown(self, wait: bool) -> bool {
        let _ = wait;
        drop(self);
        Self::DROP_WAITS
    }
}

/// A fresh non-blocking UDP socket on 127.0.0.1.
pub fn udp_socket() -> io::Result<UdpSocket> {
    let u = UdpSocket::bind("127.0.0.1:0")?;
    u.set_nonblocking(true)?;
    Ok(u)
}
