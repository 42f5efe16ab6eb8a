//! The epoll kernel's waits against the `Kernel` contract and Linux's facts, natively.
//!
//! Each test drives `EpollKernel` through the trait the reactor uses (no reactor): open a wait on
//! a descriptor, arm it, signal the object, dequeue the wait's one packet. The Linux facts the
//! emulation must face each have a test: a wait does not consume the signal (an eventfd stays
//! readable: a wait armed again reports it again); the kernel waits on its own duplicate, so the
//! user's descriptor may be closed and its number reused; epoll cannot watch a regular file; a
//! cancelled wait's entry stays armed, and its event is dropped.
//!
//! The tests take one lock each: a test that counts on which number a new descriptor gets (the
//! lowest free one) must not race another test opening descriptors.
#![cfg(target_os = "linux")]

mod epoll_util;

use afd_reactor::afd::{CompletionEntry, NtStatus, PollEvents};
use afd_reactor::kernel::epoll::EpollKernel;
use afd_reactor::kernel::{
    Kernel, PollVia, Post, Submitted, WAIT_KEY, WAIT_TAG, WAKE_KEY, WaitCancel,
};
use epoll_util::{Block, LONG};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(50);

static SERIAL: Mutex<()> = Mutex::new(());

/// Run one test at a time in this file (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A non-blocking eventfd with counter 0, as a `File` (reads and writes of 8 bytes).
fn eventfd() -> File {
    // SAFETY: no pointers; the result is a new descriptor, or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
    // SAFETY: `fd` is new and owned by nobody else.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(efd: &File) {
    (&*efd).write_all(&1u64.to_ne_bytes()).unwrap();
}

/// Read (and so reset) the eventfd's counter.
fn consume(efd: &File) -> u64 {
    let mut buf = [0u8; 8];
    (&*efd).read_exact(&mut buf).unwrap();
    u64::from_ne_bytes(buf)
}

fn raw(f: &impl AsRawFd) -> u64 {
    f.as_raw_fd() as u64
}

fn dequeue(k: &mut EpollKernel, room: usize, timeout: Duration) -> Vec<CompletionEntry> {
    let mut out = vec![CompletionEntry::zeroed(); room];
    let n = k.dequeue(&mut out, Some(timeout)).unwrap();
    out.truncate(n);
    out
}

#[track_caller]
fn dequeue_one(k: &mut EpollKernel) -> CompletionEntry {
    let got = dequeue(k, 16, LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    got[0]
}

#[track_caller]
fn assert_wait_packet(e: CompletionEntry, apc_context: usize) {
    assert_eq!(
        (e.key, e.apc_context, e.status()),
        (WAIT_KEY, apc_context, NtStatus::SUCCESS)
    );
}

#[track_caller]
fn assert_nothing(k: &mut EpollKernel) {
    let got = dequeue(k, 16, SHORT);
    assert!(got.is_empty(), "{got:?}");
}

/// An ApcContext as the reactor makes them: tagged.
const fn apc(n: usize) -> usize {
    WAIT_TAG | n
}

#[test]
fn a_written_eventfd_reports_one_packet_per_arming_and_is_not_consumed() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.arm_wait(id, apc(1)).unwrap();
    assert_nothing(&mut k);
    signal(&efd);
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    // Oneshot: not reported again until armed again, though still readable.
    assert_nothing(&mut k);
    // The wait consumed nothing: armed again, the counter (still 1) reports at once.
    k.arm_wait(id, apc(2)).unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(2));
    assert_eq!(consume(&efd), 1, "the counter is the user's to read");
    // Read: not signaled any more; armed, it waits for the next write.
    k.arm_wait(id, apc(3)).unwrap();
    assert_nothing(&mut k);
    signal(&efd);
    assert_wait_packet(dequeue_one(&mut k), apc(3));
    k.close_wait(id);
    assert_eq!(k.unarmed_wait_events(), 0);
}

