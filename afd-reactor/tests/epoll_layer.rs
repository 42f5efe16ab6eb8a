//! The epoll kernel against the `Kernel` contract and Linux's facts, with real sockets, natively.
//!
//! Each test drives `EpollKernel` through the trait the reactor uses: submit a poll, let the
//! socket change, dequeue its one packet and read the block. The Linux facts the emulation must
//! face each have a test here: a closed descriptor leaves epoll silently; a new file on the same
//! number ends the old polls (`LOCAL_CLOSE`); a `dup` keeps a closed descriptor's entry alive and
//! its event is dropped; a listener's readiness is `ACCEPT`; a failed non-blocking connect is
//! `CONNECT_FAIL` (and the socket keeps its error for `take_error`). Tests that need a fixed
//! descriptor number `dup2` the socket there, each test to a number of its own.
#![cfg(target_os = "linux")]

mod epoll_util;
mod net;

use afd_reactor::afd::{CompletionEntry, NtStatus, PollEvents};
use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::kernel::{HELPER_KEY, Kernel, PollVia, Post, Submitted, WAKE_KEY};
use afd_reactor::{EpollReactor, Events, Interest, Reactor, Token};
use epoll_util::{Block, LONG, move_to};
use net::nonblocking_pair;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const KEY: usize = 0x5157_0001;
const ALWAYS: PollEvents = PollEvents(PollEvents::CONNECT_FAIL.0 | PollEvents::LOCAL_CLOSE.0);
const SHORT: Duration = Duration::from_millis(50);

fn submit(k: &mut EpollKernel, via: PollVia, fd: RawFd, block: &Block, apc: usize) -> Submitted {
    // SAFETY: the block is live and untouched until its packet is dequeued (each test keeps it
    // until then).
    unsafe { k.submit_poll(via, fd as u64, block.ptr(), apc) }
}

fn dequeue(k: &mut EpollKernel, timeout: Duration) -> Vec<CompletionEntry> {
    let mut out = [CompletionEntry::zeroed(); 16];
    let n = k.dequeue(&mut out, Some(timeout)).unwrap();
    out[..n].to_vec()
}

