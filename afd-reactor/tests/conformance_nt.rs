//! The conformance suite on the real NT kernel (under Wine), twice: with socket-direct polls and
//! with every poll forced through the `\Device\Afd` helper handle.
#![cfg(windows)]

#[macro_use]
mod conformance;

use afd_reactor::kernel::nt::NtKernel;
use afd_reactor::nt::{CompletionPort, socket_as_handle};
use afd_reactor::{Reactor, Source};
use conformance::Harness;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::windows::io::AsSocket;

struct NtHarness<const HELPER: bool> {
    reactor: Reactor<NtKernel>,
    /// One listener for the harness, so each new socket is one client + one accepted handle
    /// (and a closed socket's handle value is what Wine hands the next client).
    listener: TcpListener,
    /// The peer end of each registered socket, by the socket's handle value.
    peers: HashMap<u64, TcpStream>,
    /// Ports other "runtimes" bound sockets to.
    foreign: Vec<CompletionPort>,
}

impl<const HELPER: bool> Harness for NtHarness<HELPER> {
    type K = NtKernel;
    type Sock = TcpStream;

    fn new() -> Self {
        let kernel = NtKernel::new().unwrap().force_helper(HELPER);
        Self {
            reactor: Reactor::with_kernel(kernel),
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            peers: HashMap::new(),
            foreign: Vec::new(),
        }
    }

    fn reactor(&mut self) -> &mut Reactor<NtKernel> {
        &mut self.reactor
    }

    fn socket(&mut self) -> TcpStream {
        let a = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
        let (b, _) = self.listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        self.peers.insert(a.raw_socket(), b);
        a
    }

    fn make_readable(&mut self, s: &TcpStream) {
        let peer = self.peers.get_mut(&s.raw_socket()).unwrap();
        peer.write_all(b"ping").unwrap();
    }

    fn drain(&mut self, s: &TcpStream) {
        let mut buf = [0u8; 4096];
        loop {
            match (&*s).read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn peer_shutdown(&mut self, s: &TcpStream) {
        self.peers[&s.raw_socket()]
            .shutdown(Shutdown::Write)
            .unwrap();
    }

    fn close(&mut self, s: TcpStream) {
        let peer = self.peers.remove(&s.raw_socket());
        drop(s); // our side first: a pending poll ends with LOCAL_CLOSE
        drop(peer);
    }

    fn bind_elsewhere(&mut self, s: &TcpStream) {
        let port = CompletionPort::new().unwrap();
        port.associate(socket_as_handle(s.as_socket()), 1).unwrap();
        self.foreign.push(port);
    }

    fn reuses_handles_at_once(&self) -> bool {
        false // Wine usually does (lowest free slot), but nothing promises it
    }

    fn helper_only(&self) -> bool {
        HELPER
    }
}

mod socket_direct {
    use super::conformance;
    type H = super::NtHarness<false>;
    afd_reactor_conformance!(H);
}

mod through_helper {
    use super::conformance;
    type H = super::NtHarness<true>;
    afd_reactor_conformance!(H);
}
