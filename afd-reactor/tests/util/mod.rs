//! Helpers shared by the Windows integration tests.
#![allow(dead_code)]

use afd_reactor::afd::{AfdPollInfo, CompletionEntry, IoStatusBlock, NtStatus, PollEvents};
use afd_reactor::nt::{self, CompletionPort};
use std::os::windows::io::{AsRawSocket, BorrowedHandle, BorrowedSocket};
use std::time::Duration;

/// Dequeue exactly one entry within `timeout`.
#[track_caller]
pub fn dequeue_one(port: &CompletionPort, timeout: Duration) -> CompletionEntry {
    let mut entries = [CompletionEntry::zeroed(); 1];
    let n = port.dequeue(&mut entries, Some(timeout)).unwrap();
    assert_eq!(n, 1, "no completion within {timeout:?}");
    entries[0]
}

/// Assert that nothing arrives within `timeout`.
#[track_caller]
pub fn expect_nothing(port: &CompletionPort, timeout: Duration) {
    let mut entries = [CompletionEntry::zeroed(); 4];
    let n = port.dequeue(&mut entries, Some(timeout)).unwrap();
    assert_eq!(n, 0, "unexpected completions: {:?}", &entries[..n]);
}

/// The kernel-owned buffers of one poll, on the heap at a fixed address.
///
/// Tests keep it alive until they have dequeued the poll's packet. Should a test panic while the
/// poll may still be in flight, `Drop` leaks the buffers so the kernel never writes freed memory.
pub struct PollBuf {
    buffers: *mut Buffers,
    in_flight: bool,
}

pub struct Buffers {
    pub iosb: IoStatusBlock,
    pub info: AfdPollInfo,
}

impl PollBuf {
    pub fn new(socket: BorrowedSocket<'_>, events: PollEvents) -> Self {
        let buffers = Box::into_raw(Box::new(Buffers {
            iosb: IoStatusBlock::pending(),
            info: AfdPollInfo::new(socket.as_raw_socket() as usize, events),
        }));
        Self {
            buffers,
            in_flight: false,
        }
    }

    /// Submit on `target`; the caller dequeues the packet before reading the buffers.
    pub fn submit(&mut self, target: BorrowedHandle<'_>, apc: usize) -> NtStatus {
        // SAFETY: `buffers` is a live heap allocation with a stable address that is freed only by
        // Drop, and not while the test is unwinding with the poll possibly in flight.
        let st = unsafe {
            nt::submit_poll(
                target,
                &raw mut (*self.buffers).iosb,
                &raw mut (*self.buffers).info,
                apc,
            )
        };
        self.in_flight = st == NtStatus::PENDING || st.is_success();
        st
    }

    /// The buffers; read them only after the poll's packet was dequeued.
    pub fn get(&self) -> &Buffers {
        // SAFETY: live allocation (see `submit`); tests read it only after the kernel is done.
        unsafe { &*self.buffers }
    }

    pub fn iosb(&self) -> *const IoStatusBlock {
        // SAFETY: only the address is taken.
        unsafe { &raw const (*self.buffers).iosb }
    }

    pub fn reported(&self) -> PollEvents {
        self.get().info.reported_events()
    }
}

impl Drop for PollBuf {
    fn drop(&mut self) {
        if std::thread::panicking() && self.in_flight {
            return; // the kernel may still hold the buffers: leak them
        }
        // SAFETY: allocated by Box::into_raw in `new`, freed once, here.
        drop(unsafe { Box::from_raw(self.buffers) });
    }
}
