//! The real kernel: [`Kernel`] over the crate's NT layer (`nt`, Windows only).

use super::slab::WaitSlab;
use super::{
    HELPER_KEY, Kernel, PollBlock, PollVia, Post, RawSock, RawWaitable, Submitted, WAIT_KEY,
    WAKE_KEY, WaitCancel, WaitId,
};
use crate::afd::{CompletionEntry, NtStatus};
use crate::nt::{self, AfdHelper, CompletionPort, PoolWaitOutcome, PoolWaiter, WaitPacket};
use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsHandle, BorrowedHandle, BorrowedSocket, OwnedHandle, RawHandle};
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
/// # Waits
/// A wait ([`Kernel::open_wait`]) follows a duplicate of the user's handle, and is carried out by
/// one of two means ([`WaitPath`]): a wait completion packet, where ntdll has the calls (Windows 8
/// and later), or a thread-pool wait whose callback posts the packet (everywhere else, Wine 8 and
/// Wine 10 included). [`NtKernel::wait_path_in_use`] says which.
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
    /// The wait path asked for ([`NtKernel::wait_path`]).
    wait_path: WaitPath,
    waits: WaitTable,
}

/// How [`NtKernel`] carries out a wait ([`Kernel::open_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitPath {
    /// A wait completion packet per wait (`NtAssociateWaitCompletionPacket`): the kernel waits
    /// and queues the packet itself. Windows 8 and later; not Wine.
    #[doc(alias = "NtAssociateWaitCompletionPacket")]
    Packets,
    /// A one-shot thread-pool wait per arming (`RegisterWaitForSingleObject`) whose callback posts
    /// the packet (`NtSetIoCompletion`).
    #[doc(alias = "RegisterWaitForSingleObject")]
    ThreadPool,
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
            wait_path: WaitPath::Packets,
            waits: WaitTable::default(),
        })
    }

    /// Choose how waits opened from now on are carried out (default: [`WaitPath::Packets`]
    /// where ntdll has the wait-packet calls). Asking for `Packets` where it lacks them gives the
    /// thread pool; asking for [`WaitPath::ThreadPool`] forces it (to measure or test it).
    pub fn wait_path(mut self, path: WaitPath) -> Self {
        self.wait_path = path;
        self
    }

    /// The path waits opened now take: [`WaitPath::Packets`] if asked for and ntdll exports the
    /// three wait-packet calls, [`WaitPath::ThreadPool`] otherwise (always under Wine 8 and
    /// Wine 10, whose ntdll lacks them).
    pub fn wait_path_in_use(&self) -> WaitPath {
        if self.wait_path == WaitPath::Packets && nt::wait_packets_available() {
            WaitPath::Packets
        } else {
            WaitPath::ThreadPool
        }
    }

    /// How many packets are queued on the port now (`NtQueryIoCompletion`): a snapshot, for tests
    /// that must know a packet is queued before they act.
    ///
    /// # Errors
    /// The call's failure.
    pub fn queued_packets(&self) -> io::Result<usize> {
        self.port.queued()
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

/// The waits an [`NtKernel`] keeps.
#[derive(Debug, Default)]
struct WaitTable {
    entries: WaitSlab<WaitEntry>,
    /// The waits whose packet may still come, by the ApcContext of their arming (several if the
    /// reactor armed several with one context: their packets are then indistinguishable, and
    /// each one dequeued settles one of them).
    pending: HashMap<usize, Vec<u32>>,
}

/// One wait.
#[derive(Debug)]
struct WaitEntry {
    /// Declared before `object`, so it is dropped first: a thread-pool registration is
    /// unregistered (blocking) while the handle it waits on is still open.
    via: WaitVia,
    /// Our duplicate of the user's handle: the object waited on.
    object: OwnedHandle,
    phase: WaitPhase,
}

/// How one wait is carried out.
#[derive(Debug)]
enum WaitVia {
    Packet(WaitPacket),
    Pool(PoolWaiter),
}

/// Where one wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitPhase {
    /// Not armed, and no packet of it to come.
    Idle,
    /// Armed with this ApcContext: its packet comes once the object is signaled.
    Armed(usize),
    /// Cancelled too late: its packet (with this ApcContext) is queued, or will be.
    Queued(usize),
}

impl WaitTable {
    fn expect_packet(&mut self, id: WaitId, apc_context: usize) {
        self.pending.entry(apc_context).or_default().push(id.0);
    }

    fn forget_packet(&mut self, id: WaitId, apc_context: usize) {
        if let Some(ids) = self.pending.get_mut(&apc_context) {
            if let Some(at) = ids.iter().position(|&i| i == id.0) {
                ids.swap_remove(at);
            }
            if ids.is_empty() {
                self.pending.remove(&apc_context);
            }
        }
    }

