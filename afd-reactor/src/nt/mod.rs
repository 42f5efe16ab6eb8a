//! The NT layer: safe wrappers over the ntdll and winsock calls the reactor makes (Windows only).
//!
//! This module tree is the crate's only FFI. Each wrapper owns what it creates (handles close on
//! drop) and turns failures into [`io::Error`] through the one [`NtStatus`] conversion.
//!
//! | wrapper | NT / Win32 call |
//! |---|---|
//! | [`CompletionPort::new`] | `NtCreateIoCompletion` |
//! | [`CompletionPort::dequeue`] | `NtRemoveIoCompletionEx` (batch, timeout in 100 ns units) |
//! | [`CompletionPort::post`] | `NtSetIoCompletion` |
//! | [`CompletionPort::associate`] | `CreateIoCompletionPort` on an existing port |
//! | [`CompletionPort::queued`] | `NtQueryIoCompletion` (queue depth) |
//! | [`submit_poll`] | `NtDeviceIoControlFile(IOCTL_AFD_POLL)` on a socket or an [`AfdHelper`] |
//! | [`cancel`] | `NtCancelIoFileEx` for one request |
//! | [`AfdHelper::open`] | `NtCreateFile(\Device\Afd\…)` + association with the port |
//! | [`skip_completion_port_on_success`] | `SetFileCompletionNotificationModes` |
//! | [`duplicate_handle`] | `DuplicateHandle(DUPLICATE_SAME_ACCESS)` |
//! | [`WaitPacket`] | `NtCreateWaitCompletionPacket`, `NtAssociateWaitCompletionPacket`, `NtCancelWaitCompletionPacket` (resolved at run time) |
//! | [`PoolWaiter`] | `RegisterWaitForSingleObject(WT_EXECUTEONLYONCE)`, `UnregisterWaitEx` (blocking), `NtSetIoCompletion` from the callback |
//! | [`base_socket`] | `WSAIoctl(SIO_BASE_HANDLE / SIO_BSP_HANDLE_POLL / SIO_BSP_HANDLE_SELECT)` |
//!
//! [`io::Error`]: std::io::Error
//! [`NtStatus`]: crate::afd::NtStatus

mod ffi;
mod poll;
mod port;
mod socket;
mod wait;

pub use poll::{AfdHelper, cancel, skip_completion_port_on_success, submit_poll};
pub use port::{CompletionPort, is_already_associated};
pub use socket::{base_socket, base_socket_unverified, is_not_a_socket, socket_as_handle};
pub use wait::{PoolWaitOutcome, PoolWaiter, WaitPacket, duplicate_handle, wait_packets_available};

use crate::afd::NtStatus;

/// `RtlNtStatusToDosError`: the Win32 error code for an NTSTATUS.
pub(crate) fn dos_error_from_status(status: NtStatus) -> u32 {
    // SAFETY: RtlNtStatusToDosError is a pure table lookup on its integer argument.
    unsafe { windows_sys::Win32::Foundation::RtlNtStatusToDosError(status.0) }
}

// Our records must match the Windows SDK's, since the kernel writes them.
const _: () = {
    use crate::afd::{CompletionEntry, IoStatusBlock};
    use std::mem::{offset_of, size_of};
    use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, OVERLAPPED_ENTRY};
    assert!(size_of::<IoStatusBlock>() == size_of::<IO_STATUS_BLOCK>());
    assert!(offset_of!(IoStatusBlock, information) == offset_of!(IO_STATUS_BLOCK, Information));
    assert!(size_of::<CompletionEntry>() == size_of::<OVERLAPPED_ENTRY>());
    assert!(offset_of!(CompletionEntry, key) == offset_of!(OVERLAPPED_ENTRY, lpCompletionKey));
    assert!(offset_of!(CompletionEntry, apc_context) == offset_of!(OVERLAPPED_ENTRY, lpOverlapped));
    assert!(offset_of!(CompletionEntry, io_status) == offset_of!(OVERLAPPED_ENTRY, Internal));
};
