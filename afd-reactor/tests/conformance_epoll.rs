//! The conformance suite on the epoll kernel (Linux), natively, with real sockets.
//!
//! Every portable body runs: all but the four about completion-port facts that epoll has no
//! counterpart for (see `afd_reactor_conformance!`).
#![cfg(target_os = "linux")]

#[macro_use]
mod conformance;
mod net;

use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::{EpollReactor, Reactor};
use conformance::Harness;
use net::{TcpPeers, may_open_sockets};
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

    // socket, make_readable, drain, peer_shutdown, peer_close, peer_reset, failing_connect,
    // close, closed_socket_value: on the harness's real TCP peers (`self.tcp`).
    net::tcp_harness_sockets!();

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

    fn churn_rounds(&self) -> usize {
        1_000
    }
}

afd_reactor_conformance!(EpollHarness, portable);
