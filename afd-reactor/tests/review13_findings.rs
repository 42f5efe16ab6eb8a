//! The adversarial review of the epoll kernel (issue 13): each finding as a test that failed on
//! the code under review and passes since its fix (F1: Edge re-armed `EPOLLIN` for an AFD event
//! it did not stand for, and spun; F2: a TCP socket not yet connected reports `EPOLLHUP`; F3: an
//! error alone is not a reset; F4: an entry added "for nothing" still reported hang-ups, level-
//! triggered), then probes of what was checked and found sound.
#![cfg(target_os = "linux")]

mod epoll_util;
mod net;

use afd_reactor::afd::{CompletionEntry, PollEvents};
use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::kernel::{HELPER_KEY, Kernel, PollVia, Post, Submitted, WAKE_KEY};
use afd_reactor::{EpollReactor, Events, Interest, Mode, Token};
use epoll_util::{Block, LONG, move_to, wait_for};
use net::nonblocking_pair;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `epoll_wait` calls made by one `poll(200 ms)` that delivers nothing.
fn waits_in_a_quiet_poll(r: &mut EpollReactor) -> u64 {
    let mut events = Events::with_capacity(16);
    let before = r.kernel().syscalls().wait;
    let start = Instant::now();
    r.poll(&mut events, Some(Duration::from_millis(200)))
        .unwrap();
    assert!(events.is_empty(), "{:?}", events.iter().collect::<Vec<_>>());
    assert!(start.elapsed() >= Duration::from_millis(190));
    r.kernel().syscalls().wait - before
}

// =================================================================================================
// Finding 1 (busy loop): in Edge mode, RECEIVE and ACCEPT share EPOLLIN.
//
// READABLE maps to RECEIVE | ACCEPT | DISCONNECT | ABORT. Once Edge has reported RECEIVE, the
// next poll asks for ACCEPT | DISCONNECT | ABORT; `epoll_events` arms EPOLLIN for ACCEPT; on a
// non-listener EPOLLIN maps back to RECEIVE, which the poll does not want, so `on_event` re-arms
// (EPOLL_CTL_MOD), and the level-triggered EPOLLIN fires at once: `dequeue` spins at 100 % CPU
// until the data is read (or forever, after a FIN: EPOLLIN never clears). Same on a listener
// with ACCEPT reported and a connection not yet accepted.
// =================================================================================================

#[test]
fn f1_edge_readable_with_unread_data_does_not_spin() {
    let mut r = EpollReactor::new().unwrap();
    let (a, mut b) = nonblocking_pair();
    r.register_with_mode(&a, Token(1), Interest::READABLE, Mode::Edge)
        .unwrap();
    b.write_all(b"ping").unwrap();
    let mut events = Events::with_capacity(16);
    let e = wait_for(&mut r, &mut events, Token(1));
    assert!(e.is_readable());
    // Edge: nothing more until reregister, whatever the user reads; the user reads later.
    let waits = waits_in_a_quiet_poll(&mut r);
    assert!(
        waits < 10,
        "one quiet 200 ms poll made {waits} epoll_wait calls (busy loop)"
    );
}

#[test]
fn f1_edge_readable_after_fin_does_not_spin_even_after_reading_to_eof() {
    let mut r = EpollReactor::new().unwrap();
    let (mut a, b) = nonblocking_pair();
    r.register_with_mode(&a, Token(1), Interest::READABLE, Mode::Edge)
        .unwrap();
    b.shutdown(Shutdown::Write).unwrap();
    let mut events = Events::with_capacity(16);
    let e = wait_for(&mut r, &mut events, Token(1));
    assert!(e.is_readable() && e.is_read_closed());
    let mut buf = [0u8; 16];
    assert_eq!(
        a.read(&mut buf).unwrap(),
        0,
        "EOF: the user has read everything"
    );
    let waits = waits_in_a_quiet_poll(&mut r);
    assert!(
        waits < 10,
        "one quiet 200 ms poll made {waits} epoll_wait calls (busy loop)"
    );
    drop(b);
}

