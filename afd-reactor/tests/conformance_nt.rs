//! The conformance suite on the real NT kernel (under Wine), twice: with socket-direct polls and
//! with every poll forced through the `\Device\Afd` helper handle.
#![cfg(windows)]

#[macro_use]
mod conformance;
mod net;
mod platform;

use afd_reactor::kernel::nt::NtKernel;
use afd_reactor::nt::{CompletionPort, socket_as_handle};
use afd_reactor::{Reactor, Source};
use conformance::Harness;
use net::{TcpPeers, may_open_sockets, no_new_sockets};
use platform::{Platform, platform};
use std::io;
use std::net::TcpStream;
use std::os::windows::io::AsSocket;

// Sockets are opened under `net::may_open_sockets`, and the closed-socket probes hold
// `net::no_new_sockets` from the close until they have tried to register the value: Wine hands
// a new handle the lowest free value, so a socket closed by one test is the next socket another
// test opens.
//
// The lock does not cover every handle: a reactor opens its `\Device\Afd` helper lazily, on its
// first helper-path registration, and libtest and Wine open handles of their own (threads,
// events). So a closed value can still be taken by another test's object during the window.
// Registering a value this reactor never saw is harmless then (winsock's proof that it is a
// socket refuses it first), but a value it knows goes straight to a helper poll: that probe
// registers the value only once an object of its own holds it. (Under Wine 8, an
// `IOCTL_AFD_POLL` naming another reactor's helper handle makes wineserver abort on an
// assertion, `set_fd_events: poll_users[user] == fd`, which leaves every process of the
// prefix hung.)

struct NtHarness<const HELPER: bool> {
    reactor: Reactor<NtKernel>,
    /// One listener for the harness, so each new socket is one client + one accepted handle
    /// (and a closed socket's handle value is what Wine hands the next client), and the peers.
    tcp: TcpPeers,
    /// Ports other "runtimes" bound sockets to.
    foreign: Vec<CompletionPort>,
    /// Non-socket handles kept open for the bad-input test.
    keep: Vec<Box<dyn std::any::Any>>,
}

impl<const HELPER: bool> Harness for NtHarness<HELPER> {
    type K = NtKernel;
    type Sock = TcpStream;

    fn new() -> Self {
        let _opening = may_open_sockets();
        let kernel = NtKernel::new().unwrap().force_helper(HELPER);
        Self {
            reactor: Reactor::with_kernel(kernel),
            tcp: TcpPeers::new(),
            foreign: Vec::new(),
            keep: Vec::new(),
        }
    }

    fn reactor(&mut self) -> &mut Reactor<NtKernel> {
        &mut self.reactor
    }

    // socket, make_readable, drain, peer_shutdown, peer_close, peer_reset, failing_connect,
    // close, closed_socket_value: on the harness's real TCP peers (`self.tcp`).
    net::tcp_harness_sockets!();

    fn patience(&self) -> std::time::Duration {
        // Windows retries a refused SYN for about 2 s before a connect fails.
        std::time::Duration::from_secs(10)
    }

    fn bind_elsewhere(&mut self, s: &TcpStream) {
        let port = CompletionPort::new().unwrap();
        port.associate(socket_as_handle(s.as_socket()), 1).unwrap();
        self.foreign.push(port);
    }

    fn cancel_io(&mut self, s: &TcpStream) {
        use std::os::windows::io::AsRawSocket;
        use windows_sys::Win32::Foundation::ERROR_NOT_FOUND;
        use windows_sys::Win32::System::IO::CancelIoEx;
        // SAFETY: the socket is open (borrowed for the call); a null OVERLAPPED cancels every
        // request issued on its file object.
        let ok = unsafe { CancelIoEx(s.as_raw_socket() as _, std::ptr::null()) };
        if ok == 0 {
            // Nothing was issued on the socket itself: the helper path polls through the
            // reactor's own handle. Windows and Wine 10 then say ERROR_NOT_FOUND (Wine 8 says
            // nothing and succeeds; nt_layer pins both).
            let e = io::Error::last_os_error();
            assert!(
                HELPER && e.raw_os_error() == Some(ERROR_NOT_FOUND as i32),
                "CancelIoEx: {e}"
            );
        }
    }

    fn reuses_handles_at_once(&self) -> bool {
        false // Wine usually does (lowest free slot), but nothing promises it
    }

    fn helper_only(&self) -> bool {
        HELPER
    }

    fn not_sockets(&mut self) -> Vec<(&'static str, u64)> {
        use std::os::windows::io::{AsHandle, AsRawHandle};
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let port = CompletionPort::new().unwrap();
        let event = event_object();
        let raw = |h: std::os::windows::io::BorrowedHandle<'_>| h.as_raw_handle() as u64;
        let cases = vec![
            ("a file", raw(file.as_handle())),
            ("a pipe", raw(reader.as_handle())),
            ("an event", raw(event.as_handle())),
            ("a completion port", raw(port.as_handle())),
        ];
        self.keep
            .push(Box::new((file, reader, writer, port, event)));
        cases
    }

