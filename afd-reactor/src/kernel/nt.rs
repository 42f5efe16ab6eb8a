//! The real kernel: [`Kernel`] over the crate's NT layer (`nt`, Windows only).

use super::{HELPER_KEY, Kernel, PollBlock, PollVia, Post, RawSock, Submitted, WAKE_KEY};
use crate::afd::{CompletionEntry, NtStatus};
use crate::nt::{self, AfdHelper, CompletionPort};
use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, BorrowedSocket, RawHandle};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// The NT kernel: one completion port, and a group of `\Device\Afd` helper handles, each opened
/// on first use.
///
/// You rarely need to name it: [`Reactor::new`](crate::Reactor::new) makes one. Make it yourself
/// to change its settings:
/// ```no_run
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use afd_reactor::kernel::nt::NtKernel;
/// use afd_reactor::{Config, NtReactor, Reactor};
/// let kernel = NtKernel::new()?.force_helper(true);
/// let reactor: NtReactor = Reactor::with_config(kernel, Config::default());
/// # Ok(()) }
/// # #[cfg(not(windows))] fn main() {}
/// ```
///
/// # Skip on success
/// Every socket it associates, and every helper handle it opens, is put in
/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` mode (which can never be cleared), so it knows for each
/// poll whether a packet follows: a poll ready at submit completes there and then, and costs no
/// packet and no dequeued entry. [`NtKernel::skip_on_success`] turns this off (for measurements).
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
    /// Helper handle `n` (opened on first use), and whether it skips the port on success.
    helpers: Vec<Option<(AfdHelper, bool)>>,
    force_helper: bool,
    skip_on_success: bool,
}

impl NtKernel {
    /// Create a kernel with a fresh completion port.
    ///
    /// # Errors
    /// `NtCreateIoCompletion`'s failure.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            port: Arc::new(CompletionPort::new()?),
            helpers: Vec::new(),
            force_helper: false,
            skip_on_success: true,
        })
    }

    /// Whether associated sockets and helper handles are put in skip-on-success mode (default:
    /// yes). Without it, a poll that is ready at submit still queues a packet, which costs a
    /// dequeued entry (and, under Wine, a wineserver request); offered to measure that.
    pub fn skip_on_success(mut self, yes: bool) -> Self {
        self.skip_on_success = yes;
        self
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

    /// Helper handle `n`, opened now if it was not, and whether it skips the port on success.
    fn helper(&mut self, n: u32) -> io::Result<(&AfdHelper, bool)> {
        let n = n as usize;
        if self.helpers.len() <= n {
            self.helpers.resize_with(n + 1, || None);
        }
        if self.helpers[n].is_none() {
            let helper = AfdHelper::open(&self.port, HELPER_KEY)?;
            let skips = self.skip_on_success && helper.skip_completion_port_on_success().is_ok();
            self.helpers[n] = Some((helper, skips));
        }
        let (helper, skips) = self.helpers[n].as_ref().expect("opened above");
        Ok((helper, *skips))
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
        self.port.associate(borrow(socket), key)?;
        if self.skip_on_success
            && let Err(e) = nt::skip_completion_port_on_success(borrow(socket))
        {
            // Associated for good, but its polls would queue packets we could not predict:
            // the caller polls it through a helper instead.
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("associated, but FILE_SKIP_COMPLETION_PORT_ON_SUCCESS failed: {e}"),
            ));
        }
        Ok(())
    }

    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> Submitted {
        let block = block.as_ptr();
        // SAFETY: `block` is valid and pinned until its packet is dequeued (our caller's contract);
        // the two field pointers are derived from it without creating references.
        let (iosb, info) = unsafe { (&raw mut (*block).iosb, &raw mut (*block).info) };
        // Every socket we associated is in skip mode (`associate` fails otherwise) if the kernel
        // skips at all; each helper knows its own.
        let skip_on_success = self.skip_on_success;
        let (target, skips) = match via {
            PollVia::Socket => (borrow(socket), skip_on_success),
            PollVia::Helper(n) => match self.helper(n) {
                Ok((h, skips)) => (h.as_handle(), skips),
                Err(_) => return Submitted::Refused(NtStatus::INSUFFICIENT_RESOURCES),
            },
        };
        // SAFETY: forwarded contract: the block outlives the request.
        let status = unsafe { nt::submit_poll(target, iosb, info, apc_context) };
        if status == NtStatus::PENDING {
            Submitted::Queued
        } else if status.is_error() {
            Submitted::Refused(status)
        } else if status.is_success() && skips {
            // Completed at once on a skip-on-success handle: no packet; the I/O manager wrote the
            // status block and the output before returning.
            Submitted::Completed
        } else {
            // Completed at once without the mode, or a warning status (to which the flag's
            // documented rule does not apply): a packet follows.
            Submitted::Queued
        }
    }

    fn cancel(&mut self, via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus {
        // `iosb` is the block's first field, so the block pointer is the status block pointer.
        let iosb = block.as_ptr().cast::<crate::afd::IoStatusBlock>();
        match via {
            PollVia::Socket => nt::cancel(borrow(socket), iosb),
            PollVia::Helper(n) => match self.helpers.get(n as usize) {
                Some(Some((h, _))) => nt::cancel(h.as_handle(), iosb),
                _ => NtStatus::NOT_FOUND,
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