#[test]
fn f1_edge_listener_with_a_connection_waiting_does_not_spin() {
    let mut r = EpollReactor::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    r.register_with_mode(&listener, Token(1), Interest::READABLE, Mode::Edge)
        .unwrap();
    let _c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut events = Events::with_capacity(16);
    assert!(wait_for(&mut r, &mut events, Token(1)).is_readable());
    let waits = waits_in_a_quiet_poll(&mut r);
    assert!(
        waits < 10,
        "one quiet 200 ms poll made {waits} epoll_wait calls (busy loop)"
    );
}

// =================================================================================================
// Finding 2 (lost event): EPOLLHUP is taken as permanent, but a TCP socket that has not connected
// yet (state CLOSE) reports EPOLLHUP until it connects.
//
// A paused registration (Interest::NONE, "still reports a failed connect") of a fresh socket:
// the first epoll_wait reports EPOLLHUP, which maps to DISCONNECT, which the poll (CONNECT_FAIL |
// LOCAL_CLOSE) does not want; `on_event` leaves it pending *and disarmed*. The connect then
// fails (EPOLLERR) and nobody hears it.
// =================================================================================================

fn closed_port() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn f2_a_paused_registration_made_before_connect_still_reports_the_failed_connect() {
    use socket2::{Domain, Socket, Type};
    let mut r = EpollReactor::new().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    r.register(&s, Token(1), Interest::NONE).unwrap();
    let mut events = Events::with_capacity(16);
    r.poll(&mut events, Some(Duration::from_millis(50)))
        .unwrap();
    assert!(events.is_empty(), "nothing to report before connect");
    match s.connect(&closed_port().into()) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        other => panic!("expected a connect in progress, got {other:?}"),
    }
    let e = wait_for(&mut r, &mut events, Token(1));
    assert!(e.is_error(), "{e:?}");
}

