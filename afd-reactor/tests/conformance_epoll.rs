//! The conformance suite on the epoll kernel (Linux), natively, with real sockets.
//!
//! Every portable body runs: all but the four about completion-port facts that epoll has no
//! counterpart for (see `afd_reactor_conformance!`).
#![cfg(target_os = "linux")]

#[macro_use]
mod conformance;
mod net;

use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::{EpollReactor, Reactor, Source};
use conformance::Harness;
use net::{TcpPeers, may_open_sockets, no_new_sockets};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

struct EpollHarness {
    reactor: EpollReactor,
    tcp: TcpPeers,
    /// Files kept open for the bad-input test.
    keep: Vec<Box<dyn std::any::Any>>,
}

impl Harness for EpollHarness {
    type K = EpollKernel;
    type Sock = TcpStream;

    fn new() -> Self {
        let _opening = may_open_sockets();
        Self {
            reactor: Reactor::new().unwrap(),
            tcp: TcpPeers::new(),
            keep: Vec::new(),
        }
    }

    fn reactor(&mut self) -> &mut EpollReactor {
        &mut self.reactor
    }

    fn socket(&mut self) -> TcpStream {
        let _opening = may_open_sockets();
        self.tcp.socket()
    }

    fn make_readable(&mut self, s: &TcpStream) {
        self.tcp.make_readable(s);
    }

    fn drain(&mut self, s: &TcpStream) {
        TcpPeers::drain(s);
    }

    fn peer_shutdown(&mut self, s: &TcpStream) {
        self.tcp.peer_shutdown(s);
    }

    fn peer_close(&mut self, s: &TcpStream) {
        self.tcp.peer_close(s);
    }

    fn peer_reset(&mut self, s: &TcpStream) {
        self.tcp.peer_reset(s);
    }

    fn failing_connect(&mut self) -> TcpStream {
        let _opening = may_open_sockets();
        net::failing_connect().into()
    }

    fn close(&mut self, s: TcpStream) {
        self.tcp.close(s);
    }

    fn bind_elsewhere(&mut self, _s: &TcpStream) {
        unreachable!("epoll has no binding to a port: the bodies that need one are not expanded")
    }

    fn cancel_io(&mut self, _s: &TcpStream) {
        unreachable!(
            "Linux has no outside cancel of a poll: the body that needs one is not expanded"
        )
    }

    fn reuses_handles_at_once(&self) -> bool {
        false // Linux does (lowest free number), but tests open sockets in parallel
    }

    fn close_is_noticed(&self) -> bool {
        false
    }

    fn not_sockets(&mut self) -> Vec<(&'static str, u64)> {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let dir = std::fs::File::open("/").unwrap();
        let cases = vec![
            ("a regular file", file.as_raw_fd() as u64),
            ("a directory", dir.as_raw_fd() as u64),
        ];
        self.keep.push(Box::new((file, dir)));
        cases
    }

    fn invalid_value(&self) -> u64 {
        0x00FF_FFF0
    }

    fn closed_socket_value(&mut self) -> (u64, Box<dyn std::any::Any>) {
        let s = self.socket();
        let raw = s.raw_socket();
        let guard = no_new_sockets();
        self.close(s);
        (raw, Box::new(guard))
    }

    fn churn_rounds(&self) -> usize {
        1_000
    }
}

afd_reactor_conformance!(EpollHarness, portable);
