//! Real TCP sockets for the tests of the real kernels (NT under Wine, epoll natively): a
//! connected pair, a connect bound to fail, and the peers a conformance harness drives.
#![allow(dead_code)]

use afd_reactor::Source;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Tests run in parallel threads of one process, and both Wine and Linux hand a new handle the
/// lowest free value: a socket closed by one test is the next socket another test opens. Opening
/// sockets takes this lock shared; a test that needs a just-closed value to stay unused takes it
/// exclusively (see each harness for what it does not cover).
static OPENING_SOCKETS: RwLock<()> = RwLock::new(());

/// Hold while opening sockets (shared). A test that panicked while holding the lock poisoned
/// nothing it guards: poisoning is ignored.
pub fn may_open_sockets() -> RwLockReadGuard<'static, ()> {
    OPENING_SOCKETS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

/// While the guard lives, no test (this one included) opens a socket through
/// [`may_open_sockets`].
pub fn no_new_sockets() -> RwLockWriteGuard<'static, ()> {
    OPENING_SOCKETS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A connected loopback pair (client, server side), both blocking.
#[track_caller]
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A connected loopback pair whose client side (first) is non-blocking, as registered sockets
/// are.
#[track_caller]
pub fn nonblocking_pair() -> (TcpStream, TcpStream) {
    let (a, b) = tcp_pair();
    a.set_nonblocking(true).unwrap();
    (a, b)
}

/// A non-blocking socket whose connect is in progress and will fail: it connects to a loopback
/// port nobody listens on (a listener's, closed).
#[track_caller]
pub fn failing_connect() -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    match s.connect(&addr.into()) {
        Err(e) if in_progress(&e) => s,
        other => panic!("expected a connect in progress, got {other:?}"),
    }
}

/// A non-blocking connect has started: `WouldBlock` on Windows, `EINPROGRESS` on Linux.
pub fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// The far ends of the sockets a harness registers, by the registered socket's value, and the
/// listener that makes them.
pub struct TcpPeers {
    listener: TcpListener,
    peers: HashMap<u64, TcpStream>,
}

impl TcpPeers {
    pub fn new() -> Self {
        TcpPeers {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            peers: HashMap::new(),
        }
    }

    /// A connected, non-blocking socket (its peer kept here).
    pub fn socket(&mut self) -> TcpStream {
        let a = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
        let (b, _) = self.listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        self.peers.insert(a.raw_socket(), b);
        a
    }

    /// The peer writes.
    pub fn make_readable(&mut self, s: &TcpStream) {
        let peer = self.peers.get_mut(&s.raw_socket()).unwrap();
        peer.write_all(b"ping").unwrap();
    }

    /// Read everything `s` has (to `WouldBlock` or the end).
    pub fn drain(s: &TcpStream) {
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

    /// The peer shuts down its sending side (FIN).
    pub fn peer_shutdown(&mut self, s: &TcpStream) {
        self.peers[&s.raw_socket()]
            .shutdown(Shutdown::Write)
            .unwrap();
    }

    /// The peer closes its socket (FIN).
    pub fn peer_close(&mut self, s: &TcpStream) {
        drop(self.peers.remove(&s.raw_socket()));
    }

    /// The peer resets the connection: `SO_LINGER` {on, 0} makes its close send RST.
    pub fn peer_reset(&mut self, s: &TcpStream) {
        let peer = self.peers.remove(&s.raw_socket()).unwrap();
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    }

    /// Close `s` (our side first: a pending poll ends with `LOCAL_CLOSE` on Windows), then its
    /// peer.
    pub fn close(&mut self, s: TcpStream) {
        let peer = self.peers.remove(&s.raw_socket());
        drop(s);
        drop(peer);
    }
}

/// The `Harness` methods that act on sockets, for a harness whose sockets are real TCP streams
/// with their peers in a field `tcp: TcpPeers`. Expand it inside `impl Harness for …`.
#[allow(unused_macros)] // not every test crate that includes this module has a harness
macro_rules! tcp_harness_sockets {
    () => {
        fn socket(&mut self) -> std::net::TcpStream {
            let _opening = net::may_open_sockets();
            self.tcp.socket()
        }

        fn make_readable(&mut self, s: &std::net::TcpStream) {
            self.tcp.make_readable(s);
        }

        fn drain(&mut self, s: &std::net::TcpStream) {
            net::TcpPeers::drain(s);
        }

        fn peer_shutdown(&mut self, s: &std::net::TcpStream) {
            self.tcp.peer_shutdown(s);
        }

        fn peer_close(&mut self, s: &std::net::TcpStream) {
            self.tcp.peer_close(s);
        }

        fn peer_reset(&mut self, s: &std::net::TcpStream) {
            self.tcp.peer_reset(s);
        }

        fn failing_connect(&mut self) -> std::net::TcpStream {
            let _opening = net::may_open_sockets();
            net::failing_connect().into()
        }

        fn close(&mut self, s: std::net::TcpStream) {
            self.tcp.close(s);
        }

        fn closed_socket_value(&mut self) -> (u64, Box<dyn std::any::Any>) {
            use afd_reactor::Source;
            let s = self.socket();
            let raw = s.raw_socket();
            let guard = net::no_new_sockets();
            self.close(s);
            (raw, Box::new(guard))
        }
    };
}
#[allow(unused_imports)]
pub(crate) use tcp_harness_sockets;