/// The same fact seen from WRITABLE: a socket that has not connected reports DISCONNECT
/// (`is_read_closed`) and SEND before `connect` is even called.
#[test]
fn f2_a_socket_not_yet_connected_is_not_read_closed() {
    use socket2::{Domain, Socket, Type};
    let mut r = EpollReactor::new().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    r.register(&s, Token(1), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let mut events = Events::with_capacity(16);
    r.poll(&mut events, Some(Duration::from_millis(50)))
        .unwrap();
    let got: Vec<_> = events.iter().collect();
    assert!(
        got.iter().all(|e| !e.is_read_closed()),
        "a socket that never connected reported read-closed: {got:?}"
    );
}

// =================================================================================================
// Finding 3 (wrong mapping): every EPOLLERR that is not a failed TCP connect becomes ABORT alone
// (reset: read-closed and write-closed), including a connected UDP socket's ICMP error, which
// leaves the socket usable, and the readiness reported with it is dropped.
// =================================================================================================

#[test]
fn f3_a_udp_icmp_error_is_not_a_reset() {
    let mut r = EpollReactor::new().unwrap();
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_nonblocking(true).unwrap();
    u.connect(dead_addr).unwrap();
    r.register(&u, Token(1), Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let mut events = Events::with_capacity(16);
    // Writable first (the socket is idle).
    let e = wait_for(&mut r, &mut events, Token(1));
    assert!(e.is_writable());
    u.send(b"x").unwrap(); // ICMP port unreachable comes back: SO_ERROR = ECONNREFUSED
    std::thread::sleep(Duration::from_millis(50));
    let e = wait_for(&mut r, &mut events, Token(1));
    assert!(
        !e.is_reset() && !e.is_read_closed() && !e.is_write_closed(),
        "a UDP socket's ICMP error reported as a reset: {e:?}"
    );
    // And the socket is still fine.
    assert!(u.take_error().unwrap().is_some());
    u.send(b"y").unwrap();
}

// =================================================================================================
// Probes: checked and found sound (these pass).
// =================================================================================================

/// A reset on the accepting side (whose RTT comes from the handshake's final ACK) is ABORT, not
/// CONNECT_FAIL.
#[test]
fn probe_a_reset_on_an_accepted_socket_is_not_a_failed_connect() {
    for _ in 0..20 {
        let mut r = EpollReactor::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (srv, _) = listener.accept().unwrap();
        srv.set_nonblocking(true).unwrap();
        r.register(&srv, Token(1), Interest::READABLE).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
        let mut events = Events::with_capacity(16);
        let e = wait_for(&mut r, &mut events, Token(1));
        assert!(e.is_reset() && !e.is_error(), "{e:?}");
    }
}

/// Wakes posted from many threads while the kernel dequeues with a one-entry buffer: each wake
/// arrives exactly once, none lost.
#[test]
fn probe_wakes_from_many_threads_racing_the_dequeue_are_each_delivered_once() {
    let mut k = EpollKernel::new().unwrap();
    const THREADS: usize = 8;
    const EACH: usize = 5_000;
    let done = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = k.poster();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    p.post_wake(t * EACH + i + 1).unwrap();
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut out = [CompletionEntry::zeroed(); 1];
    while seen.len() < THREADS * EACH {
        let n = k.dequeue(&mut out, Some(LONG)).unwrap();
        assert_eq!(n, 1, "a wake lost: {} of {}", seen.len(), THREADS * EACH);
        assert_eq!(out[0].key, WAKE_KEY);
        assert!(
            seen.insert(out[0].apc_context),
            "duplicate {}",
            out[0].apc_context
        );
    }
    for h in handles {
        h.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let n = k.dequeue(&mut out, Some(Duration::ZERO)).unwrap();
    assert_eq!(n, 0, "nothing more");
    // The eventfd is not left signalled: an idle wait is one epoll_wait.
    let w = k.syscalls().wait;
    assert_eq!(
        k.dequeue(&mut out, Some(Duration::from_millis(20)))
            .unwrap(),
        0
    );
    assert_eq!(k.syscalls().wait - w, 1);
}

/// One epoll event completing two polls of one descriptor, dequeued one entry at a time: two
/// packets, one each, the second without a new epoll event.
#[test]
fn probe_one_event_completing_two_polls_with_a_one_entry_buffer() {
    let mut k = EpollKernel::new().unwrap();
    let (a, mut b) = nonblocking_pair();
    let fd = a.as_raw_fd();
    let x = Block::new(fd, PollEvents::RECEIVE);
    let y = Block::new(fd, PollEvents::RECEIVE | PollEvents::SEND);
    // SAFETY: blocks live until their packets are dequeued below.
    unsafe {
        assert_eq!(
            k.submit_poll(PollVia::Helper(0), fd as u64, x.0, 1 << 63 | 1),
            Submitted::Queued
        );
        assert_eq!(
            k.submit_poll(PollVia::Helper(0), fd as u64, y.0, 1 << 63 | 2),
            Submitted::Queued
        );
    }
    b.write_all(b"x").unwrap();
    let mut out = [CompletionEntry::zeroed(); 1];
    let mut got = Vec::new();
    for _ in 0..2 {
        assert_eq!(k.dequeue(&mut out, Some(LONG)).unwrap(), 1);
        assert_eq!(out[0].key, HELPER_KEY);
        got.push(out[0].apc_context & 3);
    }
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(
        k.dequeue(&mut out, Some(Duration::from_millis(20)))
            .unwrap(),
        0
    );
}

/// A signal interrupting `poll(None)` (EINTR) neither returns early nor loses the wake after it.
#[test]
fn probe_eintr_during_an_endless_poll() {
    extern "C" fn on_usr1(_: libc::c_int) {}
    // SAFETY: installing a handler that does nothing, without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let mut r = EpollReactor::new().unwrap();
    let waker = r.waker(Token(9)).unwrap();
    // SAFETY: pthread_self of this thread.
    let me = unsafe { libc::pthread_self() };
    let t = std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: the polling thread lives until this thread is joined.
            unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
        }
        std::thread::sleep(Duration::from_millis(20));
        waker.wake().unwrap();
    });
    let mut events = Events::with_capacity(4);
    r.poll(&mut events, None).unwrap();
    t.join().unwrap();
    assert!(events.iter().any(|e| e.is_wake() && e.token() == Token(9)));
}