#[test]
fn a_wait_cancelled_before_the_signal_reports_nothing() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.arm_wait(id, apc(1)).unwrap();
    assert_nothing(&mut k);
    let before = k.syscalls();
    assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
    assert_eq!(k.syscalls(), before, "a cancel makes no system call");
    signal(&efd);
    // The entry stayed armed: it fires, and the event is dropped.
    assert_nothing(&mut k);
    assert_eq!(k.unarmed_wait_events(), 1);
    // Armed again, the wait hears of the signal (still there: nothing consumed it).
    k.arm_wait(id, apc(2)).unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(2));
    k.close_wait(id);
}

#[test]
fn a_wait_cancelled_with_its_packet_queued_says_queued_and_the_packet_comes_once() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    // Two wakes ahead of the wait in epoll's ready list (the wake eventfd became readable first),
    // and room for two packets: the wait's packet is made by the same `epoll_wait` but left
    // queued in the kernel.
    let poster = k.poster();
    poster.post_wake(10).unwrap();
    poster.post_wake(11).unwrap();
    signal(&efd);
    k.arm_wait(id, apc(1)).unwrap();
    let got = dequeue(&mut k, 2, LONG);
    assert_eq!(
        got.iter()
            .map(|e| (e.key, e.apc_context))
            .collect::<Vec<_>>(),
        [(WAKE_KEY, 10), (WAKE_KEY, 11)]
    );
    let waits_before = k.syscalls().wait;
    assert_eq!(k.cancel_wait(id), WaitCancel::Queued);
    // The packet is already made: it comes without another `epoll_wait`, once.
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    assert_eq!(k.syscalls().wait, waits_before);
    assert_nothing(&mut k);
    k.close_wait(id);
}

#[test]
fn the_wait_keeps_its_own_duplicate_when_the_users_descriptor_is_closed_and_reused() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let kept = efd.try_clone().unwrap();
    let number = efd.as_raw_fd();
    let id = k.open_wait(raw(&efd)).unwrap();
    drop(efd);
    // The number is free again: the next descriptor takes it, a new object.
    let other = eventfd();
    assert_eq!(other.as_raw_fd(), number);
    k.arm_wait(id, apc(1)).unwrap();
    signal(&other);
    assert_nothing(&mut k);
    signal(&kept);
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    // Armed again and cancelled: its entry stays armed in epoll.
    assert_eq!(consume(&kept), 1);
    k.arm_wait(id, apc(2)).unwrap();
    assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
    k.close_wait(id);
    // Closing the wait deleted the duplicate's entry: the user's descriptor for the same open
    // file (`kept`) does not keep it alive, so signaling it now reports nothing, not even to the
    // wait that takes the freed index.
    let id = k.open_wait(raw(&other)).unwrap();
    k.arm_wait(id, apc(3)).unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(3));
    k.arm_wait(id, apc(4)).unwrap();
    assert_eq!(consume(&other), 1);
    signal(&kept);
    assert_nothing(&mut k);
    assert_eq!((k.unarmed_wait_events(), k.stale_events()), (0, 0));
    assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
    k.close_wait(id);
}

#[test]
fn a_pidfd_reports_once_when_the_child_exits() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("0.3")
        .spawn()
        .unwrap();
    // SAFETY: `pidfd_open` creates a new descriptor (owned below) for our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
    assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
    // SAFETY: `fd` is new and owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let id = k.open_wait(raw(&pidfd)).unwrap();
    drop(pidfd);
    k.arm_wait(id, apc(7)).unwrap();
    assert_nothing(&mut k); // still sleeping
    assert_wait_packet(dequeue_one(&mut k), apc(7));
    assert!(child.try_wait().unwrap().is_some(), "exited");
    // Level: an exited process stays signaled, one packet per arming.
    k.arm_wait(id, apc(8)).unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(8));
    assert_nothing(&mut k);
    k.close_wait(id);
}

