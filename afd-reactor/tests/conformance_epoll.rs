//! The conformance suite on the epoll kernel (Linux), natively, with real sockets.
//!
//! Every portable body runs: all but the four about completion-port facts that epoll has no
//! counterpart for (see `afd_reactor_conformance!`).
#![cfg(target_os = "linux")]

#[macro_use]
mod conformance;

use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::{EpollReactor, Reactor, Source};
use conformance::Harness;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Tests run in parallel threads of one process, and Linux hands a new descriptor the lowest
/// free number: a socket closed by one test is the next socket another test opens. Opening
/// sockets takes this shared; the closed-socket probe takes it exclusively.
static OPENING_SOCKETS: RwLock<()> = RwLock::new(());

fn may_open_sockets() -> RwLockReadGuard<'static, ()> {
    OPENING_SOCKETS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

fn no_new_sockets() -> RwLockWriteGuard<'static, ()> {
    OPENING_SOCKETS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

struct EpollHarness {
    reactor: EpollReactor,
    listener: TcpListener,
    /// The peer end of each registered socket, by the socket's descriptor.
    peers: HashMap<u64, TcpStream>,
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
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            peers: HashMap::new(),
            keep: Vec::new(),
        }
    }

    fn reactor(&mut self) -> &mut EpollReactor {
        &mut self.reactor
    }

    fn socket(&mut self) -> TcpStream {
        let _opening = may_open_sockets();
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

    fn peer_close(&mut self, s: &TcpStream) {
        drop(self.peers.remove(&s.raw_socket()));
    }

    fn peer_reset(&mut self, s: &TcpStream) {
        let peer = self.peers.remove(&s.raw_socket()).unwrap();
        // SO_LINGER {on, 0} makes the close send RST instead of FIN.
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    }

    fn failing_connect(&mut self) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let _opening = may_open_sockets();
        // A port nobody listens on: bind a listener, note its address, close it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        match s.connect(&addr.into()) {
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            other => panic!("expected a connect in progress, got {other:?}"),
        }
        s.into()
    }

    fn close(&mut self, s: TcpStream) {
        let peer = self.peers.remove(&s.raw_socket());
        drop(s);
        drop(peer);
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

/// `EINPROGRESS` on Linux: a non-blocking connect has started.
fn libc_einprogress() -> i32 {
    115
}

afd_reactor_conformance!(EpollHarness, portable);