#[track_caller]
fn dequeue_one(k: &mut EpollKernel) -> CompletionEntry {
    let got = dequeue(k, LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    got[0]
}

// --- the contract ---------------------------------------------------------------------------------

#[test]
fn a_readable_socket_completes_its_poll_with_receive() {
    let mut k = EpollKernel::new().unwrap();
    let (a, mut b) = nonblocking_pair();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let block = Block::new(fd, PollEvents::RECEIVE | ALWAYS);
    assert_eq!(
        submit(&mut k, PollVia::Socket, fd, &block, 7),
        Submitted::Queued
    );
    assert!(dequeue(&mut k, SHORT).is_empty(), "nothing to read yet");
    b.write_all(b"ping").unwrap();
    let e = dequeue_one(&mut k);
    assert_eq!(
        (e.key, e.apc_context, e.status()),
        (KEY, 7, NtStatus::SUCCESS)
    );
    assert_eq!(block.get().iosb.status(), NtStatus::SUCCESS);
    assert_eq!(block.reported(), PollEvents::RECEIVE);
}

#[test]
fn a_listener_reports_accept() {
    let mut k = EpollKernel::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = listener.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let block = Block::new(fd, PollEvents::RECEIVE | PollEvents::ACCEPT | ALWAYS);
    submit(&mut k, PollVia::Socket, fd, &block, 1);
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    dequeue_one(&mut k);
    assert_eq!(block.reported(), PollEvents::ACCEPT);
}

#[test]
fn a_peer_fin_reports_disconnect() {
    let mut k = EpollKernel::new().unwrap();
    let (a, b) = nonblocking_pair();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let block = Block::new(fd, PollEvents::DISCONNECT | PollEvents::ABORT | ALWAYS);
    submit(&mut k, PollVia::Socket, fd, &block, 1);
    b.shutdown(Shutdown::Write).unwrap();
    dequeue_one(&mut k);
    assert_eq!(block.reported(), PollEvents::DISCONNECT);
}

#[test]
fn a_reset_reports_abort_alone() {
    let mut k = EpollKernel::new().unwrap();
    let (a, b) = nonblocking_pair();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let all = PollEvents::RECEIVE | PollEvents::SEND | PollEvents::DISCONNECT | PollEvents::ABORT;
    socket2::SockRef::from(&b)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(b);
    std::thread::sleep(SHORT); // the RST has arrived
    let block = Block::new(fd, all | ALWAYS);
    submit(&mut k, PollVia::Socket, fd, &block, 1);
    dequeue_one(&mut k);
    assert_eq!(
        block.reported(),
        PollEvents::ABORT,
        "as AFD reports a reset"
    );
}

#[test]
fn a_failed_connect_reports_connect_fail_and_leaves_the_socket_error() {
    let mut k = EpollKernel::new().unwrap();
    let s = net::failing_connect(); // EINPROGRESS, then refused
    let fd = s.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let block = Block::new(fd, PollEvents::SEND | ALWAYS);
    submit(&mut k, PollVia::Socket, fd, &block, 1);
    dequeue_one(&mut k);
    let result = block.get();
    assert_eq!(result.info.reported_events(), PollEvents::CONNECT_FAIL);
    assert!(
        result.info.handles[0].status.is_error(),
        "the per-socket status says it failed"
    );
    // The socket's own error is left for the user.
    let error = s.take_error().unwrap().expect("SO_ERROR kept");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_cancel_queues_exactly_one_cancelled_packet() {
    let mut k = EpollKernel::new().unwrap();
    let (a, mut b) = nonblocking_pair();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, KEY).unwrap();
    let block = Block::new(fd, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, fd, &block, 3);
    assert_eq!(
        k.cancel(PollVia::Socket, fd as u64, block.ptr()),
        NtStatus::SUCCESS
    );
    let e = dequeue_one(&mut k);
    assert_eq!((e.apc_context, e.status()), (3, NtStatus::CANCELLED));
    b.write_all(b"late").unwrap(); // the entry is still armed: its event is dropped
    assert!(
        dequeue(&mut k, SHORT).is_empty(),
        "a cancelled poll has one packet"
    );
    assert_eq!(
        k.cancel(PollVia::Socket, fd as u64, block.ptr()),
        NtStatus::NOT_FOUND
    );
}

#[test]
fn wakes_queue_in_order_and_share_one_eventfd_write() {
    let mut k = EpollKernel::new().unwrap();
    let poster = k.poster();
    for apc in [11, 12, 13] {
        poster.post_wake(apc).unwrap();
    }
    assert_eq!(k.syscalls().wake_write, 1, "{:?}", k.syscalls());
    let got = dequeue(&mut k, LONG);
    let apcs: Vec<usize> = got.iter().map(|e| e.apc_context).collect();
    assert_eq!(apcs, [11, 12, 13]);
    assert!(
        got.iter()
            .all(|e| e.key == WAKE_KEY && e.status() == NtStatus::SUCCESS)
    );
    poster.post_wake(14).unwrap();
    assert_eq!(
        k.syscalls().wake_write,
        2,
        "the queue was emptied: the next wake writes"
    );
    assert_eq!(dequeue_one(&mut k).apc_context, 14);
}

#[test]
fn an_idle_dequeue_is_one_wait_and_nothing_else() {
    let mut k = EpollKernel::new().unwrap();
    let before = k.syscalls();
    assert!(dequeue(&mut k, Duration::from_millis(20)).is_empty());
    let after = k.syscalls();
    assert_eq!(after.wait - before.wait, 1);
    assert_eq!(after.total() - before.total(), 1, "{after:?}");
}

#[test]
fn a_regular_file_is_not_a_socket() {
    let mut k = EpollKernel::new().unwrap();
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let e = k.associate(file.as_raw_fd() as u64, KEY).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

// --- Linux facts: closed descriptors, reused numbers, dups ---------------------------------------

#[test]
fn a_closed_descriptor_leaves_epoll_silently_and_a_new_file_on_its_number_ends_its_poll() {
    let mut k = EpollKernel::new().unwrap();
    let (a, mut peer) = nonblocking_pair();
    let at = move_to(OwnedFd::from(a), 900);
    k.associate(900, KEY).unwrap();
    let old = Block::new(900, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, 900, &old, 1);
    drop(at); // closed: the entry leaves the epoll set, and nobody says so
    let _ = peer.write_all(b"after the close");
    assert!(dequeue(&mut k, SHORT).is_empty(), "no LOCAL_CLOSE on Linux");
    // A new socket gets the number: associating it ends the old poll, as LOCAL_CLOSE would.
    let (c, mut c_peer) = nonblocking_pair();
    let _new = move_to(OwnedFd::from(c), 900);
    k.associate(900, KEY + 1).unwrap();
    let e = dequeue_one(&mut k);
    assert_eq!((e.key, e.apc_context), (KEY, 1));
    assert_eq!(old.reported(), PollEvents::LOCAL_CLOSE);
    let new = Block::new(900, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, 900, &new, 2);
    c_peer.write_all(b"new").unwrap();
    let e = dequeue_one(&mut k);
    assert_eq!((e.key, e.apc_context), (KEY + 1, 2));
}

#[test]
fn a_dup_keeps_a_closed_descriptors_entry_alive_and_its_event_is_dropped() {
    let mut k = EpollKernel::new().unwrap();
    let (a, mut a_peer) = nonblocking_pair();
    let at = move_to(OwnedFd::from(a), 901);
    let dup = at.try_clone().unwrap(); // keeps the file, and so its epoll entry, alive
    k.associate(901, KEY).unwrap();
    let old = Block::new(901, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, 901, &old, 1);
    drop(at);
    let (b, mut b_peer) = nonblocking_pair();
    let _new = move_to(OwnedFd::from(b), 901);
    k.associate(901, KEY + 1).unwrap();
    assert_eq!(
        dequeue_one(&mut k).apc_context,
        1,
        "the old poll: LOCAL_CLOSE"
    );
    let new = Block::new(901, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, 901, &new, 2);
    // The old file, still open through the dup, becomes readable: epoll reports it under its
    // old data, and the kernel drops it.
    a_peer.write_all(b"old").unwrap();
    assert!(dequeue(&mut k, SHORT).is_empty());
    assert_eq!(k.stale_events(), 1);
    b_peer.write_all(b"new").unwrap();
    assert_eq!(dequeue_one(&mut k).apc_context, 2);
    drop(dup);
}

#[test]
fn a_helper_poll_on_a_reused_number_watches_the_new_file() {
    let mut k = EpollKernel::new().unwrap();
    let (a, _a_peer) = nonblocking_pair();
    let at = move_to(OwnedFd::from(a), 902);
    k.associate(902, KEY).unwrap();
    let first = Block::new(902, PollEvents::RECEIVE | ALWAYS);
    submit(&mut k, PollVia::Socket, 902, &first, 1);
    assert_eq!(
        k.cancel(PollVia::Socket, 902, first.ptr()),
        NtStatus::SUCCESS
    );
    assert_eq!(dequeue_one(&mut k).status(), NtStatus::CANCELLED);
    drop(at);
    let (b, mut b_peer) = nonblocking_pair();
    let _new = move_to(OwnedFd::from(b), 902);
    // The reactor remembers the number was associated, and polls it through the "helper".
    let block = Block::new(902, PollEvents::RECEIVE | ALWAYS);
    assert_eq!(
        submit(&mut k, PollVia::Helper(0), 902, &block, 2),
        Submitted::Queued
    );
    b_peer.write_all(b"new").unwrap();
    let e = dequeue_one(&mut k);
    assert_eq!((e.key, e.apc_context), (HELPER_KEY, 2));
    assert_eq!(block.reported(), PollEvents::RECEIVE);
}

#[test]
fn a_socket_poll_on_a_closed_number_completes_at_once_with_local_close() {
    let mut k = EpollKernel::new().unwrap();
    let (a, _peer) = nonblocking_pair();
    let at = move_to(OwnedFd::from(a), 903);
    k.associate(903, KEY).unwrap();
    drop(at);
    let block = Block::new(903, PollEvents::RECEIVE | ALWAYS);
    assert_eq!(
        submit(&mut k, PollVia::Socket, 903, &block, 1),
        Submitted::Completed
    );
    assert_eq!(block.reported(), PollEvents::LOCAL_CLOSE);
    assert!(
        dequeue(&mut k, SHORT).is_empty(),
        "completed at submit: no packet"
    );
}

// --- what can be registered: every AsFd epoll can poll ---------------------------------------------

/// Register `fd` for readable, run `make_ready`, and expect its event.
#[track_caller]
fn readable_after(source: &impl afd_reactor::Source, make_ready: impl FnOnce()) {
    let mut r: EpollReactor = Reactor::new().unwrap();
    r.register(source, Token(1), Interest::READABLE).unwrap();
    let mut events = Events::with_capacity(8);
    r.poll(&mut events, Some(SHORT)).unwrap();
    assert!(
        events.is_empty(),
        "not ready yet: {:?}",
        events.iter().next()
    );
    make_ready();
    r.poll(&mut events, Some(LONG)).unwrap();
    let e = events.iter().next().expect("an event");
    assert!(e.token() == Token(1) && e.is_readable(), "{e:?}");
    r.deregister(source).unwrap();
}

#[test]
fn a_pipe_can_be_registered() {
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    readable_after(&reader, || writer.write_all(b"x").unwrap());
    let mut buf = [0u8; 1];
    reader.read_exact(&mut buf).unwrap();
}

#[test]
fn an_eventfd_can_be_registered() {
    // SAFETY: creates a new descriptor, owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is new and owned by nobody else.
    let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
    readable_after(&eventfd, || {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our own descriptor.
        assert_eq!(unsafe { libc::write(fd, one.as_ptr().cast(), 8) }, 8);
    });
}

#[test]
fn a_timerfd_can_be_registered() {
    // SAFETY: creates a new descriptor, owned below.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    assert!(fd >= 0);
    // SAFETY: `fd` is new and owned by nobody else.
    let timerfd = unsafe { OwnedFd::from_raw_fd(fd) };
    readable_after(&timerfd, || {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            },
        };
        // SAFETY: arms our own timer with a valid itimerspec; no old value is asked for.
        let ret = unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) };
        assert_eq!(ret, 0);
    });
}

#[test]
fn a_pidfd_can_be_registered_and_is_readable_when_the_child_exits() {
    let mut child = std::process::Command::new("sleep")
        .arg("1")
        .spawn()
        .unwrap();
    // SAFETY: `pidfd_open` creates a new descriptor (owned below) for our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
    assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
    // SAFETY: `fd` is new and owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    readable_after(&pidfd, || {}); // the child exits within 1 s
    child.wait().unwrap();
}
