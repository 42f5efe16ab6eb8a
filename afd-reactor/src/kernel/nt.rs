//! The real kernel: [`Kernel`] over the [`crate::nt`] layer (Windows only).

use super::{HELPER_KEY, Kernel, PollBlock, PollVia, Post, RawSock, WAKE_KEY};
use crate::afd::{CompletionEntry, NtStatus};
use crate::nt::{self, AfdHelper, CompletionPort};
use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, BorrowedSocket, RawHandle};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// The NT kernel: one completion port, and a `\Device\Afd` helper handle opened on first use.
///
/// # Handle validity
/// The reactor hands this kernel raw socket values, and calls on them only while the user has lent
/// the socket (register, reregister, deregister) or while its own poll is pending on it. Only a
/// user who breaks the contract (closing without deregistering) can make it call on a closed value:
/// then NT answers `STATUS_INVALID_HANDLE` — unless strict handle checking is enabled for the
/// process, which turns such a call into a fatal exception.
#[derive(Debug)]
pub struct NtKernel {
    port: Arc<CompletionPort>,
    helper: Option<AfdHelper>,
    force_helper: bool,
}

impl NtKernel {
    /// Create a kernel with a fresh completion port.
    ///
    /// # Errors
    /// `NtCreateIoCompletion`'s failure.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            port: Arc::new(CompletionPort::new()?),
            helper: None,
            force_helper: false,
        })
    }

    /// Poll every socket through the helper handle instead of on the socket itself (the path other
    /// reactors use; offered for comparison, and because cancels then never touch user handles).
    pub fn force_helper(mut self, yes: bool) -> Self {
        self.force_helper = yes;
        self
    }

    /// True if every socket is polled through the helper.
    pub fn helper_forced(&self) -> bool {
        self.force_helper
    }

    fn helper(&mut self) -> io::Result<&AfdHelper> {
        if self.helper.is_none() {
            self.helper = Some(AfdHelper::open(&self.port, HELPER_KEY)?);
        }
        Ok(self.helper.as_ref().expect("opened above"))
    }
}

/// Borrow a raw socket value as a handle for the duration of one NT call.
fn borrow(socket: RawSock) -> BorrowedHandle<'static> {
    // SAFETY: the value is only passed to NT calls that validate it themselves (a closed handle
    // gives STATUS_INVALID_HANDLE); it is never closed or duplicated through this borrow. The
    // reactor's contract keeps these calls off handles that were closed and reused.
    unsafe { BorrowedHandle::borrow_raw(socket as RawHandle) }
}

// SAFETY: every packet `dequeue` returns comes from the NT completion port this kernel owns and
// does not expose: poll completions (NT writes the block before queuing the packet, once per
// queued request) and `NtSetIoCompletion` wake packets from `NtPoster`, which posts only
// `WAKE_KEY`. No other code holds the port handle.
unsafe impl Kernel for NtKernel {
    type Poster = NtPoster;

    fn base_socket(&mut self, socket: RawSock, verify: bool) -> io::Result<RawSock> {
        // SAFETY: as in `borrow`: the value is only passed to winsock calls that validate it.
        let socket = unsafe { BorrowedSocket::borrow_raw(socket) };
        if verify {
            nt::base_socket(socket)
        } else {
            nt::base_socket_unverified(socket)
        }
    }

    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()> {
        if self.force_helper {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "socket-direct polls disabled (NtKernel::force_helper)",
            ));
        }
        self.port.associate(borrow(socket), key)
    }

    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> NtStatus {
        let block = block.as_ptr();
        // SAFETY: `block` is valid and pinned until its packet is dequeued (our caller's contract);
        // the two field pointers are derived from it without creating references.
        let (iosb, info) = unsafe { (&raw mut (*block).iosb, &raw mut (*block).info) };
        let target = match via {
            PollVia::Socket => borrow(socket),
            PollVia::Helper => match self.helper() {
                Ok(h) => h.as_handle(),
                Err(_) => return NtStatus::INSUFFICIENT_RESOURCES,
            },
        };
        // SAFETY: forwarded contract: the block outlives the request.
        unsafe { nt::submit_poll(target, iosb, info, apc_context) }
    }

    fn cancel(&mut self, via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus {
        // `iosb` is the block's first field, so the block pointer is the status block pointer.
        let iosb = block.as_ptr().cast::<crate::afd::IoStatusBlock>();
        match via {
            PollVia::Socket => nt::cancel(borrow(socket), iosb),
            PollVia::Helper => match &self.helper {
                Some(h) => nt::cancel(h.as_handle(), iosb),
                None => NtStatus::NOT_FOUND,
            },
        }
    }

    fn dequeue(
        &mut self,
        out: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.port.dequeue(out, timeout)
    }

    fn poster(&self) -> NtPoster {
        NtPoster {
            port: Arc::clone(&self.port),
        }
    }
}

/// Posts wake packets to an [`NtKernel`]'s port; keeps the port open while it lives.
#[derive(Debug, Clone)]
pub struct NtPoster {
    port: Arc<CompletionPort>,
}

impl Post for NtPoster {
    fn post_wake(&self, apc_context: usize) -> io::Result<()> {
        self.port.post(WAKE_KEY, apc_context, NtStatus::SUCCESS, 0)
    }
}