#[test]
fn a_timerfd_and_a_pipe_can_be_waited_on() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    // SAFETY: no pointers; a new descriptor, or -1.
    let tfd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    assert!(tfd >= 0, "timerfd_create: {}", io::Error::last_os_error());
    // SAFETY: `tfd` is new and owned by nobody else.
    let tfd = unsafe { OwnedFd::from_raw_fd(tfd) };
    let timer = k.open_wait(raw(&tfd)).unwrap();
    k.arm_wait(timer, apc(1)).unwrap();
    let (reader, mut writer) = io::pipe().unwrap();
    let pipe = k.open_wait(raw(&reader)).unwrap();
    k.arm_wait(pipe, apc(2)).unwrap();
    assert_nothing(&mut k);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        },
    };
    // SAFETY: `spec` is valid for reads; a null old value is allowed.
    let ret = unsafe { libc::timerfd_settime(tfd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    assert_eq!(ret, 0, "timerfd_settime: {}", io::Error::last_os_error());
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    writer.write_all(b"x").unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(2));
    // A pipe whose writer is gone is "signaled" too (a hang-up): the wait completes.
    let mut buf = [0u8; 1];
    (&reader).read_exact(&mut buf).unwrap();
    k.arm_wait(pipe, apc(3)).unwrap();
    assert_nothing(&mut k);
    drop(writer);
    assert_wait_packet(dequeue_one(&mut k), apc(3));
    k.close_wait(timer);
    k.close_wait(pipe);
}

#[test]
fn a_thousand_eventfds_report_a_thousand_packets() {
    let _serial = serial();
    const N: usize = 1000;
    let mut k = EpollKernel::new().unwrap();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        // The user's descriptor is closed at once: only the kernel's duplicates stay open.
        let efd = eventfd();
        signal(&efd);
        let id = k.open_wait(raw(&efd)).unwrap();
        k.arm_wait(id, apc(i)).unwrap();
        ids.push(id);
    }
    let mut seen = vec![false; N];
    let mut count = 0;
    while count < N {
        let got = dequeue(&mut k, 256, LONG);
        assert!(!got.is_empty(), "only {count} packets of {N}");
        for e in got {
            assert_eq!(e.key, WAIT_KEY);
            let i = e.apc_context & !WAIT_TAG;
            assert!(!seen[i], "packet {i} twice");
            seen[i] = true;
            count += 1;
        }
    }
    assert_nothing(&mut k);
    let calls = k.syscalls();
    assert_eq!(
        (calls.dup, calls.add, calls.modify),
        (N as u64, N as u64, 0)
    );
    for id in ids {
        k.close_wait(id);
    }
    let calls = k.syscalls();
    assert_eq!((calls.delete, calls.close), (N as u64, N as u64));
}

#[test]
fn system_calls_per_open_arm_signal_cancel_and_close() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let c0 = k.syscalls();
    let id = k.open_wait(raw(&efd)).unwrap();
    let c1 = k.syscalls();
    assert_eq!(
        (c1.total() - c0.total(), c1.dup - c0.dup),
        (1, 1),
        "open: one dup"
    );
    k.arm_wait(id, apc(1)).unwrap();
    let c2 = k.syscalls();
    assert_eq!(
        (c2.total() - c1.total(), c2.add - c1.add),
        (1, 1),
        "first arm: an add"
    );
    signal(&efd);
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    let c3 = k.syscalls();
    assert_eq!(
        (c3.total() - c2.total(), c3.wait - c2.wait),
        (1, 1),
        "signal: the epoll_wait that reports it"
    );
    consume(&efd);
    k.arm_wait(id, apc(2)).unwrap();
    let c4 = k.syscalls();
    assert_eq!(
        (c4.total() - c3.total(), c4.modify - c3.modify),
        (1, 1),
        "arm again: a mod"
    );
    assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
    assert_eq!(k.syscalls(), c4, "cancel: none");
    k.close_wait(id);
    let c5 = k.syscalls();
    assert_eq!(
        (
            c5.total() - c4.total(),
            c5.delete - c4.delete,
            c5.close - c4.close
        ),
        (2, 1, 1),
        "close: a del and a close"
    );
    // A wait never armed is closed with no del.
    let id = k.open_wait(raw(&efd)).unwrap();
    let c6 = k.syscalls();
    k.close_wait(id);
    let c7 = k.syscalls();
    assert_eq!((c7.total() - c6.total(), c7.close - c6.close), (1, 1));
}

#[test]
fn a_descriptor_that_names_nothing_is_invalid_input() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    for bad in [u64::MAX, -1_i64 as u64, i32::MAX as u64, 1 << 40] {
        let e = k.open_wait(bad).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:#x}: {e}");
    }
    let efd = eventfd();
    let closed = raw(&efd);
    drop(efd);
    let e = k.open_wait(closed).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