    fn invalid_value(&self) -> u64 {
        0x00FF_FFF0
    }

    fn churn_rounds(&self) -> usize {
        1_000
    }
}

/// A Win32 event object (`CreateEventW`), owned.
fn event_object() -> std::os::windows::io::OwnedHandle {
    use std::os::windows::io::FromRawHandle;
    use windows_sys::Win32::System::Threading::CreateEventW;
    // SAFETY: null security attributes and name are allowed; the result is checked for null.
    let raw = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    assert!(
        !raw.is_null(),
        "CreateEventW: {}",
        io::Error::last_os_error()
    );
    // SAFETY: a fresh handle nothing else owns.
    unsafe { std::os::windows::io::OwnedHandle::from_raw_handle(raw) }
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

/// A value this reactor registered before (so registering it again skips the association call
/// and the proof that its base is a socket) is closed and reused by a handle that is not a socket:
/// registering it is still refused as "not a socket", and nothing stays registered. The helper
/// poll is what refuses it; the proof is made then, to word the error.
///
/// The value is registered only once one of this test's own events holds it. If something else
/// got it between the close and the events (another test's reactor opening its `\Device\Afd`
/// helper, libtest starting a thread...), the value names an object this test does not own, and
/// registering it would make the reactor poll that object (under Wine, another reactor's helper
/// handle aborts wineserver): the round is dropped and tried again with a new socket.
fn a_known_value_reused_by_a_non_socket_is_refused<const HELPER: bool>() {
    use afd_reactor::{Interest, SimSocket, Token};
    use std::os::windows::io::AsRawHandle;
    const ROUNDS: usize = 20;
    let mut h = NtHarness::<HELPER>::new();
    for round in 1..=ROUNDS {
        let s = h.socket();
        {
            // The first registration may open this reactor's helper handle (through_helper):
            // not while another test's probe is between its close and its registration.
            let _opening = may_open_sockets();
            h.reactor()
                .register(&s, Token(1), Interest::READABLE)
                .unwrap();
        }
        h.reactor().deregister(&s).unwrap();
        let value = s.raw_socket();
        let guard = no_new_sockets();
        h.close(s);
        // Wine hands out the lowest free value, Windows the last freed one (the peer's, then
        // this one): one of these two events most likely gets it.
        let events = [event_object(), event_object()];
        let reused = events.iter().any(|e| e.as_raw_handle() as u64 == value);
        eprintln!("round {round}: value {value:#x} reused by an event: {reused}");
        if !reused {
            // Not ours to lend: it may be closed, or another thread's object now.
            drop(guard);
            drop(events);
            continue;
        }
        let before = h.reactor().stats();
        let e = match h
            .reactor()
            .register(&SimSocket(value), Token(2), Interest::READABLE)
        {
            Ok(()) => panic!("{value:#x} (reused by an event) was registered"),
            Err(e) => e,
        };
        drop(guard);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not a socket"), "{e}");
        let st = h.reactor().stats();
        assert_eq!(st.registered, 0, "{st:?}");
        assert_eq!(
            st.in_flight, before.in_flight,
            "only the deregistered poll is out: {st:?}"
        );
        assert_eq!(
            st.nt.associate, before.nt.associate,
            "no association attempted"
        );
        // Where it is refused depends on the Windows, and is pinned: on Wine 8 an open non-socket
        // passes SIO_BASE_HANDLE, and a known value (this one was registered before) is not
        // verified, so the poll refuses it (one refused submit); on Wine 10 and Windows,
        // SIO_BASE_HANDLE fails on an event and the handle says it is no socket (no submit).
        let refused_at_poll = platform() == Platform::Wine(8);
        assert_eq!(
            (
                st.nt.submit - before.nt.submit,
                st.submit_failures - before.submit_failures
            ),
            if refused_at_poll { (1, 1) } else { (0, 0) },
            "on {:?}: {st:?}",
            platform()
        );
        // What is left is the deregistered socket's poll: a zombie until its cancellation packet
        // is dequeued. Polling drains it, on every Windows.
        let seen = conformance::settle_zombies(&mut h);
        assert!(
            seen.is_empty(),
            "an event after deregister and a refusal: {seen:?}"
        );
        let st = h.reactor().stats();
        assert_eq!((st.in_flight, st.zombies), (0, 0), "{st:?}");
        eprintln!(
            "refused at {}; the deregistered poll drained from {} zombie(s), {} in flight",
            if refused_at_poll {
                "the poll"
            } else {
                "base socket resolution"
            },
            before.zombies,
            before.in_flight
        );
        return;
    }
    panic!("in {ROUNDS} rounds, no closed socket value was reused by this test's events");
}

#[test]
fn a_known_value_reused_by_a_non_socket_is_refused_socket_direct() {
    a_known_value_reused_by_a_non_socket_is_refused::<false>();
}

#[test]
fn a_known_value_reused_by_a_non_socket_is_refused_through_helper() {
    a_known_value_reused_by_a_non_socket_is_refused::<true>();
}