/// A pipe whose write end closes: EPOLLHUP alone. Level reports it (read-closed); Edge and Oneshot
/// report it once and then stay quiet without spinning.
#[test]
fn probe_pipe_hangup_in_every_mode() {
    for mode in [Mode::Level, Mode::Oneshot, Mode::Edge] {
        let mut r = EpollReactor::new().unwrap();
        let (rd, wr) = io::pipe().unwrap();
        r.register_with_mode(&rd, Token(1), Interest::READABLE, mode)
            .unwrap();
        drop(wr);
        let mut events = Events::with_capacity(16);
        let e = wait_for(&mut r, &mut events, Token(1));
        assert!(e.is_readable() && e.is_read_closed(), "{mode:?}: {e:?}");
        if mode != Mode::Level {
            let waits = waits_in_a_quiet_poll(&mut r);
            assert!(waits < 10, "{mode:?}: {waits} waits");
        }
        r.deregister(&rd).unwrap();
        let mut events = Events::with_capacity(16);
        r.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(r.stats().zombies, 0);
    }
}

// =================================================================================================
// Finding 4 (busy loop): `associate` is `EPOLL_CTL_ADD` with events 0, documented as "disabled".
// Linux ORs EPOLLERR | EPOLLHUP into every ADD, so the entry is armed, level-triggered and
// without EPOLLONESHOT, for errors and hang-ups. Normally the first poll's MOD follows at once,
// but when `register` fails after a successful association (the `AlreadyExists` branch: the old
// registration on that number is a hinted one with no poll out), nothing ever MODs the entry:
// a socket there that hangs up (a reset, both sides shut, or simply a TCP socket that has not
// connected yet) makes every `epoll_wait` return at once, for as long as it lives.
// =================================================================================================

#[test]
fn f4_an_associated_socket_without_a_poll_does_not_wake_the_loop() {
    use socket2::{Domain, Socket, Type};
    let mut k = EpollKernel::new().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap(); // TCP CLOSE: EPOLLHUP
    k.associate(s.as_raw_fd() as u64, 0x1000).unwrap();
    let mut out = [CompletionEntry::zeroed(); 4];
    let before = k.syscalls().wait;
    assert_eq!(
        k.dequeue(&mut out, Some(Duration::from_millis(200)))
            .unwrap(),
        0
    );
    let waits = k.syscalls().wait - before;
    assert!(
        waits < 10,
        "an idle 200 ms dequeue made {waits} epoll_wait calls"
    );
}

#[test]
fn f4_a_refused_registration_leaves_no_level_triggered_entry_behind() {
    use socket2::{Domain, Socket, Type};
    const AT: RawFd = 913;
    let mut r = EpollReactor::new().unwrap();
    let (a, mut b) = nonblocking_pair();
    let a = TcpStream::from(move_to(a.into(), AT));
    // Registered once, deregistered, registered again: the hint puts it on the helper path.
    r.register(&a, Token(1), Interest::READABLE).unwrap();
    r.deregister(&a).unwrap();
    r.register_with_mode(&a, Token(1), Interest::READABLE, Mode::Oneshot)
        .unwrap();
    b.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(16);
    assert!(wait_for(&mut r, &mut events, Token(1)).is_readable()); // Oneshot: no poll out now
    // Closed behind the reactor's back; a new, not yet connected socket gets its number.
    drop(a);
    let t = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let t = Socket::from(move_to(t.into(), AT));
    let e = r.register(&t, Token(2), Interest::READABLE).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    let waits = waits_in_a_quiet_poll(&mut r);
    assert!(
        waits < 10,
        "one quiet 200 ms poll made {waits} epoll_wait calls (busy loop)"
    );
    drop(t);
}