#[test]
fn a_regular_file_cannot_be_armed() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let file = File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let id = k.open_wait(raw(&file)).unwrap();
    let e = k.arm_wait(id, apc(1)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert_nothing(&mut k);
    let before = k.syscalls();
    k.close_wait(id); // never added: a close, no del
    assert_eq!(k.syscalls().total() - before.total(), 1);
}

#[test]
fn a_waits_number_that_a_closed_socket_had_ends_the_sockets_polls_and_refuses_new_ones() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    // One system call makes both: every number below `a`'s stays in use until the dup.
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, 0x5157_0001).unwrap();
    let block = Block::new(fd, PollEvents::RECEIVE);
    // SAFETY: the block is live and untouched until its packet is dequeued below.
    let submitted = unsafe { k.submit_poll(PollVia::Socket, fd as u64, block.ptr(), 5) };
    assert_eq!(submitted, Submitted::Queued);
    drop(a);
    // The duplicate takes the socket's number (the lowest free one).
    let id = k.open_wait(raw(&efd)).unwrap();
    let e = dequeue_one(&mut k);
    assert_eq!((e.key, e.apc_context), (0x5157_0001, 5));
    assert_eq!(block.reported(), PollEvents::LOCAL_CLOSE);
    k.arm_wait(id, apc(1)).unwrap();
    // A helper poll on the number (the wait's now) is refused, and the wait's entry untouched.
    let helper = Block::new(fd, PollEvents::RECEIVE);
    // SAFETY: as above; a refused poll leaves the block to us at once.
    let submitted = unsafe { k.submit_poll(PollVia::Helper(0), fd as u64, helper.ptr(), 6) };
    assert!(matches!(submitted, Submitted::Refused(_)), "{submitted:?}");
    signal(&efd);
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    assert_nothing(&mut k);
    k.close_wait(id);
}

#[test]
fn a_wait_takes_over_an_entry_left_by_a_closed_descriptor_of_the_same_file() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    k.associate(fd as u64, 0x5157_0002).unwrap();
    // A second descriptor keeps `a`'s file open, and so its entry (file, `fd`) in the set.
    let other = a.try_clone().unwrap();
    drop(a);
    // The duplicate of `other` takes `fd` again: (file, `fd`) is in the set already (`EEXIST`),
    // and the wait takes the entry over.
    let id = k.open_wait(raw(&other)).unwrap();
    let before = k.syscalls();
    k.arm_wait(id, apc(1)).unwrap();
    let after = k.syscalls();
    assert_eq!(
        (after.add - before.add, after.modify - before.modify),
        (1, 1),
        "an add refused, then a mod"
    );
    assert_nothing(&mut k);
    b.write_all(b"x").unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    assert_eq!(k.stale_events(), 0);
    k.close_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn arming_an_armed_wait_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.arm_wait(id, apc(1)).unwrap();
    let _ = k.arm_wait(id, apc(2));
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn cancelling_an_unarmed_wait_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.cancel_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn cancelling_a_wait_whose_packet_was_dequeued_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    signal(&efd);
    let id = k.open_wait(raw(&efd)).unwrap();
    k.arm_wait(id, apc(1)).unwrap();
    assert_wait_packet(dequeue_one(&mut k), apc(1));
    k.cancel_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn closing_an_armed_wait_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.arm_wait(id, apc(1)).unwrap();
    k.close_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn closing_a_wait_whose_packet_is_queued_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    // As in `a_wait_cancelled_with_its_packet_queued_...`: the packet stays in the kernel.
    k.poster().post_wake(10).unwrap();
    k.poster().post_wake(11).unwrap();
    signal(&efd);
    k.arm_wait(id, apc(1)).unwrap();
    let got = dequeue(&mut k, 2, LONG);
    assert!(got.iter().all(|e| e.key == WAKE_KEY), "{got:?}");
    k.close_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn an_unknown_wait_panics() {
    let _serial = serial();
    let mut k = EpollKernel::new().unwrap();
    let efd = eventfd();
    let id = k.open_wait(raw(&efd)).unwrap();
    k.close_wait(id);
    k.close_wait(id);
}