    /// A wait packet with `apc_context` was dequeued: one wait armed with it is idle again.
    fn delivered(&mut self, apc_context: usize) {
        let Some(ids) = self.pending.get_mut(&apc_context) else {
            return;
        };
        let id = ids.pop().expect("no empty lists are kept");
        if ids.is_empty() {
            self.pending.remove(&apc_context);
        }
        if let Some(entry) = self.entries.slot_mut(id) {
            entry.phase = WaitPhase::Idle;
        }
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
// queued request), `NtSetIoCompletion` wake packets from `NtPoster`, which posts only
// `WAKE_KEY`, and wait packets, with `WAIT_KEY` and the arming's ApcContext, one per arming
// (a wait completion packet's association, or the one `NtSetIoCompletion` of a one-shot
// thread-pool callback) unless a cancel found none would come. No other code holds the port
// handle. A thread-pool callback reads only a slot that is never freed, and touches the port
// only for an arming it claimed, which every cancel, re-arm and drop settles first.
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
        let n = self.port.dequeue(out, timeout)?;
        for entry in &out[..n] {
            if entry.key == WAIT_KEY {
                self.waits.delivered(entry.apc_context);
            }
        }
        Ok(n)
    }

    fn poster(&self) -> NtPoster {
        NtPoster {
            port: Arc::clone(&self.port),
        }
    }

    fn open_wait(&mut self, handle: RawWaitable) -> io::Result<WaitId> {
        if (handle as i64) < 0 {
            // A pseudo-handle: -1 is the current process (and INVALID_HANDLE_VALUE), -2 the
            // current thread. Duplicated, they name this process or the reactor's own thread,
            // which can never be seen to end (review 15b).
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "afd-reactor: a pseudo-handle (the current process or thread) cannot be waited on",
            ));
        }
        let object = nt::duplicate_handle(handle as RawHandle)?;
        let via = match self.wait_path_in_use() {
            WaitPath::Packets => WaitVia::Packet(WaitPacket::new()?),
            WaitPath::ThreadPool => WaitVia::Pool(PoolWaiter::new(Arc::clone(&self.port))?),
        };
        self.waits.entries.insert(WaitEntry {
            via,
            object,
            phase: WaitPhase::Idle,
        })
    }

    fn arm_wait(&mut self, id: WaitId, apc_context: usize) -> io::Result<()> {
        let entry = self.waits.entries.get_mut(id);
        if entry.phase != WaitPhase::Idle {
            panic!(
                "afd-reactor bug: arm_wait({id:?}) on a wait whose packet may still come ({:?})",
                entry.phase
            );
        }
        match &mut entry.via {
            WaitVia::Packet(packet) => {
                // Queued even if already signaled: AlreadySignaled is information only.
                packet.associate(&self.port, entry.object.as_handle(), WAIT_KEY, apc_context)?;
            }
            // SAFETY: `entry.object` is our own duplicate, closed only when the entry is dropped,
            // and `via` is declared before it, so the waiter (whose drop settles its arming) goes
            // first; every other arming is settled by the next `arm` or `cancel` of this waiter.
            WaitVia::Pool(waiter) => unsafe {
                waiter.arm(entry.object.as_handle(), WAIT_KEY, apc_context)?
            },
        }
        entry.phase = WaitPhase::Armed(apc_context);
        self.waits.expect_packet(id, apc_context);
        Ok(())
    }

    fn cancel_wait(&mut self, id: WaitId) -> WaitCancel {
        let entry = self.waits.entries.get_mut(id);
        let WaitPhase::Armed(apc_context) = entry.phase else {
            panic!(
                "afd-reactor bug: cancel_wait({id:?}) on a wait that is not armed ({:?})",
                entry.phase
            );
        };
        let answer = match &mut entry.via {
            WaitVia::Packet(packet) => match packet.cancel() {
                NtStatus::PENDING => WaitCancel::Queued,
                // SUCCESS: cancelled while waiting, nothing consumed. CANCELLED: no association
                // was active, so no packet is coming either. Any other status is a failure of
                // the call on a packet handle we own and keep open, which NT does not document:
                // taken as no packet.
                _ => WaitCancel::NotSignaled,
            },
            WaitVia::Pool(waiter) => match waiter.cancel() {
                PoolWaitOutcome::NotFired => WaitCancel::NotSignaled,
                PoolWaitOutcome::Posted => WaitCancel::Queued,
                PoolWaitOutcome::Consumed => WaitCancel::Consumed,
            },
        };
        if answer == WaitCancel::Queued {
            entry.phase = WaitPhase::Queued(apc_context);
        } else {
            entry.phase = WaitPhase::Idle;
            self.waits.forget_packet(id, apc_context);
        }
        answer
    }

    fn close_wait(&mut self, id: WaitId) {
        let entry = self.waits.entries.get_mut(id);
        if entry.phase != WaitPhase::Idle {
            panic!(
                "afd-reactor bug: close_wait({id:?}) on a wait whose packet may still come ({:?})",
                entry.phase
            );
        }
        // Dropping the entry settles and unregisters a thread-pool wait (blocking; its slot is
        // recycled, never freed), then closes the packet handle or the duplicate.
        self.waits.entries.remove(id);
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
