//! The kernel boundary: the narrow NT surface the reactor needs, as one trait.
//!
//! A user needs this module for a few things only: `nt::NtKernel`'s settings (Windows),
//! `epoll::EpollKernel`'s system-call counts (Linux), and the simulated kernel `sim::SimKernel`
//! (feature `test-rig`) to test code against a model of Windows. The trait itself is the contract
//! between the reactor and a kernel.
//!
//! Three implementations sit beside this file:
//! - `nt` (Windows only): the real calls, through the crate's `nt` layer;
//! - `epoll` (Linux only): the same contract emulated on epoll, through the crate's `linux` layer;
//! - `sim` (every platform, feature `test-rig`): a deterministic, seeded simulation with fault
//!   injection, used to force every race natively on Linux and under Miri.
//!
//! The reactor is generic over [`Kernel`]; nothing here is process-wide, so every test can seed its
//! own kernel.
//!
//! # The memory contract
//! A poll names a [`PollBlock`] (status block + `AFD_POLL_INFO`) by raw pointer. From a
//! `submit_poll` that returned [`Submitted::Queued`] until the packet for that request is
//! dequeued, the kernel owns the block: it may write it at any time, and the reactor must neither
//! free, move nor read it. Implementations write the block *before* the packet becomes visible to
//! `dequeue`.
//!
//! # Telling our packets from everyone else's
//! The port also receives packets the reactor did not ask for: a user's overlapped I/O on a
//! socket the reactor associated arrives under that socket's key, with the user's `OVERLAPPED`
//! address as ApcContext. So the reactor *tags* every ApcContext it hands to `submit_poll` with
//! [`POLL_TAG`] (bit 63, never set in an x64 user-mode address), and the contract below
//! guarantees that a tagged packet is the completion of one of its polls. Anything untagged is
//! discarded before it touches any state.
//!
//! # Waits
//! A waitable handle (an event, a process, a semaphore, a waitable timer; on Linux an eventfd or a
//! pidfd) is waited on by a *wait* the kernel keeps: [`Kernel::open_wait`] makes one for the
//! handle, [`Kernel::arm_wait`] arms it, and once the object is signaled the wait's one packet
//! arrives under [`WAIT_KEY`] with the ApcContext the arming gave, which the reactor tags with
//! [`WAIT_TAG`]. A wait names no memory of the reactor's: its packet carries a number, so a late or
//! stray wait packet can at worst name a registration that has ended, which the generation check
//! discards. The memory a wait needs (a wait completion packet, or the context a thread-pool
//! callback reads) is the kernel's own, freed by [`Kernel::close_wait`] only once nothing can
//! touch it.

#[cfg(target_os = "linux")]
pub mod epoll;
#[cfg(windows)]
pub mod nt;
#[cfg(feature = "test-rig")]
pub mod sim;
#[cfg(any(windows, target_os = "linux", feature = "test-rig"))]
mod slab;

use crate::afd::{AfdPollInfo, CompletionEntry, IoStatusBlock, NtStatus};
use std::io;
use std::ptr::NonNull;
use std::time::Duration;

/// A socket handle value (Windows' `RawSocket`), or a file descriptor (Linux).
pub type RawSock = u64;

/// The completion key of wake packets (docs/design.md §4): odd and non-canonical, so no state address can
/// have it.
pub const WAKE_KEY: usize = 0xDEAD_BEEF_DEAD_BEEF;

/// The completion key of the `\Device\Afd` helper handles: odd and non-canonical, like
/// [`WAKE_KEY`].
pub const HELPER_KEY: usize = 0xDEAD_BEEF_DEAD_BEE1;

/// The bit every ApcContext the reactor passes to [`Kernel::submit_poll`] carries, and no other
/// packet may carry (an x64 user-mode address never has it).
pub const POLL_TAG: usize = 1 << 63;

/// The completion key of wait packets ([`Kernel::arm_wait`]): odd and non-canonical, like
/// [`WAKE_KEY`].
pub const WAIT_KEY: usize = 0xDEAD_BEEF_DEAD_BEE5;

/// The bit every ApcContext the reactor passes to [`Kernel::arm_wait`] carries (bit 62, never set
/// in an x64 user-mode address), and [`POLL_TAG`] never: a wait packet cannot pass for a poll's.
pub const WAIT_TAG: usize = 1 << 62;

/// A waitable handle value (Windows' `RawHandle`), or a file descriptor (Linux).
pub type RawWaitable = u64;

/// A wait the kernel keeps for the reactor, made by [`Kernel::open_wait`]: an index into the
/// kernel's own table, meaningless to anyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitId(pub u32);

