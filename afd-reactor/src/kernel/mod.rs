//! The kernel boundary: the narrow NT surface the reactor needs, as one trait.
//!
//! Two implementations sit beside this file:
//! - `nt` (Windows only): the real calls, through the crate's `nt` layer;
//! - [`sim`] (every platform): a deterministic, seeded simulation with fault injection, used to
//!   force every race natively on Linux and under Miri.
//!
//! The reactor is generic over [`Kernel`]; nothing here is process-wide, so every test can seed its
//! own kernel.
//!
//! # The memory contract
//! A poll names a [`PollBlock`] (status block + `AFD_POLL_INFO`) by raw pointer. From a
//! `submit_poll` that did not fail until the packet for that request is dequeued, the kernel owns
//! the block: it may write it at any time, and the reactor must neither free, move nor read it.
//! Implementations write the block *before* the packet becomes visible to `dequeue`.

#[cfg(windows)]
pub mod nt;
pub mod sim;

use crate::afd::{AfdPollInfo, CompletionEntry, IoStatusBlock, NtStatus};
use std::io;
use std::ptr::NonNull;
use std::time::Duration;

/// A socket handle value (Windows' `RawSocket`).
pub type RawSock = u64;

/// The completion key of wake packets (WRL-001 §3): odd and non-canonical, so no state address can
/// have it.
pub const WAKE_KEY: usize = 0xDEAD_BEEF_DEAD_BEEF;

/// The completion key of the `\Device\Afd` helper handle: odd and non-canonical, like
/// [`WAKE_KEY`].
pub const HELPER_KEY: usize = 0xDEAD_BEEF_DEAD_BEE1;

/// Where a poll is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollVia {
    /// On the socket itself; its completion carries the socket's association key.
    Socket,
    /// On the kernel's `\Device\Afd` helper handle; its completion carries [`HELPER_KEY`].
    Helper,
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

/// The NT calls the reactor makes. Each method is one NT call (or, for `base_socket`, a short
/// fixed sequence of winsock calls), so the reactor can count calls by kind.
///
/// # Safety
/// The reactor frees poll blocks on the word of this trait, so an implementation must be truthful:
/// - `dequeue` returns only packets this kernel produced: the completion of each poll submitted
///   through `submit_poll` exactly once (unless the submit returned an error status), with the
///   association's key (or [`HELPER_KEY`]) and the poll's ApcContext, after the last write to its
///   block; and wake packets (key [`WAKE_KEY`]) from its posters. Any other packet it returns
///   must not carry a key and ApcContext pair it did not receive for a poll still in flight.
/// - a block is written only between its `submit_poll` and the dequeue of its packet;
/// - [`Kernel::Poster`] posts only wake packets.
pub unsafe trait Kernel {
    /// The cross-thread poster for wake packets.
    type Poster: Post;

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

    /// Associate `socket` with the port under `key`.
    ///
    /// # Errors
    /// `ResourceBusy` if it is already associated with a port (any port, this one included);
    /// `InvalidInput` for a handle that is not open.
    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()>;

    /// Submit `IOCTL_AFD_POLL` for the socket and events named in `block.info`, on the socket
    /// itself or on the helper handle (opened by the kernel on first use), with `apc_context`.
    ///
    /// The socket *polled* is `block.info.handles[0].handle`, read at submit; `socket` only
    /// selects the handle the request is issued on for [`PollVia::Socket`] (it is ignored for
    /// [`PollVia::Helper`]). Use `PollVia::Socket` only after [`Kernel::associate`] succeeded for
    /// that socket: otherwise the completion goes to another port (or none) and never returns.
    ///
    /// Returns `PENDING`, a success status (completed at once; the packet is still queued), or a
    /// failure status (nothing queued; the block is free again).
    ///
    /// # Safety
    /// `block` must be valid for reads and writes and stay put, untouched by the caller, from this
    /// call until the request's packet has been dequeued (unless a failure status is returned).
    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> NtStatus;

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
}