/// What [`Kernel::cancel_wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitCancel {
    /// The wait was still waiting: it is cancelled, consumed nothing, and no packet will come.
    NotSignaled,
    /// The object was signaled and the wait satisfied (so an auto-reset event was reset, a
    /// semaphore decremented): its packet is queued, or will be, and comes as usual.
    Queued,
    /// The wait was satisfied (a signal consumed) but no packet will come: a thread-pool callback
    /// that could not post before the cancel stopped it.
    Consumed,
}

/// The most polls the reactor puts on one helper handle: on Windows a cancel costs more the more
/// requests the handle holds, so helper-path sockets are spread over a group of handles, as mio
/// and wepoll do (docs/design.md §6).
pub const HELPER_GROUP: usize = 32;

/// Where a poll is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollVia {
    /// On the socket itself; its completion carries the socket's association key.
    Socket,
    /// On helper handle number `n` of the kernel's `\Device\Afd` helper handles (opened on first
    /// use, kept until the kernel is dropped); its completion carries [`HELPER_KEY`]. The reactor
    /// chooses `n`, keeping at most [`HELPER_GROUP`] polls on each.
    Helper(u32),
}

/// What became of a poll given to [`Kernel::submit_poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// In the kernel: it owns the block until the request's one packet is dequeued.
    Queued,
    /// Completed at once and **no packet will come** (the handle skips the port on success,
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`): the block holds the result and is the caller's
    /// again.
    Completed,
    /// Refused with this error status: nothing was queued and the block is the caller's again.
    Refused(NtStatus),
}

/// The kernel-owned buffers of one poll: status block first, then the poll info.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PollBlock {
    /// Written by the kernel with the poll's final status.
    pub iosb: IoStatusBlock,
    /// Input (socket, requested events) and output (reported events) of the poll.
    pub info: AfdPollInfo,
}

/// Posts wake packets to a kernel's completion port from any thread.
///
/// Holding one keeps the port itself alive (never a call on a closed or reused port handle). It
/// can post nothing but wake packets: no safe code can forge a poll completion.
pub trait Post: Send + Sync + 'static {
    /// Post a packet with [`WAKE_KEY`], `apc_context` and a success status (`NtSetIoCompletion`).
    ///
    /// # Errors
    /// The kernel's failure (e.g. out of quota).
    fn post_wake(&self, apc_context: usize) -> io::Result<()>;
}

/// The NT calls the reactor makes. Each method is one NT call (or a short fixed sequence: two for
/// `associate`, a few winsock calls for `base_socket`), so the reactor can count calls by kind.
///
/// # Safety
/// The reactor frees poll blocks on the word of this trait, so an implementation must be truthful:
/// - for each poll `submit_poll` reports [`Submitted::Queued`], `dequeue` returns exactly one
///   packet, with the poll's ApcContext and the key of the handle it was issued on ([`HELPER_KEY`]
///   for a helper), after the last write to its block; for [`Submitted::Completed`] and
///   [`Submitted::Refused`] it returns none;
/// - no other packet `dequeue` returns has an ApcContext with [`POLL_TAG`] set (a wake packet,
///   key [`WAKE_KEY`], from its posters; or a packet of I/O the reactor did not issue, which it
///   discards);
/// - a block is written only between its `submit_poll` and the dequeue of its packet (or, for
///   `Completed`, the return of `submit_poll`);
/// - [`Kernel::Poster`] posts only wake packets;
/// - for each [`Kernel::arm_wait`] that returned `Ok`, `dequeue` returns exactly one packet with
///   [`WAIT_KEY`] and the arming's ApcContext — unless [`Kernel::cancel_wait`] for it returned
///   [`WaitCancel::NotSignaled`] or [`WaitCancel::Consumed`], and then none; and no other packet
///   carries [`WAIT_KEY`] with [`WAIT_TAG`] set;
/// - a thread-pool callback, or anything else that runs on the kernel's behalf, never touches a
///   wait's memory after [`Kernel::close_wait`] returned.
///
/// A *safe* method of an implementation (a test control, say) must not be able to break these
/// promises either: the reactor's memory safety rests on them.
pub unsafe trait Kernel {
    /// The cross-thread poster for wake packets.
    type Poster: Post;

    /// Whether a satisfied wait consumes its object's signal, as a wait on an auto-reset event or
    /// a semaphore does on Windows (true), or leaves it for the user to take, as epoll leaves an
    /// eventfd readable (false).
    const WAITS_CONSUME: bool = true;

    /// Resolve the base socket under any Layered Service Providers.
    ///
    /// With `verify` false the kernel may skip proving that the result is a socket (Wine's
    /// `SIO_BASE_HANDLE` returns any handle unchanged; the proof costs one more call). Pass false
    /// only when the next call on the result is a [`PollVia::Helper`] poll, which fails for a
    /// handle that is not a socket.
    ///
    /// # Errors
    /// `InvalidInput` for a handle that is not a socket (with `verify` false, possibly not for an
    /// open one).
    fn base_socket(&mut self, socket: RawSock, verify: bool) -> io::Result<RawSock>;

    /// Associate `socket` with the port under `key`, and make polls issued on it skip the port
    /// when they complete at once (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`, which once set is never
    /// cleared): after `Ok`, every [`PollVia::Socket`] poll on it reports completion at submit as
    /// [`Submitted::Completed`].
    ///
    /// Only for a handle the user lent: never a layered provider's base handle, whose own I/O
    /// would then complete on this port (and fail outright if it uses completion routines).
    ///
    /// # Errors
    /// `ResourceBusy` if it is already associated with a port (any port, this one included), or
    /// if the mode could not be set (the association then stands: poll it through a helper);
    /// `InvalidInput` for a handle that is not open.
    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()>;

    /// Submit `IOCTL_AFD_POLL` for the socket and events named in `block.info`, on the socket
    /// itself or on a helper handle (opened by the kernel on first use), with `apc_context`.
    ///
    /// The socket *polled* is `block.info.handles[0].handle`, read at submit; `socket` only
    /// selects the handle the request is issued on for [`PollVia::Socket`] (it is ignored for
    /// [`PollVia::Helper`]). Use `PollVia::Socket` only after [`Kernel::associate`] succeeded for
    /// that socket: otherwise the completion goes to another port (or none) and never returns.
    ///
    /// A poll that completes at once is [`Submitted::Completed`] on a handle that skips the port
    /// on success, and [`Submitted::Queued`] (its packet follows) on one that does not; the kernel
    /// knows which, for every handle it issues polls on.
    ///
    /// # Safety
    /// `block` must be valid for reads and writes and stay put, untouched by the caller, from this
    /// call until the request's packet has been dequeued (if `Queued` is returned), or until this
    /// call returns (otherwise).
    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> Submitted;

    /// Cancel the request whose status block is `block` on the socket (or the helper handle):
    /// `SUCCESS` if found (its packet will follow), `NOT_FOUND` if it already completed,
    /// `INVALID_HANDLE` if the socket handle is closed. The pointer is only compared.
    fn cancel(&mut self, via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus;

    /// Dequeue up to `out.len()` packets, waiting at most `timeout` (`None`: forever) for the
    /// first. `Ok(0)` on timeout.
    ///
    /// # Errors
    /// The kernel's failure; packets stay queued.
    fn dequeue(
        &mut self,
        out: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize>;

    /// A poster for this kernel's port (cheap to clone and share across threads).
    fn poster(&self) -> Self::Poster;

    /// Make a wait for the object `handle` names (a handle the user lends for this call only).
    /// The kernel keeps its own reference to the object (a duplicate handle), so whatever later
    /// happens to the user's handle — closed, its value reused — the wait follows the object the
    /// value named now. Nothing is armed yet.
    ///
    /// # Errors
    /// `InvalidInput` for a value that names nothing (or, where the kernel can tell, an object that
    /// cannot be waited on); the kernel's failure otherwise (out of handles or memory).
    fn open_wait(&mut self, handle: RawWaitable) -> io::Result<WaitId>;

    /// Arm wait `id`: once its object is signaled (at once, if it is now), the wait is satisfied
    /// as a wait on the object would be — it consumes the signal of an auto-reset event or a
    /// semaphore — and one packet with [`WAIT_KEY`] and `apc_context` is queued.
    ///
    /// # Errors
    /// The kernel refused (the object cannot be waited on this way, out of resources): nothing is
    /// armed and no packet will come.
    ///
    /// # Panics
    /// May panic if `id` is not open or is armed already (a bug in the caller).
    fn arm_wait(&mut self, id: WaitId, apc_context: usize) -> io::Result<()>;

    /// Cancel the armed wait `id`, returning only once nothing running on the kernel's behalf is
    /// still deciding its fate (a thread-pool callback in progress is waited for). See
    /// [`WaitCancel`] for what the answer promises.
    ///
    /// # Panics
    /// May panic if `id` is not open or not armed (a bug in the caller).
    fn cancel_wait(&mut self, id: WaitId) -> WaitCancel;

    /// Free wait `id` and its duplicate handle. Only for a wait with no packet to come: never
    /// armed, its packet dequeued, or cancelled with no packet to come.
    ///
    /// # Panics
    /// May panic if `id` is not open, or a packet of it may still come (a bug in the caller).
    fn close_wait(&mut self, id: WaitId);
}
